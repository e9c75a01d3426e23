import { txOf, type DbConn } from '../storage/types.js'
import type { EventTable, HoldItemTable, HoldTable, PaymentTable, TicketTable } from '../db/schema.js'
import { newId, newSecret, secretMatches } from '../util/ids.js'
import { addToCounters, uncountItems } from './capacity.js'
import { fail } from './errors.js'
import { enqueueAppEvent } from './outbox.js'
import { holdItemView, holdStatus, ticketView } from './views.js'

/*
 * The buyer's side of a hold: the hosted checkout and the ticket page. The buyer holds no DID
 * session here; what admits them is a bearer secret in the link (the hold's `token`, and for
 * the ticket page the payment's `pageSecret`), compared in constant time. A wrong secret and
 * a missing record look the same, so a link reveals nothing about records it does not open.
 */

export interface CheckoutState {
  hold: HoldTable
  items: HoldItemTable[]
  event: EventTable
  payment: PaymentTable | undefined
}

/** The hold behind a checkout link, or undefined when the link is not valid. */
export async function openCheckout(db: DbConn, holdId: string, token: string): Promise<CheckoutState | undefined> {
  const hold = await db.selectFrom('hold').selectAll().where('id', '=', holdId).executeTakeFirst()
  if (!hold || !secretMatches(token, hold.token)) return undefined
  const items = await db.selectFrom('holdItem').selectAll().where('holdId', '=', holdId).orderBy('tierId').execute()
  const event = await db.selectFrom('event').selectAll().where('id', '=', hold.eventId).executeTakeFirstOrThrow()
  const payment = hold.paymentId
    ? await db.selectFrom('payment').selectAll().where('id', '=', hold.paymentId).executeTakeFirst()
    : undefined
  return { hold, items, event, payment }
}

/** Why a hold can no longer be paid for, in words for the buyer; undefined while it can. */
export function unpayableReason(hold: HoldTable, nowMs: number): string | undefined {
  switch (holdStatus(hold, nowMs)) {
    case 'active':
      return undefined
    case 'expired':
      return 'This reservation has expired and its tickets were released. Nothing was charged.'
    case 'released':
      return 'This reservation was cancelled and its tickets were released. Nothing was charged.'
    case 'completed':
      return 'This order is already paid.'
    default:
      return 'This reservation can no longer be paid for. Nothing was charged.'
  }
}

export interface Authorization {
  provider: string
  ref: string
  cardBrand: string
  cardLast4: string
}

export interface CompletionRequest {
  holdId: string
  token: string
  authorization: Authorization
  customerEmail: string
  publicUrl: string
}

export function ticketPageUrl(publicUrl: string, payment: Pick<PaymentTable, 'id' | 'pageSecret'>): string {
  return `${publicUrl}/tickets/${payment.id}?key=${encodeURIComponent(payment.pageSecret)}`
}

/**
 * Turns an authorized hold into a payment and its tickets, in the caller's BEGIN IMMEDIATE
 * transaction. The hold's status and expiry are decided here, at one instant, inside the
 * transaction: a hold that expired a moment before cannot complete, and of two submits only
 * the first finds it active (the payment's unique holdId would refuse a second one anyway).
 * Capacity moves from held to sold in the same statements' transaction, so sold + held never
 * exceeds a total even for an instant.
 */
