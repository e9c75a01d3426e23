import { sql } from 'kysely'
import type { DbConn, Tx } from '../storage/types.js'
import type { CapacityGroupTable, TierTable } from '../db/schema.js'
import { fail } from './errors.js'

/*
 * Capacity accounting.
 *
 * Each tier and capacity group keeps two counters: `sold` (tickets issued) and `held` (units
 * in holds still counted). A hold item stays counted (`holdItem.counted = 1`) until its hold
 * is released, completed, or found expired. Nothing has to run when a hold expires:
 *
 * - readers subtract the counted-but-expired units (`expiredUnitsBy`), found through a partial
 *   index that holds only counted items, so they touch live holds only;
 * - writers first "reap" those expired items for the tiers and groups they are about to
 *   change (uncount them and lower the counters), inside their BEGIN IMMEDIATE transaction,
 *   so the counters they check are exact.
 *
 * Invariant, for every tier and group at every instant: sold + (held − expired) ≤ total.
 */

export interface Usage {
  total: number
  held: number
  sold: number
  remaining: number
}

export function usage(total: number, heldCounter: number, expired: number, sold: number): Usage {
  const held = Math.max(0, heldCounter - expired)
  return { total, held, sold, remaining: Math.max(0, total - sold - held) }
}

/** Hold items still counted in the `held` counters but past their expiry, by tier or by group. */
function countedExpired(db: DbConn, column: 'tierId' | 'capacityGroupId', ids: string[], nowMs: number) {
  return db.selectFrom('holdItem').where('counted', '=', 1).where(column, 'in', ids).where('expiresAt', '<=', nowMs)
}

/** This module's kysely statements, as the service runs them (the query-plan tests EXPLAIN these). */
export const CAPACITY_QUERIES = {
  expiredUnits: (db: DbConn, column: 'tierId' | 'capacityGroupId', ids: string[], nowMs: number) =>
    countedExpired(db, column, ids, nowMs)
      .select([`${column} as id`, sql<number>`SUM(quantity)`.as('units')])
      .groupBy(column),
  groupsById: (db: DbConn, groupIds: string[]) => db.selectFrom('capacityGroup').selectAll().where('id', 'in', groupIds),
}

async function expiredUnitsBy(
  db: DbConn,
  column: 'tierId' | 'capacityGroupId',
  ids: string[],
  nowMs: number,
): Promise<Map<string, number>> {
  if (ids.length === 0) return new Map()
  const rows = await CAPACITY_QUERIES.expiredUnits(db, column, ids, nowMs).execute()
  return new Map(rows.map((row) => [row.id as string, Number(row.units)]))
}

/*
 * The writers below are plain statements (see `Tx`): on SQLite they run while the write lock
 * that every worker shares is held, so they do no query building. `counted = 1` is written as
 * a literal so the engines match it to the partial indexes on counted items.
 */
export const CAPACITY_SQL = {
  expiredItemsOfTier:
    'SELECT holdId, tierId, capacityGroupId, quantity FROM holdItem WHERE counted = 1 AND tierId = ? AND expiresAt <= ?',
  expiredItemsOfGroup:
    'SELECT holdId, tierId, capacityGroupId, quantity FROM holdItem WHERE counted = 1 AND capacityGroupId = ? AND expiresAt <= ?',
  uncountItem: 'UPDATE holdItem SET counted = 0 WHERE holdId = ? AND tierId = ? AND counted = 1',
  tierCounters: 'SELECT quantityTotal AS total, sold, held FROM tier WHERE id = ?',
  groupCounters: 'SELECT totalCapacity AS total, sold, held FROM capacityGroup WHERE id = ?',
  tierHeldAdd: 'UPDATE tier SET held = held + ? WHERE id = ?',
  tierSoldAdd: 'UPDATE tier SET sold = sold + ? WHERE id = ?',
  groupHeldAdd: 'UPDATE capacityGroup SET held = held + ? WHERE id = ?',
  groupSoldAdd: 'UPDATE capacityGroup SET sold = sold + ? WHERE id = ?',
} as const

function byKey(a: [string, number], b: [string, number]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0
}

type CountedItem = { holdId: string; tierId: string; capacityGroupId: string | null; quantity: number }

/**
 * Uncounts every expired hold item of these tiers and groups and lowers their `held`
 * counters. Must run inside a write transaction, before capacity is checked.
 */
