import { txOf, type DbConn } from '../storage/types.js'
import type { AppTable, EventTable, TicketTable } from '../db/schema.js'
import { msFromIso } from '../util/time.js'
import { addToCounters, loadUsage } from './capacity.js'
import { fail } from './errors.js'
import type { Scope } from './events.js'
import { enqueueAppEvent } from './outbox.js'
import { ticketView } from './views.js'

// What voids and refunds share: finding the app's tickets, the start-of-event rule, giving
// sold capacity back, the answer's shapes and the app's events.

/** The app's tickets, in the order asked; the first unknown id is TicketNotFound. */
export async function requireTickets(db: DbConn, scope: Scope, ticketIds: string[]): Promise<TicketTable[]> {
  const seen = new Set<string>()
  for (const id of ticketIds) {
    if (seen.has(id)) fail('InvalidRequest', `ticketIds lists ${id} more than once: name each ticket once`)
    seen.add(id)
  }
  // Locked before they are read: the change decided on them is the only one at a time.
  await txOf(db).lockRows('ticket', [...ticketIds].sort())
  const rows = await db
    .selectFrom('ticket')
    .selectAll()
    .where('id', 'in', ticketIds)
    .where('appDid', '=', scope.appDid)
    .where('environment', '=', scope.environment)
    .execute()
  const byId = new Map(rows.map((row) => [row.id, row]))
  return ticketIds.map((id) => byId.get(id) ?? fail('TicketNotFound', `no ticket ${id} for this app in ${scope.environment}: nothing was changed`))
}

export async function eventsOf(db: DbConn, tickets: TicketTable[]): Promise<Map<string, EventTable>> {
  const ids = [...new Set(tickets.map((t) => t.eventId))]
  const rows = ids.length ? await db.selectFrom('event').selectAll().where('id', 'in', ids).execute() : []
  return new Map(rows.map((row) => [row.id, row]))
}

export function hasStarted(event: EventTable, nowMs: number): boolean {
  const startsAt = msFromIso(event.startsAt)
  return startsAt !== null && startsAt <= nowMs
}

/**
 * Once doors are open, taking a ticket away is the organizer's deliberate choice, never a
 * side effect of a retry or a bulk job: the app has to say `force`.
 */
export function checkNotStarted(events: Iterable<EventTable>, force: boolean, action: string, nowMs: number): void {
  if (force) return
  for (const event of events) {
    if (hasStarted(event, nowMs)) {
      fail('EventAlreadyStarted', `event ${event.id} started at ${event.startsAt}: send force: true to ${action} its tickets anyway`)
    }
  }
}

export function refuseCheckedIn(ticket: TicketTable, action: string): void {
  if (ticket.status === 'checked_in') {
    fail('TicketAlreadyCheckedIn', `ticket ${ticket.id} was already admitted: it cannot be ${action}; nothing was changed`)
  }
}

/** Lowers `sold` of the tickets' tiers and groups: these tickets no longer take capacity. */
export async function returnSoldCapacity(tx: DbConn, tickets: TicketTable[]): Promise<void> {
  await addToCounters(
    txOf(tx),
    'sold',
    tickets.map((ticket) => ({ tierId: ticket.tierId, capacityGroupId: ticket.capacityGroupId, quantity: -1 })),
  )
}

/** Remaining capacity of the tickets' tiers, as availability counts it. */
export async function remainingOfTiers(db: DbConn, tickets: TicketTable[], nowMs: number) {
  const tierIds = [...new Set(tickets.map((t) => t.tierId))]
  const tiers = tierIds.length ? await db.selectFrom('tier').selectAll().where('id', 'in', tierIds).execute() : []
  const usage = await loadUsage(db, tiers, nowMs)
  const remainingOf = new Map(usage.tiers.map((entry) => [entry.tier.id, entry.remaining]))
  return tierIds.map((tierId) => ({ tierId, remaining: remainingOf.get(tierId) ?? 0 }))
}

/** Ticket views as the app's events and answers carry them: no scan token. */
export async function viewsOf(db: DbConn, tickets: TicketTable[], events: Map<string, EventTable>) {
  const tierIds = [...new Set(tickets.map((t) => t.tierId))]
  const tiers = tierIds.length ? await db.selectFrom('tier').select(['id', 'title']).where('id', 'in', tierIds).execute() : []
  const titleOf = new Map(tiers.map((t) => [t.id, t.title]))
  return tickets.map((ticket) =>
    ticketView(ticket, { eventUri: events.get(ticket.eventId)?.uri, tierTitle: titleOf.get(ticket.tierId), includeToken: false }),
  )
}

/**
 * The app's events of a void or a refund, one per ticket: its event, payment and hold, what
 * `extra` adds for that ticket, the ticket (also as `tickets: [ticket]`) and the reason.
 */
export async function enqueueTicketEvents(
  tx: DbConn,
  app: AppTable,
  change: { environment: string; type: string; reason: string | undefined; nowMs: number },
  tickets: TicketTable[],
  views: Array<ReturnType<typeof ticketView>>,
  events: Map<string, EventTable>,
  extra: (ticket: TicketTable) => Record<string, unknown> = () => ({}),
): Promise<void> {
  for (const [index, ticket] of tickets.entries()) {
    const view = views[index]!
    const data = {
      eventId: ticket.eventId,
      eventUri: events.get(ticket.eventId)?.uri ?? undefined,
      paymentId: ticket.paymentId ?? undefined,
      holdId: ticket.holdId ?? undefined,
      ...extra(ticket),
      ticket: view,
      tickets: [view],
      reason: change.reason,
    }
    await enqueueAppEvent(tx, app, change.environment, change.type, data, change.nowMs)
  }
}
