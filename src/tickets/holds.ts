import { ids } from '../lexicon/lexicons.js'
import { txOf, type DbConn, type Tx } from '../storage/types.js'
import type { AppTable, EventTable, HoldItemTable, HoldTable, TierTable } from '../db/schema.js'
import { newId, newSecret } from '../util/ids.js'
import { isOnSale, takeCapacity, uncountItems } from './capacity.js'
import { fail } from './errors.js'
import { getEvent, type Scope } from './events.js'
import { requireOrganizer } from './organizers.js'
import { enqueueAppEventIn } from './outbox.js'
import { eventAvailability } from './tiers.js'
import { holdItemView, holdStatus } from './views.js'

export interface HoldRequest {
  scope: Scope
  app: AppTable
  eventId?: string
  eventUri?: string
  buyerDid?: string | null
  customerEmail?: string | null
  items: Array<{ tierId: string; quantity: number }>
  returnUrl?: string
  cancelUrl?: string
  metadata?: Record<string, unknown>
  ttlSeconds: number
  publicUrl: string
}

export function checkoutUrl(publicUrl: string, hold: Pick<HoldTable, 'id' | 'token'>): string {
  return `${publicUrl}/checkout/${hold.id}?token=${encodeURIComponent(hold.token)}`
}

/** Checks that need no database: the same tier twice, quantities below one. */
export function checkHoldItems(items: Array<{ tierId: string; quantity: number }>): void {
  const seen = new Set<string>()
  for (const [index, item] of items.entries()) {
    if (seen.has(item.tierId)) fail('InvalidItems', `items[${index}]: tier ${item.tierId} appears twice; put its whole quantity in one item`)
    seen.add(item.tierId)
    if (!Number.isInteger(item.quantity) || item.quantity < 1) {
      fail('InvalidQuantity', `items[${index}].quantity must be at least 1, got ${item.quantity}`)
    }
  }
}

/**
 * Why `raw` cannot be a place to send the buyer after checkout, or undefined when it can: an
 * absolute URL that parses, on https (http too in dev mode). Any other value would leave a
 * buyer who has just paid on a browser error instead of their tickets.
 */
export function redirectUrlProblem(raw: string, devMode: boolean): string | undefined {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return 'it does not parse as a URL'
  }
  if (url.protocol === 'https:') return undefined
  if (url.protocol === 'http:') return devMode ? undefined : 'plain http is allowed only with ATM_DEV_MODE=true'
  return `${url.protocol} URLs cannot be redirected to`
}

/** Refuses a returnUrl or cancelUrl the pages could not send a buyer to, naming the field. */
export function checkRedirectUrl(field: 'returnUrl' | 'cancelUrl', raw: string | undefined, devMode: boolean): void {
  if (raw === undefined) return
  const problem = redirectUrlProblem(raw, devMode)
  if (problem) {
    fail('InvalidRedirectUrl', `${field} must be an absolute https URL${devMode ? ' (or http, in dev mode)' : ''}: ${problem}`)
  }
}

const HOLD_COLUMNS = [
  'id', 'appDid', 'environment', 'eventId', 'token', 'buyerDid', 'customerEmail', 'status', 'expiresAt', 'amountCents',
  'currency', 'returnUrl', 'cancelUrl', 'metadata', 'createdAt', 'releasedAt', 'releaseReason', 'completedAt', 'paymentId',
] as const satisfies ReadonlyArray<keyof HoldTable>
const ITEM_COLUMNS = [
  'holdId', 'tierId', 'capacityGroupId', 'title', 'quantity', 'unitAmount', 'currency', 'expiresAt', 'counted',
] as const satisfies ReadonlyArray<keyof HoldItemTable>

/** The statements of `createHold`, as plain statements (see `Tx`): point reads by primary or unique key, and the inserts. */
export const HOLD_SQL = {
  eventById: 'SELECT * FROM event WHERE id = ? AND appDid = ? AND environment = ?',
  eventByUri: 'SELECT * FROM event WHERE appDid = ? AND environment = ? AND uri = ?',
  tier: 'SELECT * FROM tier WHERE id = ? AND appDid = ? AND environment = ?',
  groupStatus: 'SELECT status FROM capacityGroup WHERE id = ?',
  insertHold: `INSERT INTO hold (${HOLD_COLUMNS.join(', ')}) VALUES (${HOLD_COLUMNS.map(() => '?').join(', ')})`,
  insertItem: `INSERT INTO holdItem (${ITEM_COLUMNS.join(', ')}) VALUES (${ITEM_COLUMNS.map(() => '?').join(', ')})`,
} as const

