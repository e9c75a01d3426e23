import type { DbConn } from '../db/index.js'
import type { TicketTable } from '../db/schema.js'
import { fail } from './errors.js'
import { getEvent, type Scope } from './events.js'
import { ticketView } from './views.js'

// Cursors are opaque to callers: the last ticket id of a page, base64url-encoded.
function encodeCursor(id: string): string {
  return Buffer.from(id, 'utf8').toString('base64url')
}

function decodeCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined
  const id = Buffer.from(cursor, 'base64url').toString('utf8')
  if (!/^tkt_[1-9A-HJ-NP-Za-km-z]+$/.test(id)) fail('InvalidRequest', 'cursor is not one this service gave out: start again without it')
  return id
}

async function decorate(db: DbConn, rows: TicketTable[], includeToken: boolean) {
  const eventIds = [...new Set(rows.map((r) => r.eventId))]
  const tierIds = [...new Set(rows.map((r) => r.tierId))]
  const events = eventIds.length ? await db.selectFrom('event').select(['id', 'uri']).where('id', 'in', eventIds).execute() : []
  const tiers = tierIds.length ? await db.selectFrom('tier').select(['id', 'title']).where('id', 'in', tierIds).execute() : []
  const uriOf = new Map(events.map((e) => [e.id, e.uri]))
  const titleOf = new Map(tiers.map((t) => [t.id, t.title]))
  return rows.map((row) => ticketView(row, { eventUri: uriOf.get(row.eventId), tierTitle: titleOf.get(row.tierId), includeToken }))
}

function page(rows: TicketTable[], limit: number) {
  const more = rows.length > limit
  const pageRows = more ? rows.slice(0, limit) : rows
  return { pageRows, cursor: more ? encodeCursor(pageRows[pageRows.length - 1]!.id) : undefined }
}

/** A buyer's (or a payment's) tickets, with their scan tokens: only the buyer's app asks. */
/**
 * One page of tickets (one row more than `limit`, to know whether another page follows), as
 * the service reads it; the query-plan tests EXPLAIN these.
 */
export const TICKET_QUERIES = {
  buyerTickets: (db: DbConn, scope: Scope, q: { buyerDid?: string; paymentId?: string; after?: string; limit: number }) => {
    let query = db.selectFrom('ticket').selectAll().where('appDid', '=', scope.appDid).where('environment', '=', scope.environment)
    if (q.buyerDid) query = query.where('buyerDid', '=', q.buyerDid)
    if (q.paymentId) query = query.where('paymentId', '=', q.paymentId)
    if (q.after) query = query.where('id', '>', q.after)
    return query.orderBy('id').limit(q.limit + 1)
  },
  organizerTickets: (db: DbConn, scope: Scope, q: { organizerDid?: string; eventId?: string; after?: string; limit: number }) => {
    let query = db
      .selectFrom('ticket')
      .selectAll('ticket')
      .where('ticket.appDid', '=', scope.appDid)
      .where('ticket.environment', '=', scope.environment)
    if (q.eventId) query = query.where('ticket.eventId', '=', q.eventId)
    if (q.organizerDid) {
      query = query.where('ticket.eventId', 'in', (eb) =>
        eb
          .selectFrom('event')
          .select('event.id')
          .where('event.organizerDid', '=', q.organizerDid!)
          .where('event.appDid', '=', scope.appDid)
          .where('event.environment', '=', scope.environment),
      )
    }
    if (q.after) query = query.where('ticket.id', '>', q.after)
    return query.orderBy('ticket.id').limit(q.limit + 1)
  },
}

export async function listBuyerTickets(
  db: DbConn,
  scope: Scope,
  q: { buyerDid?: string; paymentId?: string; limit: number; cursor?: string },
) {
  if (!q.buyerDid && !q.paymentId) fail('InvalidRequest', 'give buyerDid or paymentId')
  const rows = await TICKET_QUERIES.buyerTickets(db, scope, { ...q, after: decodeCursor(q.cursor) }).execute()
  const { pageRows, cursor } = page(rows, q.limit)
  return { tickets: await decorate(db, pageRows, true), cursor }
}

/** An event's (or an organizer's) tickets for the organizer's app: never the scan tokens. */
export async function listOrganizerTickets(
  db: DbConn,
  scope: Scope,
  q: { organizerDid?: string; eventId?: string; limit: number; cursor?: string },
) {
  const after = decodeCursor(q.cursor)
  if (q.eventId) {
    const event = await getEvent(db, scope, q.eventId)
    if (!event || (q.organizerDid && event.organizerDid !== q.organizerDid)) {
      fail('EventNotFound', `no ticketed event ${q.eventId} for this app in ${scope.environment}`)
    }
  }
  const rows = await TICKET_QUERIES.organizerTickets(db, scope, { ...q, after }).execute()
  const { pageRows, cursor } = page(rows, q.limit)
  return { tickets: await decorate(db, pageRows, false), cursor }
}
