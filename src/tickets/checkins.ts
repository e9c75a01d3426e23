import { sql } from 'kysely'
import { txOf, type DbConn } from '../storage/types.js'
import type { AppTable, CheckInListTable, CheckInTable, EventTable, TicketTable } from '../db/schema.js'
import { newId } from '../util/ids.js'
import { isoFromMs } from '../util/time.js'
import { fail } from './errors.js'
import { getEvent, type Scope } from './events.js'
import { enqueueAppEvent } from './outbox.js'
import { getTier, tierWithUsage } from './tiers.js'
import { eventSummary, ticketView, tierSummary } from './views.js'
import type * as Defs from '../lexicon/types/tickets/atmosphere/defs.js'

/** Why a scanned ticket may not be admitted. */
export type InvalidReason = 'not_found' | 'voided' | 'refunded' | 'wrong_event'

/** A scan token is a bearer secret of one app: another app's, or another environment's, is simply not found. */
export async function findTicketByToken(db: DbConn, scope: Scope, ticketToken: string): Promise<TicketTable | undefined> {
  return CHECKIN_QUERIES.ticketByToken(db, scope, ticketToken).executeTakeFirst()
}

/** The door's kysely reads, as the service runs them (the query-plan tests EXPLAIN these). */
export const CHECKIN_QUERIES = {
  ticketByToken: (db: DbConn, scope: Scope, ticketToken: string) =>
    db
      .selectFrom('ticket')
      .selectAll()
      .where('ticketToken', '=', ticketToken)
      .where('appDid', '=', scope.appDid)
      .where('environment', '=', scope.environment),
  admission: (db: DbConn, ticketId: string, checkInListId: string) =>
    db.selectFrom('checkIn').selectAll().where('ticketId', '=', ticketId).where('checkInListId', '=', checkInListId),
  /** One page (and one row more) of an event's lists with their counts, the event's own list first. */
  listsOfEvent: (db: DbConn, event: Pick<EventTable, 'id' | 'checkInListId'>, q: { after?: string; limit: number }) => {
    const isDefault = sql<number>`CASE WHEN "checkInList"."id" = ${event.checkInListId} THEN 0 ELSE 1 END`
    let query = db
      .selectFrom('checkInList')
      .selectAll('checkInList')
      .select((eb) =>
        eb.selectFrom('checkIn').select(eb.fn.countAll<number>().as('n')).whereRef('checkIn.checkInListId', '=', 'checkInList.id').as('checkedInCount'),
      )
      .where('checkInList.eventId', '=', event.id)
    if (q.after !== undefined) {
      // The event's own list leads the first page, so any cursor is past it.
      query = query.where('checkInList.id', '!=', event.checkInListId)
      if (q.after !== event.checkInListId) query = query.where('checkInList.id', '>', q.after)
    }
    return query.orderBy(isDefault).orderBy('checkInList.id').limit(q.limit + 1)
  },
}

function unusableReason(ticket: TicketTable): InvalidReason | null {
  if (ticket.status === 'voided') return 'voided'
  if (ticket.status === 'refunded') return 'refunded'
  return null
}

async function findCheckIn(db: DbConn, ticketId: string, checkInListId: string): Promise<CheckInTable | undefined> {
  return CHECKIN_QUERIES.admission(db, ticketId, checkInListId).executeTakeFirst()
}

function checkInView(row: CheckInTable): Defs.CheckIn {
  return { id: row.id, checkInListId: row.checkInListId, checkedInAt: isoFromMs(row.checkedInAt) }
}

async function describeTicket(db: DbConn, ticket: TicketTable, event: EventTable) {
  const tier = await db.selectFrom('tier').select('title').where('id', '=', ticket.tierId).executeTakeFirst()
  return ticketView(ticket, { eventUri: event.uri, tierTitle: tier?.title, includeToken: false })
}

/**
 * What a door scanner sees before admitting: the ticket, its event and tier, and whether it
 * may be admitted at the event's own list. Never an error for a token it does not know.
 */
export async function verifyTicket(db: DbConn, scope: Scope, req: { ticketToken: string; eventId?: string }, nowMs: number) {
  const ticket = await findTicketByToken(db, scope, req.ticketToken)
  if (!ticket) return { valid: false, reason: 'not_found' }
  const event = (await getEvent(db, scope, ticket.eventId))!
  const tier = (await getTier(db, scope, ticket.tierId))!
  const found = {
    ticket: ticketView(ticket, { eventUri: event.uri, tierTitle: tier.title, includeToken: false }),
    event: eventSummary(event),
    tier: tierSummary(await tierWithUsage(db, tier, nowMs), event.status, nowMs),
  }
  const unusable = unusableReason(ticket)
  if (unusable) return { valid: false, reason: unusable, ...found }
  if (req.eventId !== undefined && req.eventId !== ticket.eventId) return { valid: false, reason: 'wrong_event', ...found }
  if (await findCheckIn(db, ticket.id, event.checkInListId)) return { valid: false, reason: 'checked_in', ...found }
  return { valid: true, ...found }
}

export interface CheckInRequest {
  scope: Scope
  app: AppTable
  ticketToken: string
  checkInListId?: string
  metadata?: Record<string, unknown>
}

/**
 * Admits a ticket once per check-in list. The UNIQUE (ticketId, checkInListId) of `checkIn`
 * decides which scan is first, so even scans that race past every check here admit once; the
 * others answer the first scan's admission.
 */
