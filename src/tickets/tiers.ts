import { sql } from 'kysely'
import { txOf, type DbConn } from '../storage/types.js'
import type { CapacityGroupTable, EventTable, TierTable } from '../db/schema.js'
import { newId } from '../util/ids.js'
import { msFromIso } from '../util/time.js'
import { eventCapacity, isOnSale, isScarce, loadUsage, lockCounters, reapExpired, withUsage, type TierWithUsage, type Usage } from './capacity.js'
import { fail } from './errors.js'
import { getEvent, type Scope } from './events.js'
import { isIsoCurrency } from './currency.js'
import { requireOrganizer } from './organizers.js'

export const TIER_STATUSES = ['active', 'paused', 'archived'] as const
const GROUP_STATUSES = ['active', 'archived'] as const

/** This module's kysely reads, as the service runs them (the query-plan tests EXPLAIN these). */
export const TIER_QUERIES = {
  tier: (db: DbConn, scope: Scope, tierId: string) =>
    db.selectFrom('tier').selectAll().where('id', '=', tierId).where('appDid', '=', scope.appDid).where('environment', '=', scope.environment),
  group: (db: DbConn, scope: Scope, groupId: string) =>
    db
      .selectFrom('capacityGroup')
      .selectAll()
      .where('id', '=', groupId)
      .where('appDid', '=', scope.appDid)
      .where('environment', '=', scope.environment),
  tiersOfEvent: (db: DbConn, eventId: string) => db.selectFrom('tier').selectAll().where('eventId', '=', eventId).orderBy('createdAt').orderBy('id'),
  groupsOfEvent: (db: DbConn, eventId: string) =>
    db.selectFrom('capacityGroup').selectAll().where('eventId', '=', eventId).orderBy('createdAt').orderBy('id'),
}

export async function getTier(db: DbConn, scope: Scope, tierId: string): Promise<TierTable | undefined> {
  return TIER_QUERIES.tier(db, scope, tierId).executeTakeFirst()
}

export async function requireTier(db: DbConn, scope: Scope, tierId: string): Promise<TierTable> {
  const tier = await getTier(db, scope, tierId)
  if (!tier) fail('TicketTierNotFound', `no ticket tier ${tierId} for this app in ${scope.environment}`)
  return tier
}

export async function getGroup(db: DbConn, scope: Scope, groupId: string): Promise<CapacityGroupTable | undefined> {
  return TIER_QUERIES.group(db, scope, groupId).executeTakeFirst()
}

export async function groupWithUsage(db: DbConn, group: CapacityGroupTable, nowMs: number) {
  const { groups } = await withUsage(db, [], [group], nowMs)
  return groups.get(group.id)!
}

export async function tierWithUsage(db: DbConn, tier: TierTable, nowMs: number): Promise<TierWithUsage> {
  const { tiers } = await loadUsage(db, [tier], nowMs)
  return tiers[0]!
}

export async function createCapacityGroup(
  tx: DbConn,
  scope: Scope,
  event: EventTable,
  input: { name: string; totalCapacity: number; metadata?: Record<string, unknown> },
  nowMs: number,
): Promise<CapacityGroupTable & { usage: Usage }> {
  if (!Number.isInteger(input.totalCapacity) || input.totalCapacity < 1) {
    fail('InvalidCapacity', 'totalCapacity must be a whole number of at least 1')
  }
  const row: CapacityGroupTable = {
    id: newId('cg'),
    eventId: event.id,
    appDid: scope.appDid,
    environment: scope.environment,
    name: input.name,
    totalCapacity: input.totalCapacity,
    held: 0,
    sold: 0,
    status: 'active',
    metadata: input.metadata ? JSON.stringify(input.metadata) : null,
    createdAt: nowMs,
    updatedAt: nowMs,
  }
  await tx.insertInto('capacityGroup').values(row).execute()
  return { ...row, usage: { total: row.totalCapacity, held: 0, sold: 0, remaining: row.totalCapacity } }
}

