import { AtUri } from '@atproto/api'
import { CID } from 'multiformats/cid'
import type { Environment } from '../config.js'
import { txOf, type DbConn } from '../storage/types.js'
import type { EventTable } from '../db/schema.js'
import type { EventInput } from '../lexicon/types/tickets/atmosphere/defs.js'
import { newId } from '../util/ids.js'
import { fail } from './errors.js'
import { requireOrganizer } from './organizers.js'

export interface Scope {
  appDid: string
  environment: Environment
}

export const EVENT_STATUSES = ['active', 'paused', 'archived'] as const

export function checkEventStatus(status: string | undefined): void {
  if (status !== undefined && !(EVENT_STATUSES as readonly string[]).includes(status)) {
    fail('InvalidRequest', `status must be one of ${EVENT_STATUSES.join(', ')}, got "${status}"`)
  }
}

/** Another app's event, or one of the other environment, is "not found", never "forbidden". */
/** This module's hot kysely read, as the service runs it (the query-plan tests EXPLAIN it). */
export const EVENT_QUERIES = {
  event: (db: DbConn, scope: Scope, eventId: string) =>
    db.selectFrom('event').selectAll().where('id', '=', eventId).where('appDid', '=', scope.appDid).where('environment', '=', scope.environment),
}

export async function getEvent(db: DbConn, scope: Scope, eventId: string): Promise<EventTable | undefined> {
  return EVENT_QUERIES.event(db, scope, eventId).executeTakeFirst()
}

export async function getEventByUri(db: DbConn, scope: Scope, uri: string): Promise<EventTable | undefined> {
  return db
    .selectFrom('event')
    .selectAll()
    .where('appDid', '=', scope.appDid)
    .where('environment', '=', scope.environment)
    .where('uri', '=', uri)
    .executeTakeFirst()
}

export async function requireEvent(db: DbConn, scope: Scope, ref: { eventId?: string; eventUri?: string }): Promise<EventTable> {
  if (!ref.eventId && !ref.eventUri) fail('InvalidRequest', 'give eventId or eventUri')
  const event = ref.eventId ? await getEvent(db, scope, ref.eventId) : await getEventByUri(db, scope, ref.eventUri!)
  if (!event || (ref.eventId && ref.eventUri && event.uri !== ref.eventUri)) {
    fail('EventNotFound', `no ticketed event ${ref.eventId ?? ref.eventUri} for this app in ${scope.environment}`)
  }
  return event
}

/** Whether the event has sold anything or holds capacity now: then its organizer is fixed. */
async function hasCommitments(db: DbConn, eventId: string, nowMs: number): Promise<boolean> {
  const ticket = await db.selectFrom('ticket').select('id').where('eventId', '=', eventId).limit(1).executeTakeFirst()
  if (ticket) return true
  const hold = await db
    .selectFrom('hold')
    .select('id')
    .where('eventId', '=', eventId)
    .where('status', '=', 'active')
    .where('expiresAt', '>', nowMs)
    .limit(1)
    .executeTakeFirst()
  return hold !== undefined
}

export interface BindEventRequest {
  scope: Scope
  organizerDid: string
  /** True when a verified assertion from `organizerDid` for this method came with the call. */
  organizerConsented: boolean
  event: EventInput
  status?: string
  /** createTicketEvent refreshes the stored title, times and links from the input. */
  updateDetails: boolean
  /** Selling for money needs payment setup (CONTRACT §4 PaymentSetupIncomplete). */
  needsPayments: boolean
  nowMs: number
}

/**
 * Finds or creates this app's binding of an event record to an organizer, enforcing consent:
 * binding to an organizer other than the app needs the organizer's assertion; moving a bound
 * event to another organizer needs the new organizer's assertion and is refused once the
 * event has tickets or active holds.
 */