export async function reapExpired(tx: Tx, tierIds: string[], groupIds: string[], nowMs: number): Promise<void> {
  // One query per tier and per group, not one with OR: each searches its partial index by key
  // and expiry instead of scanning every counted item.
  const expired = new Map<string, CountedItem>()
  for (const tierId of tierIds) {
    for (const item of await tx.all<CountedItem>(CAPACITY_SQL.expiredItemsOfTier, tierId, nowMs)) expired.set(`${item.holdId} ${item.tierId}`, item)
  }
  for (const groupId of groupIds) {
    for (const item of await tx.all<CountedItem>(CAPACITY_SQL.expiredItemsOfGroup, groupId, nowMs)) expired.set(`${item.holdId} ${item.tierId}`, item)
  }
  if (expired.size > 0) await uncountItems(tx, [...expired.values()])
}

/**
 * The check-and-take behind holds and claims, inside their BEGIN IMMEDIATE transaction:
 * expired holds of these tiers and groups are uncounted first, then every tier and every
 * group must have room for all it is asked (items of one group add up), and only then are
 * the units added to `held` (a hold) or `sold` (issued tickets), all or nothing.
 */
export async function takeCapacity(
  tx: Tx,
  items: Array<{ tier: Pick<TierTable, 'id' | 'capacityGroupId'>; quantity: number }>,
  counter: 'held' | 'sold',
  nowMs: number,
): Promise<void> {
  const askedPerGroup = new Map<string, number>()
  for (const { tier, quantity } of items) {
    if (tier.capacityGroupId) askedPerGroup.set(tier.capacityGroupId, (askedPerGroup.get(tier.capacityGroupId) ?? 0) + quantity)
  }
  const tierIds = items.map((item) => item.tier.id)
  const groupIds = [...askedPerGroup.keys()]
  await lockCounters(tx, tierIds, groupIds)
  await reapExpired(tx, tierIds, groupIds, nowMs)
  type Counters = { total: number; sold: number; held: number }
  for (const { tier, quantity } of items) {
    const fresh = (await tx.get<Counters>(CAPACITY_SQL.tierCounters, tier.id))!
    const left = fresh.total - fresh.sold - fresh.held
    if (quantity > left) fail('InsufficientTicketCapacity', `tier ${tier.id} has ${Math.max(0, left)} left, asked for ${quantity}`)
  }
  for (const [groupId, asked] of askedPerGroup) {
    const fresh = (await tx.get<Counters>(CAPACITY_SQL.groupCounters, groupId))!
    const left = fresh.total - fresh.sold - fresh.held
    if (asked > left) fail('InsufficientTicketCapacity', `capacity group ${groupId} has ${Math.max(0, left)} left, asked for ${asked}`)
  }
  await addToCounters(
    tx,
    counter,
    items.map(({ tier, quantity }) => ({ tierId: tier.id, capacityGroupId: tier.capacityGroupId, quantity })),
  )
}

/**
 * Locks the counters a check-and-take decides on, in the one order every writer follows (the
 * tiers by id, then the groups by id), so two transactions never wait on each other in a circle.
 */
export async function lockCounters(tx: Tx, tierIds: Iterable<string>, groupIds: Iterable<string>): Promise<void> {
  await tx.lockRows('tier', [...new Set(tierIds)].sort())
  await tx.lockRows('capacityGroup', [...new Set(groupIds)].sort())
}

/**
 * Adds each item's quantity (negative to take away) to the `held` or `sold` counter of its
 * tier and of its tier's group: one update per tier and per group, however many items.
 */
export async function addToCounters(
  tx: Tx,
  counter: 'held' | 'sold',
  items: Iterable<{ tierId: string; capacityGroupId: string | null; quantity: number }>,
): Promise<void> {
  const byTier = new Map<string, number>()
  const byGroup = new Map<string, number>()
  for (const item of items) {
    byTier.set(item.tierId, (byTier.get(item.tierId) ?? 0) + item.quantity)
    if (item.capacityGroupId) byGroup.set(item.capacityGroupId, (byGroup.get(item.capacityGroupId) ?? 0) + item.quantity)
  }
  const [tierSql, groupSql] =
    counter === 'held' ? [CAPACITY_SQL.tierHeldAdd, CAPACITY_SQL.groupHeldAdd] : [CAPACITY_SQL.tierSoldAdd, CAPACITY_SQL.groupSoldAdd]
  // In the locking order (see `lockCounters`).
  for (const [tierId, units] of [...byTier].sort(byKey)) if (units !== 0) await tx.run(tierSql, units, tierId)
  for (const [groupId, units] of [...byGroup].sort(byKey)) if (units !== 0) await tx.run(groupSql, units, groupId)
}

