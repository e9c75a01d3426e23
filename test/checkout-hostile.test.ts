// What a careless or hostile client can send the hosted pages: redirect URLs that do not parse
// or are not web addresses, holds stored with such URLs before they were refused, addresses
// with broken percent-encoding, and form posts the body parser cannot read. A paid buyer
// always reaches their tickets; a client's mistake answers a plain page with the right 4xx
// and its security headers, and the service logs it at info at most, without a stack.
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { abortedUpload, checkoutLink, payHold, paymentIdOf, rawRequest, submitCheckout } from './helpers/checkout.js'
import { dbRun, sameDatabase } from './helpers/db.js'
import { expectError, expectOk, type Body } from './helpers/expect.js'
import { startService, type ServiceHandle } from './helpers/service.js'
import { createEventWithTier, nsid, startWorld, type World } from './helpers/world.js'

let world: World

beforeAll(async () => {
  // At debug the service logs every request, so a test can wait for the line of each it sent.
  world = await startWorld({ logLevel: 'debug' })
})
afterAll(async () => {
  await world?.close()
})

// Each passes the lexicon's `uri` format; the first three do not parse as URLs, the others
// are not web addresses a buyer could be sent to.
const BAD_REDIRECTS = [
  'http://[::1',
  'http://a:99999',
  'http://%zz',
  'javascript:alert(document.cookie)',
  'data:text/html,<p>hello</p>',
  'ftp://app.example/cart',
]

async function newHold(items: Array<{ tierId: string; quantity: number }>, extra: Body = {}) {
  return expectOk(await world.app.call(nsid('createTicketHold'), { items, ...extra }))
}

async function tierUsage(eventId: string, tierId: string) {
  const availability = expectOk(await world.app.call(nsid('getTicketAvailability'), { eventId }))
  const tier = availability.tiers.find((t: Body) => t.id === tierId)
  return { held: tier.held as number, sold: tier.sold as number, remaining: tier.remaining as number }
}

async function holdState(holdId: string) {
  return expectOk(await world.app.call(nsid('getTicketHold'), { holdId })).hold as Body
}

/** As a hold written before such URLs were refused: the value goes straight into the database. */
async function plantRedirect(holdId: string, column: 'returnUrl' | 'cancelUrl', value: string) {
  expect(await dbRun(world.service, `UPDATE hold SET ${column} = ? WHERE id = ?`, [value, holdId])).toEqual({ changes: 1 })
}

/** The service's log lines written since `mark` (a length of `logs()`). */
function logLinesSince(mark: number): Array<Record<string, unknown>> {
  return world.service
    .logs()
    .slice(mark)
    .split('\n')
    .flatMap((line) => {
      if (!line.startsWith('{')) return []
      try {
        return [JSON.parse(line) as Record<string, unknown>]
      } catch {
        return []
      }
    })
}

/**
 * Waits until the service logged its answer to each of `paths` (the request line is written
 * when the response closes), then checks that nothing since `mark` was logged above info
 * (pino: 30) or carried a stack trace.
 */
async function expectQuietLogs(mark: number, paths: string[]) {
  await expect
    .poll(() => {
      const logged = new Set(logLinesSince(mark).filter((l) => l.msg === 'request').map((l) => l.path))
      return paths.filter((path) => !logged.has(path))
    })
    .toEqual([])
  const text = world.service.logs().slice(mark)
  const loud = logLinesSince(mark).filter((line) => (line.level as number) > 30)
  expect(loud).toEqual([])
  expect(text).not.toMatch(/"stack"|\n\s+at /)
}

type HeaderSource = Headers | Record<string, string | string[] | undefined>
function header(headers: HeaderSource, name: string): string | null {
  if (headers instanceof Headers) return headers.get(name)
  const value = headers[name]
  return Array.isArray(value) ? value.join(', ') : (value ?? null)
}

/** The headers every page, redirect and error page of the checkout carries. */
function expectPageHeaders(headers: HeaderSource) {
  expect(header(headers, 'content-security-policy')).toMatch(/^default-src 'none';.*frame-ancestors 'none'/)
  expect(header(headers, 'referrer-policy')).toBe('no-referrer')
  expect(header(headers, 'cache-control')).toBe('no-store')
  expect(header(headers, 'x-frame-options')).toBe('DENY')
  expect(header(headers, 'x-content-type-options')).toBe('nosniff')
}

