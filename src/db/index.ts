import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import SqliteDatabase from 'better-sqlite3'
import { Kysely, SqliteDialect, sql } from 'kysely'
import { migrations } from './migrations/index.js'
import type { DatabaseSchema } from './schema.js'
import { sleepSync } from '../util/time.js'

export type { DatabaseSchema }
export type DbConn = Kysely<DatabaseSchema>

/** How long one statement may block the thread waiting for another process's write lock. */
const BUSY_TIMEOUT_MS = 20
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
    // Short: better-sqlite3 waits synchronously, which would stall every request of this
    // process; longer waits happen in `retryBusy`, asynchronously.
    this.sqlite.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`)
    this.db = new Kysely<DatabaseSchema>({ dialect: new SqliteDialect({ database: this.sqlite }) })
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
   * Retries `fn` while another process holds the write lock (SQLITE_BUSY), with a short
   * random back-off that leaves this process's event loop free, up to a deadline.
   */
  async retryBusy<T>(fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + BUSY_DEADLINE_MS
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn()
      } catch (err) {
        if (!isBusy(err) || Date.now() > deadline) throw err
        await new Promise((resolve) => setTimeout(resolve, Math.min(50, 1 + attempt) * Math.random()))
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

  async close(): Promise<void> {
    await this.db.destroy()
  }
}
