import type { Kysely } from 'kysely'
import type { DatabaseSchema } from '../db/schema.js'

/**
 * What the service asks of its storage to keep its promises when several processes, on one
 * machine or on several, share one database. Each engine answers these its own way (SQLite:
 * its single writer and this machine's process table; PostgreSQL: keys, row locks and session
 * advisory locks), and the request pipeline is written once against them.
 */

/** A token being spent: its issuer and id, when it expires, and the key it was verified with. */
export interface SpendAttempt {
  iss: string
  jti: string
  expiresAtMs: number
  /** The issuer's key the token's signature was checked against, when it was checked. */
  signingKey?: string
}

/**
 * - `first-use`: the token is now spent (once the caller's transaction commits).
 * - `replayed`: the same `(iss, jti)` was spent before, by this process or any other.
 * - `key-replaced`: the token was checked against a key its issuer no longer has as the latest
 *   recorded one; it is not spent, and the caller should fetch the issuer's document again.
 */
export type SpendOutcome = 'first-use' | 'replayed' | 'key-replaced'

/**
 * The record of spent service-auth tokens and of each issuer's latest signing key.
 *
 * Contract: of any number of spends of one `(iss, jti)`, from any number of processes on any
 * number of nodes, at most one answers `first-use` among those whose transactions commit; a
 * spend whose transaction rolls back leaves the token unspent. Once `recordKey` has answered,
 * every later spend anywhere checked against an older key of that issuer answers
 * `key-replaced`.
 */
export interface SpendLog<Tx> {
  /** Spends the token inside `tx`, the request's own transaction, so that it stands or falls with it. */
  spendIn(tx: Tx, token: SpendAttempt): Promise<SpendOutcome>
  /** Records `key`, just fetched from `did`'s document, as its latest; answers once it is committed. */
  recordKey(did: string, key: string): Promise<void>
  /** The latest key recorded for `did`, if any. */
  latestKey(did: string): Promise<string | undefined>
  /** Forgets tokens long expired and keys older than any cached document; answers how many tokens went. */
  purgeExpired(nowMs: number): Promise<number>
}

/**
 * The running service processes, as owners of work they may leave half done (a pending
 * idempotency key).
 *
 * Contract: `isAlive(id)` is true while the process that registered `id` runs and reaches the
 * database, and false as soon as it has died or lost its connection, on whatever node it ran:
 * no lease to wait out, so its work is taken over at once.
 */
export interface InstanceRegistry {
  /** This process's id, new at every start. */
  readonly id: string
  /** Makes this process known as alive; until `close`, or until it dies. */
  register(): Promise<void>
  /** `within`: the open transaction of the caller, which SQLite must use (its one connection is the transaction's). */
  isAlive(id: string, within?: DbConn): Promise<boolean>
  /** Stops being alive (at shutdown). */
  close(): Promise<void>
}

/**
 * The count of wrong admin passwords per client (see `guessRules`).
 *
 * Contract: one count per client across every process and node, and attempts arriving at once
 * are counted one after the other: of any number of wrong guesses racing from one client, no
 * more than the free ones are heard.
 */
export interface GuessStore {
  /**
   * One admin attempt from `client`: how long it must still wait (the attempt is refused
   * unheard and not counted), or 0 once the outcome is counted (a right password clears it).
   */
  attempt(client: string, correct: boolean, nowMs: number): Promise<number>
  /** Forgets clients quiet for long enough to start from zero; answers how many. */
  forgetQuiet(nowMs: number): Promise<number>
}

export type DbConn = Kysely<DatabaseSchema>

/** Which engine keeps the data: the embedded SQLite file, or a PostgreSQL server shared by nodes. */
export type Engine = 'sqlite' | 'postgres'

export type Attempt<T> = { ok: true; value: T } | { ok: false; error: unknown }

/** The rows a transaction may lock for its check-then-write (see `Tx.lockRows`), by table. */
export type LockableTable = 'tier' | 'capacityGroup' | 'hold' | 'ticket' | 'payment' | 'event' | 'organizer'

