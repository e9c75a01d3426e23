import type { DbConn } from '../db/index.js'
import type { AppTable, TicketTable } from '../db/schema.js'
import { fail } from './errors.js'
import type { Scope } from './events.js'
import {
  checkNotStarted,
  enqueueTicketEvents,
  eventsOf,
  refuseCheckedIn,
  remainingOfTiers,
  requireTickets,
  returnSoldCapacity,
  viewsOf,
} from './ticket-changes.js'

export interface VoidRequest {
  scope: Scope
  app: AppTable
  ticketIds: string[]
  reason?: string
  force: boolean
}

/**
 * Takes tickets out of use without moving money (a paid ticket voided here can still be
 * refunded later), and sells their capacity again. Every ticket is checked before any is
 * changed: one that cannot be voided leaves them all as they were.
 */
export async function voidTickets(tx: DbConn, req: VoidRequest, nowMs: number) {
  const { scope } = req
  const tickets = await requireTickets(tx, scope, req.ticketIds)
  for (const ticket of tickets) {
    if (ticket.status === 'voided') fail('TicketAlreadyVoided', `ticket ${ticket.id} is voided already: nothing was changed`)
    if (ticket.status === 'refunded') {
      fail('TicketAlreadyRefunded', `ticket ${ticket.id} was refunded, which took it out of use already: nothing was changed`)
    }
    refuseCheckedIn(ticket, 'voided')
  }
  const events = await eventsOf(tx, tickets)
  checkNotStarted(events.values(), req.force, 'void', nowMs)

  const reason = req.reason ?? null
  await tx
    .updateTable('ticket')
    .set({ status: 'voided', voidedAt: nowMs, statusReason: reason })
    .where('id', 'in', tickets.map((t) => t.id))
    .execute()
  await returnSoldCapacity(tx, tickets)

  const voided: TicketTable[] = tickets.map((t) => ({ ...t, status: 'voided', voidedAt: nowMs, statusReason: reason }))
  const views = await viewsOf(tx, voided, events)
  const change = { environment: scope.environment, type: 'ticket.voided', reason: req.reason, nowMs }
  await enqueueTicketEvents(tx, req.app, change, voided, views, events)
  return { tickets: views, availability: await remainingOfTiers(tx, tickets, nowMs) }
}