/** A total may shrink, but never below what is sold plus held (counters freshly reaped). */
function checkNotBelowCommitted(field: string, requested: number, current: { sold: number; held: number }): void {
  const committed = current.sold + current.held
  if (requested < committed) {
    fail(
      'CapacityBelowCommitted',
      `${field} ${requested} is below the ${committed} already sold (${current.sold}) or held (${current.held}); choose at least ${committed}`,
    )
  }
}

export async function updateCapacityGroup(
  tx: DbConn,
  scope: Scope,
  input: { capacityGroupId: string; name?: string; totalCapacity?: number; status?: string; metadata?: Record<string, unknown> },
  nowMs: number,
): Promise<CapacityGroupTable & { usage: Usage }> {
  if (input.status !== undefined && !(GROUP_STATUSES as readonly string[]).includes(input.status)) {
    fail('InvalidRequest', `status must be "active" or "archived", got "${input.status}"`)
  }
  // Locked before it is read: a hold taking the group's last units comes wholly before or after.
  await lockCounters(txOf(tx), [], [input.capacityGroupId])
  const group = await getGroup(tx, scope, input.capacityGroupId)
  if (!group) fail('CapacityGroupNotFound', `no capacity group ${input.capacityGroupId} for this app in ${scope.environment}`)
  const changes: Partial<CapacityGroupTable> = { updatedAt: nowMs }
  if (input.name !== undefined) changes.name = input.name
  if (input.status !== undefined) changes.status = input.status
  if (input.metadata !== undefined) changes.metadata = JSON.stringify(input.metadata)
  if (input.totalCapacity !== undefined) {
    await reapExpired(txOf(tx), [], [group.id], nowMs)
    checkNotBelowCommitted('totalCapacity', input.totalCapacity, (await getGroup(tx, scope, group.id))!)
    changes.totalCapacity = input.totalCapacity
  }
  await tx.updateTable('capacityGroup').set(changes).where('id', '=', group.id).execute()
  const updated = (await getGroup(tx, scope, group.id))!
  return groupWithUsage(tx, updated, nowMs)
}

export interface TierInput {
  capacityGroupId?: string
  title: string
  description?: string | null
  currency: string
  unitAmount: number
  quantityTotal: number
  maxPerOrder?: number
  saleStartsAt?: string | null
  saleEndsAt?: string | null
  metadata?: Record<string, unknown>
}

function saleWindow(startsAt: number | null, endsAt: number | null): void {
  if (startsAt !== null && endsAt !== null && endsAt <= startsAt) {
    fail('InvalidSaleWindow', 'saleEndsAt must be after saleStartsAt')
  }
}

export function normalizeCurrency(currency: string): string {
  const lower = currency.toLowerCase()
  if (!isIsoCurrency(lower)) fail('InvalidCurrency', `currency "${currency}" is not an ISO 4217 code (for example "usd", "eur")`)
  return lower
}

/** Tiers of one group are sold in one currency: a hold never mixes them. */
async function checkGroupCurrency(tx: DbConn, groupId: string, currency: string, exceptTierId?: string): Promise<void> {
  let query = tx.selectFrom('tier').select(['id', 'currency']).where('capacityGroupId', '=', groupId)
  if (exceptTierId) query = query.where('id', '!=', exceptTierId)
  const other = await query.where('currency', '!=', currency).limit(1).executeTakeFirst()
  if (other) {
    fail('CurrencyMismatch', `capacity group ${groupId} sells in ${other.currency}; tier ${other.id} already uses it`)
  }
}

