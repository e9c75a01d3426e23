// The hot-path queries use indexes: EXPLAIN QUERY PLAN on a real database made by the real
// service (a world runs, makes holds, claims, idempotent requests, then stops), for the
// statements the service sends: the kysely builders the domain modules export and run
// (compiled here with the same dialect, parameters bound as the service binds them), and the
// statements of the synchronous check-and-take (CAPACITY_SQL, HOLD_SQL, ORGANIZER_SQL, APP_SQL,
// SPENT_SQL) as the service prepares them. A change of the service's SQL changes what is
// planned here.
//
// The plans are printed so they can be quoted.
import Sqlite from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createPlcIdentity, mintServiceJwt, xrpc } from './helpers/index.js'
import { compiled, compileOnly as db0, explain, formatPlan, type Statement } from './helpers/plans.js'
import { createEventWithTier, nsid, startWorld, type World } from './helpers/world.js'
import { SPENT_SQL } from '../src/auth/replay-store.js'
import { APP_SQL } from '../src/tickets/apps.js'
import { CAPACITY_QUERIES, CAPACITY_SQL } from '../src/tickets/capacity.js'
import { CLAIM_QUERIES } from '../src/tickets/claims.js'
import { EVENT_QUERIES } from '../src/tickets/events.js'
import { HOLD_SQL } from '../src/tickets/holds.js'
import { IDEMPOTENCY_QUERIES } from '../src/tickets/idempotency.js'
import { ORGANIZER_SQL } from '../src/tickets/organizers.js'
import { TICKET_QUERIES } from '../src/tickets/ticket-queries.js'
import { TIER_QUERIES } from '../src/tickets/tiers.js'

interface HotQuery {
  name: string
  /** Where the service sends it from. */
  from: string
  statement: (ids: Ids) => Statement
}

interface Ids {
  appDid: string
  tierId: string
  freeTierId: string
  groupId: string
  eventId: string
  holdId: string
  buyerDid: string
  organizerDid: string
  now: number
}

/** A prepared statement of the service with its parameters. */
const prepared = (sql: string, parameters: unknown[]): Statement => ({ sql, parameters })
const scopeOf = (i: Ids) => ({ appDid: i.appDid, environment: 'test' as const })
const keyOf = (i: Ids) => ({ ...scopeOf(i), method: nsid('createTicketHold'), key: 'qp-1' })