export async function completeHold(tx: DbConn, req: CompletionRequest, nowMs: number) {
  // Read once locked: of two submits, or a submit and a release, one comes wholly first.
  await txOf(tx).lockRows('hold', [req.holdId])
  const hold = await tx.selectFrom('hold').selectAll().where('id', '=', req.holdId).executeTakeFirst()
  if (!hold || !secretMatches(req.token, hold.token)) fail('HoldNotFound', `no hold ${req.holdId}`)
  const status = holdStatus(hold, nowMs)
  if (status === 'completed') fail('HoldAlreadyCompleted', `hold ${hold.id} is already paid`, 'conflict')
  if (status === 'expired') fail('HoldExpired', `hold ${hold.id} expired at ${new Date(hold.expiresAt).toISOString()}`, 'conflict')
  if (status !== 'active') fail('HoldNotActive', `hold ${hold.id} is ${status}`, 'conflict')

  const items = await tx.selectFrom('holdItem').selectAll().where('holdId', '=', hold.id).orderBy('tierId').execute()
  const event = await tx.selectFrom('event').selectAll().where('id', '=', hold.eventId).executeTakeFirstOrThrow()
  const app = await tx.selectFrom('app').selectAll().where('did', '=', hold.appDid).executeTakeFirstOrThrow()
  const tierTitles = new Map(
    (
      await tx
        .selectFrom('tier')
        .select(['id', 'title'])
        .where(
          'id',
          'in',
          items.map((item) => item.tierId),
        )
        .execute()
    ).map((tier) => [tier.id, tier.title]),
  )

  // The hold's units are still counted (an unexpired hold is never reaped), so moving them
  // from held to sold keeps every total's sold + held unchanged.
  const counters = txOf(tx)
  await uncountItems(counters, items)
  await addToCounters(counters, 'sold', items)

  const payment: PaymentTable = {
    id: newId('pay'),
    appDid: hold.appDid,
    environment: hold.environment,
    holdId: hold.id,
    eventId: hold.eventId,
    amount: hold.amountCents,
    currency: hold.currency,
    status: 'succeeded',
    refundedAmount: 0,
    provider: req.authorization.provider,
    providerRef: req.authorization.ref,
    cardBrand: req.authorization.cardBrand,
    cardLast4: req.authorization.cardLast4,
    buyerDid: hold.buyerDid,
    customerEmail: req.customerEmail,
    pageSecret: newSecret('tkp'),
    createdAt: nowMs,
    updatedAt: nowMs,
  }
  await tx.insertInto('payment').values(payment).execute()

  const tickets: TicketTable[] = items.flatMap((item) =>
    Array.from({ length: item.quantity }, () => ({
      id: newId('tkt'),
      appDid: hold.appDid,
      environment: hold.environment,
      eventId: hold.eventId,
      tierId: item.tierId,
      capacityGroupId: item.capacityGroupId,
      ticketToken: newSecret('atmt'),
      status: 'issued',
      buyerDid: hold.buyerDid,
      customerEmail: req.customerEmail,
      paymentId: payment.id,
      claimId: null,
      holdId: hold.id,
      issuedAt: nowMs,
      checkedInAt: null,
      unitAmount: item.unitAmount,
      currency: item.currency,
      refundId: null,
      voidedAt: null,
      refundedAt: null,
      statusReason: null,
    })),
  )
  if (tickets.length > 0) await tx.insertInto('ticket').values(tickets).execute()

  const completed = { status: 'completed', completedAt: nowMs, paymentId: payment.id, customerEmail: req.customerEmail }
  await tx.updateTable('hold').set(completed).where('id', '=', hold.id).execute()

  const views = tickets.map((ticket) =>
    ticketView(ticket, { eventUri: event.uri, tierTitle: tierTitles.get(ticket.tierId), includeToken: true }),
  )
  await enqueueAppEvent(
    tx,
    app,
    hold.environment,
    'tickets.issued',
    {
      eventId: event.id,
      eventUri: event.uri ?? undefined,
      holdId: hold.id,
      paymentId: payment.id,
      hold: {
        id: hold.id,
        eventId: hold.eventId,
        amount: hold.amountCents,
        currency: hold.currency,
        quantityTotal: items.reduce((sum, item) => sum + item.quantity, 0),
        items: items.map(holdItemView),
      },
      issuedCount: views.length,
      tickets: views,
      ticketsUrl: ticketPageUrl(req.publicUrl, payment),
    },
    nowMs,
  )
  return { hold: { ...hold, ...completed }, payment, tickets }
}

/** Where the buyer goes once the hold is paid: the app's returnUrl, or our ticket page. */
export function afterPaymentUrl(publicUrl: string, hold: Pick<HoldTable, 'id' | 'returnUrl'>, payment: PaymentTable): string {
  if (!hold.returnUrl) return ticketPageUrl(publicUrl, payment)
  const url = new URL(hold.returnUrl)
  url.searchParams.set('holdId', hold.id)
  url.searchParams.set('paymentId', payment.id)
  return url.toString()
}

export interface TicketPage {
  payment: PaymentTable
  event: EventTable
  tickets: Array<TicketTable & { tierTitle: string }>
}

/** A payment's tickets for its buyer's page, or undefined when the link is not valid. */
export async function openTicketPage(db: DbConn, paymentId: string, key: string): Promise<TicketPage | undefined> {
  const payment = await db.selectFrom('payment').selectAll().where('id', '=', paymentId).executeTakeFirst()
  if (!payment || !secretMatches(key, payment.pageSecret)) return undefined
  const event = await db.selectFrom('event').selectAll().where('id', '=', payment.eventId).executeTakeFirstOrThrow()
  const tickets = await db
    .selectFrom('ticket')
    .innerJoin('tier', 'tier.id', 'ticket.tierId')
    .selectAll('ticket')
    .select('tier.title as tierTitle')
    .where('ticket.paymentId', '=', payment.id)
    .orderBy('ticket.id')
    .execute()
  return { payment, event, tickets }
}
