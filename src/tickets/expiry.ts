import { txOf, type DbConn, type Storage } from '../storage/types.js'
import { uncountItems } from './capacity.js'
import { getApp } from './apps.js'
import { checkoutUrl } from './holds.js'
import { enqueueAppEvent } from './outbox.js'
import { ticketHoldView } from './views.js'

/** Holds expired per transaction: each batch holds the write lock only briefly. */
const SWEEP_BATCH = 25

/**
 * Reports holds that ran out: marks each active hold past its expiry `expired`, takes its
 * still-counted items out of the held counters (readers already ignored them; see
 * capacity.ts), and records `ticket.hold.expired` for its app, in one transaction per
 * batch. Nothing depends on it for capacity; it only has to run within a minute of expiry.
 *
 * Safe with several processes sweeping at once: a hold is changed only by the transaction
 * that finds it still active and expired. Stops between batches once `stop` is aborted.
 * Answers how many holds it expired.
 */
/** The sweeper's read, as it runs it (the query-plan tests EXPLAIN it). */
export const EXPIRY_QUERIES = {
  dueHolds: (db: DbConn, nowMs: number) =>
    db.selectFrom('hold').select('id').where('status', '=', 'active').where('expiresAt', '<=', nowMs).orderBy('expiresAt').limit(SWEEP_BATCH),
}

export async function sweepExpiredHolds(db: Storage, publicUrl: string, stop?: AbortSignal, nowMs = Date.now()): Promise<number> {
  let expired = 0
  while (!stop?.aborted) {
    const due = await EXPIRY_QUERIES.dueHolds(db.db, nowMs).execute()
    if (due.length === 0) return expired
    const changed = await db.transaction((tx) => expireHolds(tx, due.map((hold) => hold.id), publicUrl, nowMs))
    expired += changed
    // Another process swept this batch first: what remains is its to finish.
    if (changed === 0 || due.length < SWEEP_BATCH) return expired
  }
  return expired
}

/** Expires those of `holdIds` that are still active and past their expiry; answers how many. */
export async function expireHolds(tx: DbConn, holdIds: string[], publicUrl: string, nowMs: number): Promise<number> {
  let changed = 0
  for (const holdId of holdIds) {
    const marked = await tx
      .updateTable('hold')
      .set({ status: 'expired' })
      .where('id', '=', holdId)
      .where('status', '=', 'active')
      .where('expiresAt', '<=', nowMs)
      .returningAll()
      .executeTakeFirst()
    if (!marked) continue
    changed++
    const items = await tx.selectFrom('holdItem').selectAll().where('holdId', '=', holdId).execute()
    await uncountItems(txOf(tx), items.filter((item) => item.counted === 1))
    const app = await getApp(tx, marked.appDid)
    if (!app) continue
    const event = await tx.selectFrom('event').select('uri').where('id', '=', marked.eventId).executeTakeFirst()
    const eventUri = event?.uri ?? null
    await enqueueAppEvent(
      tx,
      app,
      marked.environment,
      'ticket.hold.expired',
      {
        eventId: marked.eventId,
        eventUri: eventUri ?? undefined,
        holdId,
        hold: ticketHoldView(marked, items, eventUri, checkoutUrl(publicUrl, marked), nowMs),
      },
      nowMs,
    )
  }
  return changed
}
