// Holds that run out are reported (`ticket.hold.expired`, CONTRACT §6, issue 7 item 7): the
// sweeper in the real service marks them expired, keeps the capacity counters exact, and
// sends the event by webhook, checked here as the official client checks it. What readers
// answer about such a hold does not change: getTicketHold and releaseTicketHold say
// `expired`, availability counts its capacity as free, before and after the sweep.
//
// Waits are bounded by the promise itself (the event within a minute of expiry), never timed.
import Sqlite from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { dbAll } from './helpers/db.js'
import { expectOk, type Body } from './helpers/expect.js'
import { onPostgres, type AppClient, type ServiceHandle } from './helpers/index.js'
import { readOutbox, startEventReceiver, verifyWebhook, waitUntil, type EventReceiver } from './helpers/receiver.js'
import { compiled, compileOnly, explain } from './helpers/plans.js'
import { createEventWithTier, newApp, nsid, registerApp, startWorld, type World } from './helpers/world.js'
import { OUTBOX_QUERIES } from '../src/delivery/deliverer.js'
import { EXPIRY_QUERIES } from '../src/tickets/expiry.js'

const FAST = {
  ATM_HOLD_SWEEP_MS: '200',
  ATM_DELIVERY_RETRY_BASE_MS: '200',
  ATM_DELIVERY_RETRY_MAX_MS: '1000',
  ATM_DELIVERY_POLL_MS: '100',
}

// Short enough to wait for; long enough that a hold made by a test is not gone before its next request.
const HOLD_TTL_SECONDS = 2

async function webhookApp(world: Pick<World, 'plc' | 'service'>, url: string): Promise<{ app: AppClient; secret: string }> {
  const app = await newApp(world)
  const res = expectOk(await registerApp(world.service, { did: app.did, webhookUrl: url }))
  return { app, secret: res.webhookSecret }
}

async function holdRow(service: ServiceHandle, holdId: string) {
  return (await dbAll<{ status: string }>(service, 'SELECT status FROM hold WHERE id = ?', [holdId]))[0]!
}

async function counters(service: ServiceHandle, tierId: string) {
  const [tier] = await dbAll<{ held: number; sold: number; capacityGroupId: string | null }>(service, 'SELECT held, sold, capacityGroupId FROM tier WHERE id = ?', [tierId])
  const group = tier!.capacityGroupId
    ? (await dbAll<{ held: number }>(service, 'SELECT held FROM capacityGroup WHERE id = ?', [tier!.capacityGroupId]))[0]!
    : null
  const [counted] = await dbAll<{ n: number }>(service, 'SELECT COUNT(*) AS n FROM holdItem WHERE tierId = ? AND counted = 1', [tierId])
  return { tierHeld: tier!.held, groupHeld: group?.held ?? null, countedItems: counted!.n }
}

function expiredEvents(receiver: EventReceiver, secret: string) {
  return receiver.deliveries
    .filter((d) => d.status === 200)
    .map((d) => verifyWebhook(d, secret))
    .filter((event) => event.type === 'ticket.hold.expired')
}

