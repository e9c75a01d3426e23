// CONTRACT §5.4 (idempotent) across a crash: a request with an `idempotencyKey` takes its key
// (pending) in a transaction of its own, then checks the buyer's assertion, which fetches the
// buyer's DID document, and only then does its work. The buyer here is a did:web whose host
// holds that fetch until the test lets it go: the request is then parked, deterministically,
// between its pending key and its work. Killing the service (or its workers) there and
// retrying shows whether the key left behind blocks the retry; a twin sent while the first is
// parked shows that a request really running still holds its key.
import { execFileSync } from 'node:child_process'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildDocument, createKeypair, expectError, expectOk, settle, type Body, xrpc, AppClient, type DidWebIdentity } from './helpers/index.js'
import { createEventWithTier, nsid, startWorld, type World } from './helpers/world.js'

const CLAIM = nsid('claimFreeTicket')

interface GatedBuyer {
  buyer: AppClient
  /** Resolves once the service asked for the buyer's DID document. */
  requested: Promise<void>
  /** Answers the held fetches, and every later one at once. */
  open(): void
  close(): Promise<void>
}

/** A did:web buyer whose DID document is withheld until `open()`. */
async function gatedBuyer(world: World): Promise<GatedBuyer> {
  let opened = false
  const held: ServerResponse[] = []
  let markRequested!: () => void
  const requested = new Promise<void>((resolve) => (markRequested = resolve))
  let identity: DidWebIdentity | undefined
  const answer = (res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(buildDocument(identity!)))
  }
  const server = createServer((req, res) => {
    if (new URL(req.url ?? '/', 'http://x').pathname !== '/.well-known/did.json') {
      res.writeHead(404).end()
      return
    }
    markRequested()
    if (opened) answer(res)
    else held.push(res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  identity = {
    method: 'web',
    curve: 'k256',
    did: `did:web:localhost%3A${port}`,
    keypair: await createKeypair('k256'),
    path: [],
    services: [],
  }
  return {
    buyer: new AppClient(world.service, identity),
    requested,
    open() {
      opened = true
      for (const res of held.splice(0)) if (!res.destroyed) answer(res)
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** A free claim of `quantity` under `key`, with a fresh app token and buyer assertion. */
async function claim(world: World, buyer: AppClient, tierId: string, key: string, quantity: number, token?: string) {
  const body = { tierId, quantity, buyerDid: buyer.did, buyerAssertionJwt: await buyer.token(CLAIM), idempotencyKey: key }
  return xrpc(world.service.url, CLAIM, { body, token: token ?? (await world.app.token(CLAIM)) })
}

/** The buyer's tickets of `tierId`, and the tier's sold count. */
/**
 * The work was done exactly once: the buyer holds exactly the `count` tickets `answer` issued,
 * and the tier sold that many.
 */
async function expectIssuedOnce(world: World, buyerDid: string, eventId: string, tierId: string, answer: Body, count: number) {
  const issued = (answer.tickets as Array<{ ticketId: string }>).map((t) => t.ticketId).sort()
  expect(issued).toHaveLength(count)
  const listed = expectOk(await world.app.call(nsid('listBuyerTickets'), { buyerDid, limit: 100 }))
  const tickets = (listed.tickets as Array<{ ticketId: string; tierId: string }>).filter((t) => t.tierId === tierId)
  const availability = expectOk(await world.app.call(nsid('getTicketAvailability'), { eventId }))
  const tier = (availability.tiers as Array<{ tierId: string; sold: number }>).find((t) => t.tierId === tierId)!
  expect({ ticketIds: tickets.map((t) => t.ticketId).sort(), sold: tier.sold }).toEqual({ ticketIds: issued, sold: count })
}

/** The pids of the primary's workers. */
function workerPids(primaryPid: number): number[] {
  const out = execFileSync('ps', ['-o', 'pid=', '--ppid', String(primaryPid)], { encoding: 'utf8' })
  return out.split('\n').map((line) => Number(line.trim())).filter((pid) => pid > 0)
}

/** The pids that logged "listening" so far. */
function listeningPids(world: World): number[] {
  return world.service
    .jsonLogs()
    .filter((line) => line.msg === 'ATM Tickets listening')
    .map((line) => line.pid as number)
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('an idempotency key left pending by a request that died', () => {
  let world: World
  const gates: GatedBuyer[] = []

  beforeAll(async () => {
    // Two workers: a retry may reach a process other than the one that took the key.
    world = await startWorld({ workers: 2 })
  })
  afterAll(async () => {
    for (const gate of gates) await gate.close()
    await world?.close()
  })

  async function parkedClaim(key: string, quantity: number) {
    const gate = await gatedBuyer(world)
    gates.push(gate)
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 10, unitAmount: 0, maxPerOrder: 10, title: 'Free' })
    const token = await world.app.token(CLAIM)
    const first = settle(claim(world, gate.buyer, tierId, key, quantity, token))
    // The DID document is fetched after the key was committed as pending: the request is parked there.
    await gate.requested
    return { gate, eventId, tierId, token, first }
  }

  it('a retry after kill -9 of the whole service does the work at once, exactly once', async () => {
    const { gate, eventId, tierId, token, first } = await parkedClaim('crash-service', 2)
    await world.service.kill9()
    expect((await first).status, 'the first request died with the service').toBe(-1)
    await world.service.restart()
    gate.open()

    // The first request's own token, sent again: it has no stored answer to receive.
    const replayed = await claim(world, gate.buyer, tierId, 'crash-service', 2, token)
    expectError(replayed, 401, 'JwtReplayed', /fresh token/)

    const retry = expectOk(await claim(world, gate.buyer, tierId, 'crash-service', 2))
    expect(retry.reused).toBeUndefined()
    expect(retry.tickets).toHaveLength(2)
    const again = expectOk(await claim(world, gate.buyer, tierId, 'crash-service', 2))
    expect(again).toMatchObject({ claimId: retry.claimId, reused: true })

    await expectIssuedOnce(world, gate.buyer.did, eventId, tierId, retry, 2)
  })

  it('a retry after kill -9 of the worker (which the primary replaces) does the work at once, exactly once', async () => {
    const { gate, eventId, tierId, first } = await parkedClaim('crash-worker', 3)
    const primary = world.service.pid()!
    const workers = workerPids(primary)
    expect(workers).toHaveLength(2)
    // After the restart above, the health check answers once one worker listens: a worker killed
    // before it listened is one that failed to start, and the primary rightly stops for that.
    while (!workers.every((pid) => listeningPids(world).includes(pid))) await sleep(20)
    const listeningBefore = listeningPids(world).length
    for (const pid of workers) process.kill(pid, 'SIGKILL')
    expect((await first).status, 'the first request died with its worker').toBe(-1)
    // The primary forks a new worker for each; wait until both listen.
    while (listeningPids(world).length < listeningBefore + 2) await sleep(20)
    expect(world.service.running(), 'the primary outlived its workers').toBe(true)
    gate.open()

    const retry = expectOk(await claim(world, gate.buyer, tierId, 'crash-worker', 3))
    expect(retry.reused).toBeUndefined()
    expect(retry.tickets).toHaveLength(3)
    await expectIssuedOnce(world, gate.buyer.did, eventId, tierId, retry, 3)
  })

  it('a retry while the first request still runs answers IdempotencyKeyInUse, and the work is done once', async () => {
    const { gate, eventId, tierId, first } = await parkedClaim('still-running', 1)
    // Several twins at once, on connections the primary spreads over both workers: a twin in
    // the other process must see the key as live too.
    const twins = await Promise.all([0, 1, 2, 3].map(() => claim(world, gate.buyer, tierId, 'still-running', 1)))
    for (const twin of twins) expectError(twin, 409, 'IdempotencyKeyInUse', /still running/)
    gate.open()

    const done = expectOk(await first)
    expect(done.reused).toBeUndefined()
    const retry = expectOk(await claim(world, gate.buyer, tierId, 'still-running', 1))
    expect(retry).toMatchObject({ claimId: done.claimId, reused: true })
    await expectIssuedOnce(world, gate.buyer.did, eventId, tierId, done, 1)
  })

  it('logged no internal errors', () => {
    const errors = world.service
      .jsonLogs()
      .filter((line) => typeof line.level === 'number' && line.level >= 50 && line.msg !== 'worker died; starting another')
      .map((line) => JSON.stringify(line))
    expect(errors, errors.slice(0, 10).join('\n')).toEqual([])
  })
})