const HOT_QUERIES: HotQuery[] = [
  // Capacity: expired-but-counted units, read on every availability and hold.
  {
    name: 'expired units by tier',
    from: 'capacity.ts CAPACITY_QUERIES.expiredUnits',
    statement: (i) => compiled(CAPACITY_QUERIES.expiredUnits(db0, 'tierId', [i.tierId], i.now)),
  },
  {
    name: 'expired units by tier (two tiers)',
    from: 'capacity.ts CAPACITY_QUERIES.expiredUnits',
    statement: (i) => compiled(CAPACITY_QUERIES.expiredUnits(db0, 'tierId', [i.tierId, i.freeTierId], i.now)),
  },
  {
    name: 'expired units by capacity group',
    from: 'capacity.ts CAPACITY_QUERIES.expiredUnits',
    statement: (i) => compiled(CAPACITY_QUERIES.expiredUnits(db0, 'capacityGroupId', [i.groupId], i.now)),
  },
  // The synchronous check-and-take of holds and claims: the very statements the service prepares.
  ...(
    [
      ['expiredItemsOfTier', (i: Ids) => [i.tierId, i.now]],
      ['expiredItemsOfGroup', (i: Ids) => [i.groupId, i.now]],
      ['uncountItem', (i: Ids) => [i.holdId, i.tierId]],
      ['tierCounters', (i: Ids) => [i.tierId]],
      ['groupCounters', (i: Ids) => [i.groupId]],
      ['tierHeldAdd', (i: Ids) => [1, i.tierId]],
      ['tierSoldAdd', (i: Ids) => [1, i.tierId]],
      ['groupHeldAdd', (i: Ids) => [1, i.groupId]],
      ['groupSoldAdd', (i: Ids) => [1, i.groupId]],
    ] as const
  ).map(([name, params]) => ({ name: `capacity ${name}`, from: 'capacity.ts CAPACITY_SQL', statement: (i: Ids) => prepared(CAPACITY_SQL[name], params(i)) })),
  ...(
    [
      ['eventById', (i: Ids) => [i.eventId, i.appDid, 'test']],
      ['eventByUri', (i: Ids) => [i.appDid, 'test', 'at://x/y/z']],
      ['tier', (i: Ids) => [i.tierId, i.appDid, 'test']],
      ['groupStatus', (i: Ids) => [i.groupId]],
    ] as const
  ).map(([name, params]) => ({ name: `hold ${name}`, from: 'holds.ts HOLD_SQL', statement: (i: Ids) => prepared(HOLD_SQL[name], params(i)) })),
  { name: 'organizer', from: 'organizers.ts requireOrganizer', statement: (i) => prepared(ORGANIZER_SQL.organizer, [i.organizerDid]) },
  { name: 'payment setup', from: 'organizers.ts requireOrganizer', statement: (i) => prepared(ORGANIZER_SQL.paymentSetup, [i.organizerDid, 'test']) },
  { name: 'app of the caller', from: 'apps.ts findApp', statement: (i) => prepared(APP_SQL.byDid, [i.appDid]) },
  // Tier and group point reads and counter updates (kysely).
  { name: 'tier point read', from: 'tiers.ts getTier', statement: (i) => compiled(TIER_QUERIES.tier(db0, scopeOf(i), i.tierId)) },
  { name: 'group point read', from: 'tiers.ts getGroup', statement: (i) => compiled(TIER_QUERIES.group(db0, scopeOf(i), i.groupId)) },
  { name: 'fresh group counters', from: 'capacity.ts loadUsage', statement: (i) => compiled(CAPACITY_QUERIES.groupsById(db0, [i.groupId])) },
  { name: 'event tiers', from: 'tiers.ts eventAvailability', statement: (i) => compiled(TIER_QUERIES.tiersOfEvent(db0, i.eventId)) },
  { name: 'event capacity groups', from: 'tiers.ts eventAvailability', statement: (i) => compiled(TIER_QUERIES.groupsOfEvent(db0, i.eventId)) },
  { name: 'event point read', from: 'events.ts getEvent', statement: (i) => compiled(EVENT_QUERIES.event(db0, scopeOf(i), i.eventId)) },
  // Holds. holds.ts does not export getHold's builders (another change owns that file): these
  // two are the SQL kysely compiles them to, copied; export them from holds.ts to tie them.
  {
    name: 'hold point read',
    from: 'holds.ts getHold (copied SQL)',
    statement: (i) => prepared('select * from "hold" where "id" = ? and "appDid" = ? and "environment" = ?', [i.holdId, i.appDid, 'test']),
  },
  {
    name: 'items of a hold',
    from: 'holds.ts getHold (copied SQL)',
    statement: (i) => prepared('select * from "holdItem" where "holdId" = ?', [i.holdId]),
  },
  // Spent tokens: the log read after the last row seen, a row by its seq, and the purge.
  {
    name: 'spent tokens appended since the last one seen',
    from: 'auth/replay-store.ts readAfter (SPENT_SQL.after)',
    statement: () => prepared(SPENT_SQL.after, [0]),
  },
  {
    name: 'spent token by seq (checking a hint)',
    from: 'auth/replay-store.ts spendIn (SPENT_SQL.bySeq)',
    statement: () => prepared(SPENT_SQL.bySeq, [1]),
  },
  {
    name: 'spent-token purge (one batch, from the oldest rows)',
    from: 'auth/replay-store.ts purgeExpired (SPENT_SQL.purgeHead)',
    statement: (i) => prepared(SPENT_SQL.purgeHead, [500, i.now - 60_000]),
  },
  // Idempotency.
  { name: 'idempotency lookup', from: 'tickets/idempotency.ts readRecord', statement: (i) => compiled(IDEMPOTENCY_QUERIES.record(db0, keyOf(i), i.now)) },
  {
    name: 'idempotency store',
    from: 'tickets/idempotency.ts storeResponse',
    statement: (i) => compiled(IDEMPOTENCY_QUERIES.store(db0, keyOf(i), 'owner', { ok: true, body: {} })),
  },
  { name: 'idempotency purge', from: 'tickets/idempotency.ts purgeExpiredKeys', statement: (i) => compiled(IDEMPOTENCY_QUERIES.purge(db0, i.now)) },
  // Claims and tickets.
  {
    name: 'claimed so far by this buyer',
    from: 'claims.ts claimFreeTickets',
    statement: (i) => compiled(CLAIM_QUERIES.claimedByBuyer(db0, i.freeTierId, i.buyerDid)),
  },
  {
    name: 'listBuyerTickets by buyerDid',
    from: 'ticket-queries.ts listBuyerTickets',
    statement: (i) => compiled(TICKET_QUERIES.buyerTickets(db0, scopeOf(i), { buyerDid: i.buyerDid, limit: 50 })),
  },
  {
    name: 'listBuyerTickets by buyerDid, next page',
    from: 'ticket-queries.ts listBuyerTickets',
    statement: (i) => compiled(TICKET_QUERIES.buyerTickets(db0, scopeOf(i), { buyerDid: i.buyerDid, after: 'tkt_0', limit: 50 })),
  },
  {
    name: 'listOrganizerTickets by eventId',
    from: 'ticket-queries.ts listOrganizerTickets',
    statement: (i) => compiled(TICKET_QUERIES.organizerTickets(db0, scopeOf(i), { eventId: i.eventId, limit: 50 })),
  },
  {
    name: 'listOrganizerTickets by eventId, next page',
    from: 'ticket-queries.ts listOrganizerTickets',
    statement: (i) => compiled(TICKET_QUERIES.organizerTickets(db0, scopeOf(i), { eventId: i.eventId, after: 'tkt_0', limit: 50 })),
  },
]