describe('the hold-expiry sweeper', () => {
  let world: World
  let receiver: EventReceiver
  let app: AppClient
  let secret: string

  beforeAll(async () => {
    world = await startWorld({ workers: 1, holdTtlSeconds: HOLD_TTL_SECONDS, env: FAST })
    receiver = await startEventReceiver()
    ;({ app, secret } = await webhookApp(world, `${receiver.origin}/hook`))
  })
  afterAll(async () => {
    await receiver?.close()
    await world?.close()
  })

  it('reports an expired hold with ticket.hold.expired: eventId, holdId and the hold as getTicketHold answers it', async () => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 5, unitAmount: 1200 }, { app, groupCapacity: 4 })
    const hold = expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 2 }], customerEmail: 'buyer@example.com' }))

    const expiresAt = Date.parse(hold.expiresAt)
    await waitUntil(
      'ticket.hold.expired within a minute of expiry',
      () => expiredEvents(receiver, secret).some((e) => e.data.holdId === hold.holdId),
      expiresAt + 60_000 - Date.now(),
    )
    const event = expiredEvents(receiver, secret).find((e) => e.data.holdId === hold.holdId)!
    expect(event.environment).toBe('test')
    expect(event.data.eventId).toBe(eventId)

    const answered = expectOk(await app.call(nsid('getTicketHold'), { holdId: hold.holdId }))
    expect(answered.hold.status).toBe('expired')
    expect(event.data.hold).toEqual(answered.hold)

    // Marked and uncounted, exactly once.
    expect((await holdRow(world.service, hold.holdId)).status).toBe('expired')
    expect(await counters(world.service, tierId)).toEqual({ tierHeld: 0, groupHeld: 0, countedItems: 0 })
    const availability = expectOk(await app.call(nsid('getTicketAvailability'), { eventId }))
    expect(availability.tiers[0]).toMatchObject({ held: 0, remaining: 4 })

    // Releasing it answers as it did before the sweep: expired, nothing given back twice.
    const released = expectOk(await app.call(nsid('releaseTicketHold'), { holdId: hold.holdId, reason: 'late' }))
    expect(released.hold.status).toBe('expired')
    expect(released.availability).toEqual([{ tierId, remaining: 4 }])
    expect(await counters(world.service, tierId)).toEqual({ tierHeld: 0, groupHeld: 0, countedItems: 0 })
    expect((await holdRow(world.service, hold.holdId)).status).toBe('expired')

    const rows = await readOutbox(world.service, "type = 'ticket.hold.expired' AND appDid = ?", [app.did])
    expect(rows.filter((row) => JSON.parse(row.payload).data.holdId === hold.holdId)).toHaveLength(1)
  })

  it('a hold released before it ran out is not reported as expired', async () => {
    const { tierId } = await createEventWithTier(world, { quantityTotal: 5 }, { app })
    const hold = expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 1 }] }))
    expect(expectOk(await app.call(nsid('releaseTicketHold'), { holdId: hold.holdId })).hold.status).toBe('released')
    // A later hold on the same tier runs out and is reported; by then the released one was seen too.
    const later = expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 1 }] }))
    await waitUntil('the later hold reported', () => expiredEvents(receiver, secret).some((e) => e.data.holdId === later.holdId))
    expect(expiredEvents(receiver, secret).some((e) => e.data.holdId === hold.holdId)).toBe(false)
    expect((await holdRow(world.service, hold.holdId)).status).toBe('released')
  })

  it('sweeps the holds of an app without delivery too, recording no event for it', async () => {
    const { tierId } = await createEventWithTier(world, { quantityTotal: 5 })
    const hold = expectOk(await world.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 3 }] }))
    await waitUntil('the hold marked expired', async () => (await holdRow(world.service, hold.holdId)).status === 'expired')
    expect(await counters(world.service, tierId)).toEqual({ tierHeld: 0, groupHeld: null, countedItems: 0 })
    expect(await readOutbox(world.service, 'appDid = ?', [world.app.did])).toEqual([])
  })
})

describe('the sweeper and writers that reaped first', () => {
  it('a hold whose items a later hold already uncounted is marked expired without uncounting again', async () => {
    // A sweep only at start and then once a minute: the second hold reaps the first one's
    // items long before a sweep comes; the restart's sweep then finds both holds.
    const world = await startWorld({ workers: 1, holdTtlSeconds: HOLD_TTL_SECONDS, env: { ...FAST, ATM_HOLD_SWEEP_MS: '60000' } })
    const receiver = await startEventReceiver()
    try {
      const { app, secret } = await webhookApp(world, `${receiver.origin}/hook`)
      const { tierId } = await createEventWithTier(world, { quantityTotal: 5 }, { app, groupCapacity: 5 })
      const first = expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 4 }] }))
      await waitUntil('the first hold to run out', () => Date.now() > Date.parse(first.expiresAt) + 50)
      // Only 1 left unless the first hold's 4 are free again: the writer reaps them.
      const second = expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 5 }] }))
      expect(await counters(world.service, tierId)).toEqual({ tierHeld: 5, groupHeld: 5, countedItems: 1 })

      await waitUntil('the second hold to run out', () => Date.now() > Date.parse(second.expiresAt) + 50)
      expect(await world.service.stop()).toBe(0)
      await world.service.restart()
      await waitUntil('both holds reported', () => {
        const ids = expiredEvents(receiver, secret).map((e) => e.data.holdId)
        return ids.includes(first.holdId) && ids.includes(second.holdId)
      })
      expect(await counters(world.service, tierId)).toEqual({ tierHeld: 0, groupHeld: 0, countedItems: 0 })
      expect((await holdRow(world.service, first.holdId)).status).toBe('expired')
      expect((await holdRow(world.service, second.holdId)).status).toBe('expired')
    } finally {
      await receiver.close()
      await world.close()
    }
  })
})

