import type { Database, SyncTx } from '../db/index.js'

export const REPLAY_SQL = {
  spend: 'INSERT INTO replay (iss, jti, expiresAt) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
} as const

/**
 * Records `(iss, jti)` as spent inside `tx`, a request's own write transaction; true when this
 * is its first use. Every request spends a token: a prepared statement, without query building.
 */
export function spendIn(tx: SyncTx, iss: string, jti: string, expiresAtMs: number): boolean {
  return tx.run(REPLAY_SQL.spend, iss, jti, expiresAtMs) === 1
}

/** Spent tokens forgotten per statement. */
const PURGE_BATCH = 500

/**
 * Remembers every `(iss, jti)` it has seen until the token expires. Keyed on the claims,
 * not the token string: ECDSA signatures are malleable, so one payload can carry several
 * valid signatures. The primary key makes "first use wins" atomic across processes.
 *
 * Queries wait for kysely's connection (`writeSync` too), never go straight to better-sqlite3:
 * another request's transaction may be open on this process's connection, and a write
 * slipped in between its statements would commit or roll back with it.
 */
export class ReplayStore {
  constructor(private readonly database: Database) {}

  /** True when this is the first use of `(iss, jti)`. */
  async spend(iss: string, jti: string, expiresAtMs: number): Promise<boolean> {
    return this.database.writeSync((tx) => spendIn(tx, iss, jti, expiresAtMs))
  }

  /**
   * Forgets tokens that expired a minute ago: an expired token is refused for its `exp` anyway.
   * In batches, each its own short write: under load a minute of spent tokens is a hundred
   * thousand rows, and deleting them in one statement would hold the write lock, and stall
   * every worker's requests, for as long as that takes.
   */
  async purgeExpired(nowMs = Date.now(), batchSize = PURGE_BATCH): Promise<number> {
    let purged = 0
    for (;;) {
      const result = await this.database.retryBusy(() =>
        this.database.db
          .deleteFrom('replay')
          .where((eb) =>
            eb(
              eb.refTuple('iss', 'jti'),
              'in',
              eb.selectFrom('replay').select(['iss', 'jti']).where('expiresAt', '<', nowMs - 60_000).limit(batchSize).$asTuple('iss', 'jti'),
            ),
          )
          .executeTakeFirst(),
      )
      const deleted = Number(result.numDeletedRows)
      purged += deleted
      if (deleted < batchSize) return purged
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
}
