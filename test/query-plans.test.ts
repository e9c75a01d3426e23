// The hot-path queries use indexes: EXPLAIN QUERY PLAN on a real database made by the real
// service (a world runs, makes holds, claims, idempotent requests, then stops), for the SQL
// the service sends. The SQL below is what kysely compiles the service's queries to (src/tickets/
// capacity.ts, holds.ts, claims.ts, tiers.ts, events.ts, ticket-queries.ts, idempotency.ts,
// auth/replay-store.ts), with parameters bound exactly as better-sqlite3 binds them for the
// service: `counted = ?` with 1 bound, not a literal, as kysely sends it. The statements of
// the synchronous check-and-take (CAPACITY_SQL, HOLD_SQL, ORGANIZER_SQL) are imported as the
// service prepares them.
//
// The plans are printed so they can be quoted.
import Sqlite from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createPlcIdentity, mintServiceJwt, xrpc } from './helpers/index.js'
import { createEventWithTier, nsid, startWorld, type World } from './helpers/world.js'
import { SPENT_SQL } from '../src/auth/replay-store.js'
import { APP_SQL } from '../src/tickets/apps.js'
import { CAPACITY_SQL } from '../src/tickets/capacity.js'
import { HOLD_SQL } from '../src/tickets/holds.js'
import { ORGANIZER_SQL } from '../src/tickets/organizers.js'

interface PlanRow {
  id: number
  parent: number
  detail: string
}

