// CONTRACT §5 under concurrent load, through real HTTP at the real service process, with one
// worker process and with two sharing the SQLite file: never oversold (1), atomic (2),
// idempotent under concurrency (4), tokens single-use across workers, and no internal errors on the way.
//
// Every request carries its own freshly minted token. Tokens are minted first, then all
// requests are fired at once, so the whole batch is in flight together from the test's
// point of view. Nothing here asserts a timing.
import http from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { settle, type Outcome } from './helpers/expect.js'
import { rng } from './helpers/random.js'
import { createPlcIdentity, mintServiceJwt, xrpc, type AppClient, type PlcIdentity } from './helpers/index.js'
import { createEventWithTier, nsid, startWorld, type World } from './helpers/world.js'


/** status -> count, plus error names, for readable failure messages. */
function tally(outcomes: Outcome[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const o of outcomes) {
    const key = o.status === -1 ? `transport:${o.error}` : o.status === 200 ? '200' : `${o.status} ${o.body?.error ?? JSON.stringify(o.body)}`
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}

/** Prints each distinct unexpected answer once (with how often it came), to quote in a report. */
function reportUnexpected(outcomes: Outcome[], expected: (o: Outcome) => boolean): void {
  const seen = new Map<string, number>()
  for (const o of outcomes) {
    if (expected(o)) continue
    const key = o.status === -1 ? `transport error: ${o.error}` : `${o.status} ${JSON.stringify(o.body)}`
    seen.set(key, (seen.get(key) ?? 0) + 1)
  }
  for (const [key, n] of seen) console.log(`unexpected answer ×${n}: ${key}`)
}

/** A POST on a TCP connection of its own: the cluster hands new connections to its workers in turn. */
function postOnNewConnection(url: string, method: string, body: unknown, token: string): Promise<{ status: number; body: any }> {
  const payload = JSON.stringify(body)
  return new Promise((resolve, reject) => {
    const req = http.request(
      new URL(`/xrpc/${method}`, url),
      {
        method: 'POST',
        agent: false,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (text += chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
      },
    )
    req.on('error', reject)
    req.end(payload)
  })
}

/** Service log lines at error level or above (pino: 50 = error, 60 = fatal). */
function errorLogs(world: World): string[] {
  return world.service
    .jsonLogs()
    .filter((line) => typeof line.level === 'number' && line.level >= 50)
    .map((line) => JSON.stringify(line))
}

describe.each([1, 2])('concurrency with ATM_WORKERS=%i', (workers) => {
  let world: World
  const HOLD = nsid('createTicketHold')

  beforeAll(async () => {
    world = await startWorld({ workers })
  })
  afterAll(async () => {
    await world?.close()
  })

  /** Mints one token per request first, so that firing is not slowed by signing. */
  async function mintTokens(client: AppClient, method: string, count: number): Promise<string[]> {
    return Promise.all(
      Array.from({ length: count }, () =>
        mintServiceJwt({ keypair: client.identity.keypair, iss: client.did, aud: world.service.serviceDid, lxm: method }),
      ),
    )
  }

  async function availability(eventId: string) {
    const res = await world.app.call(nsid('getTicketAvailability'), { eventId })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body as {
      tiers: Array<{ tierId: string; held: number; sold: number; remaining: number; quantityTotal: number }>
      capacityGroups: Array<{ capacityGroupId: string; held: number; sold: number; remaining: number; totalCapacity: number }>
    }
  }

  // Shared between the 500-hold test and the concurrent-release test.
  let stormTier: { tierId: string; eventId: string } | undefined
  let stormHoldIds: string[] = []

  it('500 concurrent holds of 1 on a tier of 100: exactly 100 granted, 400 InsufficientTicketCapacity', async () => {
    const { tierId, eventId } = await createEventWithTier(world, { quantityTotal: 100, maxPerOrder: 1 })
    stormTier = { tierId, eventId }
    const tokens = await mintTokens(world.app, HOLD, 500)
    const outcomes = await Promise.all(
      tokens.map((token) => settle(xrpc(world.service.url, HOLD, { body: { items: [{ tierId, quantity: 1 }] }, token }))),
    )
    const counts = tally(outcomes)
    const granted = outcomes.filter((o) => o.status === 200)
    const refused = outcomes.filter((o) => o.status === 400 && o.body?.error === 'InsufficientTicketCapacity')
    reportUnexpected(outcomes, (o) => o.status === 200 || refused.includes(o))
    stormHoldIds = granted.map((o) => o.body.holdId as string)
    expect({ granted: granted.length, refused: refused.length, other: outcomes.length - granted.length - refused.length }, JSON.stringify(counts)).toEqual({
      granted: 100,
      refused: 400,
      other: 0,
    })
    expect(new Set(stormHoldIds).size).toBe(100)
    for (const o of granted) expect(o.body.items).toEqual([expect.objectContaining({ tierId, quantity: 1 })])

    const avail = await availability(eventId)
    const tier = avail.tiers.find((t) => t.tierId === tierId)!
    expect({ remaining: tier.remaining, held: tier.held, sold: tier.sold }).toEqual({ remaining: 0, held: 100, sold: 0 })
  })

  it('concurrent releases of the 100 holds: every release answers 200 and the tier is back to 100', async () => {
    expect(stormTier, 'needs the 500-hold test').toBeDefined()
    expect(stormHoldIds).toHaveLength(100)
    const RELEASE = nsid('releaseTicketHold')
    const tokens = await mintTokens(world.app, RELEASE, stormHoldIds.length)
    const outcomes = await Promise.all(
      stormHoldIds.map((holdId, i) => settle(xrpc(world.service.url, RELEASE, { body: { holdId }, token: tokens[i] }))),
    )
    reportUnexpected(outcomes, (o) => o.status === 200)
    expect(tally(outcomes)).toEqual({ '200': 100 })
    for (const o of outcomes) expect(o.body.hold.status).toBe('released')

    const avail = await availability(stormTier!.eventId)
    const tier = avail.tiers.find((t) => t.tierId === stormTier!.tierId)!
    expect({ remaining: tier.remaining, held: tier.held, sold: tier.sold }).toEqual({ remaining: 100, held: 0, sold: 0 })
  })

  it('~300 concurrent mixed holds over two tiers sharing a group of 60: per tier ≤ 40, total ≤ 60, equal to what availability reports', async () => {
    const a = await createEventWithTier(world, { quantityTotal: 40, maxPerOrder: 4, title: 'A' }, { groupCapacity: 60 })
    // Tier B on the same event and group.
    const createdB = await world.app.call(nsid('createTicketTier'), {
      organizerDid: world.organizer.did,
      organizerAssertionJwt: await world.organizer.token(nsid('createTicketTier')),
      event: { eventId: a.eventId },
      capacityGroupId: a.capacityGroupId,
      title: 'B',
      currency: 'usd',
      unitAmount: 2500,
      quantityTotal: 40,
      maxPerOrder: 4,
    })
    expect(createdB.status, JSON.stringify(createdB.body)).toBe(200)
    const tierA = a.tierId
    const tierB = createdB.body.tier.id as string
    const groupId = a.capacityGroupId!

    const random = rng(0x5eed_2024)
    const q = () => 1 + Math.floor(random() * 4)
    const requests = Array.from({ length: 300 }, () => {
      const pick = random()
      if (pick < 1 / 3) return [{ tierId: tierA, quantity: q() }]
      if (pick < 2 / 3) return [{ tierId: tierB, quantity: q() }]
      return [
        { tierId: tierA, quantity: q() },
        { tierId: tierB, quantity: q() },
      ]
    })
    const tokens = await mintTokens(world.app, HOLD, requests.length)
    const outcomes = await Promise.all(
      requests.map((items, i) => settle(xrpc(world.service.url, HOLD, { body: { items }, token: tokens[i] }))),
    )
    const counts = tally(outcomes)
    reportUnexpected(outcomes, (o) => o.status === 200 || (o.status === 400 && o.body?.error === 'InsufficientTicketCapacity'))
    const bad = outcomes.filter((o) => o.status !== 200 && !(o.status === 400 && o.body?.error === 'InsufficientTicketCapacity'))
    expect(bad.length, `every refusal must be InsufficientTicketCapacity: ${JSON.stringify(counts)}`).toBe(0)

    let grantedA = 0
    let grantedB = 0
    for (const [i, o] of outcomes.entries()) {
      if (o.status !== 200) continue
      // Atomic: a granted hold has all the items asked for, as asked.
      expect(o.body.items.map((it: any) => [it.tierId, it.quantity]).sort()).toEqual(requests[i]!.map((it) => [it.tierId, it.quantity]).sort())
      for (const item of requests[i]!) {
        if (item.tierId === tierA) grantedA += item.quantity
        else grantedB += item.quantity
      }
    }
    const summary = { grantedA, grantedB, total: grantedA + grantedB, counts }
    expect(grantedA, JSON.stringify(summary)).toBeLessThanOrEqual(40)
    expect(grantedB, JSON.stringify(summary)).toBeLessThanOrEqual(40)
    expect(grantedA + grantedB, JSON.stringify(summary)).toBeLessThanOrEqual(60)
    expect(grantedA + grantedB, 'some holds must be granted').toBeGreaterThan(0)

    const avail = await availability(a.eventId)
    const a2 = avail.tiers.find((t) => t.tierId === tierA)!
    const b2 = avail.tiers.find((t) => t.tierId === tierB)!
    const group = avail.capacityGroups.find((g) => g.capacityGroupId === groupId)!
    expect({ heldA: a2.held, heldB: b2.held, heldGroup: group.held }, JSON.stringify(summary)).toEqual({
      heldA: grantedA,
      heldB: grantedB,
      heldGroup: grantedA + grantedB,
    })
    expect(group.remaining).toBe(60 - grantedA - grantedB)
    expect(a2.remaining).toBe(Math.min(40 - grantedA, group.remaining))
    expect(b2.remaining).toBe(Math.min(40 - grantedB, group.remaining))
  })

  it('200 concurrent free claims (20 buyers × 10) on a free tier of 50: exactly 50 tickets issued', async () => {
    const CLAIM = nsid('claimFreeTicket')
    const { tierId, eventId } = await createEventWithTier(world, { quantityTotal: 50, unitAmount: 0, maxPerOrder: 10, title: 'Free' })
    const buyers: PlcIdentity[] = await Promise.all(Array.from({ length: 20 }, () => createPlcIdentity(world.plc.url)))
    const aud = world.service.serviceDid
    const prepared = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const buyer = buyers[i % buyers.length]!
        const [token, assertion] = await Promise.all([
          mintServiceJwt({ keypair: world.app.identity.keypair, iss: world.app.did, aud, lxm: CLAIM }),
          mintServiceJwt({ keypair: buyer.keypair, iss: buyer.did, aud, lxm: CLAIM }),
        ])
        return { token, body: { tierId, quantity: 1, buyerDid: buyer.did, buyerAssertionJwt: assertion } }
      }),
    )
    const outcomes = await Promise.all(prepared.map(({ token, body }) => settle(xrpc(world.service.url, CLAIM, { body, token }))))
    const counts = tally(outcomes)
    const granted = outcomes.filter((o) => o.status === 200)
    const refused = outcomes.filter((o) => o.status === 400 && o.body?.error === 'InsufficientTicketCapacity')
    reportUnexpected(outcomes, (o) => o.status === 200 || refused.includes(o))
    expect({ granted: granted.length, refused: refused.length }, JSON.stringify(counts)).toEqual({ granted: 50, refused: 150 })
    const ticketIds = granted.flatMap((o) => (o.body.tickets as Array<{ ticketId: string }>).map((t) => t.ticketId))
    expect(ticketIds).toHaveLength(50)
    expect(new Set(ticketIds).size).toBe(50)

    const avail = await availability(eventId)
    const tier = avail.tiers.find((t) => t.tierId === tierId)!
    expect({ sold: tier.sold, held: tier.held, remaining: tier.remaining }).toEqual({ sold: 50, held: 0, remaining: 0 })

    // Issued tickets as the organizer's app lists them: exactly these 50.
    const listed: string[] = []
    let cursor: string | undefined
    do {
      const page = await world.app.call(nsid('listOrganizerTickets'), { eventId, limit: 100, cursor })
      expect(page.status, JSON.stringify(page.body)).toBe(200)
      listed.push(...page.body.tickets.map((t: { ticketId: string }) => t.ticketId))
      cursor = page.body.cursor
    } while (cursor)
    expect(listed.sort()).toEqual([...ticketIds].sort())
  })

  it('20 concurrent holds with one idempotencyKey: capacity taken once, one holdId, the rest reused or IdempotencyKeyInUse', async () => {
    const { tierId, eventId } = await createEventWithTier(world, { quantityTotal: 100, maxPerOrder: 10 })
    const body = { items: [{ tierId, quantity: 3 }], idempotencyKey: `idem-${workers}-${Date.now()}` }
    const tokens = await mintTokens(world.app, HOLD, 20)
    const outcomes = await Promise.all(tokens.map((token) => settle(xrpc(world.service.url, HOLD, { body, token }))))
    const counts = tally(outcomes)
    const ok = outcomes.filter((o) => o.status === 200)
    const inUse = outcomes.filter((o) => o.status === 409 && o.body?.error === 'IdempotencyKeyInUse')
    reportUnexpected(outcomes, (o) => o.status === 200 || inUse.includes(o))
    expect(ok.length + inUse.length, JSON.stringify(counts)).toBe(20)
    expect(ok.length, JSON.stringify(counts)).toBeGreaterThanOrEqual(1)
    expect(new Set(ok.map((o) => o.body.holdId)).size, JSON.stringify(ok.map((o) => o.body.holdId))).toBe(1)
    expect(ok.filter((o) => o.body.reused !== true), 'exactly one first answer').toHaveLength(1)

    const avail = await availability(eventId)
    const tier = avail.tiers.find((t) => t.tierId === tierId)!
    expect({ held: tier.held, remaining: tier.remaining }).toEqual({ held: 3, remaining: 97 })

    // A later retry still answers the same hold, reused.
    const retry = await world.app.call(HOLD, body)
    expect(retry.status, JSON.stringify(retry.body)).toBe(200)
    expect(retry.body).toMatchObject({ holdId: ok[0]!.body.holdId, reused: true })
  })

  it('a token spent on one worker is refused by every worker (JwtReplayed)', async () => {
    // The service is healthy once one worker listens; the others may still be starting.
    const listening = () => world.service.jsonLogs().filter((line) => line.msg === 'ATM Tickets listening').length
    for (let attempt = 0; attempt < 250 && listening() < workers; attempt++) await new Promise((resolve) => setTimeout(resolve, 20))
    expect(listening()).toBe(workers)
    const { tierId } = await createEventWithTier(world, { quantityTotal: 100 })
    const [token] = await mintTokens(world.app, HOLD, 1)
    const body = { items: [{ tierId, quantity: 1 }] }
    const first = await postOnNewConnection(world.service.url, HOLD, body, token!)
    expect(first.status, JSON.stringify(first.body)).toBe(200)
    const logLinesBefore = world.service.jsonLogs().length
    const replays: Array<{ status: number; body: any }> = []
    for (let index = 0; index < 8; index++) replays.push(await postOnNewConnection(world.service.url, HOLD, body, token!))
    for (const replay of replays) expect({ status: replay.status, error: replay.body.error }).toEqual({ status: 401, error: 'JwtReplayed' })
    // Each refusal is logged by the process that answered it: every worker refused the token.
    const refusals = () =>
      world.service
        .jsonLogs()
        .slice(logLinesBefore)
        .filter((line) => line.msg === 'request' && line.status === 401 && line.path === `/xrpc/${HOLD}`)
        .map((line) => line.pid)
    // A line may reach the test's pipe a moment after its answer did.
    for (let attempt = 0; attempt < 100 && refusals().length < 8; attempt++) await new Promise((resolve) => setTimeout(resolve, 20))
    const refusedBy = refusals()
    expect(refusedBy).toHaveLength(8)
    expect(new Set(refusedBy).size).toBe(workers)
  })

  it('logged no internal errors (no 5xx, no SQLITE_BUSY, no worker deaths)', () => {
    const errors = errorLogs(world)
    expect(errors, errors.slice(0, 10).join('\n')).toEqual([])
    expect(world.service.logs()).not.toMatch(/SQLITE_BUSY|worker died/)
  })
})
