import { sql, type Selectable } from 'kysely'
import type { DbConn, Storage } from '../storage/types.js'
import type { OutboxTable } from '../db/schema.js'
import type { Logger } from '../logger.js'
import { getApp } from '../tickets/apps.js'
import { onOutboxWrite } from '../tickets/outbox.js'
import { DeliveryFailure, type EventTransports } from './transports.js'

type OutboxRow = Selectable<OutboxTable>

/** The deliverer's hot statements, as it runs them (the query-plan tests EXPLAIN these). */
export const OUTBOX_QUERIES = {
  earliestDue: (db: DbConn) =>
    db
      .selectFrom('outbox')
      .select((eb) => eb.fn.min('nextAttemptAt').as('due'))
      .where('deliveredAt', 'is', null),
  /**
   * Takes up to `limit` rows due at `now` until `leaseUntil`, counting the attempt. SQLite's
   * single writer keeps two claims apart; an engine with concurrent writers needs `skipLocked`
   * (FOR UPDATE SKIP LOCKED), or two processes would pick the same rows from their own
   * snapshots, or one would wait on rows another is taking instead of taking the next ones.
   */
  claimDue: (db: DbConn, now: number, leaseUntil: number, limit: number, opts: { skipLocked?: boolean } = {}) =>
    db
      .updateTable('outbox')
      .set({ nextAttemptAt: leaseUntil, attempts: sql`attempts + 1` })
      .where('seq', 'in', (eb) => {
        const due = eb.selectFrom('outbox').select('seq').where('deliveredAt', 'is', null).where('nextAttemptAt', '<=', now).orderBy('nextAttemptAt').limit(limit)
        return opts.skipLocked ? due.forUpdate().skipLocked() : due
      })
      .returningAll(),
}

/** Sends in flight at once in one process: a slow app must not hold up every other app. */
const MAX_IN_FLIGHT = 16

export interface DelivererOptions {
  retryBaseMs: number
  retryMaxMs: number
  timeoutMs: number
  pollMs: number
}

/**
 * Delivers the outbox, at least once, in every process that shares the database.
 *
 * A process takes due rows with one UPDATE … RETURNING that moves their `nextAttemptAt` a lease
 * ahead and counts the attempt, so two processes never send one row at the same time, and the
 * rows of a process that dies mid-send come due again when the lease runs out. A 2xx sets
 * `deliveredAt`; anything else sets `lastError` and the next attempt, with exponential backoff
 * (base × 2^(attempts−1), capped, with some jitter). All of it is in the database, so it
 * carries on across restarts.
 *
 * It wakes at once after a commit of this process that wrote outbox rows, and otherwise reads
 * the earliest due time (one lookup in the `outbox_due` index) every `pollMs`, for rows written
 * by other processes and retries coming due. It writes only when something is due.
 */
export class OutboxDeliverer {
  private readonly leaseMs: number
  private inFlight = new Set<Promise<void>>()
  private timer?: NodeJS.Timeout
  private pumping = false
  private pumpAgain = false
  private stopped = true
  private unsubscribe?: () => void
  private readonly stopController = new AbortController()