export async function createTier(
  tx: DbConn,
  scope: Scope,
  event: EventTable,
  input: TierInput,
  nowMs: number,
): Promise<{ tier: TierWithUsage; group: (CapacityGroupTable & { usage: Usage }) | null }> {
  const currency = normalizeCurrency(input.currency)
  const saleStartsAt = msFromIso(input.saleStartsAt)
  const saleEndsAt = msFromIso(input.saleEndsAt)
  saleWindow(saleStartsAt, saleEndsAt)
  let group: CapacityGroupTable | undefined
  if (input.capacityGroupId) {
    group = await getGroup(tx, scope, input.capacityGroupId)
    if (!group || group.eventId !== event.id) {
      fail('CapacityGroupNotFound', `no capacity group ${input.capacityGroupId} on event ${event.id}`)
    }
    if (group.status === 'archived') fail('CapacityGroupArchived', `capacity group ${group.id} is archived: reactivate it or use another`)
    await checkGroupCurrency(tx, group.id, currency)
  }
  const row: TierTable = {
    id: newId('tier'),
    eventId: event.id,
    appDid: scope.appDid,
    environment: scope.environment,
    capacityGroupId: group?.id ?? null,
    title: input.title,
    description: input.description ?? null,
    currency,
    unitAmount: input.unitAmount,
    quantityTotal: input.quantityTotal,
    maxPerOrder: input.maxPerOrder ?? 10,
    saleStartsAt,
    saleEndsAt,
    status: 'active',
    held: 0,
    sold: 0,
    metadata: input.metadata ? JSON.stringify(input.metadata) : null,
    createdAt: nowMs,
    updatedAt: nowMs,
  }
  await tx.insertInto('tier').values(row).execute()
  const { tiers } = await withUsage(tx, [row], group ? [group] : [], nowMs)
  return { tier: tiers[0]!, group: tiers[0]!.group }
}

export interface TierUpdate {
  tierId: string
  capacityGroupId?: string | null
  title?: string
  description?: string | null
  currency?: string
  unitAmount?: number
  quantityTotal?: number
  maxPerOrder?: number
  saleStartsAt?: string | null
  saleEndsAt?: string | null
  status?: string
  metadata?: Record<string, unknown>
}

export async function updateTier(
  tx: DbConn,
  scope: Scope,
  input: TierUpdate,
  nowMs: number,
): Promise<{ tier: TierWithUsage; event: EventTable }> {
  if (input.status !== undefined && !(TIER_STATUSES as readonly string[]).includes(input.status)) {
    fail('InvalidRequest', `status must be one of ${TIER_STATUSES.join(', ')}, got "${input.status}"`)
  }
  // Locked before it is read: a hold taking the tier's last units comes wholly before or after.
  await lockCounters(txOf(tx), [input.tierId], [])
  const tier = await requireTier(tx, scope, input.tierId)
  if (input.currency !== undefined && input.currency.toLowerCase() !== tier.currency) {
    fail('CurrencyMismatch', `tier ${tier.id} sells in ${tier.currency}; its currency cannot change: create a new tier`)
  }
  const changes: Partial<TierTable> = { updatedAt: nowMs }
  if (input.title !== undefined) changes.title = input.title
  if (input.description !== undefined) changes.description = input.description
  if (input.unitAmount !== undefined) changes.unitAmount = input.unitAmount
  if (input.maxPerOrder !== undefined) changes.maxPerOrder = input.maxPerOrder
  if (input.saleStartsAt !== undefined) changes.saleStartsAt = msFromIso(input.saleStartsAt)
  if (input.saleEndsAt !== undefined) changes.saleEndsAt = msFromIso(input.saleEndsAt)
  if (input.status !== undefined) changes.status = input.status
  if (input.metadata !== undefined) changes.metadata = JSON.stringify(input.metadata)
  // null clears a date, so "was it sent" decides, not "is it null".
  saleWindow(
    'saleStartsAt' in changes ? changes.saleStartsAt! : tier.saleStartsAt,
    'saleEndsAt' in changes ? changes.saleEndsAt! : tier.saleEndsAt,
  )
  const event = (await getEvent(tx, scope, tier.eventId))!
  if (tier.unitAmount === 0 && (changes.unitAmount ?? 0) > 0) {
    await requireOrganizer(txOf(tx), event.organizerDid, scope.environment, true)
  }
  if (input.quantityTotal !== undefined) {
    await reapExpired(txOf(tx), [tier.id], [], nowMs)
    checkNotBelowCommitted('quantityTotal', input.quantityTotal, (await getTier(tx, scope, tier.id))!)
    changes.quantityTotal = input.quantityTotal
  }
  await tx.updateTable('tier').set(changes).where('id', '=', tier.id).execute()
  if (input.capacityGroupId !== undefined && input.capacityGroupId !== tier.capacityGroupId) {
    await moveTierToGroup(tx, scope, tier, input.capacityGroupId, nowMs)
  }
  const updated = (await getTier(tx, scope, tier.id))!
  return { tier: await tierWithUsage(tx, updated, nowMs), event }
}

