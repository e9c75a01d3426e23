import { sql, type Kysely, type Selectable } from 'kysely'
import type { DatabaseSchema, OutboxTable } from '../../db/schema.js'

type OutboxRow = Selectable<OutboxTable>

/**
 * Takes up to `limit` outbox rows due at `now` until `leaseUntil`, counting the attempt, as the
 * deliverer's SQLite statement does. On PostgreSQL the rows are picked under FOR UPDATE SKIP
 * LOCKED: without a row lock, two nodes' updates would each pick the same rows from their own
 * snapshot and both send them; with a plain FOR UPDATE, one node would wait on rows another is
 * taking instead of taking the next ones.
 */
export async function claimDueOutbox(db: Kysely<DatabaseSchema>, now: number, leaseUntil: number, limit: number): Promise<OutboxRow[]> {
  const claimed = await sql<OutboxRow>`
    UPDATE outbox SET "nextAttemptAt" = ${leaseUntil}, attempts = attempts + 1
     WHERE seq IN (
       SELECT seq FROM outbox
        WHERE "deliveredAt" IS NULL AND "nextAttemptAt" <= ${now}
        ORDER BY "nextAttemptAt"
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
     )
    RETURNING *`.execute(db)
  return claimed.rows
}
