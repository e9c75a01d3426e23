import { CompiledQuery } from 'kysely'
import { bindTx, type Attempt, type DbConn, type LockableTable, type Storage, type Tx } from '../types.js'
import type { PostgresStorage } from './connect.js'
import { PostgresInstanceRegistry } from './instances.js'

/**
 * How many times a write is run again after PostgreSQL gave its transaction up for a conflict
 * with another one (a deadlock, a serialization failure). Row locks are taken in one order,
 * so this is rare; it is a safety net, not the way writes wait for each other.
 */
const CONFLICT_RETRIES = 8

/** SQLSTATEs of a transaction the server gave up on for another's sake: running it again is right. */
const CONFLICT_CODES = new Set(['40P01', '40001'])

export function isConflict(err: unknown): boolean {
  return CONFLICT_CODES.has((err as { code?: string } | null)?.code ?? '')
}

/** The key column of each table a transaction may lock. */
const LOCK_KEYS: Record<LockableTable, string> = {
  tier: 'id',
  capacityGroup: 'id',
  hold: 'id',
  ticket: 'id',
  payment: 'id',
  event: 'id',
  organizer: 'did',
}

const translated = new Map<string, string>()

/**
 * A statement written once for both engines, as PostgreSQL reads it: each `?` becomes `$1`,
 * `$2`…, and every camelCase name is double-quoted (the schema keeps its camelCase names,
 * which PostgreSQL would otherwise fold to lower case). Text inside quotes is left alone.
 */
export function toPostgresSql(text: string): string {
  const known = translated.get(text)
  if (known !== undefined) return known
  let out = ''
  let param = 0
  let index = 0
  while (index < text.length) {
    const char = text[index]!
    if (char === "'" || char === '"') {
      const end = text.indexOf(char, index + 1)
      const stop = end === -1 ? text.length : end + 1
      out += text.slice(index, stop)
      index = stop
    } else if (char === '?') {
      out += `$${++param}`
      index++
    } else if (/[A-Za-z_]/.test(char)) {
      const word = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(index))![0]
      out += /^[a-z][a-z0-9]*[A-Z]/.test(word) ? `"${word}"` : word
      index += word.length
    } else {
      out += char
      index++
    }
  }
  translated.set(text, out)
  return out
}

class PostgresTx implements Tx {
  readonly engine = 'postgres' as const
  private readonly hooks: Array<() => void> = []
  private savepoints = 0

  constructor(
    readonly db: DbConn,
    readonly transaction: number,
  ) {}

  private async query<Row>(text: string, params: unknown[]) {
    return this.db.executeQuery<Row>(CompiledQuery.raw(toPostgresSql(text), params))
  }

  async get<Row>(text: string, ...params: unknown[]): Promise<Row | undefined> {
    return (await this.query<Row>(text, params)).rows[0]
  }

  async all<Row>(text: string, ...params: unknown[]): Promise<Row[]> {
    return (await this.query<Row>(text, params)).rows as Row[]
  }

  async run(text: string, ...params: unknown[]): Promise<number> {
    return Number((await this.query(text, params)).numAffectedRows ?? 0)
  }

  async lockRows(table: LockableTable, ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return
    const key = LOCK_KEYS[table]
    await this.query(`SELECT 1 FROM "${table}" WHERE "${key}" = ANY(?) ORDER BY "${key}" FOR UPDATE`, [[...ids]])
  }

  async attempt<T>(fn: () => Promise<T>): Promise<Attempt<T>> {
    // Named by depth: an attempt inside an attempt gets a savepoint of its own.
    const name = `attempt_${++this.savepoints}`
    await this.query(`SAVEPOINT ${name}`, [])
    try {
      const value = await fn()
      await this.query(`RELEASE SAVEPOINT ${name}`, [])
      return { ok: true, value }
    } catch (error) {
      // A conflict gives the whole transaction up: the write runs again from the start.
      if (isConflict(error)) throw error
      await this.query(`ROLLBACK TO SAVEPOINT ${name}`, [])
      await this.query(`RELEASE SAVEPOINT ${name}`, [])
      return { ok: false, error }
    } finally {
      this.savepoints--
    }
  }

  afterCommit(fn: () => void): void {
    this.hooks.push(fn)
  }

  close(committed: boolean): void {
    if (committed) for (const hook of this.hooks) hook()
  }
}

/**
 * The storage on a PostgreSQL server shared by any number of nodes. Every write is its own READ
 * COMMITTED transaction on a pooled connection; what a write decides on, it first locks
 * (`Tx.lockRows`, in one order), so two nodes never both take the last seat.
 */
export class PostgresDatabase implements Storage {
  readonly engine = 'postgres' as const
  readonly db: DbConn
  readonly instances: PostgresInstanceRegistry
  private transactions = 0

  constructor(
    readonly storage: PostgresStorage,
    opts: { onInstanceLost?: (error: Error) => void } = {},
  ) {
    this.db = storage.db
    this.instances = new PostgresInstanceRegistry(storage.pool, { onLost: opts.onInstanceLost })
  }

  async write<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let open: PostgresTx | undefined
      try {
        const value = await this.db.transaction().execute(async (conn) => {
          open = new PostgresTx(conn, ++this.transactions)
          bindTx(conn, open)
          try {
            return await fn(open)
          } finally {
            bindTx(conn, undefined)
          }
        })
        open!.close(true)
        return value
      } catch (err) {
        open?.close(false)
        if (!isConflict(err) || attempt > CONFLICT_RETRIES) throw err
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 2 * attempt))
      }
    }
  }

  transaction<T>(fn: (tx: DbConn) => Promise<T>): Promise<T> {
    return this.write((tx) => fn(tx.db))
  }

  async read<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return fn(new PostgresTx(this.db, 0))
  }

  async readRow<Row>(text: string, ...params: unknown[]): Promise<Row | undefined> {
    return (await this.db.executeQuery<Row>(CompiledQuery.raw(toPostgresSql(text), params))).rows[0]
  }

  async retryBusy<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn()
      } catch (err) {
        if (!isConflict(err) || attempt > CONFLICT_RETRIES) throw err
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 2 * attempt))
      }
    }
  }

  async close(): Promise<void> {
    await this.instances.close().catch(() => {})
    await this.storage.close()
  }
}