/**
 * Moves a tier into another capacity group of its event (or out of any): what the tier has
 * sold and holds moves from the old group's counters to the new one's, which must have room
 * for it, so the never-oversold invariant holds for both groups at every instant.
 */
async function moveTierToGroup(tx: DbConn, scope: Scope, tier: TierTable, groupId: string | null, nowMs: number): Promise<void> {
  const target = groupId === null ? null : await getGroup(tx, scope, groupId)
  if (groupId !== null) {
    if (!target || target.eventId !== tier.eventId) fail('CapacityGroupNotFound', `no capacity group ${groupId} on event ${tier.eventId}`)
    if (target.status === 'archived') fail('CapacityGroupArchived', `capacity group ${groupId} is archived: reactivate it or use another`)
    await checkGroupCurrency(tx, groupId, tier.currency, tier.id)
  }
  const groupIds = [tier.capacityGroupId, groupId].filter((id): id is string => id !== null)
  await lockCounters(txOf(tx), [tier.id], groupIds)
  await reapExpired(txOf(tx), [tier.id], groupIds, nowMs)
  const current = (await getTier(tx, scope, tier.id))!
  if (groupId !== null) {
    const fresh = (await getGroup(tx, scope, groupId))!
    const room = fresh.totalCapacity - fresh.sold - fresh.held
    if (current.sold + current.held > room) {
      fail(
        'CapacityBelowCommitted',
        `capacity group ${groupId} has ${Math.max(0, room)} left, less than the ${current.sold + current.held} tier ${tier.id} has sold or held`,
      )
    }
    await tx
      .updateTable('capacityGroup')
      .set({ sold: sql`sold + ${current.sold}`, held: sql`held + ${current.held}`, updatedAt: nowMs })
      .where('id', '=', groupId)
      .execute()
  }
  if (tier.capacityGroupId !== null) {
    await tx
      .updateTable('capacityGroup')
      .set({ sold: sql`sold - ${current.sold}`, held: sql`held - ${current.held}`, updatedAt: nowMs })
      .where('id', '=', tier.capacityGroupId)
      .execute()
  }
  await tx.updateTable('tier').set({ capacityGroupId: groupId }).where('id', '=', tier.id).execute()
  await tx.updateTable('holdItem').set({ capacityGroupId: groupId }).where('tierId', '=', tier.id).where('counted', '=', 1).execute()
  await tx.updateTable('ticket').set({ capacityGroupId: groupId }).where('tierId', '=', tier.id).execute()
}

export interface Availability {
  event: EventTable
  tiers: TierWithUsage[]
  groups: Array<CapacityGroupTable & { usage: Usage }>
  available: boolean
  remaining: number
  scarcity: boolean
}

export async function eventAvailability(db: DbConn, event: EventTable, nowMs: number): Promise<Availability> {
  const tierRows = await TIER_QUERIES.tiersOfEvent(db, event.id).execute()
  const groupRows = await TIER_QUERIES.groupsOfEvent(db, event.id).execute()
  const { tiers, groups } = await withUsage(db, tierRows, groupRows, nowMs)
  const available = tiers.some(
    (t) => t.remaining > 0 && isOnSale(t.tier, event.status, t.group?.status ?? null, nowMs),
  )
  const { capacity, remaining } = eventCapacity(tiers)
  return { event, tiers, groups: [...groups.values()], available, remaining, scarcity: isScarce(capacity, remaining) }
}
