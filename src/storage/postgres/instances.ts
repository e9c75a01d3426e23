import { createHash, randomBytes } from 'node:crypto'
import pg from 'pg'
import { CompiledQuery } from 'kysely'
import type { DbConn, InstanceRegistry } from '../types.js'

/**
 * The two 32-bit halves of the advisory lock that stands for instance `id`: the two-key form,
 * which PostgreSQL keeps apart from single-bigint locks (the migration lock), and 64 bits of
 * a hash, so two ids never share a lock in practice.
 */
export function instanceLockKeys(id: string): { signed: [number, number]; unsigned: [number, number] } {
  const digest = createHash('sha256').update(`atm instance ${id}`).digest()
  return {
    signed: [digest.readInt32BE(0), digest.readInt32BE(4)],
    unsigned: [digest.readUInt32BE(0), digest.readUInt32BE(4)],
  }
}

export interface PostgresInstanceOptions {
  /** This process's id; new at every start by default. */
  id?: string
  /**
   * Told when the connection that holds this process's lock fails: from then on every other
   * node takes this process for dead and may take over its work, so it must stop taking new
   * work that relies on being alive (in practice: end, and let the supervisor restart it).
   */
  onLost?: (error: Error) => void
}

/**
 * Liveness on PostgreSQL: each process holds a session advisory lock named by its id, on a
 * connection of its own outside the pool (a pooled connection could be closed when idle, or
 * handed to a request that ends its session state). The server drops the lock the moment that
 * session ends, so a process killed on any node, or cut off from the server, reads as dead at
 * once: no lease to wait out, and no pid, which means nothing on another host.
 */
export class PostgresInstanceRegistry implements InstanceRegistry {
  readonly id: string
  private holder?: pg.Client
  private readonly onLost: (error: Error) => void

  constructor(
    private readonly pool: pg.Pool,
    options: PostgresInstanceOptions = {},
  ) {
    this.id = options.id ?? randomBytes(12).toString('base64url')
    this.onLost = options.onLost ?? (() => {})
  }

  async register(): Promise<void> {
    if (this.holder) return
    // The pool's own settings (URL, timeouts, type parsers), for one connection it does not manage.
    const holder = new pg.Client({ ...(this.pool.options as pg.ClientConfig), keepAlive: true })
    // Listening from the start: an 'error' event nobody listens to would end the process.
    holder.on('error', (error) => {
      if (this.holder !== holder) return
      this.holder = undefined
      this.onLost(error)
    })
    await holder.connect()
    try {
      // The session must outlive any idle limit the operator set for ordinary sessions.
      await holder.query('SET idle_session_timeout = 0')
      const [high, low] = instanceLockKeys(this.id).signed
      const taken = await holder.query<{ taken: boolean }>('SELECT pg_try_advisory_lock($1::int4, $2::int4) AS taken', [high, low])
      if (!taken.rows[0]?.taken) throw new Error(`another process already holds the lock of service instance ${this.id}: give each process its own id`)
    } catch (err) {
      await holder.end().catch(() => {})
      throw err
    }
    this.holder = holder
  }

  async isAlive(id: string, within?: DbConn): Promise<boolean> {
    if (id === this.id && this.holder) return true
    const [high, low] = instanceLockKeys(id).unsigned
    const text = `SELECT EXISTS (
         SELECT 1 FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND objsubid = 2
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND classid = $1::bigint::oid AND objid = $2::bigint::oid
       ) AS held`
    // On the caller's own connection when it has one: a second connection per request could
    // leave every pooled connection waiting for another.
    const held = within
      ? (await within.executeQuery<{ held: boolean }>(CompiledQuery.raw(text, [high, low]))).rows
      : (await this.pool.query<{ held: boolean }>(text, [high, low])).rows
    return held[0]?.held === true
  }

  async close(): Promise<void> {
    const holder = this.holder
    this.holder = undefined
    // Ending the session releases its lock.
    await holder?.end()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
