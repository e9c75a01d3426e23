import { mkdirSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import SqliteDatabase from 'better-sqlite3'
import { Kysely, SqliteDialect, sql, type SqliteDatabase as KyselySqlite } from 'kysely'
import { SqliteInstances } from './instances.js'
import { migrations } from './migrations/index.js'
import type { DatabaseSchema } from './schema.js'
import { afterCommit, bindTx, txOf, type Attempt, type DbConn, type LockableTable, type Storage, type Tx } from '../storage/types.js'
import { sleepSync } from '../util/time.js'

export type { DatabaseSchema, DbConn, Storage, Tx }
export { afterCommit, txOf }

/**
 * How long one statement may block the thread waiting for another process's write lock: not
 * at all. SQLite's own wait sleeps 1, 2, 5… ms with the thread blocked, stalling every request
 * of this process, while the other worker's transaction is done in a fraction of a millisecond.
 */
const BUSY_TIMEOUT_MS = 0
/** How much of the file each connection maps into memory (shared with the other workers through the OS). */
const MMAP_BYTES = 256 * 1024 * 1024
/** How much of a WAL file that started over is kept (the rest is given back to the disk). */
const WAL_KEPT_BYTES = 64 * 1024 * 1024
/** Each connection's page cache. */
const CACHE_KIB = 32 * 1024
/** Retries after a single turn of the event loop, before backing off with timers. */
const QUICK_RETRIES = 8
/** How long, in all, a write may wait for the lock (asynchronously) before it fails. */
const BUSY_DEADLINE_MS = 10_000

/** How many distinct SQL texts keep their prepared statement (least recently used go first). */
const STATEMENT_CACHE_SIZE = 500

/**
 * Each distinct SQL text prepared once. Kysely's driver prepares every statement it runs; a
 * hold sent a dozen statements, and preparing them again each time cost more than running
 * them. Shared by kysely and `SqliteTx`. Safe because both only call `get`, `all` and `run`,
 * which finish before they return (no statement is left half-read by `iterate`).
 */
class StatementCache {
  private readonly statements = new Map<string, SqliteDatabase.Statement>()
  constructor(readonly sqlite: SqliteDatabase.Database) {}

  prepare(text: string): SqliteDatabase.Statement {
    let statement = this.statements.get(text)
    if (statement) {
      this.statements.delete(text)
    } else {
      statement = this.sqlite.prepare(text)
      if (this.statements.size >= STATEMENT_CACHE_SIZE) this.statements.delete(this.statements.keys().next().value!)
    }
    this.statements.set(text, statement)
    return statement
  }
}

/** better-sqlite3 for kysely, through the shared statement cache. */
function withStatementCache(sqlite: SqliteDatabase.Database, statements: StatementCache): KyselySqlite {
  return { close: () => sqlite.close(), prepare: (text: string) => statements.prepare(text) }
}

/**
 * A transaction on this process's connection, as plain better-sqlite3 statements through the
 * statement cache: no query building, and each statement done before it answers (the promises
 * are already settled), so the write lock every worker shares is held only as long as SQLite
 * needs. Valid only while its transaction is open.
 */
class SqliteTx implements Tx {
  readonly engine = 'sqlite' as const
  private readonly hooks: Array<() => void> = []
  private open = true

  constructor(
    private readonly statements: StatementCache,
    readonly transaction: number,
    readonly db: DbConn,
  ) {}

  get<Row>(text: string, ...params: unknown[]): Promise<Row | undefined> {
    return Promise.resolve(this.statement(text).get(...params) as Row | undefined)
  }

  all<Row>(text: string, ...params: unknown[]): Promise<Row[]> {
    return Promise.resolve(this.statement(text).all(...params) as Row[])
  }

  run(text: string, ...params: unknown[]): Promise<number> {
    return Promise.resolve(this.statement(text).run(...params).changes)
  }

  /** Nothing to lock: the transaction began with BEGIN IMMEDIATE and holds the whole file. */
  lockRows(_table: LockableTable, _ids: readonly string[]): Promise<void> {
    return Promise.resolve()
  }

  async attempt<T>(fn: () => Promise<T>): Promise<Attempt<T>> {
    this.statement('SAVEPOINT attempt').run()
    try {
      const value = await fn()
      this.statement('RELEASE attempt').run()
      return { ok: true, value }
    } catch (error) {
      if (!this.statements.sqlite.inTransaction) throw error
      this.statement('ROLLBACK TO attempt').run()
      this.statement('RELEASE attempt').run()
      return { ok: false, error }
    }
  }

  afterCommit(fn: () => void): void {
    this.hooks.push(fn)
  }

  /** Ends this object's life; after a commit, runs the hooks. */
  close(committed: boolean): void {
    this.open = false
    if (committed) for (const hook of this.hooks) hook()
  }

  private statement(text: string): SqliteDatabase.Statement {
    // A statement after the end would run on its own, outside the transaction it belongs to.
    if (!this.open) throw new Error('a transaction was used after it ended')
    return this.statements.prepare(text)
  }
}

interface PendingWrite {
  fn: (tx: Tx) => Promise<unknown>
  resolve: (value: unknown) => void
  reject: (reason: unknown) => void
}

/**
 * Writes sharing one transaction at most: bounds how long one commit holds the write lock that
 * the other workers wait for.
 */
const WRITE_BATCH_MAX = 128

function isBusy(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code
  return code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_SNAPSHOT' || code === 'SQLITE_LOCKED'
}

/**
 * The SQLite file behind every state change. WAL, so readers never wait for the writer;
 * every write transaction starts with BEGIN IMMEDIATE, so the check-and-take of capacity
 * holds the write lock from its first read to its commit, also across processes.
 */
export class Database implements Storage {
  readonly engine = 'sqlite' as const
  readonly instances: SqliteInstances
  readonly sqlite: SqliteDatabase.Database
  readonly db: DbConn
  private readonly statements: StatementCache
  private readonly begin: SqliteDatabase.Statement
  private readonly commit: SqliteDatabase.Statement
  private readonly rollback: SqliteDatabase.Statement
  private readonly savepoint: SqliteDatabase.Statement
  private readonly releaseSavepoint: SqliteDatabase.Statement
  private readonly rollbackToSavepoint: SqliteDatabase.Statement
  private readonly pendingWrites: PendingWrite[] = []
  /** A flush of `pendingWrites` is scheduled or under way. */
  private flushing = false
  /** Write transactions begun on this connection: each `SqliteTx` carries its number (reads: 0). */
  private transactions = 0
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
    // Pages are read through a shared memory map instead of a read() each, and more of them
    // stay cached: the spent-token table alone is a few hundred thousand rows at a sale's peak.
    this.sqlite.pragma(`mmap_size = ${MMAP_BYTES}`)
    this.sqlite.pragma(`cache_size = -${CACHE_KIB}`)
    // better-sqlite3 waits synchronously, which would stall every request of this process;
    // waits happen in `retryBusy`, asynchronously.
    this.sqlite.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`)
    if (opts.autoCheckpoint === false) this.sqlite.pragma('wal_autocheckpoint = 0')
    // After a checkpoint starts the WAL over, its file is cut back to this size.
    this.sqlite.pragma(`journal_size_limit = ${WAL_KEPT_BYTES}`)
    this.statements = new StatementCache(this.sqlite)
    this.begin = this.sqlite.prepare('BEGIN IMMEDIATE')
    this.commit = this.sqlite.prepare('COMMIT')
    this.rollback = this.sqlite.prepare('ROLLBACK')
    this.savepoint = this.sqlite.prepare('SAVEPOINT write')
    this.releaseSavepoint = this.sqlite.prepare('RELEASE write')
    this.rollbackToSavepoint = this.sqlite.prepare('ROLLBACK TO write')
    this.db = new Kysely<DatabaseSchema>({ dialect: new SqliteDialect({ database: withStatementCache(this.sqlite, this.statements) }) })
    this.instances = new SqliteInstances(this.db)
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
    // Several processes may migrate at once; the first wins, the others wait.
    this.waitingAtStart(() => run.immediate())
  }

  /**
   * Records this process as a running service instance (see instances.ts), so that work it
   * leaves pending when it dies is taken over at once. Once, at start, after `migrate`.
   */
  recordInstance(): void {
    this.waitingAtStart(() => this.instances.record(this.sqlite))
  }

  /** Start-up only: runs a write, sleeping while another process holds the lock. */
  private waitingAtStart<T>(fn: () => T): T {
    const deadline = Date.now() + BUSY_DEADLINE_MS
    for (;;) {
      try {
        return fn()
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

  /** `write`, handing `fn` the transaction's kysely connection (see `txOf`). */
  transaction<T>(fn: (tx: DbConn) => Promise<T>): Promise<T> {
    return this.write((tx) => fn(tx.db))
  }

  /**
   * Runs `fn` in a BEGIN IMMEDIATE transaction, all or nothing: its writes are committed when
   * it returns, and none of them when it throws. Answers once they are committed.
   *
   * Group commit: the writes asked for while this process waits (for the next turn of the event
   * loop, or for another process's lock) share one transaction, each in a savepoint of its own,
   * so one failing write leaves the others alone. A commit, and the round for the write lock
   * between workers, then serves a dozen requests instead of one. The writes of a batch run one
   * after the other on the connection, which they hold meanwhile; `fn` must await nothing but
   * its statements (the lock is held), and never start another write (it would wait on itself).
   */
  write<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pendingWrites.push({ fn, resolve: resolve as (value: unknown) => void, reject })
      if (!this.flushing) {
        this.flushing = true
        setImmediate(() => void this.flushWrites())
      }
    })
  }

  /** Commits the pending writes in batches until none is left. */
  private async flushWrites(): Promise<void> {
    try {
      while (this.pendingWrites.length > 0) {
        try {
          await this.retryBusy(() => this.db.connection().execute((conn) => this.commitBatch(conn)))
        } catch (err) {
          // The lock stayed taken past the deadline (or BEGIN failed otherwise): every write
          // waiting now fails with it, none half done.
          for (const write of this.pendingWrites.splice(0)) write.reject(err)
        }
      }
    } finally {
      this.flushing = false
    }
  }

  /**
   * One transaction for up to WRITE_BATCH_MAX pending writes. Throws only when BEGIN fails
   * (SQLITE_BUSY: `retryBusy` tries again, by then with the writes that arrived meanwhile).
   */
  private async commitBatch(conn: DbConn): Promise<void> {
    this.beginImmediate()
    const transaction = ++this.transactions
    const batch = this.pendingWrites.splice(0, WRITE_BATCH_MAX)
    // A write alone needs no savepoint: its failure rolls the whole transaction back.
    const isolate = batch.length > 1
    const outcomes: Array<{ write: PendingWrite; tx: SqliteTx; ok: boolean; value: unknown }> = []
    let fatal: unknown
    try {
      for (const write of batch) {
        const tx = new SqliteTx(this.statements, transaction, conn)
        bindTx(conn, tx)
        if (isolate) this.savepoint.run()
        try {
          const value = await write.fn(tx)
          if (isolate) this.releaseSavepoint.run()
          outcomes.push({ write, tx, ok: true, value })
        } catch (err) {
          outcomes.push({ write, tx, ok: false, value: err })
          // SQLite ends the whole transaction on some errors (disk full, I/O): then nothing of
          // this batch is written, and every write of it must hear so.
          if (!this.sqlite.inTransaction) {
            fatal = err
            break
          }
          if (isolate) {
            this.rollbackToSavepoint.run()
            this.releaseSavepoint.run()
          }
        }
      }
    } finally {
      bindTx(conn, undefined)
    }
    if (fatal === undefined) {
      try {
        if (outcomes.some((outcome) => outcome.ok)) this.commit.run()
        else this.rollback.run()
      } catch (err) {
        fatal = err
        if (this.sqlite.inTransaction) this.rollback.run()
      }
    } else if (this.sqlite.inTransaction) {
      this.rollback.run()
    }
    for (const { write, tx, ok, value } of outcomes) {
      const committed = ok && fatal === undefined
      tx.close(committed)
      if (committed) write.resolve(value)
      else write.reject(ok ? fatal : value)
    }
    for (const write of batch.slice(outcomes.length)) write.reject(fatal)
  }

  /**
   * Runs `fn`, which must be synchronous, when no kysely transaction is open on this
   * process's connection: at once if none is (nothing else of this process can run before
   * `fn` returns), else once kysely lends the connection. Taking it from kysely every time
   * would build a Kysely object per call.
   */
  private async withConnection<T>(fn: () => T): Promise<T> {
    if (!this.sqlite.inTransaction) return fn()
    return this.db.connection().execute(async () => fn())
  }

  /**
   * BEGIN IMMEDIATE. Under load, finding the lock taken by the other worker is routine, not a
   * fault: its SqliteError is made without a stack trace, which costs more than the attempt.
   */
  private beginImmediate(): void {
    const stackTraceLimit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    try {
      this.begin.run()
    } finally {
      Error.stackTraceLimit = stackTraceLimit
    }
  }

  /**
   * Runs `fn`'s reads on this process's connection while no write transaction is open on it,
   * so they never see another request's transaction half done.
   */
  async read<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.connection().execute(async (conn) => {
      const tx = new SqliteTx(this.statements, 0, conn)
      try {
        return await fn(tx)
      } finally {
        tx.close(false)
      }
    })
  }

  /**
   * One read statement, at once when no write transaction is open on this process's connection
   * (the caller's request is read without a turn of the event loop), else once it has ended.
   */
  async readRow<Row>(text: string, ...params: unknown[]): Promise<Row | undefined> {
    return this.withConnection(() => this.statements.prepare(text).get(...params) as Row | undefined)
  }

  /**
   * Copies what it can of the WAL into the database file without waiting for anyone. Under a
   * steady stream of writes that alone never lets the WAL start over (there is always a frame
   * not yet copied), and it grew by some 45 MB a second at the benchmark's pace, every page read
   * searching a longer index: once it passes `restartBytes`, the checkpoint also waits (up to
   * `waitMs`, the workers' writes pausing meanwhile) until everything is copied and the next
   * write starts the WAL from its beginning. Answers whether it did.
   */
  checkpoint(opts: { restartBytes?: number; waitMs?: number } = {}): boolean {
    this.sqlite.pragma('wal_checkpoint(PASSIVE)')
    if (this.path === ':memory:' || opts.restartBytes === undefined) return false
    let walBytes: number
    try {
      walBytes = statSync(`${this.path}-wal`).size
    } catch {
      return false
    }
    if (walBytes < opts.restartBytes) return false
    this.sqlite.pragma(`busy_timeout = ${opts.waitMs ?? 100}`)
    try {
      const [result] = this.sqlite.pragma('wal_checkpoint(RESTART)') as Array<{ busy: number }>
      return result?.busy === 0
    } finally {
      this.sqlite.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`)
    }
  }

  async close(): Promise<void> {
    await this.db.destroy()
  }
}
