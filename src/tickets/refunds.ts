import { txOf, type DbConn, type Storage } from '../storage/types.js'
import type { AppTable, EventTable, PaymentTable, RefundTable, TicketTable } from '../db/schema.js'
import type { PaymentProvider } from '../payments/provider.js'
import { newId } from '../util/ids.js'
import { isoFromMs } from '../util/time.js'
import { fail } from './errors.js'
import type { Scope } from './events.js'
import {
  checkNotStarted,
  enqueueTicketEvents,
  eventsOf,
  hasStarted,
  refuseCheckedIn,
  remainingOfTiers,
  requireTickets,
  returnSoldCapacity,
  viewsOf,
} from './ticket-changes.js'

/*
 * How a refund reaches the card processor without ever being sent twice.
 *
 * The database change comes first and commits on its own: tickets `refunded`, the payment's
 * `refundedAmount`, a `refund` row whose `providerRef` is still empty, the events. That commit
 * is the lock: every later or concurrent request for these tickets finds them refunded
 * (TicketAlreadyRefunded), and an exact retry under the same idempotencyKey receives the stored
 * answer (reused: true); neither calls the provider. Only the request whose transaction created
 * a refund row calls the provider for it, once, after the commit, and then records the
 * provider's ref (`sendRefunds`).
 *
 * The other order (provider first, then the database) could refund twice when two requests
 * race, or refund money for tickets that a concurrent check-in had just admitted. The cost of
 * this order: a process that dies between the commit and the provider call leaves a refund row
 * with an empty `providerRef`, owed to the buyer and visible to the operator, instead of money
 * sent twice. A live provider must take the refund id as its idempotency key so that finishing
 * such a row by hand can never pay twice either.
 */

export interface RefundTicketsRequest {
  scope: Scope
  app: AppTable
  paymentId?: string
  ticketIds?: string[]
  reason?: string
  force: boolean
}

/** A refund as the answer shows it, and what `sendRefunds` needs to finish it. */
export interface RefundAnswer {
  id: string
  refundId: string
  paymentId: string
  amount: number
  currency: string
  ticketIds: string[]
  reason?: string
  forced: boolean
  createdAt: string
  payment: { id: string; paymentId: string; amount: number; refundedAmount: number; currency: string; status: string }
}

const REFUNDABLE_BY_PAYMENT = new Set(['issued', 'voided'])

async function getPayment(db: DbConn, scope: Scope, paymentId: string): Promise<PaymentTable | undefined> {
  return db
    .selectFrom('payment')
    .selectAll()
    .where('id', '=', paymentId)
    .where('appDid', '=', scope.appDid)
    .where('environment', '=', scope.environment)
    .executeTakeFirst()
}

/** Every ticket of the payment that still has its price to give back (voided ones included: a void moves no money). */
async function refundableOfPayment(db: DbConn, scope: Scope, paymentId: string): Promise<TicketTable[]> {
  const payment = await getPayment(db, scope, paymentId)
  if (!payment) fail('PaymentNotFound', `no payment ${paymentId} for this app in ${scope.environment}`)
  const all = await db.selectFrom('ticket').selectAll().where('paymentId', '=', payment.id).orderBy('id').execute()
  const refundable = all.filter((t) => REFUNDABLE_BY_PAYMENT.has(t.status) && t.unitAmount > 0)
  if (refundable.length === 0) {
    const checkedIn = all.find((t) => t.status === 'checked_in')
    if (checkedIn) refuseCheckedIn(checkedIn, 'refunded')
    fail('TicketAlreadyRefunded', `payment ${payment.id} has no ticket left to refund: every one is refunded already`)
  }
  return refundable
}

async function namedRefundable(db: DbConn, scope: Scope, ticketIds: string[]): Promise<TicketTable[]> {
  const tickets = await requireTickets(db, scope, ticketIds)
  for (const ticket of tickets) {
    if (ticket.paymentId === null || ticket.unitAmount === 0) {
      fail('TicketNotRefundable', `ticket ${ticket.id} was not paid for (a free claim): void it instead; nothing was changed`)
    }
    if (ticket.status === 'refunded') fail('TicketAlreadyRefunded', `ticket ${ticket.id} is refunded already: nothing was changed`)
    refuseCheckedIn(ticket, 'refunded')
  }
  return tickets
}

/**
 * Records the refund of paid tickets, one refund per payment, all or nothing, in the caller's
 * transaction. The money itself moves afterwards, in `sendRefunds` (see the note above).
 */