/**
 * The check-and-take. Runs inside one BEGIN IMMEDIATE transaction: every tier of the hold is
 * checked against its own total and its group's, after expired holds are uncounted, and the
 * capacity of all items is taken together or not at all. Plain statements, so the write lock
 * that all workers share on SQLite is held only while SQLite works.
 */
export async function createHold(tx: Tx, req: HoldRequest, nowMs: number) {
  const { scope } = req
  checkHoldItems(req.items)
  const named = req.eventId
    ? await tx.get<EventTable>(HOLD_SQL.eventById, req.eventId, scope.appDid, scope.environment)
    : req.eventUri
      ? await tx.get<EventTable>(HOLD_SQL.eventByUri, scope.appDid, scope.environment, req.eventUri)
      : undefined
  if ((req.eventId || req.eventUri) && !named) {
    fail('EventNotFound', `no ticketed event ${req.eventId ?? req.eventUri} for this app in ${scope.environment}`)
  }
  const tierIds = req.items.map((item) => item.tierId)
  const tiersById = new Map<string, TierTable>()
  for (const tierId of tierIds) {
    const tier = await tx.get<TierTable>(HOLD_SQL.tier, tierId, scope.appDid, scope.environment)
    if (tier) tiersById.set(tierId, tier)
  }
  const tierRows = [...tiersById.values()]
  const missing = tierIds.filter((id) => !tiersById.has(id))
  if (missing.length > 0) fail('TicketTierNotFound', `ticket tier(s) not found for this app in ${scope.environment}: ${missing.join(', ')}`)

  const eventIds = new Set(tierRows.map((tier) => tier.eventId))
  if (eventIds.size > 1) fail('MixedEvents', 'a ticket hold can only contain tiers of one event: make one hold per event')
  const event =
    named?.id === tierRows[0]!.eventId ? named : (await tx.get<EventTable>(HOLD_SQL.eventById, tierRows[0]!.eventId, scope.appDid, scope.environment))!
  if ((req.eventId && req.eventId !== event.id) || (req.eventUri && req.eventUri !== event.uri)) {
    fail('MixedEvents', `the tiers belong to event ${event.id}, not to the event named in the request`)
  }
  const currencies = new Set(tierRows.map((tier) => tier.currency))
  if (currencies.size > 1) fail('MixedCurrency', `a ticket hold can only use one currency, these tiers use ${[...currencies].join(', ')}`)

  const groupStatus = new Map<string, string>()
  for (const tier of tierRows) {
    const groupId = tier.capacityGroupId
    if (!groupId || groupStatus.has(groupId)) continue
    const group = await tx.get<{ status: string }>(HOLD_SQL.groupStatus, groupId)
    if (group) groupStatus.set(groupId, group.status)
  }
  for (const item of req.items) {
    const tier = tiersById.get(item.tierId)!
    if (tier.unitAmount === 0) fail('FreeTicketRequiresClaim', `tier ${tier.id} is free: use ${ids.TicketsAtmosphereClaimFreeTicket}`)
    if (!isOnSale(tier, event.status, groupStatus.get(tier.capacityGroupId ?? '') ?? null, nowMs)) {
      fail('TicketsUnavailable', `tier ${tier.id} is not on sale now (${saleState(tier, event, nowMs)})`)
    }
    if (item.quantity > tier.maxPerOrder) {
      fail('QuantityTooHigh', `tier ${tier.id} allows at most ${tier.maxPerOrder} per order, asked for ${item.quantity}`)
    }
  }
  await requireOrganizer(tx, event.organizerDid, scope.environment, true)
  await takeCapacity(
    tx,
    req.items.map((item) => ({ tier: tiersById.get(item.tierId)!, quantity: item.quantity })),
    'held',
    nowMs,
  )

  const holdId = newId('hold')
  const expiresAt = nowMs + req.ttlSeconds * 1000
  const items: HoldItemTable[] = req.items.map((item) => {
    const tier = tiersById.get(item.tierId)!
    return {
      holdId,
      tierId: tier.id,
      capacityGroupId: tier.capacityGroupId,
      title: tier.title,
      quantity: item.quantity,
      unitAmount: tier.unitAmount,
      currency: tier.currency,
      expiresAt,
      counted: 1,
    }
  })
  const hold: HoldTable = {
    id: holdId,
    appDid: scope.appDid,
    environment: scope.environment,
    eventId: event.id,
    token: newSecret('hold_tok'),
    buyerDid: req.buyerDid ?? null,
    customerEmail: req.customerEmail ?? null,
    status: 'active',
    expiresAt,
    amountCents: items.reduce((sum, item) => sum + item.unitAmount * item.quantity, 0),
    currency: tierRows[0]!.currency,
    returnUrl: req.returnUrl ?? null,
    cancelUrl: req.cancelUrl ?? null,
    metadata: req.metadata ? JSON.stringify(req.metadata) : null,
    createdAt: nowMs,
    releasedAt: null,
    releaseReason: null,
    completedAt: null,
    paymentId: null,
  }
  await tx.run(HOLD_SQL.insertHold, ...HOLD_COLUMNS.map((column) => hold[column]))
  for (const item of items) await tx.run(HOLD_SQL.insertItem, ...ITEM_COLUMNS.map((column) => item[column]))

  const output = {
    holdId,
    token: hold.token,
    url: checkoutUrl(req.publicUrl, hold),
    environment: scope.environment,
    expiresAt: new Date(expiresAt).toISOString(),
    amountCents: hold.amountCents,
    currency: hold.currency,
    items: items.map(holdItemView),
  }
  await enqueueAppEventIn(
    tx,
    req.app,
    scope.environment,
    'ticket.hold.created',
    {
      eventId: event.id,
      eventUri: event.uri ?? undefined,
      holdId,
      hold: {
        id: holdId,
        eventId: event.id,
        amount: hold.amountCents,
        currency: hold.currency,
        quantityTotal: items.reduce((sum, item) => sum + item.quantity, 0),
        items: output.items,
        expiresAt: output.expiresAt,
        buyerDid: hold.buyerDid ?? undefined,
      },
    },
    nowMs,
  )
  return output
}