/** Index use: a SEARCH, or an index / primary key named. */
const USES_INDEX = /\bSEARCH\b|USING (COVERING )?INDEX|USING (INTEGER )?PRIMARY KEY/
/** A full scan of a hot table (holds, their items, tickets). */
const FORBIDDEN_SCAN = /\bSCAN (holdItem|hold|ticket)\b/

describe('query plans of the hot paths', () => {
  let world: World
  let db: Sqlite.Database
  let ids: Ids

  beforeAll(async () => {
    world = await startWorld({ workers: 1 })
    // Some real rows in every hot table: holds on a grouped tier, free claims, an idempotent hold.
    const paid = await createEventWithTier(world, { quantityTotal: 100, maxPerOrder: 5 }, { groupCapacity: 80 })
    const free = await world.app.call(nsid('createTicketTier'), {
      organizerDid: world.organizer.did,
      organizerAssertionJwt: await world.organizer.token(nsid('createTicketTier')),
      event: { eventId: paid.eventId },
      title: 'Free',
      currency: 'usd',
      unitAmount: 0,
      quantityTotal: 50,
      maxPerOrder: 5,
    })
    expect(free.status, JSON.stringify(free.body)).toBe(200)
    const freeTierId = free.body.tier.id as string
    let holdId = ''
    for (let n = 1; n <= 3; n++) {
      const hold = await world.app.call(nsid('createTicketHold'), { items: [{ tierId: paid.tierId, quantity: n }], idempotencyKey: `qp-${n}` })
      expect(hold.status, JSON.stringify(hold.body)).toBe(200)
      holdId = hold.body.holdId
    }
    const buyer = await createPlcIdentity(world.plc.url)
    const CLAIM = nsid('claimFreeTicket')
    for (let n = 0; n < 2; n++) {
      const claim = await xrpc(world.service.url, CLAIM, {
        token: await world.app.token(CLAIM),
        body: {
          tierId: freeTierId,
          quantity: 2,
          buyerDid: buyer.did,
          buyerAssertionJwt: await mintServiceJwt({ keypair: buyer.keypair, iss: buyer.did, aud: world.service.serviceDid, lxm: CLAIM }),
        },
      })
      expect(claim.status, JSON.stringify(claim.body)).toBe(200)
    }
    expect(await world.service.stop()).toBe(0)
    db = new Sqlite(world.service.dbPath, { readonly: true, fileMustExist: true })
    ids = {
      appDid: world.app.did,
      tierId: paid.tierId,
      freeTierId,
      groupId: paid.capacityGroupId!,
      eventId: paid.eventId,
      holdId,
      buyerDid: buyer.did,
      organizerDid: world.organizer.did,
      now: Date.now(),
    }
  })
  afterAll(async () => {
    db?.close()
    await world?.close()
  })

  it('the database has the rows the plans are read against', () => {
    const count = (table: string) => (db.prepare(`SELECT COUNT(*) AS n FROM "${table}"`).get() as { n: number }).n
    expect(count('hold')).toBeGreaterThanOrEqual(3)
    expect(count('holdItem')).toBeGreaterThanOrEqual(3)
    expect(count('ticket')).toBeGreaterThanOrEqual(4)
    expect(count('claim')).toBeGreaterThanOrEqual(2)
    expect(count('idempotency')).toBeGreaterThanOrEqual(3)
    expect(count('spentToken')).toBeGreaterThan(0)
  })

  it.each(HOT_QUERIES.map((q) => [q.name, q] as const))('%s uses an index', (_name, query) => {
    const statement = query.statement(ids)
    const rows = explain(db, statement)
    const plan = formatPlan(rows)
    console.log(`-- ${query.name} (${query.from})\n${statement.sql}\n${plan}\n`)
    expect(rows.length, `no plan for ${statement.sql}`).toBeGreaterThan(0)
    expect(rows.some((row) => USES_INDEX.test(row.detail)), `no index used:\n${plan}`).toBe(true)
    expect(rows.filter((row) => FORBIDDEN_SCAN.test(row.detail)).map((r) => r.detail), `full scan:\n${plan}`).toEqual([])
    // Every table the query reads is searched, not scanned.
    expect(rows.filter((row) => /^SCAN (?!CONSTANT ROW)/.test(row.detail)).map((r) => r.detail), `full scan:\n${plan}`).toEqual([])
  })
})