describe('redirect URLs of a hold', () => {
  it('refuses a returnUrl or cancelUrl that does not parse or is not http(s), naming the field; no capacity is taken', async () => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 2 })
    for (const field of ['returnUrl', 'cancelUrl']) {
      for (const value of BAD_REDIRECTS) {
        const res = await world.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 2 }], [field]: value })
        expectError(res, 400, 'InvalidRedirectUrl', new RegExp(`^${field} must be an absolute https URL`))
      }
    }
    expect(await tierUsage(eventId, tierId)).toEqual({ held: 0, sold: 0, remaining: 2 })
    // The same request with usable URLs takes the hold (http is allowed in dev mode, as here).
    const hold = await newHold([{ tierId, quantity: 2 }], {
      returnUrl: 'https://app.example/done?order=1',
      cancelUrl: 'http://localhost:5173/cart',
    })
    expect(hold.holdId).toMatch(/^hold_/)
    expect(await tierUsage(eventId, tierId)).toEqual({ held: 2, sold: 0, remaining: 0 })
  })

  it('outside dev mode a stored http returnUrl is not followed: the paid buyer is sent to their tickets', async () => {
    // Dev mode accepts http; the same database then served without it, as when an operator
    // turns dev mode off with holds still open.
    const dev = await startWorld({ workers: 1 })
    let prod: ServiceHandle | undefined
    try {
      const { tierId } = await createEventWithTier(dev, { quantityTotal: 3 })
      const hold = expectOk(await dev.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 1 }], returnUrl: 'http://app.example/done' }))
      expect(await dev.service.stop()).toBe(0)
      prod = await startService({ plcUrl: dev.plc.url, ...sameDatabase(dev.service), port: dev.service.port, devMode: false, workers: 1 })
      const location = await payHold(hold.url)
      expect(location).toMatch(new RegExp(`^${prod.url}/tickets/pay_[A-Za-z0-9]+\\?key=`))
      const page = await fetch(location)
      expect(page.status).toBe(200)
      expect(await page.text()).toContain('Your tickets (1)')
      expect(prod.jsonLogs().filter((line) => (line.level as number) > 30)).toEqual([])
    } finally {
      await prod?.close()
      await dev.close()
    }
  })

  it.each(BAD_REDIRECTS)('a stored returnUrl %s is not followed: the paid buyer is sent to their tickets', async (value) => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 5 })
    const hold = await newHold([{ tierId, quantity: 2 }], { returnUrl: 'https://app.example/done' })
    await plantRedirect(hold.holdId, 'returnUrl', value)
    const mark = world.service.logs().length

    const paid = await submitCheckout(hold.url, { action: 'pay', email: 'buyer@example.com', cardNumber: '4242424242424242' })
    expect(paid.status, paid.html.slice(0, 300)).toBe(303)
    const location = paid.location!
    expect(location).toMatch(new RegExp(`^${world.service.url}/tickets/pay_[A-Za-z0-9]+\\?key=`))
    const paymentId = paymentIdOf(location)
    expect((await holdState(hold.holdId)).paymentId).toBe(paymentId)
    expect(await tierUsage(eventId, tierId)).toMatchObject({ held: 0, sold: 2 })

    // Every later visit of the checkout link leads there too, and the page shows the tickets.
    const again = await fetch(hold.url, { redirect: 'manual' })
    expect(again.status).toBe(303)
    expect(again.headers.get('location')).toBe(location)
    const page = await fetch(location)
    expect(page.status).toBe(200)
    expect(await page.text()).toContain('Your tickets (2)')
    // A second submit (a reload of the form post) goes there as well.
    expect(await payHold(hold.url)).toBe(location)
    await expectQuietLogs(mark, [`/checkout/${hold.holdId}`, `/tickets/${paymentId}`])
  })

  it.each(BAD_REDIRECTS)('a stored cancelUrl %s is not followed: cancel shows "Order cancelled"', async (value) => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 5 })
    const hold = await newHold([{ tierId, quantity: 3 }], { cancelUrl: 'https://app.example/cart' })
    await plantRedirect(hold.holdId, 'cancelUrl', value)
    const mark = world.service.logs().length

    const cancelled = await submitCheckout(hold.url, { action: 'cancel' })
    expect(cancelled.status).toBe(200)
    expect(cancelled.location).toBeNull()
    expect(cancelled.html).toContain('Order cancelled')
    expect((await holdState(hold.holdId)).status).toBe('released')
    expect(await tierUsage(eventId, tierId)).toEqual({ held: 0, sold: 0, remaining: 5 })
    await expectQuietLogs(mark, [`/checkout/${hold.holdId}`])
  })
})