export async function refundTickets(tx: DbConn, req: RefundTicketsRequest, nowMs: number) {
  const { scope } = req
  if ((req.paymentId === undefined) === (req.ticketIds === undefined)) {
    fail('InvalidRequest', 'send either paymentId (to refund a whole payment) or ticketIds (to refund some tickets), not both')
  }
  // A whole payment: locked first, so two refunds of it are summed one after the other.
  if (req.paymentId !== undefined) await txOf(tx).lockRows('payment', [req.paymentId])
  const tickets = req.paymentId !== undefined ? await refundableOfPayment(tx, scope, req.paymentId) : await namedRefundable(tx, scope, req.ticketIds!)
  const events = await eventsOf(tx, tickets)
  checkNotStarted(events.values(), req.force, 'refund', nowMs)

  const byPayment = new Map<string, TicketTable[]>()
  for (const ticket of tickets) byPayment.set(ticket.paymentId!, [...(byPayment.get(ticket.paymentId!) ?? []), ticket])
  await txOf(tx).lockRows('payment', [...byPayment.keys()].sort())
  const paymentRows = await tx.selectFrom('payment').selectAll().where('id', 'in', [...byPayment.keys()]).execute()
  const paymentOf = new Map(paymentRows.map((p) => [p.id, p]))

  const refunds: RefundAnswer[] = []
  const refunded: TicketTable[] = []
  for (const [paymentId, paid] of byPayment) {
    const payment = paymentOf.get(paymentId)!
    const refund = await recordRefund(tx, req, payment, paid, events, nowMs)
    refunds.push(refund.answer)
    refunded.push(...refund.tickets)
  }
  // Voided tickets gave their capacity back when they were voided.
  await returnSoldCapacity(tx, tickets.filter((t) => t.status !== 'voided'))

  const order = new Map(tickets.map((t, index) => [t.id, index]))
  refunded.sort((a, b) => order.get(a.id)! - order.get(b.id)!)
  const views = await viewsOf(tx, refunded, events)
  const refundOf = new Map(refunds.map((r) => [r.paymentId, r]))
  const change = { environment: scope.environment, type: 'ticket.refunded', reason: req.reason, nowMs }
  await enqueueTicketEvents(tx, req.app, change, refunded, views, events, (ticket) => ({
    refundId: ticket.refundId,
    amount: ticket.unitAmount,
    currency: refundOf.get(ticket.paymentId!)!.currency,
  }))
  return { refunds, tickets: views, availability: await remainingOfTiers(tx, tickets, nowMs) }
}

async function recordRefund(
  tx: DbConn,
  req: RefundTicketsRequest,
  payment: PaymentTable,
  tickets: TicketTable[],
  events: Map<string, EventTable>,
  nowMs: number,
): Promise<{ answer: RefundAnswer; tickets: TicketTable[] }> {
  const amount = tickets.reduce((sum, t) => sum + t.unitAmount, 0)
  const forced = req.force && tickets.some((t) => hasStarted(events.get(t.eventId)!, nowMs))
  const row: RefundTable = {
    id: newId('ref'),
    appDid: payment.appDid,
    environment: payment.environment,
    paymentId: payment.id,
    amount,
    currency: payment.currency,
    reason: req.reason ?? null,
    forced: forced ? 1 : 0,
    // Empty until the provider has taken the refund (see the note at the top).
    providerRef: '',
    createdAt: nowMs,
  }
  await tx.insertInto('refund').values(row).execute()

  const refundedAmount = payment.refundedAmount + amount
  const status = refundedAmount >= payment.amount ? 'refunded' : 'partially_refunded'
  await tx.updateTable('payment').set({ refundedAmount, status, updatedAt: nowMs }).where('id', '=', payment.id).execute()

  const changed: TicketTable[] = []
  for (const ticket of tickets) {
    // A refund without a reason keeps the reason an earlier void gave.
    const changes = { status: 'refunded', refundId: row.id, refundedAt: nowMs, statusReason: req.reason ?? ticket.statusReason }
    await tx.updateTable('ticket').set(changes).where('id', '=', ticket.id).execute()
    changed.push({ ...ticket, ...changes })
  }
  return {
    answer: {
      id: row.id,
      refundId: row.id,
      paymentId: payment.id,
      amount,
      currency: payment.currency,
      ticketIds: tickets.map((t) => t.id),
      ...(req.reason !== undefined ? { reason: req.reason } : {}),
      forced,
      createdAt: isoFromMs(nowMs),
      payment: {
        id: payment.id,
        paymentId: payment.id,
        amount: payment.amount,
        refundedAmount,
        currency: payment.currency,
        status,
      },
    },
    tickets: changed,
  }
}

/**
 * Sends refunds recorded by `refundTickets` to the provider, after their commit; only the
 * request that recorded them calls this. Answers the refunds the provider refused; they stay
 * recorded with an empty providerRef for the operator to settle.
 */
export async function sendRefunds(database: Storage, provider: PaymentProvider, refunds: RefundAnswer[]): Promise<string[]> {
  const refused: string[] = []
  for (const refund of refunds) {
    const payment = await database.db.selectFrom('payment').select('providerRef').where('id', '=', refund.paymentId).executeTakeFirstOrThrow()
    const result = await provider
      .refund({ paymentRef: payment.providerRef, amount: refund.amount, currency: refund.currency })
      .catch(() => ({ ok: false as const }))
    if (!result.ok) {
      refused.push(refund.id)
      continue
    }
    await database.transaction((tx) =>
      tx.updateTable('refund').set({ providerRef: result.ref }).where('id', '=', refund.id).where('providerRef', '=', '').execute(),
    )
  }
  return refused
}
