import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import SqliteDatabase from 'better-sqlite3'
import { Kysely, SqliteDialect, sql } from 'kysely'
import { migrations } from './migrations/index.js'
import type { DatabaseSchema } from './schema.js'

export type { DatabaseSchema }
export type DbConn = Kysely<DatabaseSchema>

const BUSY_RETRIES = 50

function isBusy(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code
  return code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_SNAPSHOT' || code === 'SQLITE_LOCKED'
}

/**
 * The SQLite file behind every state change. WAL, so readers never wait for the writer;
 * every write transaction starts with BEGIN IMMEDIATE, so the check-and-take of capacity
 * holds the write lock from its first read to its commit, also across processes.
 */
export class Database {
  readonly sqlite: SqliteDatabase.Database
  readonly db: DbConn
  constructor(readonly path: string, opts: { synchronous?: 'NORMAL' | 'FULL' } = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    this.sqlite = new SqliteDatabase(path)
    this.sqlite.pragma('journal_mode = WAL')
    this.sqlite.pragma(`synchronous = ${opts.synchronous ?? 'NORMAL'}`)
    this.sqlite.pragma('foreign_keys = ON')
    this.sqlite.pragma('busy_timeout = 5000')
    this.db = new Kysely<DatabaseSchema>({ dialect: new SqliteDialect({ database: this.sqlite }) })
  }

  /** Applies the migrations this file has not seen yet, in one exclusive transaction. */
  migrate(): void {
    const run = this.sqlite.transaction(() => {
      const done = this.sqlite.pragma('user_version', { simple: true }) as number
      for (let index = done; index < migrations.length; index++) {
        this.sqlite.exec(migrations[index]!.up)
        this.sqlite.pragma(`user_version = ${index + 1}`)
      }
    })
    run.immediate()
  }

  /**
   * Runs `fn` in one write transaction that takes the write lock up front (BEGIN IMMEDIATE).
   * Another process holding the lock makes BEGIN wait (busy_timeout) and then retry, a bounded
   * number of times. The connection is held for the whole transaction, so other requests'
   * queries wait for it instead of slipping in between its statements; for the same reason
   * `fn` must use `tx` only, and never start another transaction (it would wait on itself).
   */
  async transaction<T>(fn: (tx: DbConn) => Promise<T>): Promise<T> {
    return this.db.connection().execute(async (conn) => {
      for (let attempt = 0; ; attempt++) {
        try {
          await sql`BEGIN IMMEDIATE`.execute(conn)
          break
        } catch (err) {
          if (!isBusy(err) || attempt >= BUSY_RETRIES) throw err
          await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20))
        }
      }
      try {
        const result = await fn(conn)
        await sql`COMMIT`.execute(conn)
        return result
      } catch (err) {
        if (this.sqlite.inTransaction) await sql`ROLLBACK`.execute(conn)
        throw err
      }
    })
  }

  async close(): Promise<void> {
    await this.db.destroy()
  }
}