describe('what the pages cannot read', () => {
  it.each(['/checkout/%ff', '/tickets/%ff', '/checkout/%E0%A4%A', '/tickets/%E0%A4%A?key=x', '/checkout/hold_%zz?token=x'])(
    'GET %s (broken percent-encoding) answers a plain 400 page',
    async (path) => {
      const mark = world.service.logs().length
      const answer = await rawRequest(world.service.url, path)
      expect(answer.status).toBe(400)
      expect(header(answer.headers, 'content-type')).toMatch(/^text\/html/)
      expect(answer.body).toContain('<h1>Bad request</h1>')
      expect(answer.body).not.toMatch(/URIError|Failed to decode|\n\s+at /)
      expectPageHeaders(answer.headers)
      await expectQuietLogs(mark, [path.split('?')[0]!])
    },
  )

  it('refuses form posts it cannot read with 400, 413 or 415 and a plain page; nothing changes', async () => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 4 })
    const hold = await newHold([{ tierId, quantity: 1 }])
    const { holdId, token } = checkoutLink(hold.url)
    const path = `/checkout/${holdId}`
    const form = `token=${encodeURIComponent(token)}&action=cancel`
    const urlencoded = 'application/x-www-form-urlencoded'
    const cases: Array<{ name: string; status: number; headers: Record<string, string>; body: Buffer | string; says: string }> = [
      { name: 'over-large body', status: 413, headers: { 'content-type': urlencoded }, body: `${form}&email=${'a'.repeat(9000)}`, says: 'too large' },
      {
        name: 'too many fields',
        status: 413,
        headers: { 'content-type': urlencoded },
        body: `${form}${Array.from({ length: 30 }, (_, i) => `&f${i}=1`).join('')}`,
        says: 'too many fields',
      },
      { name: 'unknown charset', status: 415, headers: { 'content-type': `${urlencoded}; charset=klingon` }, body: form, says: 'charset' },
      { name: 'unsupported encoding', status: 415, headers: { 'content-type': urlencoded, 'content-encoding': 'br' }, body: form, says: 'encoding' },
      { name: 'broken gzip', status: 400, headers: { 'content-type': urlencoded, 'content-encoding': 'gzip' }, body: form, says: 'could not be read' },
      {
        name: 'gzip bomb',
        status: 413,
        headers: { 'content-type': urlencoded, 'content-encoding': 'gzip' },
        body: gzipSync(`${form}&email=${'a'.repeat(100_000)}`),
        says: 'too large',
      },
    ]
    const mark = world.service.logs().length
    for (const c of cases) {
      const answer = await rawRequest(world.service.url, path, { method: 'POST', headers: c.headers, body: c.body })
      expect(answer.status, c.name).toBe(c.status)
      expect(header(answer.headers, 'content-type'), c.name).toMatch(/^text\/html/)
      expect(answer.body.toLowerCase(), c.name).toContain(c.says)
      expect(answer.body, c.name).not.toContain(token)
      expectPageHeaders(answer.headers)
    }
    await expectQuietLogs(mark, [path])
    // None of them was read as the cancel it carried.
    expect((await holdState(holdId)).status).toBe('active')
    expect(await tierUsage(eventId, tierId)).toEqual({ held: 1, sold: 0, remaining: 3 })
  })

  it('an upload the client abandons halfway is logged at info at most', async () => {
    const { tierId } = await createEventWithTier(world, { quantityTotal: 1 })
    const hold = await newHold([{ tierId, quantity: 1 }])
    const mark = world.service.logs().length
    await abortedUpload(world.service.url, `/checkout/${hold.holdId}`, 4000)
    // A request after it, so that the abandoned one has certainly been handled and logged.
    const after = await rawRequest(world.service.url, '/checkout/hold_unknown?token=x')
    expect(after.status).toBe(404)
    await expectQuietLogs(mark, ['/checkout/hold_unknown'])
    expect((await holdState(hold.holdId)).status).toBe('active')
  })
})

describe('security headers', () => {
  it('the page, its redirects, its error pages and the ticket page all carry them', async () => {
    const { tierId } = await createEventWithTier(world, { quantityTotal: 6 })
    const withUrls = { returnUrl: 'https://app.example/done', cancelUrl: 'https://app.example/cart' }

    const hold = await newHold([{ tierId, quantity: 1 }], withUrls)
    const page = await fetch(hold.url)
    expect(page.status).toBe(200)
    expectPageHeaders(page.headers)
    const paid = await fetch(new URL(`/checkout/${hold.holdId}`, hold.url), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: checkoutLink(hold.url).token, action: 'pay', email: 'a@b.example', cardNumber: '4242424242424242' }),
      redirect: 'manual',
    })
    expect(paid.status).toBe(303)
    expectPageHeaders(paid.headers)
    const revisit = await fetch(hold.url, { redirect: 'manual' })
    expect(revisit.status).toBe(303)
    expectPageHeaders(revisit.headers)

    const toCancel = await newHold([{ tierId, quantity: 1 }], withUrls)
    const cancel = await fetch(new URL(`/checkout/${toCancel.holdId}`, toCancel.url), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: checkoutLink(toCancel.url).token, action: 'cancel' }),
      redirect: 'manual',
    })
    expect(cancel.status).toBe(303)
    expect(cancel.headers.get('location')).toBe('https://app.example/cart')
    expectPageHeaders(cancel.headers)

    const ticketPage = await fetch(`${world.service.url}/tickets/${new URL(paid.headers.get('location')!).searchParams.get('paymentId')}?key=wrong`)
    expect(ticketPage.status).toBe(404)
    expectPageHeaders(ticketPage.headers)
    const notFound = await fetch(`${world.service.url}/checkout/hold_nothing?token=x`)
    expect(notFound.status).toBe(404)
    expectPageHeaders(notFound.headers)
  })
})