export async function checkInTicket(tx: DbConn, req: CheckInRequest, nowMs: number) {
  const { scope } = req
  let list: CheckInListTable | undefined
  if (req.checkInListId !== undefined) {
    list = await getCheckInList(tx, scope, req.checkInListId)
    if (!list) fail('CheckInListNotFound', `no check-in list ${req.checkInListId} for this app in ${scope.environment}: omit checkInListId to use the event's own list`)
  }
  const found = await findTicketByToken(tx, scope, req.ticketToken)
  if (!found) return { ok: false, status: 'invalid', reason: 'not_found' }
  // Read again once locked: a void or refund of this ticket at the same moment comes wholly before or after.
  await txOf(tx).lockRows('ticket', [found.id])
  const ticket = (await findTicketByToken(tx, scope, req.ticketToken))!
  const event = (await getEvent(tx, scope, ticket.eventId))!
  const listId = list?.id ?? event.checkInListId
  const view = await describeTicket(tx, ticket, event)
  const unusable = unusableReason(ticket) ?? (list && list.eventId !== ticket.eventId ? 'wrong_event' : null)
  if (unusable) return { ok: false, status: 'invalid', reason: unusable, ticket: view }

  const row: CheckInTable = {
    id: newId('chk'),
    ticketId: ticket.id,
    checkInListId: listId,
    appDid: scope.appDid,
    environment: scope.environment,
    checkedInAt: nowMs,
    metadata: req.metadata ? JSON.stringify(req.metadata) : null,
  }
  const inserted = await tx
    .insertInto('checkIn')
    .values(row)
    .onConflict((oc) => oc.columns(['ticketId', 'checkInListId']).doNothing())
    .executeTakeFirst()
  if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) {
    const first = (await findCheckIn(tx, ticket.id, listId))!
    return { ok: false, status: 'already_checked_in', ticket: view, checkIn: checkInView(first) }
  }

  // The ticket's own status and time record its first admission, at whichever list.
  await tx
    .updateTable('ticket')
    .set({ status: 'checked_in', checkedInAt: nowMs })
    .where('id', '=', ticket.id)
    .where('status', '=', 'issued')
    .execute()
  const admitted = (await tx.selectFrom('ticket').selectAll().where('id', '=', ticket.id).executeTakeFirstOrThrow())
  const admittedView = await describeTicket(tx, admitted, event)
  const checkIn = checkInView(row)
  await enqueueAppEvent(
    tx,
    req.app,
    scope.environment,
    'ticket.checked-in',
    { eventId: event.id, eventUri: event.uri ?? undefined, ticket: admittedView, tickets: [admittedView], checkIn },
    nowMs,
  )
  return { ok: true, status: 'checked_in', ticket: admittedView, checkIn }
}

export async function getCheckInList(db: DbConn, scope: Scope, id: string): Promise<CheckInListTable | undefined> {
  return db
    .selectFrom('checkInList')
    .selectAll()
    .where('id', '=', id)
    .where('appDid', '=', scope.appDid)
    .where('environment', '=', scope.environment)
    .executeTakeFirst()
}

function checkInListView(list: CheckInListTable, event: EventTable, checkedInCount: number): Defs.CheckInList {
  return {
    id: list.id,
    checkInListId: list.id,
    eventId: list.eventId,
    name: list.name,
    isEventDefault: list.id === event.checkInListId,
    checkedInCount,
    createdAt: isoFromMs(list.createdAt),
  }
}

async function requireOwnEvent(db: DbConn, scope: Scope, eventId: string): Promise<EventTable> {
  const event = await getEvent(db, scope, eventId)
  if (!event) fail('EventNotFound', `no ticketed event ${eventId} for this app in ${scope.environment}`)
  return event
}

export async function createCheckInList(tx: DbConn, scope: Scope, req: { eventId: string; name: string }, nowMs: number) {
  const event = await requireOwnEvent(tx, scope, req.eventId)
  const list: CheckInListTable = {
    id: newId('cil'),
    eventId: event.id,
    appDid: scope.appDid,
    environment: scope.environment,
    name: req.name,
    createdAt: nowMs,
  }
  await tx.insertInto('checkInList').values(list).execute()
  return { checkInList: checkInListView(list, event, 0) }
}

// Cursors are opaque to callers: the last list id of a page, base64url-encoded.
function decodeListCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined
  const id = Buffer.from(cursor, 'base64url').toString('utf8')
  if (!/^cil_[1-9A-HJ-NP-Za-km-z]+$/.test(id)) fail('InvalidRequest', 'cursor is not one this service gave out: start again without it')
  return id
}

/** An event's lists: its own first, then the others in id order (a stable order to page through). */
export async function listCheckInLists(db: DbConn, scope: Scope, q: { eventId: string; limit: number; cursor?: string }) {
  const event = await requireOwnEvent(db, scope, q.eventId)
  const rows = await CHECKIN_QUERIES.listsOfEvent(db, event, { after: decodeListCursor(q.cursor), limit: q.limit }).execute()
  const more = rows.length > q.limit
  const page = more ? rows.slice(0, q.limit) : rows
  const last = page[page.length - 1]
  return {
    checkInLists: page.map((row) => checkInListView(row, event, Number(row.checkedInCount ?? 0))),
    cursor: more && last ? Buffer.from(last.id, 'utf8').toString('base64url') : undefined,
  }
}
