import { randomBytes } from 'node:crypto'
import type SqliteDatabase from 'better-sqlite3'
import type { DbConn, InstanceRegistry } from '../storage/types.js'

/**
 * This process, as the owner of work it may leave half done when it dies (a pending
 * idempotency key). The id is new at every start, so a later process that happens to get the
 * same pid is never taken for this one.
 */
export const thisInstance: { readonly id: string; readonly pid: number } = {
  id: randomBytes(12).toString('base64url'),
  pid: process.pid,
}

/** Whether a process with this pid runs on this machine (any user's: EPERM means it exists). */
function pidRuns(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * The service processes on this machine, one row each in the file. The id is new at every
 * start, so a later process that happens to get the same pid is never taken for this one.
 */
export class SqliteInstances implements InstanceRegistry {
  readonly id = thisInstance.id

  constructor(private readonly db: DbConn) {}

  /**
   * Records this process in the file at start: its row replaces the row of a former process
   * that had the same pid (that one is gone), and the rows of processes no longer running are
   * dropped, so the table stays as small as the set of live processes.
   */
  record(sqlite: SqliteDatabase.Database, nowMs = Date.now()): void {
    const record = sqlite.transaction(() => {
      const rows = sqlite.prepare('SELECT pid FROM serviceInstance').all() as Array<{ pid: number }>
      const gone = sqlite.prepare('DELETE FROM serviceInstance WHERE pid = ?')
      for (const { pid } of rows) if (pid !== thisInstance.pid && !pidRuns(pid)) gone.run(pid)
      sqlite
        .prepare('INSERT OR REPLACE INTO serviceInstance (id, pid, startedAt) VALUES (?, ?, ?)')
        .run(thisInstance.id, thisInstance.pid, nowMs)
    })
    record.immediate()
  }

  /** Recorded by `Database.recordInstance`, which needs the file's own connection. */
  async register(): Promise<void> {}

  /**
   * Whether the service process `instanceId` still runs. With SQLite every process is on this
   * machine: it runs while its pid does and no later process took that pid over (which
   * replaced its row). A pid taken by some other program reads as running; the caller's time
   * limit covers that.
   */
  async isAlive(instanceId: string, within: DbConn = this.db): Promise<boolean> {
    if (instanceId === thisInstance.id) return true
    const row = await within.selectFrom('serviceInstance').select('pid').where('id', '=', instanceId).executeTakeFirst()
    return row !== undefined && pidRuns(row.pid)
  }

  async close(): Promise<void> {}
}
