// What a stranger's token can make the service fetch and keep, through real HTTP against the
// real service: DID documents are cached within a byte budget (unregistered issuers in a small
// one of their own), a document is read no further than ATM_DID_DOC_MAX_BYTES however large
// it is, and a DID that cannot be resolved is fetched once, not once per token. The cache's
// counters are read from its debug log lines; fetches are counted at the did:web hosts.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expectError, expectOk } from './helpers/expect.js'
import { AppClient, createKeypair, startDidWebHost, xrpc, type DidWebHost } from './helpers/index.js'
import { createEventWithTier, nsid, registerApp, startWorld, type World } from './helpers/world.js'

const AVAILABILITY = nsid('getTicketAvailability')
const UNKNOWN_BUDGET = 256 * 1024
const DOC_MAX = 64 * 1024
const DOC_PATH = '/.well-known/did.json'

let world: World
let eventId: string
const hosts: DidWebHost[] = []
const servers: Server[] = []

interface CacheLine {
  did: string
  didCache: { known: { entries: number; bytes: number }; unknown: { entries: number; bytes: number } }
}

function cacheLines(): CacheLine[] {
  return world.service.jsonLogs().filter((line) => line.msg === 'DID document cached') as unknown as CacheLine[]
}

function probe(client: AppClient) {
  return client.call(AVAILABILITY, { eventId })
}

async function didWebHost(): Promise<DidWebHost> {
  const host = await startDidWebHost()
  hosts.push(host)
  return host
}

function documentFetches(host: DidWebHost): number {
  return host.requests.filter((path) => path === DOC_PATH).length
}

beforeAll(async () => {
  // One worker: fetch counts are then exact (each worker has a cache of its own).
  world = await startWorld({
    logLevel: 'debug',
    workers: 1,
    env: { ATM_DID_CACHE_UNKNOWN_MAX_BYTES: String(UNKNOWN_BUDGET), ATM_DID_DOC_MAX_BYTES: String(DOC_MAX) },
  })
  eventId = (await createEventWithTier(world, { quantityTotal: 10 })).eventId
})

afterAll(async () => {
  for (const host of hosts) await host.close()
  for (const server of servers) {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }
  await world?.close()
})

describe('the DID document cache', () => {
  it('keeps the documents of unregistered issuers within their budget, and the registered app’s document through a flood of them', async () => {
    const appHost = await didWebHost()
    const app = new AppClient(world.service, appHost.identity)
    expectOk(await registerApp(world.service, { did: app.did, name: 'did:web app' }))
    const ownEvent = (await createEventWithTier(world, { quantityTotal: 10 }, { app })).eventId
    expectOk(await app.call(AVAILABILITY, { eventId: ownEvent }))
    expect(documentFetches(appHost)).toBe(1)

    // 12 strangers, each with a valid document of ~60 kB (under the document cap): ~720 kB in all.
    const strangers: DidWebHost[] = []
    for (let index = 0; index < 12; index++) {
      const host = await didWebHost()
      host.override(host.identity, { status: 200, body: { ...host.document(host.identity), padding: 'x'.repeat(60_000) } })
      strangers.push(host)
    }
    for (const host of strangers) {
      // Verified (a real key), then refused as not registered: the document was fetched and kept.
      expectError(await probe(new AppClient(world.service, host.identity)), 403, 'AppNotRegistered')
      expect(documentFetches(host)).toBe(1)
    }

    const lines = cacheLines()
    const strangerDids = new Set(strangers.map((host) => host.identity.did))
    expect(lines.filter((line) => strangerDids.has(line.did))).toHaveLength(12)
    for (const line of lines) expect(line.didCache.unknown.bytes).toBeLessThanOrEqual(UNKNOWN_BUDGET)
    const last = lines.at(-1)!
    expect(last.didCache.unknown.entries).toBeLessThan(12)
    expect(last.didCache.unknown.entries).toBeGreaterThan(0)
    expect(last.didCache.known.entries).toBeGreaterThanOrEqual(1)

    // The registered app's document was not pushed out: its next token costs no fetch.
    expectOk(await app.call(AVAILABILITY, { eventId: ownEvent }))
    expect(documentFetches(appHost)).toBe(1)
  })

  it('refuses a document larger than ATM_DID_DOC_MAX_BYTES (BadJwtIss), reading no further than the cap', async () => {
    // A host that streams an endless document, as fast as the reader takes it.
    const keypair = await createKeypair('k256')
    let sent = 0
    let finished = false
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      const chunk = Buffer.alloc(16 * 1024, 'x')
      res.write('{"id":"did:web:x","padding":"')
      const pump = () => {
        while (sent < 64 * 1024 * 1024) {
          sent += chunk.length
          if (!res.write(chunk)) return void res.once('drain', pump)
        }
        finished = true
        res.end('"}')
      }
      res.on('close', () => res.removeAllListeners('drain'))
      pump()
    })
    servers.push(server)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const did = `did:web:localhost%3A${(server.address() as AddressInfo).port}`
    const stranger = new AppClient(world.service, { did, keypair })

    const res = await probe(stranger)
    // What the service read is the cap; the rest is what the sockets' buffers took in.
    expect(finished).toBe(false)
    expect(sent).toBeLessThan(16 * 1024 * 1024)
    expectError(res, 401, 'BadJwtIss', /size/)
  })

  it('fetches a DID that cannot be resolved once, not once per token, and says when to retry', async () => {
    const host = await didWebHost()
    host.override(host.identity, { status: 404, body: { error: 'NotFound' } })
    const stranger = new AppClient(world.service, host.identity)
    const answers = []
    for (let attempt = 0; attempt < 20; attempt++) answers.push(await probe(stranger))
    expect(documentFetches(host)).toBe(1)
    for (const res of answers) expectError(res, 401, 'BadJwtIss')
    for (const res of answers.slice(1)) expect(res.body.message).toMatch(/retry in \d+ s/)
  })

  it('the health endpoint still answers (the service survived all of the above)', async () => {
    const res = await xrpc(world.service.url, '_health')
    expect(res.status).toBe(200)
  })
})