export async function bindEvent(tx: DbConn, req: BindEventRequest): Promise<EventTable> {
  const { scope, event: input, nowMs } = req
  checkEventStatus(req.status)
  if (!input.uri && !input.eventId) fail('InvalidEvent', 'event needs a uri (the at-uri of the event record) or an eventId')
  if (input.uri) checkEventUri(input.uri)
  if (input.cid) checkEventCid('event.cid', input.cid)

  const existing = input.eventId ? await getEvent(tx, scope, input.eventId) : await getEventByUri(tx, scope, input.uri!)
  if (input.eventId && !existing) fail('EventNotFound', `no ticketed event ${input.eventId} for this app in ${scope.environment}`)
  if (existing && input.eventId && input.uri && existing.uri !== input.uri) {
    fail('InvalidEvent', `event ${input.eventId} is bound to ${existing.uri ?? 'no uri'}, not ${input.uri}`)
  }
  // Consent is checked before anything about the organizer is looked up, so an app without
  // it learns nothing about whether that DID has signed in or set up payments.
  if (!existing) {
    if (!input.title) fail('InvalidEvent', 'event.title is required when the event is new')
    if (req.organizerDid !== scope.appDid && !req.organizerConsented) {
      fail(
        'OrganizerConsentRequired',
        `binding an event to ${req.organizerDid} needs organizerAssertionJwt signed by that organizer`,
        'forbidden',
      )
    }
    await requireOrganizer(txOf(tx), req.organizerDid, scope.environment, req.needsPayments)
    const row: EventTable = {
      id: newId('evt'),
      appDid: scope.appDid,
      environment: scope.environment,
      uri: input.uri ?? null,
      cid: input.cid ?? null,
      title: input.title,
      organizerDid: req.organizerDid,
      status: req.status ?? 'active',
      startsAt: input.startsAt ?? null,
      endsAt: input.endsAt ?? null,
      timezone: input.timezone ?? null,
      url: input.url ?? null,
      imageUrl: input.imageUrl ?? null,
      metadata: input.metadata ? JSON.stringify(input.metadata) : null,
      checkInListId: newId('cil'),
      createdAt: nowMs,
      updatedAt: nowMs,
    }
    await tx.insertInto('event').values(row).execute()
    await tx
      .insertInto('checkInList')
      .values({
        id: row.checkInListId,
        eventId: row.id,
        appDid: row.appDid,
        environment: row.environment,
        name: 'Main entrance',
        createdAt: nowMs,
      })
      .execute()
    return row
  }

  const changes: Partial<EventTable> = {}
  if (existing.organizerDid !== req.organizerDid) {
    if (!req.organizerConsented) {
      fail(
        'OrganizerReassignmentNotAllowed',
        `event ${existing.id} belongs to another organizer: moving it to ${req.organizerDid} needs organizerAssertionJwt from ${req.organizerDid}`,
        'forbidden',
      )
    }
    if (await hasCommitments(tx, existing.id, nowMs)) {
      fail(
        'OrganizerReassignmentNotAllowed',
        `event ${existing.id} has issued tickets or active holds: its organizer can no longer change`,
        'forbidden',
      )
    }
    changes.organizerDid = req.organizerDid
  }
  await requireOrganizer(txOf(tx), req.organizerDid, scope.environment, req.needsPayments)
  if (req.updateDetails) {
    if (input.title !== undefined) changes.title = input.title
    if (input.cid !== undefined) changes.cid = input.cid
    if (input.startsAt !== undefined) changes.startsAt = input.startsAt
    if (input.endsAt !== undefined) changes.endsAt = input.endsAt
    if (input.timezone !== undefined) changes.timezone = input.timezone
    if (input.url !== undefined) changes.url = input.url
    if (input.imageUrl !== undefined) changes.imageUrl = input.imageUrl
    if (input.metadata !== undefined) changes.metadata = JSON.stringify(input.metadata)
    if (req.status !== undefined) changes.status = req.status
  }
  if (Object.keys(changes).length === 0) return existing
  changes.updatedAt = nowMs
  await tx.updateTable('event').set(changes).where('id', '=', existing.id).execute()
  return { ...existing, ...changes }
}

function checkEventUri(uri: string): void {
  try {
    const parsed = new AtUri(uri)
    if (!parsed.hostname.startsWith('did:') || !parsed.collection || !parsed.rkey) throw new Error('incomplete')
  } catch {
    fail('InvalidEvent', `event.uri must be the at-uri of a record (at://did/collection/rkey), got "${uri}"`)
  }
}

/** The CID of the event record's version, as a PDS answers it (multiformats parses it). */
function checkEventCid(field: string, cid: string): void {
  try {
    CID.parse(cid)
  } catch {
    fail('InvalidEvent', `${field} must be the CID of the event record, got "${cid}"`)
  }
}

export interface UpdateEventRequest {
  scope: Scope
  eventId: string
  title?: string
  startsAt?: string | null
  eventCid?: string | null
  imageUrl?: string | null
  status?: string
  metadata?: Record<string, unknown>
  nowMs: number
}

export async function updateEvent(tx: DbConn, req: UpdateEventRequest): Promise<EventTable> {
  checkEventStatus(req.status)
  if (req.eventCid) checkEventCid('eventCid', req.eventCid)
  const existing = await getEvent(tx, req.scope, req.eventId)
  if (!existing) fail('EventNotFound', `no ticketed event ${req.eventId} for this app in ${req.scope.environment}`)
  const changes: Partial<EventTable> = { updatedAt: req.nowMs }
  if (req.title !== undefined) changes.title = req.title
  if (req.startsAt !== undefined) changes.startsAt = req.startsAt
  if (req.eventCid !== undefined) changes.cid = req.eventCid
  if (req.imageUrl !== undefined) changes.imageUrl = req.imageUrl
  if (req.status !== undefined) changes.status = req.status
  if (req.metadata !== undefined) changes.metadata = JSON.stringify(req.metadata)
  await tx.updateTable('event').set(changes).where('id', '=', existing.id).execute()
  return { ...existing, ...changes }
}
