import { randomBytes } from 'node:crypto'
import type SqliteDatabase from 'better-sqlite3'
import type { DbConn } from './index.js'

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
 * Records this process in the file at start: its row replaces the row of a former process
 * that had the same pid (that one is gone), and the rows of processes no longer running are
 * dropped, so the table stays as small as the set of live processes.
 */
export function recordInstance(sqlite: SqliteDatabase.Database, nowMs = Date.now()): void {
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

/**
 * Whether the service process `instanceId` still runs: the one question a storage engine must
 * answer for work in progress to be taken over the moment its owner died. With SQLite every
 * process is on this machine: it runs while its pid does and no later process took that pid
 * over (which replaced its row). A pid taken by some other program reads as running; the
 * caller's time limit covers that. (On PostgreSQL, each node would hold a session advisory
 * lock named by its id, and this would ask whether that lock is still held.)
 */
export async function instanceAlive(db: DbConn, instanceId: string): Promise<boolean> {
  if (instanceId === thisInstance.id) return true
  const row = await db.selectFrom('serviceInstance').select('pid').where('id', '=', instanceId).executeTakeFirst()
  return row !== undefined && pidRuns(row.pid)
}