describe('two workers sweeping one database', () => {
  it('report each expired hold once, in batches, and leave the counters exact', async () => {
    const world = await startWorld({ workers: 2, holdTtlSeconds: HOLD_TTL_SECONDS, env: FAST })
    const receiver = await startEventReceiver()
    try {
      const { app, secret } = await webhookApp(world, `${receiver.origin}/hook`)
      const { tierId } = await createEventWithTier(world, { quantityTotal: 100 }, { app, groupCapacity: 100 })
      // More than one sweep batch.
      const holds: Body[] = await Promise.all(
        Array.from({ length: 40 }, () => app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 2 }] }).then(expectOk)),
      )
      const holdIds = holds.map((hold) => hold.holdId as string).sort()
      await waitUntil('every hold reported', () => new Set(expiredEvents(receiver, secret).map((e) => e.data.holdId)).size === holds.length)

      const rows = await readOutbox(world.service, "type = 'ticket.hold.expired' AND appDid = ?", [app.did])
      expect(rows.map((row) => JSON.parse(row.payload).data.holdId).sort(), 'one event per hold').toEqual(holdIds)
      expect(await counters(world.service, tierId)).toEqual({ tierHeld: 0, groupHeld: 0, countedItems: 0 })
      const statuses = await dbAll<{ status: string; n: number }>(
        world.service,
        `SELECT status, COUNT(*) AS n FROM hold WHERE id IN (${holdIds.map(() => '?').join(',')}) GROUP BY status`,
        holdIds,
      )
      expect(statuses).toEqual([{ status: 'expired', n: holds.length }])
    } finally {
      await receiver.close()
      await world.close()
    }
  })
})

// EXPLAIN QUERY PLAN and its wording are SQLite's.
describe.skipIf(onPostgres())('query plans of the background work', () => {
  let world: World
  let db: Sqlite.Database

  beforeAll(async () => {
    world = await startWorld({ workers: 1, holdTtlSeconds: HOLD_TTL_SECONDS, env: FAST })
    const receiver = await startEventReceiver()
    const { app } = await webhookApp(world, `${receiver.origin}/hook`)
    const { tierId } = await createEventWithTier(world, { quantityTotal: 10 }, { app })
    for (let n = 0; n < 3; n++) expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 1 }] }))
    expect(await world.service.stop()).toBe(0)
    await receiver.close()
    db = new Sqlite(world.service.dbPath, { readonly: true, fileMustExist: true })
  })
  afterAll(async () => {
    db?.close()
    await world?.close()
  })

  // The sweeper's and the deliverer's statements as they run them (their exported builders,
  // compiled as the service compiles them).
  it.each([
    ['due holds (tickets/expiry.ts)', () => compiled(EXPIRY_QUERIES.dueHolds(compileOnly, Date.now())), /hold_active_expiry/],
    ['earliest due event (delivery/deliverer.ts)', () => compiled(OUTBOX_QUERIES.earliestDue(compileOnly)), /outbox_due/],
    ['claim due events (delivery/deliverer.ts)', () => compiled(OUTBOX_QUERIES.claimDue(compileOnly, Date.now(), Date.now() + 50_000, 16)), /outbox_due/],
  ] as const)('%s uses its index', (_name, statementOf, index) => {
    const statement = statementOf()
    const plan = explain(db, statement).map((row) => row.detail)
    console.log(`-- ${_name}\n${statement.sql}\n${plan.join('\n')}\n`)
    expect(plan.some((detail) => index.test(detail)), plan.join('\n')).toBe(true)
    expect(plan.filter((detail) => /^SCAN /.test(detail) || /TEMP B-TREE/.test(detail)), plan.join('\n')).toEqual([])
  })
})