interface HotQuery {
  name: string
  /** Where the service sends it from. */
  from: string
  sql: string
  params: (ids: Ids) => unknown[]
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

const HOT_QUERIES: HotQuery[] = [
  // Capacity: expired-but-counted units, read on every availability and hold.
  {
    name: 'expired units by tier',
    from: 'capacity.ts expiredUnitsByTier',
    sql: 'select "tierId", SUM(quantity) as "units" from "holdItem" where "counted" = ? and "tierId" in (?) and "expiresAt" <= ? group by "tierId"',
    params: (i: Ids) => [1, i.tierId, i.now],
  },
  {
    name: 'expired units by tier (two tiers)',
    from: 'capacity.ts expiredUnitsByTier',
    sql: 'select "tierId", SUM(quantity) as "units" from "holdItem" where "counted" = ? and "tierId" in (?, ?) and "expiresAt" <= ? group by "tierId"',
    params: (i: Ids) => [1, i.tierId, i.freeTierId, i.now],
  },
  {
    name: 'expired units by capacity group',
    from: 'capacity.ts expiredUnitsByGroup',
    sql: 'select "capacityGroupId", SUM(quantity) as "units" from "holdItem" where "counted" = ? and "capacityGroupId" in (?) and "expiresAt" <= ? group by "capacityGroupId"',
    params: (i: Ids) => [1, i.groupId, i.now],
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
  ).map(([name, params]) => ({ name: `capacity ${name}`, from: 'capacity.ts CAPACITY_SQL', sql: CAPACITY_SQL[name], params })),
  ...(
    [
      ['eventById', (i: Ids) => [i.eventId, i.appDid, 'test']],
      ['eventByUri', (i: Ids) => [i.appDid, 'test', 'at://x/y/z']],
      ['tier', (i: Ids) => [i.tierId, i.appDid, 'test']],
      ['groupStatus', (i: Ids) => [i.groupId]],
    ] as const
  ).map(([name, params]) => ({ name: `hold ${name}`, from: 'holds.ts HOLD_SQL', sql: HOLD_SQL[name], params })),
  { name: 'organizer', from: 'organizers.ts requireOrganizer', sql: ORGANIZER_SQL.organizer, params: (i: Ids) => [i.organizerDid] },
  { name: 'payment setup', from: 'organizers.ts requireOrganizer', sql: ORGANIZER_SQL.paymentSetup, params: (i: Ids) => [i.organizerDid, 'test'] },
  { name: 'app of the caller', from: 'apps.ts findApp', sql: APP_SQL.byDid, params: (i) => [i.appDid] },
  // Tier and group point reads and counter updates (kysely).
  {
    name: 'tier point read',
    from: 'tiers.ts getTier',
    sql: 'select * from "tier" where "id" = ? and "appDid" = ? and "environment" = ? limit ?',
    params: (i) => [i.tierId, i.appDid, 'test', 1],
  },
  {
    name: 'group point read',
    from: 'tiers.ts getGroup',
    sql: 'select * from "capacityGroup" where "id" = ? and "appDid" = ? and "environment" = ? limit ?',
    params: (i) => [i.groupId, i.appDid, 'test', 1],
  },
  {
    name: 'fresh group counters',
    from: 'capacity.ts loadUsage',
    sql: 'select * from "capacityGroup" where "id" in (?)',
    params: (i) => [i.groupId],
  },
  {
    name: 'event tiers',
    from: 'tiers.ts eventAvailability',
    sql: 'select * from "tier" where "eventId" = ? order by "createdAt", "id"',
    params: (i) => [i.eventId],
  },
  {
    name: 'event capacity groups',
    from: 'tiers.ts eventAvailability',
    sql: 'select * from "capacityGroup" where "eventId" = ? order by "createdAt", "id"',
    params: (i) => [i.eventId],
  },
  {
    name: 'event point read',
    from: 'events.ts getEvent',
    sql: 'select * from "event" where "id" = ? and "appDid" = ? and "environment" = ? limit ?',
    params: (i) => [i.eventId, i.appDid, 'test', 1],
  },
  // Holds.
  {
    name: 'hold point read',
    from: 'holds.ts getHold',
    sql: 'select * from "hold" where "id" = ? and "appDid" = ? and "environment" = ? limit ?',
    params: (i) => [i.holdId, i.appDid, 'test', 1],
  },
  {
    name: 'items of a hold',
    from: 'holds.ts getHold',
    sql: 'select * from "holdItem" where "holdId" = ?',
    params: (i) => [i.holdId],
  },
  // Spent tokens: the log read after the last row seen, a row by its seq, and the purge.
  {
    name: 'spent tokens appended since the last one seen',
    from: 'auth/replay-store.ts readAfter (SPENT_SQL.after)',
    sql: SPENT_SQL.after,
    params: () => [0],
  },
  {
    name: 'spent token by seq (checking a hint)',
    from: 'auth/replay-store.ts spendIn (SPENT_SQL.bySeq)',
    sql: SPENT_SQL.bySeq,
    params: () => [1],
  },
  {
    name: 'spent-token purge (one batch, from the oldest rows)',
    from: 'auth/replay-store.ts purgeExpired (SPENT_SQL.purgeHead)',
    sql: SPENT_SQL.purgeHead,
    params: (i) => [500, i.now - 60_000],
  },
  // Idempotency.
  {
    name: 'idempotency lookup',
    from: 'tickets/idempotency.ts readRecord',
    sql: 'select * from "idempotency" where "appDid" = ? and "environment" = ? and "method" = ? and "key" = ? and "createdAt" > ? limit ?',
    params: (i) => [i.appDid, 'test', nsid('createTicketHold'), 'k', i.now - 86_400_000, 1],
  },
  {
    name: 'idempotency store',
    from: 'tickets/idempotency.ts storeResponse',
    sql: 'update "idempotency" set "state" = ?, "response" = ? where "appDid" = ? and "environment" = ? and "method" = ? and "key" = ?',
    params: (i) => ['done', '{}', i.appDid, 'test', nsid('createTicketHold'), 'k'],
  },
  {
    name: 'idempotency purge',
    from: 'tickets/idempotency.ts purgeExpiredKeys',
    sql: 'delete from "idempotency" where "createdAt" < ?',
    params: (i) => [i.now - 86_400_000],
  },
  // Claims and tickets.
  {
    name: 'claimed so far by this buyer',
    from: 'claims.ts claimFreeTickets',
    sql: 'select COALESCE(SUM(quantity), 0) as "units" from "claim" where "tierId" = ? and "buyerDid" = ?',
    params: (i) => [i.freeTierId, i.buyerDid],
  },
  {
    name: 'listBuyerTickets by buyerDid',
    from: 'ticket-queries.ts listBuyerTickets',
    sql: 'select * from "ticket" where "appDid" = ? and "environment" = ? and "buyerDid" = ? order by "id" limit ?',
    params: (i) => [i.appDid, 'test', i.buyerDid, 51],
  },
  {
    name: 'listBuyerTickets by buyerDid, next page',
    from: 'ticket-queries.ts listBuyerTickets',
    sql: 'select * from "ticket" where "appDid" = ? and "environment" = ? and "buyerDid" = ? and "id" > ? order by "id" limit ?',
    params: (i) => [i.appDid, 'test', i.buyerDid, 'tkt_0', 51],
  },
  {
    name: 'listOrganizerTickets by eventId',
    from: 'ticket-queries.ts listOrganizerTickets',
    sql: 'select "ticket".* from "ticket" where "ticket"."appDid" = ? and "ticket"."environment" = ? and "ticket"."eventId" = ? order by "ticket"."id" limit ?',
    params: (i) => [i.appDid, 'test', i.eventId, 51],
  },
  {
    name: 'listOrganizerTickets by eventId, next page',
    from: 'ticket-queries.ts listOrganizerTickets',
    sql: 'select "ticket".* from "ticket" where "ticket"."appDid" = ? and "ticket"."environment" = ? and "ticket"."eventId" = ? and "ticket"."id" > ? order by "ticket"."id" limit ?',
    params: (i) => [i.appDid, 'test', i.eventId, 'tkt_0', 51],
  },
]

/** Index use: a SEARCH, or an index / primary key named. */
const USES_INDEX = /\bSEARCH\b|USING (COVERING )?INDEX|USING (INTEGER )?PRIMARY KEY/
/** A full scan of a hot table (holds, their items, tickets). */
const FORBIDDEN_SCAN = /\bSCAN (holdItem|hold|ticket)\b/

function explain(db: Sqlite.Database, sql: string, params: unknown[]): PlanRow[] {
  return db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as PlanRow[]
}

function formatPlan(rows: PlanRow[]): string {
  const depth = new Map<number, number>()
  return rows
    .map((row) => {
      const d = (depth.get(row.parent) ?? -1) + 1
      depth.set(row.id, d)
      return `${'  '.repeat(d)}${row.detail}`
    })
    .join('\n')
}

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
    const rows = explain(db, query.sql, query.params(ids))
    const plan = formatPlan(rows)
    console.log(`-- ${query.name} (${query.from})\n${query.sql}\n${plan}\n`)
    expect(rows.length, `no plan for ${query.sql}`).toBeGreaterThan(0)
    expect(rows.some((row) => USES_INDEX.test(row.detail)), `no index used:\n${plan}`).toBe(true)
    expect(rows.filter((row) => FORBIDDEN_SCAN.test(row.detail)).map((r) => r.detail), `full scan:\n${plan}`).toEqual([])
    // Every table the query reads is searched, not scanned.
    expect(rows.filter((row) => /^SCAN (?!CONSTANT ROW)/.test(row.detail)).map((r) => r.detail), `full scan:\n${plan}`).toEqual([])
  })
})
