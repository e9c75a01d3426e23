/**
 * `npm run demo`: the whole ticketing flow against a freshly started service, with did:web
 * identities served on localhost (no internet needed). Prints each request and answer.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Secp256k1Keypair } from '@atproto/crypto'
import { createServiceJwt } from '@atproto/xrpc-server'

const NS = 'tickets.atmosphere'
const bold = (text: string) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text)
const dim = (text: string) => (process.stdout.isTTY ? `\x1b[2m${text}\x1b[0m` : text)

interface Identity {
  name: string
  did: string
  keypair: Secp256k1Keypair
  server: http.Server
}

/** One did:web identity per localhost port, with its #atproto key in its DID document. */
async function didWebIdentity(name: string): Promise<Identity> {
  const keypair = await Secp256k1Keypair.create({ exportable: true })
  const server = http.createServer((req, res) => {
    if (req.url !== '/.well-known/did.json') return void res.writeHead(404).end()
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(document))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const did = `did:web:localhost%3A${(server.address() as AddressInfo).port}`
  const document = {
    '@context': ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/multikey/v1'],
    id: did,
    verificationMethod: [
      { id: `${did}#atproto`, type: 'Multikey', controller: did, publicKeyMultibase: keypair.did().slice('did:key:'.length) },
    ],
  }
  return { name, did, keypair, server }
}

async function freePort(): Promise<number> {
  const server = http.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function main() {
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const dir = mkdtempSync(join(tmpdir(), 'atm-demo-'))
  const port = await freePort()
  const baseUrl = `http://localhost:${port}`
  const serviceDid = `did:web:localhost%3A${port}`
  const adminPassword = 'demo-admin-password'
  const service = spawn(process.execPath, [join(root, 'dist', 'src', 'bin.js')], {
    env: {
      // The demo's own configuration only: ATM_* variables of the caller's shell stay out.
      ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('ATM_'))),
      ATM_PORT: String(port),
      ATM_DB: join(dir, 'atm.sqlite'),
      ATM_DEV_MODE: 'true',
      ATM_ADMIN_PASSWORD: adminPassword,
      ATM_WORKERS: '1',
      ATM_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  const identities: Identity[] = []
  const cleanup = () => {
    service.kill('SIGTERM')
    for (const identity of identities) identity.server.close()
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    for (let attempt = 0; ; attempt++) {
      const ok = await fetch(`${baseUrl}/xrpc/_health`).then((r) => r.ok).catch(() => false)
      if (ok) break
      if (attempt > 100) throw new Error('the service did not start')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    console.log(bold(`ATM Tickets demo — service ${baseUrl} (${serviceDid})\n`))

    const app = await didWebIdentity('app')
    const organizer = await didWebIdentity('organizer')
    const buyer = await didWebIdentity('buyer')
    identities.push(app, organizer, buyer)

    const token = (who: Identity, lxm: string) => createServiceJwt({ iss: who.did, aud: serviceDid, lxm, keypair: who.keypair })

    async function call(step: string, who: Identity | 'admin', method: string, input: Record<string, unknown> = {}, query = false) {
      const nsid = `${NS}.${method}`
      const headers: Record<string, string> = {}
      if (who === 'admin') headers.authorization = `Basic ${Buffer.from(`admin:${adminPassword}`).toString('base64')}`
      else headers.authorization = `Bearer ${await token(who, nsid)}`
      let url = `${baseUrl}/xrpc/${nsid}`
      const init: RequestInit = { headers }
      if (query) {
        url += `?${new URLSearchParams(input as Record<string, string>)}`
      } else {
        init.method = 'POST'
        headers['content-type'] = 'application/json'
        init.body = JSON.stringify(input)
      }
      console.log(bold(`▶ ${step}`))
      console.log(dim(`  ${query ? 'GET' : 'POST'} /xrpc/${nsid}  as ${who === 'admin' ? 'operator (Basic)' : `${who.name} ${who.did}`}`))
      if (!query) console.log(indent(compactJson(redact(input)), '  → '))
      const res = await fetch(url, init)
      const body = (await res.json()) as Record<string, any>
      console.log(indent(compactJson(body), `  ← ${res.status} `))
      console.log()
      if (!res.ok) throw new Error(`${method} failed: ${body.error}: ${body.message}`)
      return body
    }

    /** What the buyer's browser does on the hosted checkout page: submit the form with a test card. */
    async function payOnCheckoutPage(url: string): Promise<string> {
      const checkout = new URL(url)
      console.log(bold('▶ Buyer opens the checkout page and pays with the test card 4242 4242 4242 4242'))
      const page = await fetch(checkout)
      console.log(dim(`  GET ${checkout.pathname}?token=<hold token>`))
      console.log(`  ← ${page.status} ${page.headers.get('content-type')} (${(await page.text()).length} bytes of HTML)`)
      const form = new URLSearchParams({
        token: checkout.searchParams.get('token')!,
        email: 'buyer@example.com',
        cardNumber: '4242 4242 4242 4242',
        action: 'pay',
      })
      const res = await fetch(new URL(checkout.pathname, checkout), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form,
        redirect: 'manual',
      })
      const location = res.headers.get('location') ?? ''
      console.log(dim(`  POST ${checkout.pathname}  (form: email, cardNumber, action=pay)`))
      console.log(`  ← ${res.status} Location: ${location.replace(/key=[^&]+/, 'key=<ticket page secret>')}`)
      console.log()
      if (res.status !== 303) throw new Error(`checkout answered ${res.status}`)
      return new URL(location).pathname.split('/').pop()!
    }

    await call('Operator registers the app', 'admin', 'admin.registerApp', { did: app.did, name: 'Demo Events App' })
    await call('Organizer signs in', organizer, 'registerOrganizer', { displayName: 'Demo Organizer' })
    await call('Organizer finishes (test) payment setup', organizer, 'completePaymentSetup', { environment: 'test' })
    const eventUri = `at://${organizer.did}/community.lexicon.calendar.event/demo`
    const bound = await call('App binds the event to the organizer, with their consent', app, 'createTicketEvent', {
      organizerDid: organizer.did,
      organizerAssertionJwt: await token(organizer, `${NS}.createTicketEvent`),
      event: { uri: eventUri, title: 'Demo Night', startsAt: new Date(Date.now() + 7 * 86400_000).toISOString() },
    })
    const eventId = bound.event.id as string
    const group = await call('App creates a capacity group (the venue holds 100)', app, 'createCapacityGroup', {
      organizerDid: organizer.did,
      event: { eventId },
      name: 'Main hall',
      totalCapacity: 100,
    })
    const paid = await call('App creates a paid tier inside the group', app, 'createTicketTier', {
      organizerDid: organizer.did,
      event: { eventId },
      capacityGroupId: group.capacityGroup.id,
      title: 'General admission',
      currency: 'usd',
      unitAmount: 2500,
      quantityTotal: 80,
      maxPerOrder: 6,
    })
    const free = await call('App creates a free tier inside the same group', app, 'createTicketTier', {
      organizerDid: organizer.did,
      event: { eventId },
      capacityGroupId: group.capacityGroup.id,
      title: 'Community (free)',
      currency: 'usd',
      unitAmount: 0,
      quantityTotal: 30,
      maxPerOrder: 2,
    })
    const hold = await call('Buyer picks 2 paid tickets: the app takes a hold', app, 'createTicketHold', {
      eventId,
      buyerDid: buyer.did,
      buyerAssertionJwt: await token(buyer, `${NS}.createTicketHold`),
      items: [{ tierId: paid.tier.id, quantity: 2 }],
      returnUrl: 'https://app.example/tickets/return',
      cancelUrl: 'https://app.example/events/demo',
      idempotencyKey: 'demo-hold-1',
    })
    await call('Availability while the hold is active', app, 'getTicketAvailability', { eventId }, true)
    await call('Buyer changes their mind: the app releases the hold', app, 'releaseTicketHold', {
      holdId: hold.holdId,
      reason: 'buyer cancelled',
    })
    const second = await call('Buyer comes back for 2 paid tickets: a new hold', app, 'createTicketHold', {
      eventId,
      buyerDid: buyer.did,
      buyerAssertionJwt: await token(buyer, `${NS}.createTicketHold`),
      items: [{ tierId: paid.tier.id, quantity: 2 }],
      customerEmail: 'buyer@example.com',
      idempotencyKey: 'demo-hold-2',
    })
    const paymentId = await payOnCheckoutPage(second.url as string)
    const purchase = await call('The purchase: the tickets of the payment, with their scan tokens', app, 'listBuyerTickets', { paymentId }, true)
    const scanned = purchase.tickets[0].ticketToken as string
    await call('At the door: the scanner reads the QR code and verifies the ticket', app, 'verifyTicket', { ticketToken: scanned, eventId })
    await call('The scanner checks the ticket in', app, 'checkInTicket', { ticketToken: scanned, idempotencyKey: 'demo-scan-1' })
    await call('The same QR code shown again: already checked in', app, 'checkInTicket', { ticketToken: scanned })
    await call('The other ticket of the purchase is refunded (test mode)', app, 'refundTickets', {
      ticketIds: [purchase.tickets[1].ticketId],
      reason: 'buyer cannot come',
    })
    await call('Buyer also claims a free ticket', app, 'claimFreeTicket', {
      eventId,
      tierId: free.tier.id,
      quantity: 1,
      buyerDid: buyer.did,
      buyerAssertionJwt: await token(buyer, `${NS}.claimFreeTicket`),
      idempotencyKey: 'demo-claim-1',
    })
    await call("The buyer's tickets", app, 'listBuyerTickets', { buyerDid: buyer.did }, true)
    await call('Availability at the end', app, 'getTicketAvailability', { eventId }, true)
    console.log(bold('Demo finished: every step answered as expected.'))
  } finally {
    cleanup()
  }
}

/** JSON with one line per top-level field, and nested objects kept on one line each. */
function compactJson(value: unknown, depth = 0): string {
  if (Array.isArray(value)) {
    if (depth >= 1) return `[\n${value.map((item) => `    ${JSON.stringify(item)}`).join(',\n')}\n  ]`
    return JSON.stringify(value)
  }
  if (value === null || typeof value !== 'object' || depth >= 1) return JSON.stringify(value)
  const lines = Object.entries(value as Record<string, unknown>).map(([key, item]) => `  ${JSON.stringify(key)}: ${compactJson(item, depth + 1)}`)
  return `{\n${lines.join(',\n')}\n}`
}

function indent(text: string, first: string): string {
  const pad = ' '.repeat(first.length)
  return text
    .split('\n')
    .map((line, index) => (index === 0 ? first : pad) + line)
    .join('\n')
}

/** Assertions are bearer credentials: the demo shows that they are sent, not what they are. */
function redact(input: Record<string, unknown>): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...input }
  for (const key of ['buyerAssertionJwt', 'organizerAssertionJwt']) if (copy[key]) copy[key] = '<jwt>'
  return copy
}

main().catch((err: unknown) => {
  console.error(`demo failed: ${(err as Error).message}`)
  process.exit(1)
})
