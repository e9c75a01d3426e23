import type SqliteDatabase from 'better-sqlite3'

/**
 * Remembers every `(iss, jti)` it has seen until the token expires. Keyed on the claims,
 * not the token string: ECDSA signatures are malleable, so one payload can carry several
 * valid signatures. The primary key makes "first use wins" atomic across processes.
 */
export class ReplayStore {
  private readonly insert: SqliteDatabase.Statement
  private readonly purge: SqliteDatabase.Statement

  constructor(sqlite: SqliteDatabase.Database) {
    this.insert = sqlite.prepare('INSERT OR IGNORE INTO replay (iss, jti, expiresAt) VALUES (?, ?, ?)')
    this.purge = sqlite.prepare('DELETE FROM replay WHERE expiresAt < ?')
  }

  /** True when this is the first use of `(iss, jti)`. */
  spend(iss: string, jti: string, expiresAtMs: number): boolean {
    return this.insert.run(iss, jti, expiresAtMs).changes === 1
  }

  /** Forgets tokens that expired: an expired token is refused for its `exp` anyway. */
  purgeExpired(nowMs = Date.now()): number {
    return this.purge.run(nowMs - 60_000).changes
  }
}