  constructor(
    private readonly db: Storage,
    private readonly transports: EventTransports,
    private readonly logger: Logger,
    private readonly opts: DelivererOptions,
  ) {
    // Longer than any one send can take (resolving a DID document, then the request).
    this.leaseMs = 2 * opts.timeoutMs + 30_000
  }

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    this.unsubscribe = onOutboxWrite(() => this.wake())
    this.wake()
  }

  /** Looks for due rows now (coalesced: one pass at a time, another right after if asked). */
  wake(): void {
    if (this.stopped) return
    if (this.pumping) {
      this.pumpAgain = true
      return
    }
    void this.pump()
  }

  /**
   * Stops taking rows, lets sends in flight finish for up to `graceMs`, then interrupts the
   * rest: those are recorded as failed attempts due again at once, for the next start.
   */
  async stop(graceMs = 5000): Promise<void> {
    this.stopped = true
    this.unsubscribe?.()
    if (this.timer) clearTimeout(this.timer)
    const deadline = Date.now() + graceMs
    while (this.inFlight.size > 0 && Date.now() < deadline) {
      await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((resolve) => setTimeout(resolve, 50))])
    }
    this.stopController.abort()
    await Promise.allSettled([...this.inFlight])
  }

  private async pump(): Promise<void> {
    this.pumping = true
    if (this.timer) clearTimeout(this.timer)
    let nextDue: number | null = null
    try {
      do {
        this.pumpAgain = false
        while (!this.stopped && this.inFlight.size < MAX_IN_FLIGHT) {
          nextDue = await this.earliestDue()
          if (nextDue === null || nextDue > Date.now()) break
          const rows = await this.claim(MAX_IN_FLIGHT - this.inFlight.size)
          if (rows.length === 0) continue
          for (const row of rows) this.track(this.deliver(row))
        }
      } while (this.pumpAgain && !this.stopped)
    } catch (err) {
      this.logger.error({ err }, 'event delivery: reading the outbox failed; trying again shortly')
      nextDue = null
    } finally {
      this.pumping = false
    }
    this.schedule(nextDue)
  }

  private schedule(nextDue: number | null): void {
    if (this.stopped) return
    if (this.timer) clearTimeout(this.timer)
    // With every slot busy, a finishing send wakes the pump; otherwise the next due row or the poll.
    const untilDue = nextDue === null ? this.opts.pollMs : Math.max(0, nextDue - Date.now())
    this.timer = setTimeout(() => this.wake(), Math.min(this.opts.pollMs, untilDue))
    this.timer.unref()
  }

  private track(send: Promise<void>): void {
    this.inFlight.add(send)
    void send.finally(() => {
      this.inFlight.delete(send)
      this.wake()
    })
  }

  private async earliestDue(): Promise<number | null> {
    const row = await OUTBOX_QUERIES.earliestDue(this.db.db).executeTakeFirst()
    return row?.due ?? null
  }

  /** Takes up to `limit` due rows for this process, atomically, counting the attempt. */
  private async claim(limit: number): Promise<OutboxRow[]> {
    return this.db.retryBusy(() => {
      const now = Date.now()
      return OUTBOX_QUERIES.claimDue(this.db.db, now, now + this.leaseMs, limit, { skipLocked: this.db.engine === 'postgres' }).execute()
    })
  }

  private async deliver(row: OutboxRow): Promise<void> {
    const log = { deliveryId: row.id, appDid: row.appDid, type: row.type, attempt: row.attempts }
    let failure: string
    try {
      const app = await getApp(this.db.db, row.appDid)
      if (!app) throw new DeliveryFailure('the app is not registered')
      await this.transports.send(app, row, row.attempts, this.stopController.signal)
      await this.db.retryBusy(() =>
        this.db.db.updateTable('outbox').set({ deliveredAt: Date.now() }).where('seq', '=', row.seq).where('deliveredAt', 'is', null).execute(),
      )
      this.logger.debug(log, 'event delivered')
      return
    } catch (err) {
      if (err instanceof DeliveryFailure) {
        failure = err.message
      } else {
        this.logger.error({ ...log, err }, 'event delivery failed unexpectedly')
        failure = 'internal error while delivering'
      }
    }
    const interrupted = this.stopController.signal.aborted
    const delayMs = interrupted ? 0 : this.backoffMs(row.attempts)
    try {
      // Only while this process still holds the row: once the lease ran out, another may have it.
      await this.db.retryBusy(() =>
        this.db.db
          .updateTable('outbox')
          .set({ nextAttemptAt: Date.now() + delayMs, lastError: failure })
          .where('seq', '=', row.seq)
          .where('attempts', '=', row.attempts)
          .where('deliveredAt', 'is', null)
          .execute(),
      )
    } catch (err) {
      // The lease stands: the row comes due again when it runs out.
      this.logger.error({ ...log, err }, 'event delivery: recording a failed attempt failed')
    }
    this.logger.info({ ...log, error: failure, retryInMs: delayMs }, 'event delivery failed; will retry')
  }

  /** base × 2^(attempts−1), plus up to a fifth more so that retries of many rows spread out; capped. */
  backoffMs(attempts: number): number {
    const exponential = this.opts.retryBaseMs * 2 ** Math.min(Math.max(attempts - 1, 0), 40)
    return Math.round(Math.min(this.opts.retryMaxMs, exponential * (1 + Math.random() * 0.2)))
  }
}
