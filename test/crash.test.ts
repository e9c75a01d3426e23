// CONTRACT §5.1 (never oversold) and §5.6 (nothing lost) across a process crash: `kill -9` of
// the whole service (primary and workers) while writes stream in, restart on the same database
// (its SQLite file, or its PostgreSQL database), then check every acknowledged write through the
// public interface and the database itself.
// And a graceful stop (SIGTERM) while requests are in flight: exit code 0, and no request the
// service accepted is left without its answer.
//
// Timing is never asserted: the crash comes after ~1.5 s of load or once two thirds of the
// capacity were acknowledged, whichever is first, so it lands while grants are still going on.
import Sqlite from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { dbAll } from './helpers/db.js'
import { settle, type Outcome } from './helpers/expect.js'
import { rng } from './helpers/random.js'
import { createPlcIdentity, mintServiceJwt, onPostgres, xrpc, type PlcIdentity } from './helpers/index.js'
import { createEventWithTier, nsid, startWorld, type World } from './helpers/world.js'
import { paymentIdOf, submitCheckout } from './helpers/checkout.js'


function describeOutcome(o: Outcome): string {
  return o.status === -1 ? `transport error: ${o.error}` : o.status === 200 ? '200' : `${o.status} ${o.body?.error ?? JSON.stringify(o.body)}`
}

function tally(keys: string[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const key of keys) counts[key] = (counts[key] ?? 0) + 1
  return counts
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves after `ms`, or earlier once `done()` is true (polled). */
async function until(ms: number, done: () => boolean): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline && !done()) await sleep(10)
}

/** Runs `fn` over `items`, `width` at a time. */
async function pool<T, R>(items: T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) {
        const index = next++
        results[index] = await fn(items[index]!)
      }
    }),
  )
  return results
}

const IN_FLIGHT = 16
const HOLD = nsid('createTicketHold')
const CLAIM = nsid('claimFreeTicket')

