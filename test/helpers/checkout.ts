// The buyer's side through plain HTTP: what a browser sends when the checkout form is
// submitted (application/x-www-form-urlencoded), without following redirects.
import http from 'node:http'

export interface CheckoutLink {
  holdId: string
  token: string
  /** The hold's checkout URL as createTicketHold answered it. */
  url: string
}

export function checkoutLink(url: string): CheckoutLink {
  const parsed = new URL(url)
  const holdId = parsed.pathname.split('/').pop()!
  return { holdId, token: parsed.searchParams.get('token') ?? '', url }
}

export interface FormAnswer {
  status: number
  /** The redirect target, when the answer is a redirect. */
  location: string | null
  html: string
}

export async function submitCheckout(
  url: string,
  fields: { action: 'pay' | 'cancel'; email?: string; cardNumber?: string; token?: string },
): Promise<FormAnswer> {
  const link = checkoutLink(url)
  const form = new URLSearchParams({ token: fields.token ?? link.token, action: fields.action })
  if (fields.email !== undefined) form.set('email', fields.email)
  if (fields.cardNumber !== undefined) form.set('cardNumber', fields.cardNumber)
  const res = await fetch(new URL(`/checkout/${link.holdId}`, url), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
    redirect: 'manual',
  })
  return { status: res.status, location: res.headers.get('location'), html: await res.text() }
}

/** Pays a hold with Stripe's always-succeeding test card; answers the redirect target. */
export async function payHold(url: string, cardNumber = '4242 4242 4242 4242', email = 'buyer@example.com'): Promise<string> {
  const answer = await submitCheckout(url, { action: 'pay', email, cardNumber })
  if (answer.status !== 303 || !answer.location) {
    throw new Error(`paying ${url} answered ${answer.status}: ${answer.html.slice(0, 300)}`)
  }
  return answer.location
}

/** The payment id a completed checkout redirected with (returnUrl or ticket page). */
export function paymentIdOf(location: string): string {
  const url = new URL(location)
  const fromQuery = url.searchParams.get('paymentId')
  if (fromQuery) return fromQuery
  const match = url.pathname.match(/\/tickets\/(pay_[A-Za-z0-9]+)$/)
  if (!match) throw new Error(`no payment id in ${location}`)
  return match[1]!
}

export interface RawAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

/**
 * One request over node:http, sent exactly as given: fetch would refuse or rewrite some of
 * what a hostile client sends (an address with broken percent-encoding, a Content-Encoding
 * that does not match the body).
 */
export function rawRequest(
  origin: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: Buffer | string } = {},
): Promise<RawAnswer> {
  const { hostname, port } = new URL(origin)
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, path, method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

/**
 * Starts a form post that promises `length` bytes, sends a few, and hangs up: a buyer whose
 * connection drops mid-upload. Resolves once the socket is gone.
 */
export async function abortedUpload(origin: string, path: string, length: number): Promise<void> {
  const { hostname, port } = new URL(origin)
  const req = http.request({
    hostname,
    port,
    path,
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(length) },
  })
  req.on('error', () => {})
  req.write('token=')
  // The server reads the headers and starts on the body before the connection drops.
  await new Promise((resolve) => setTimeout(resolve, 200))
  req.destroy()
  await new Promise((resolve) => req.once('close', resolve))
}