/**
 * One write transaction, the same for both engines: kysely bound to it (`db`), plain statements
 * for the hot paths, savepoints, and hooks that run once it has committed.
 *
 * Statements are written once: `?` placeholders, and double quotes around any camelCase name
 * are optional (the PostgreSQL side quotes them, SQLite does not care).
 */
export interface Tx {
  readonly db: DbConn
  readonly engine: Engine
  /**
   * Which transaction of this process it belongs to (on SQLite the writes of one group commit
   * share one), for work done once per transaction.
   */
  readonly transaction: number
  get<Row>(text: string, ...params: unknown[]): Promise<Row | undefined>
  all<Row>(text: string, ...params: unknown[]): Promise<Row[]>
  /** Runs a write; answers how many rows it changed. */
  run(text: string, ...params: unknown[]): Promise<number>
  /**
   * Locks these rows until the transaction ends, in the order given (callers sort the ids, so
   * two transactions never wait on each other in a circle), before reading what they decide
   * on. PostgreSQL: SELECT … FOR UPDATE. SQLite: nothing, as its writer holds the whole file.
   */
  lockRows(table: LockableTable, ids: readonly string[]): Promise<void>
  /**
   * Runs `fn` in a savepoint of its own: when it throws, its writes are undone and the error is
   * answered, while what this transaction wrote before stays (a spent token stays spent
   * whatever the request then answers). An error that ends the whole transaction is thrown.
   */
  attempt<T>(fn: () => Promise<T>): Promise<Attempt<T>>
  /** Runs `fn` once this transaction has committed, never if it rolls back; `fn` must not throw. */
  afterCommit(fn: () => void): void
}

/**
 * The database behind every state change, whichever the engine. The domain is written once
 * against this: it takes a `Tx` (or the kysely `DbConn` of one) and knows nothing of the engine.
 */
export interface Storage {
  readonly engine: Engine
  /** kysely outside any transaction, for reads that need no transaction. */
  readonly db: DbConn
  readonly instances: InstanceRegistry
  /**
   * Runs `fn` in one write transaction, all or nothing; answers once it has committed. May run
   * `fn` again from the start when the engine gave up the transaction for a conflict another
   * transaction caused (a PostgreSQL deadlock), so `fn` does nothing but through `tx`.
   */
  write<T>(fn: (tx: Tx) => Promise<T>): Promise<T>
  /** `write`, for code written as kysely queries (`txOf` gives the `Tx` of its `DbConn`). */
  transaction<T>(fn: (tx: DbConn) => Promise<T>): Promise<T>
  /** Plain statements outside any write transaction; each reads committed rows only. */
  read<T>(fn: (tx: Tx) => Promise<T>): Promise<T>
  /** One read statement outside any write transaction (the hot per-request reads). */
  readRow<Row>(text: string, ...params: unknown[]): Promise<Row | undefined>
  /** Retries a single statement (outside `write`) that met a passing conflict. */
  retryBusy<T>(fn: () => Promise<T>): Promise<T>
  close(): Promise<void>
}

// The `Tx` of each open transaction, by the kysely connection bound to it (see `txOf`).
const openTransactions = new WeakMap<DbConn, Tx>()

/** Makes `tx` reachable from its kysely connection while the transaction is open. */
export function bindTx(conn: DbConn, tx: Tx | undefined): void {
  if (tx) openTransactions.set(conn, tx)
  else openTransactions.delete(conn)
}

/** The `Tx` of an open transaction, from the kysely connection `write`/`transaction` handed out. */
export function txOf(conn: DbConn): Tx {
  const open = openTransactions.get(conn)
  if (!open) throw new Error('txOf needs the connection of an open transaction')
  return open
}

/**
 * Runs `fn` once the transaction `tx` belongs to has committed, never if it rolls back
 * (outside a transaction, as soon as the current statement is done).
 */
export function afterCommit(tx: DbConn | Tx, fn: () => void): void {
  const open = 'afterCommit' in tx ? (tx as Tx) : openTransactions.get(tx)
  if (open) open.afterCommit(fn)
  else queueMicrotask(fn)
}