describe.each([1, 2])('crash safety with ATM_WORKERS=%i', (workers) => {
  let world: World

  beforeAll(async () => {
    world = await startWorld({ workers })
  })
  afterAll(async () => {
    await world?.close()
  })

  async function ensureRunning(): Promise<void> {
    if (!world.service.running()) await world.service.restart()
  }

  async function tierUsage(eventId: string, tierId: string) {
    const res = await world.app.call(nsid('getTicketAvailability'), { eventId })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body.tiers.find((t: { tierId: string }) => t.tierId === tierId) as {
      quantityTotal: number
      held: number
      sold: number
      remaining: number
    }
  }

  /**
   * Sends requests from IN_FLIGHT lanes until two thirds of `total` is acknowledged (or 1.5 s
   * passed), then kill -9s the service mid-stream; answers are sorted by before and after.
   */
  async function streamThenKill(total: number, send: () => Promise<{ res: Outcome; units: number }>) {
    let ackedUnits = 0
    const beforeKill: string[] = []
    const afterKill: string[] = []
    let firing = true
    let killing = false
    const lane = async () => {
      while (firing) {
        const { res, units } = await send()
        ackedUnits += units
        ;(killing ? afterKill : beforeKill).push(describeOutcome(res))
        // Once the service is gone, don't spin on refused connections.
        if (res.status === -1) await sleep(20)
      }
    }
    const lanes = Array.from({ length: IN_FLIGHT }, lane)
    await until(1500, () => ackedUnits >= (total * 2) / 3)
    killing = true
    await world.service.kill9()
    firing = false
    await Promise.all(lanes)
    return { beforeKill, afterKill, ackedUnits }
  }

  interface TierFile {
    tier: { quantityTotal: number; held: number; sold: number }
    tickets: number
    countedUnits: number
    summary: string
  }

  /**
   * Stops the service cleanly, then reads its database: on SQLite the file's integrity and
   * foreign keys, and on both the tier's counters against its rows (sold = its tickets, held =
   * its counted hold items, together at most the total). `more` runs further checks.
   */
  async function checkDatabaseAfterStop(tierId: string, more: (file: TierFile) => Promise<void>): Promise<void> {
    expect(await world.service.stop()).toBe(0)
    // kill -9 hit the processes that write a SQLite file. A PostgreSQL server is not killed with
    // them, and checks foreign keys as each row is written.
    if (!onPostgres()) {
      const db = new Sqlite(world.service.dbPath, { readonly: true, fileMustExist: true })
      try {
        expect(db.pragma('integrity_check', { simple: true })).toBe('ok')
        expect(db.pragma('foreign_key_check')).toEqual([])
      } finally {
        db.close()
      }
    }
    const one = async <Row>(text: string): Promise<Row> => (await dbAll<Row>(world.service, text, [tierId]))[0]!
    const tier = await one<TierFile['tier']>('SELECT quantityTotal, held, sold FROM tier WHERE id = ?')
    const { n: tickets } = await one<{ n: number }>('SELECT COUNT(*) AS n FROM ticket WHERE tierId = ?')
    const { units: countedUnits } = await one<{ units: number }>('SELECT COALESCE(SUM(quantity), 0) AS units FROM holdItem WHERE tierId = ? AND counted = 1')
    const summary = JSON.stringify({ tier, tickets, countedUnits })
    expect(tier.held, `tier.held must equal the counted hold items: ${summary}`).toBe(countedUnits)
    expect(tier.sold, `tier.sold must equal its tickets: ${summary}`).toBe(tickets)
    expect(tier.held + tier.sold, summary).toBeLessThanOrEqual(tier.quantityTotal)
    await more({ tier, tickets, countedUnits, summary })
  }

  it('kill -9 during a stream of holds: every acknowledged hold survives, nothing oversold', async () => {
    await ensureRunning()
    const TOTAL = 300
    const { tierId, eventId } = await createEventWithTier(world, { quantityTotal: TOTAL, maxPerOrder: 3 })
    const random = rng(0xc4a5 + workers)
    const acked: Array<{ holdId: string; quantity: number }> = []
    const { beforeKill, afterKill, ackedUnits } = await streamThenKill(TOTAL, async () => {
      const quantity = 1 + Math.floor(random() * 3)
      const res = await settle(world.app.call(HOLD, { items: [{ tierId, quantity }] }))
      if (res.status !== 200) return { res, units: 0 }
      acked.push({ holdId: res.body.holdId, quantity })
      return { res, units: quantity }
    })
    console.log(`[workers=${workers}] holds before kill -9:`, tally(beforeKill), 'acknowledged units', ackedUnits, '; answers around the kill:', tally(afterKill))

    // Before the crash, every answer was a real one: granted, or refused for capacity.
    const unexpected = beforeKill.filter((k) => k !== '200' && k !== '400 InsufficientTicketCapacity')
    expect(unexpected, JSON.stringify(tally(beforeKill))).toEqual([])
    expect(acked.length, 'the crash must come while holds are being granted').toBeGreaterThan(0)

    await world.service.restart()
    const checks = await pool(acked, IN_FLIGHT, async ({ holdId }) => {
      const res = await world.app.call(nsid('getTicketHold'), { holdId })
      return { holdId, status: res.status, holdStatus: res.body?.hold?.status as string | undefined, body: res.body }
    })
    const lost = checks.filter((c) => c.status !== 200 || c.holdStatus !== 'active')
    expect(lost.map((c) => `${c.holdId}: ${c.status} ${c.holdStatus ?? JSON.stringify(c.body)}`), 'acknowledged holds lost in the crash').toEqual([])
    for (const [i, c] of checks.entries()) {
      expect(c.body.hold.items).toEqual([expect.objectContaining({ tierId, quantity: acked[i]!.quantity })])
    }

    const usage = await tierUsage(eventId, tierId)
    const summary = JSON.stringify({ usage, ackedUnits, acked: acked.length })
    expect(usage.held + usage.sold, summary).toBeLessThanOrEqual(TOTAL)
    expect(usage.held, summary).toBeGreaterThanOrEqual(ackedUnits)
    expect(usage.remaining, summary).toBe(TOTAL - usage.held - usage.sold)

    // The database itself, after a clean stop.
    await checkDatabaseAfterStop(tierId, async (file) => {
      expect(file.tier.held, file.summary).toBeGreaterThanOrEqual(ackedUnits)
      // Atomic: every hold row has its item, every item its hold.
      const orphans = await dbAll(
        world.service,
        `SELECT (SELECT COUNT(*) FROM hold h WHERE h.eventId = ? AND NOT EXISTS (SELECT 1 FROM holdItem i WHERE i.holdId = h.id)) AS holdsWithoutItems,
                (SELECT COUNT(*) FROM holdItem i WHERE i.tierId = ? AND NOT EXISTS (SELECT 1 FROM hold h WHERE h.id = i.holdId)) AS itemsWithoutHold`,
        [eventId, tierId],
      )
      expect(orphans).toEqual([{ holdsWithoutItems: 0, itemsWithoutHold: 0 }])
    })
  })

  it('kill -9 during a stream of free claims: every acknowledged ticket is listed after restart, nothing oversold', async () => {
    await ensureRunning()
    const TOTAL = 300
    const { tierId, eventId } = await createEventWithTier(world, { quantityTotal: TOTAL, unitAmount: 0, maxPerOrder: 100, title: 'Free' })
    // 8 buyers × 100 per buyer: the per-buyer limit is never what stops a claim.
    const buyers: PlcIdentity[] = await Promise.all(Array.from({ length: 8 }, () => createPlcIdentity(world.plc.url)))
    const random = rng(0xf4ee + workers)
    const acked: Array<{ claimId: string; buyerDid: string; ticketIds: string[] }> = []
    let counter = 0
    const wrongCounts: string[] = []
    const { beforeKill, afterKill, ackedUnits } = await streamThenKill(TOTAL, async () => {
      const buyer = buyers[counter++ % buyers.length]!
      const quantity = 1 + Math.floor(random() * 3)
      const aud = world.service.serviceDid
      const [token, assertion] = await Promise.all([
        mintServiceJwt({ keypair: world.app.identity.keypair, iss: world.app.did, aud, lxm: CLAIM }),
        mintServiceJwt({ keypair: buyer.keypair, iss: buyer.did, aud, lxm: CLAIM }),
      ])
      const body = { tierId, quantity, buyerDid: buyer.did, buyerAssertionJwt: assertion }
      const res = await settle(xrpc(world.service.url, CLAIM, { body, token }))
      if (res.status !== 200) return { res, units: 0 }
      const ticketIds = (res.body.tickets as Array<{ ticketId: string }>).map((t) => t.ticketId)
      if (ticketIds.length !== quantity) wrongCounts.push(`${res.body.claimId}: asked ${quantity}, got ${ticketIds.length}`)
      acked.push({ claimId: res.body.claimId, buyerDid: buyer.did, ticketIds })
      return { res, units: quantity }
    })
    console.log(`[workers=${workers}] claims before kill -9:`, tally(beforeKill), 'acknowledged tickets', ackedUnits, '; answers around the kill:', tally(afterKill))

    const unexpected = beforeKill.filter((k) => k !== '200' && k !== '400 InsufficientTicketCapacity')
    expect(unexpected, JSON.stringify(tally(beforeKill))).toEqual([])
    expect(acked.length, 'the crash must come while claims are being granted').toBeGreaterThan(0)
    expect(wrongCounts, 'a claim answers exactly the tickets asked for').toEqual([])

    await world.service.restart()
    const listedByBuyer = new Map<string, Set<string>>()
    for (const buyer of buyers) {
      const listed = new Set<string>()
      let cursor: string | undefined
      do {
        const page = await world.app.call(nsid('listBuyerTickets'), { buyerDid: buyer.did, limit: 100, cursor })
        expect(page.status, JSON.stringify(page.body)).toBe(200)
        for (const t of page.body.tickets as Array<{ ticketId: string; tierId: string; status: string }>) {
          if (t.tierId === tierId) listed.add(t.ticketId)
        }
        cursor = page.body.cursor
      } while (cursor)
      listedByBuyer.set(buyer.did, listed)
    }
    const missing = acked.flatMap((c) => c.ticketIds.filter((id) => !listedByBuyer.get(c.buyerDid)!.has(id)).map((id) => `${c.claimId}/${id}`))
    expect(missing, 'acknowledged tickets lost in the crash').toEqual([])
    const listedTotal = [...listedByBuyer.values()].reduce((n, s) => n + s.size, 0)

    const usage = await tierUsage(eventId, tierId)
    const summary = JSON.stringify({ usage, ackedUnits, listedTotal })
    expect(usage.sold + usage.held, summary).toBeLessThanOrEqual(TOTAL)
    expect(usage.sold, summary).toBeGreaterThanOrEqual(ackedUnits)
    expect(usage.sold, `tickets listed must be the tickets counted as sold: ${summary}`).toBe(listedTotal)

    await checkDatabaseAfterStop(tierId, async (file) => {
      const [claims] = await dbAll<{ units: number }>(world.service, 'SELECT COALESCE(SUM(quantity), 0) AS units FROM claim WHERE tierId = ?', [tierId])
      expect(file.tier.sold, `${file.summary} claims ${claims!.units}`).toBe(claims!.units)
      // Atomic: every claim has exactly its quantity of tickets.
      const torn = await dbAll(
        world.service,
        `SELECT c.id, c.quantity, (SELECT COUNT(*) FROM ticket t WHERE t.claimId = c.id) AS tickets
           FROM claim c WHERE c.tierId = ? AND c.quantity <> (SELECT COUNT(*) FROM ticket t WHERE t.claimId = c.id)`,
        [tierId],
      )
      expect(torn).toEqual([])
    })
  })

  it('kill -9 during a stream of checkout payments: every acknowledged payment keeps its tickets, sold + held never above the total', async () => {
    await ensureRunning()
    const TOTAL = 300
    const { tierId, eventId } = await createEventWithTier(world, { quantityTotal: TOTAL, maxPerOrder: 2 })
    const random = rng(0x9a7 + workers)
    // Holds first (all of the capacity), then a stream of payments for them.
    const holds: Array<{ holdId: string; url: string; quantity: number }> = []
    for (let units = 0; units < TOTAL; ) {
      const quantity = Math.min(TOTAL - units, 1 + Math.floor(random() * 2))
      const res = await world.app.call(HOLD, { items: [{ tierId, quantity }] })
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      holds.push({ holdId: res.body.holdId, url: res.body.url, quantity })
      units += quantity
    }
    let nextHold = 0
    const acked: Array<{ holdId: string; paymentId: string; quantity: number }> = []
    const { beforeKill, afterKill, ackedUnits } = await streamThenKill(TOTAL, async () => {
      const hold = holds[nextHold++]
      if (!hold) return { res: { status: -1, body: undefined, headers: new Headers(), error: 'no holds left' }, units: 0 }
      let res: Outcome
      try {
        const answer = await submitCheckout(hold.url, { action: 'pay', email: 'crash@example.com', cardNumber: '4242424242424242' })
        res = { status: answer.status === 303 ? 200 : answer.status, body: { location: answer.location }, headers: new Headers() }
      } catch (err) {
        return { res: { status: -1, body: undefined, headers: new Headers(), error: (err as Error).message }, units: 0 }
      }
      if (res.status !== 200) return { res, units: 0 }
      acked.push({ holdId: hold.holdId, paymentId: paymentIdOf(res.body.location), quantity: hold.quantity })
      return { res, units: hold.quantity }
    })
    console.log(`[workers=${workers}] payments before kill -9:`, tally(beforeKill), 'acknowledged units', ackedUnits, '; answers around the kill:', tally(afterKill))
    expect(beforeKill.filter((k) => k !== '200'), JSON.stringify(tally(beforeKill))).toEqual([])
    expect(acked.length, 'the crash must come while payments are being made').toBeGreaterThan(0)

    await world.service.restart()
    const checks = await pool(acked, IN_FLIGHT, async ({ holdId, paymentId, quantity }) => {
      const hold = await world.app.call(nsid('getTicketHold'), { holdId })
      const tickets = await world.app.call(nsid('listBuyerTickets'), { paymentId })
      const problems: string[] = []
      if (hold.body?.hold?.status !== 'completed' || hold.body.hold.paymentId !== paymentId) problems.push(`hold ${JSON.stringify(hold.body)}`)
      if (tickets.body?.tickets?.length !== quantity) problems.push(`tickets ${tickets.body?.tickets?.length} of ${quantity}`)
      return problems.length ? `${holdId}: ${problems.join('; ')}` : undefined
    })
    expect(checks.filter(Boolean), 'acknowledged payments lost in the crash').toEqual([])

    const usage = await tierUsage(eventId, tierId)
    const summary = JSON.stringify({ usage, ackedUnits })
    expect(usage.sold, summary).toBeGreaterThanOrEqual(ackedUnits)
    expect(usage.held + usage.sold, summary).toBeLessThanOrEqual(TOTAL)

    await checkDatabaseAfterStop(tierId, async () => {
      // Atomic: a completed hold has one payment and all its tickets; no other hold has either.
      const holds = await dbAll<{ id: string; status: string; payments: number; tickets: number; units: number }>(
        world.service,
        `SELECT h.id, h.status,
                (SELECT COUNT(*) FROM payment p WHERE p.holdId = h.id) AS payments,
                (SELECT COUNT(*) FROM ticket t WHERE t.holdId = h.id) AS tickets,
                (SELECT SUM(quantity) FROM holdItem i WHERE i.holdId = h.id) AS units
           FROM hold h WHERE h.eventId = ?`,
        [eventId],
      )
      const torn = holds.filter((h) =>
        h.status === 'completed' ? h.payments !== 1 || h.tickets !== h.units : h.payments !== 0 || h.tickets !== 0,
      )
      expect(torn).toEqual([])
    })
  })

  it('graceful stop while requests are in flight: exit code 0, and every request the service took got a real answer', async () => {
    await ensureRunning()
    const { tierId } = await createEventWithTier(world, { quantityTotal: 100_000, maxPerOrder: 3 })
    const random = rng(0x57e9 + workers)
    const sent: Array<{ body: { items: Array<{ tierId: string; quantity: number }>; idempotencyKey: string }; outcome: Outcome }> = []
    let firing = true
    let stopping = false
    let okCount = 0
    let counter = 0
    const afterSigterm: string[] = []

    const lane = async () => {
      while (firing) {
        const body = { items: [{ tierId, quantity: 1 + Math.floor(random() * 3) }], idempotencyKey: `graceful-${workers}-${Date.now()}-${counter++}` }
        const outcome = await settle(world.app.call(HOLD, body))
        if (outcome.status === 200) okCount++
        sent.push({ body, outcome })
        if (stopping) afterSigterm.push(describeOutcome(outcome))
        // Once the service is gone, don't spin on refused connections.
        if (outcome.status === -1) await sleep(20)
      }
    }
    const lanes = Array.from({ length: IN_FLIGHT }, lane)
    await until(1000, () => okCount >= 40)
    stopping = true
    const exitCode = await world.service.stop()
    firing = false
    await Promise.all(lanes)
    const counts = tally(sent.map((s) => describeOutcome(s.outcome)))
    console.log(`[workers=${workers}] graceful stop: all answers`, counts, '; answers that came after SIGTERM:', tally(afterSigterm))

    expect(exitCode, world.service.logs().split('\n').slice(-20).join('\n')).toBe(0)
    expect(world.service.orphansAfterStop(), 'workers left running after the primary exited').toBe(false)
    // Whatever was answered was answered for real: no 5xx on the way down.
    const answered = sent.filter((s) => s.outcome.status !== -1)
    expect(answered.filter((s) => s.outcome.status !== 200).map((s) => describeOutcome(s.outcome)), JSON.stringify(counts)).toEqual([])
    expect(okCount).toBeGreaterThan(0)

    // A clean stop finishes or gives back every key it took: none is left pending in the database
    // (a retry would take such a key over at once, so only the database shows it).
    const pending = await dbAll(world.service, "SELECT key FROM idempotency WHERE state = 'pending' AND key LIKE ?", [`graceful-${workers}-%`])
    expect(pending, 'keys left pending by a graceful stop').toEqual([])

    // Which unanswered requests had the service taken? Retry each with its idempotencyKey:
    // a stored answer (reused) means the service did the work and then dropped the connection
    // without answering.
    await world.service.restart()
    const unanswered = sent.filter((s) => s.outcome.status === -1)
    const retried = await pool(unanswered, IN_FLIGHT, async (s) => ({ s, res: await settle(world.app.call(HOLD, s.body)) }))
    const dropped = retried.filter(({ res }) => !(res.status === 200 && res.body.reused !== true))
    expect(
      dropped.map(({ s, res }) => `${s.body.idempotencyKey}: first ${describeOutcome(s.outcome)}, retry ${describeOutcome(res)}${res.body?.reused ? ' (reused)' : ''}`),
      'requests the service took but left without an answer',
    ).toEqual([])
    // And the answered ones are remembered across the stop: a retry replays the same hold.
    const replays = await pool(
      answered.filter((s) => s.outcome.status === 200),
      IN_FLIGHT,
      async (s) => ({ s, res: await settle(world.app.call(HOLD, s.body)) }),
    )
    const notReplayed = replays.filter(({ s, res }) => !(res.status === 200 && res.body.reused === true && res.body.holdId === s.outcome.body.holdId))
    expect(notReplayed.map(({ s, res }) => `${s.body.idempotencyKey}: ${describeOutcome(res)} ${JSON.stringify(res.body)}`)).toEqual([])
  })

  it('logged no internal errors across crashes and restarts', () => {
    const errors = world.service
      .jsonLogs()
      .filter((line) => typeof line.level === 'number' && line.level >= 50)
      .map((line) => JSON.stringify(line))
    expect(errors, errors.slice(0, 10).join('\n')).toEqual([])
  })
})
