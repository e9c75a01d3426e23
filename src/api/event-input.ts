import type { AppContext } from '../context.js'
import type { EventInput } from '../lexicon/types/tickets/atmosphere/defs.js'
import { fail } from '../tickets/errors.js'
import { getEventByUri, type Scope } from '../tickets/events.js'

/**
 * A new event named only by its record's at-uri takes its title (and times and CID) from the
 * record on the organizer's PDS. Read before the transaction: it is network I/O.
 */
export async function withRecordDetails(ctx: AppContext, scope: Scope, event: EventInput): Promise<EventInput> {
  if (!event.uri || event.title || event.eventId) return event
  if (await getEventByUri(ctx.db.db, scope, event.uri)) return event
  let details
  try {
    details = await ctx.eventRecords.read(event.uri)
  } catch (err) {
    return fail('InvalidEvent', `event.title is required for a new event, and ${(err as Error).message}`)
  }
  return {
    ...event,
    title: details.title,
    cid: event.cid ?? details.cid,
    startsAt: event.startsAt ?? details.startsAt,
    endsAt: event.endsAt ?? details.endsAt,
  }
}
