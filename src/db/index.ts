import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import SqliteDatabase from 'better-sqlite3'
import { Kysely, SqliteDialect, sql, type SqliteDatabase as KyselySqlite } from 'kysely'
import { migrations } from './migrations/index.js'
import type { DatabaseSchema } from './schema.js'
import { sleepSync } from '../util/time.js'

export type { DatabaseSchema }
export type DbConn = Kysely<DatabaseSchema>

/**
 * How long one statement may block the thread waiting for another process's write lock: not
 * at all. SQLite's own wait sleeps 1, 2, 5… ms with the thread blocked, stalling every request
 * of this process, while the other worker's transaction is done in a fraction of a millisecond.
 */
const BUSY_TIMEOUT_MS = 0
/** Retries after a single turn of the event loop, before backing off with timers. */
const QUICK_RETRIES = 8
/** How long, in all, a write may wait for the lock (asynchronously) before it fails. */
const BUSY_DEADLINE_MS = 10_000

// The callbacks each open transaction runs once it has committed, by its connection.
const commitHooks = new WeakMap<DbConn, Array<() => void>>()

/**
 * Runs `fn` once the transaction `tx` belongs to has committed, never if it rolls back
 * (outside a transaction, as soon as the current statement is done). For signals about
 * what the transaction wrote, such as waking the outbox deliverer; `fn` must not throw.
 */
export function afterCommit(tx: DbConn, fn: () => void): void {
  const hooks = commitHooks.get(tx)
  if (hooks) hooks.push(fn)
  else queueMicrotask(fn)
}

/** How many distinct SQL texts keep their prepared statement (least recently used go first). */
const STATEMENT_CACHE_SIZE = 500

/**
 * better-sqlite3 for kysely, preparing each distinct SQL text once. Kysely's driver prepares
 * every statement it runs; a hold sends a dozen statements, and preparing them again each
 * time cost more than running them. Safe because the driver only calls `all` and `run`,
 * which finish before they return (no statement is left half-read by `iterate`).
 */
function withStatementCache(sqlite: SqliteDatabase.Database): KyselySqlite {
  const statements = new Map<string, SqliteDatabase.Statement>()
  return {
    close: () => sqlite.close(),
    prepare(text: string) {
      let statement = statements.get(text)
      if (statement) {
        statements.delete(text)
      } else {
        statement = sqlite.prepare(text)
        if (statements.size >= STATEMENT_CACHE_SIZE) statements.delete(statements.keys().next().value!)
      }
      statements.set(text, statement)
      return statement
    },
  }
}

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
  /**
   * `autoCheckpoint: false` leaves moving the WAL into the database file to another process
   * (the cluster's primary, see cli.ts): a checkpoint ends with an fsync, and the connection
   * that commits past the WAL's threshold would otherwise run it, with its requests waiting.
   */
  constructor(readonly path: string, opts: { synchronous?: 'NORMAL' | 'FULL'; autoCheckpoint?: boolean } = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    this.sqlite = new SqliteDatabase(path)
    this.sqlite.pragma('journal_mode = WAL')
    this.sqlite.pragma(`synchronous = ${opts.synchronous ?? 'NORMAL'}`)
    this.sqlite.pragma('foreign_keys = ON')
    // better-sqlite3 waits synchronously, which would stall every request of this process;
    // waits happen in `retryBusy`, asynchronously.
    this.sqlite.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`)
    if (opts.autoCheckpoint === false) this.sqlite.pragma('wal_autocheckpoint = 0')
    this.db = new Kysely<DatabaseSchema>({ dialect: new SqliteDialect({ database: withStatementCache(this.sqlite) }) })
  }

  /** Applies the migrations this file has not seen yet, in one exclusive transaction. */
  migrate(): void {
    const current = () => this.sqlite.pragma('user_version', { simple: true }) as number
    if (current() >= migrations.length) return
    const run = this.sqlite.transaction(() => {
      for (let index = current(); index < migrations.length; index++) {
        this.sqlite.exec(migrations[index]!.up)
        this.sqlite.pragma(`user_version = ${index + 1}`)
      }
    })
    // Start-up only: several processes may migrate at once; the first wins, the others wait.
    const deadline = Date.now() + BUSY_DEADLINE_MS
    for (;;) {
      try {
        return run.immediate()
      } catch (err) {
        if (!isBusy(err) || Date.now() > deadline) throw err
        sleepSync(20)
      }
    }
  }

  /**
   * Retries `fn` while another process holds the write lock (SQLITE_BUSY), leaving this
   * process's event loop free meanwhile (other requests get parsed and their tokens checked):
   * first after one turn of the loop, since a lock is held for well under a millisecond, then
   * with a short random back-off, up to a deadline.
   */
  async retryBusy<T>(fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + BUSY_DEADLINE_MS
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn()
      } catch (err) {
        if (!isBusy(err) || Date.now() > deadline) throw err
        if (attempt < QUICK_RETRIES) await new Promise((resolve) => setImmediate(resolve))
        else await new Promise((resolve) => setTimeout(resolve, Math.min(20, 1 + attempt - QUICK_RETRIES) * Math.random()))
      }
    }
  }

  /**
   * Runs `fn` in one write transaction that takes the write lock up front (BEGIN IMMEDIATE),
   * waiting for another process's lock through `retryBusy`. The connection is held for the
   * whole transaction, so other requests' queries wait for it instead of slipping in between
   * its statements; for the same reason `fn` must use `tx` only, and never start another
   * transaction (it would wait on itself).
   */
  async transaction<T>(fn: (tx: DbConn) => Promise<T>): Promise<T> {
    return this.db.connection().execute(async (conn) => {
      await this.retryBusy(() => sql`BEGIN IMMEDIATE`.execute(conn))
      const hooks: Array<() => void> = []
      commitHooks.set(conn, hooks)
      try {
        const result = await fn(conn)
        await sql`COMMIT`.execute(conn)
        commitHooks.delete(conn)
        for (const hook of hooks) hook()
        return result
      } catch (err) {
        if (this.sqlite.inTransaction) await sql`ROLLBACK`.execute(conn)
        throw err
      } finally {
        commitHooks.delete(conn)
      }
    })
  }

  /** Copies what it can of the WAL into the database file without waiting for anyone. */
  checkpoint(): void {
    this.sqlite.pragma('wal_checkpoint(PASSIVE)')
  }

  async close(): Promise<void> {
    await this.db.destroy()
  }
}
