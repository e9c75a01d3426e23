import { ids } from '../lexicon/lexicons.js'
import { sql } from 'kysely'
import { txOf, type DbConn } from '../storage/types.js'
import type { AppTable, TicketTable } from '../db/schema.js'
import { newId, newSecret } from '../util/ids.js'
import { isOnSale, lockCounters, takeCapacity } from './capacity.js'
import { fail } from './errors.js'
import { getEvent, type Scope } from './events.js'
import { saleState } from './holds.js'
import { requireOrganizer } from './organizers.js'
import { enqueueAppEvent } from './outbox.js'
import { getGroup, requireTier } from './tiers.js'
import { ticketView } from './views.js'

export interface ClaimRequest {
  scope: Scope
  app: AppTable
  eventId?: string
  eventUri?: string
  tierId: string
  quantity: number
  buyerDid: string
  customerEmail?: string
  metadata?: Record<string, unknown>
}

export function checkClaimQuantity(quantity: number): void {
  if (!Number.isInteger(quantity) || quantity < 1) fail('InvalidQuantity', `quantity must be at least 1, got ${quantity}`)
}

/** Issues free tickets at once, in one BEGIN IMMEDIATE transaction with the capacity check. */
/** This module's kysely read, as the service runs it (the query-plan tests EXPLAIN it). */
export const CLAIM_QUERIES = {
  /** Units this buyer claimed of a tier so far, all claims together. */
  claimedByBuyer: (db: DbConn, tierId: string, buyerDid: string) =>
    db
      .selectFrom('claim')
      .select(sql<number>`COALESCE(SUM(quantity), 0)`.as('units'))
      .where('tierId', '=', tierId)
      .where('buyerDid', '=', buyerDid),
}

export async function claimFreeTickets(tx: DbConn, req: ClaimRequest, nowMs: number) {
  const { scope } = req
  checkClaimQuantity(req.quantity)
  const tier = await requireTier(tx, scope, req.tierId)
  const event = (await getEvent(tx, scope, tier.eventId))!
  if ((req.eventId && req.eventId !== event.id) || (req.eventUri && req.eventUri !== event.uri)) {
    fail('MixedEvents', `tier ${tier.id} belongs to event ${event.id}, not to the event named in the request`)
  }
  if (tier.unitAmount > 0) {
    fail('PaidTicketRequiresHold', `tier ${tier.id} costs money: create a hold with ${ids.TicketsAtmosphereCreateTicketHold}`)
  }
  const group = tier.capacityGroupId ? await getGroup(tx, scope, tier.capacityGroupId) : undefined
  if (!isOnSale(tier, event.status, group?.status ?? null, nowMs)) {
    fail('TicketsUnavailable', `tier ${tier.id} is not on sale now (${saleState(tier, event, nowMs)})`)
  }
  if (req.quantity > tier.maxPerOrder) {
    fail('QuantityTooHigh', `tier ${tier.id} allows at most ${tier.maxPerOrder} per order, asked for ${req.quantity}`)
  }
  await requireOrganizer(txOf(tx), event.organizerDid, scope.environment, false)

  // The tier locked first: two claims of one buyer at once are summed one after the other.
  await lockCounters(txOf(tx), [tier.id], tier.capacityGroupId ? [tier.capacityGroupId] : [])
  const already = await CLAIM_QUERIES.claimedByBuyer(tx, tier.id, req.buyerDid).executeTakeFirstOrThrow()
  if (Number(already.units) + req.quantity > tier.maxPerOrder) {
    fail(
      'ClaimLimitReached',
      `${req.buyerDid} has claimed ${already.units} of tier ${tier.id}; the limit per buyer is ${tier.maxPerOrder}`,
    )
  }

  await takeCapacity(txOf(tx), [{ tier, quantity: req.quantity }], 'sold', nowMs)

  const claimId = newId('claim')
  await tx
    .insertInto('claim')
    .values({
      id: claimId,
      appDid: scope.appDid,
      environment: scope.environment,
      eventId: event.id,
      tierId: tier.id,
      buyerDid: req.buyerDid,
      quantity: req.quantity,
      customerEmail: req.customerEmail ?? null,
      metadata: req.metadata ? JSON.stringify(req.metadata) : null,
      createdAt: nowMs,
    })
    .execute()
  const tickets: TicketTable[] = Array.from({ length: req.quantity }, () => ({
    id: newId('tkt'),
    appDid: scope.appDid,
    environment: scope.environment,
    eventId: event.id,
    tierId: tier.id,
    capacityGroupId: tier.capacityGroupId,
    ticketToken: newSecret('atmt'),
    status: 'issued',
    buyerDid: req.buyerDid,
    customerEmail: req.customerEmail ?? null,
    paymentId: null,
    claimId,
    holdId: null,
    issuedAt: nowMs,
    checkedInAt: null,
    unitAmount: 0,
    currency: tier.currency,
    refundId: null,
    voidedAt: null,
    refundedAt: null,
    statusReason: null,
  }))
  await tx.insertInto('ticket').values(tickets).execute()
  const views = tickets.map((t) => ticketView(t, { eventUri: event.uri, tierTitle: tier.title, includeToken: true }))
  await enqueueAppEvent(
    tx,
    req.app,
    scope.environment,
    'tickets.issued',
    { eventId: event.id, eventUri: event.uri ?? undefined, claimId, issuedCount: views.length, tickets: views },
    nowMs,
  )
  return { claimId, tickets: views }
}
