import { sql, type Kysely } from 'kysely'
import type { DatabaseSchema } from '../../db/schema.js'
import type { SpendAttempt, SpendLog, SpendOutcome } from '../types.js'

/** A token is forgotten this long after it expires: an expired token is refused for its `exp`. */
const KEPT_AFTER_EXPIRY_MS = 60_000
/**
 * A latest key is kept this long after it was recorded: longer than any cached DID document
 * lives (24 h), so every document a node holds was fetched after the rows about its DID that are gone.
 */
const KEY_KEPT_MS = 25 * 60 * 60 * 1000
/** Rows forgotten per statement: each delete is short, and never holds many row locks at once. */
const PURGE_BATCH = 500

type Conn = Kysely<DatabaseSchema>

/**
 * Spent tokens and latest signing keys on PostgreSQL, shared by every node.
 *
 * A spend is one insert keyed on `(iss, jti)` that does nothing when the key is there: of
 * spends racing from several nodes, the server lets one insert and makes the others wait for
 * its transaction, then answers them the row is there (or, had it rolled back, lets the next
 * one insert). No node keeps a view of the log that could miss a row committed out of
 * sequence order, as a reader of "rows after the last seq seen" can on PostgreSQL.
 */
export class PostgresSpendLog implements SpendLog<Conn> {
  constructor(private readonly db: Conn) {}

  async spendIn(tx: Conn, token: SpendAttempt): Promise<SpendOutcome> {
    if (token.signingKey !== undefined) {
      // Read in the request's transaction: a rotation committed after this read is ordered after this spend.
      const latest = await sql<{ key: string }>`SELECT key FROM "signingKeyLatest" WHERE did = ${token.iss}`.execute(tx)
      const key = latest.rows[0]?.key
      if (key !== undefined && key !== token.signingKey) return 'key-replaced'
    }
    const inserted = await sql`
      INSERT INTO "spentJti" (iss, jti, "expiresAt") VALUES (${token.iss}, ${token.jti}, ${token.expiresAtMs})
      ON CONFLICT (iss, jti) DO NOTHING
      RETURNING 1`.execute(tx)
    return inserted.rows.length === 1 ? 'first-use' : 'replayed'
  }

  async recordKey(did: string, key: string): Promise<void> {
    // The time a key was first recorded is kept while it stays the latest: it dates the row for purging.
    await sql`
      INSERT INTO "signingKeyLatest" AS latest (did, key, "seenAt") VALUES (${did}, ${key}, ${Date.now()})
      ON CONFLICT (did) DO UPDATE SET key = EXCLUDED.key, "seenAt" = EXCLUDED."seenAt"
      WHERE latest.key <> EXCLUDED.key`.execute(this.db)
  }

  async latestKey(did: string): Promise<string | undefined> {
    return this.latestKeyIn(this.db, did)
  }

  /** `latestKey` on a given connection (the caller's transaction). */
  async latestKeyIn(db: Conn, did: string): Promise<string | undefined> {
    const latest = await sql<{ key: string }>`SELECT key FROM "signingKeyLatest" WHERE did = ${did}`.execute(db)
    return latest.rows[0]?.key
  }

  async purgeExpired(nowMs: number, batchSize = PURGE_BATCH): Promise<number> {
    await this.purgeInBatches(
      (limit) => sql`
        DELETE FROM "signingKeyLatest" k USING (
          SELECT did FROM "signingKeyLatest" WHERE "seenAt" < ${nowMs - KEY_KEPT_MS} LIMIT ${limit} FOR UPDATE SKIP LOCKED
        ) old WHERE k.did = old.did`,
      batchSize,
    )
    return this.purgeInBatches(
      (limit) => sql`
        DELETE FROM "spentJti" s USING (
          SELECT iss, jti FROM "spentJti" WHERE "expiresAt" < ${nowMs - KEPT_AFTER_EXPIRY_MS} LIMIT ${limit} FOR UPDATE SKIP LOCKED
        ) old WHERE s.iss = old.iss AND s.jti = old.jti`,
      batchSize,
    )
  }

  /**
   * Runs a batch delete until a batch comes back short. SKIP LOCKED: nodes purging at the same
   * time take different rows instead of waiting on each other.
   */
  private async purgeInBatches(batch: (limit: number) => ReturnType<typeof sql>, batchSize: number): Promise<number> {
    let purged = 0
    for (;;) {
      const deleted = Number((await batch(batchSize).execute(this.db)).numAffectedRows ?? 0)
      purged += deleted
      if (deleted < batchSize) return purged
    }
  }
}