export function saleState(tier: TierTable, event: EventTable, nowMs: number): string {
  if (event.status !== 'active') return `event is ${event.status}`
  if (tier.status !== 'active') return `tier is ${tier.status}`
  if (tier.saleStartsAt !== null && tier.saleStartsAt > nowMs) return `sale starts ${new Date(tier.saleStartsAt).toISOString()}`
  if (tier.saleEndsAt !== null && tier.saleEndsAt <= nowMs) return `sale ended ${new Date(tier.saleEndsAt).toISOString()}`
  return 'capacity group is archived'
}

export async function getHold(db: DbConn, scope: Scope, holdId: string) {
  const hold = await db
    .selectFrom('hold')
    .selectAll()
    .where('id', '=', holdId)
    .where('appDid', '=', scope.appDid)
    .where('environment', '=', scope.environment)
    .executeTakeFirst()
  if (!hold) fail('HoldNotFound', `no hold ${holdId} for this app in ${scope.environment}`)
  const items = await db.selectFrom('holdItem').selectAll().where('holdId', '=', holdId).execute()
  const event = await getEvent(db, scope, hold.eventId)
  return { hold, items, event: event! }
}

/**
 * Gives a hold's capacity back at once. Releasing a hold that is already released or expired
 * answers its status again; a completed hold was paid for and cannot be released.
 */
export async function releaseHold(tx: DbConn, scope: Scope, holdId: string, reason: string | undefined, nowMs: number) {
  // Read once locked: a payment completing it at the same moment comes wholly before or after.
  await txOf(tx).lockRows('hold', [holdId])
  const { hold, items, event } = await getHold(tx, scope, holdId)
  if (hold.status === 'completed') {
    fail('HoldAlreadyCompleted', `hold ${holdId} was paid for: refund its tickets instead of releasing it`)
  }
  let current: HoldTable = hold
  if (hold.status === 'active') {
    await uncountItems(txOf(tx), items.filter((item) => item.counted === 1))
    // An expired hold stays "expired": its capacity was already free, nothing is released.
    if (hold.expiresAt > nowMs) {
      const changes = { status: 'released', releasedAt: nowMs, releaseReason: reason ?? null }
      await tx.updateTable('hold').set(changes).where('id', '=', hold.id).execute()
      current = { ...hold, ...changes }
    }
  }
  const availability = await eventAvailability(tx, event, nowMs)
  const heldTiers = new Set(items.map((item) => item.tierId))
  return {
    hold: {
      id: current.id,
      holdId: current.id,
      status: holdStatus(current, nowMs),
      releasedAt: current.releasedAt === null ? undefined : new Date(current.releasedAt).toISOString(),
      releaseReason: current.releaseReason ?? undefined,
    },
    availability: availability.tiers
      .filter((entry) => heldTiers.has(entry.tier.id))
      .map((entry) => ({ tierId: entry.tier.id, remaining: entry.remaining })),
    scarcity: availability.scarcity,
  }
}