/**
 * Removes items from the held counters (release, completion, expiry). An item already
 * uncounted, by a transaction that committed since the caller read it, is left alone.
 */
export async function uncountItems(tx: Tx, items: CountedItem[]): Promise<void> {
  const uncounted: CountedItem[] = []
  for (const item of items) if ((await tx.run(CAPACITY_SQL.uncountItem, item.holdId, item.tierId)) > 0) uncounted.push(item)
  await addToCounters(
    tx,
    'held',
    uncounted.map((item) => ({ ...item, quantity: -item.quantity })),
  )
}

export interface TierWithUsage {
  tier: TierTable
  usage: Usage
  group: (CapacityGroupTable & { usage: Usage }) | null
  /** The lesser of the tier's and its group's remaining. */
  remaining: number
}

/** Reads tiers and their groups with live usage; no writes, safe outside a transaction. */
export async function loadUsage(
  db: DbConn,
  tiers: TierTable[],
  nowMs: number,
): Promise<{ tiers: TierWithUsage[]; groups: Map<string, CapacityGroupTable & { usage: Usage }> }> {
  const groupIds = [...new Set(tiers.map((t) => t.capacityGroupId).filter((id): id is string => !!id))]
  const groupRows = groupIds.length
    ? await CAPACITY_QUERIES.groupsById(db, groupIds).execute()
    : []
  return withUsage(db, tiers, groupRows, nowMs)
}

export async function withUsage(
  db: DbConn,
  tiers: TierTable[],
  groupRows: CapacityGroupTable[],
  nowMs: number,
): Promise<{ tiers: TierWithUsage[]; groups: Map<string, CapacityGroupTable & { usage: Usage }> }> {
  const expiredTier = await expiredUnitsBy(db, 'tierId', tiers.map((t) => t.id), nowMs)
  const expiredGroup = await expiredUnitsBy(db, 'capacityGroupId', groupRows.map((g) => g.id), nowMs)
  const groups = new Map<string, CapacityGroupTable & { usage: Usage }>()
  for (const group of groupRows) {
    groups.set(group.id, {
      ...group,
      usage: usage(group.totalCapacity, group.held, expiredGroup.get(group.id) ?? 0, group.sold),
    })
  }
  const result = tiers.map((tier) => {
    const tierUsage = usage(tier.quantityTotal, tier.held, expiredTier.get(tier.id) ?? 0, tier.sold)
    const group = tier.capacityGroupId ? (groups.get(tier.capacityGroupId) ?? null) : null
    const remaining = group ? Math.min(tierUsage.remaining, group.usage.remaining) : tierUsage.remaining
    return { tier, usage: tierUsage, group, remaining }
  })
  return { tiers: result, groups }
}

/**
 * An event's capacity and remaining, counting each group once: a group caps its tiers
 * together, and can never offer more than its tiers' own totals.
 */
export function eventCapacity(tiers: TierWithUsage[]): { capacity: number; remaining: number } {
  let capacity = 0
  let remaining = 0
  const grouped = new Map<string, { group: CapacityGroupTable & { usage: Usage }; total: number; remaining: number }>()
  for (const entry of tiers) {
    if (entry.tier.status === 'archived') continue
    if (entry.group) {
      const acc = grouped.get(entry.group.id) ?? { group: entry.group, total: 0, remaining: 0 }
      acc.total += entry.tier.quantityTotal
      acc.remaining += entry.usage.remaining
      grouped.set(entry.group.id, acc)
    } else {
      capacity += entry.tier.quantityTotal
      remaining += entry.usage.remaining
    }
  }
  for (const acc of grouped.values()) {
    if (acc.group.status === 'archived') continue
    capacity += Math.min(acc.group.totalCapacity, acc.total)
    remaining += Math.min(acc.group.usage.remaining, acc.remaining)
  }
  return { capacity, remaining }
}

export function isScarce(capacity: number, remaining: number): boolean {
  return capacity > 0 && remaining <= capacity * 0.1
}

export function isOnSale(
  tier: Pick<TierTable, 'status' | 'saleStartsAt' | 'saleEndsAt'>,
  eventStatus: string,
  groupStatus: string | null,
  nowMs: number,
): boolean {
  if (tier.status !== 'active' || eventStatus !== 'active') return false
  if (groupStatus !== null && groupStatus !== 'active') return false
  if (tier.saleStartsAt !== null && tier.saleStartsAt > nowMs) return false
  if (tier.saleEndsAt !== null && tier.saleEndsAt <= nowMs) return false
  return true
}
