import { sql, type Kysely } from 'kysely'
import type { DatabaseSchema } from '../../db/schema.js'
import { FORGET_AFTER_MS, judgeAttempt, type GuessRecord } from '../guess-rules.js'
import type { GuessStore } from '../types.js'

type Conn = Kysely<DatabaseSchema>

/**
 * The wrong admin passwords per client in one table every node shares (on SQLite, the count
 * lives in the cluster primary's memory, which another node cannot ask).
 *
 * Each attempt runs in a transaction that holds the client's row locked while it reads the
 * count and writes the next one, so attempts racing from any nodes are counted one after the
 * other; what each attempt means is `judgeAttempt`'s to say.
 */
export class PostgresGuessStore implements GuessStore {
  constructor(private readonly db: Conn) {}

  async attempt(client: string, correct: boolean, nowMs: number): Promise<number> {
    return this.db.transaction().execute(async (tx) => {
      if (!correct) {
        // A row to lock even for a client's first guess: without it, two first guesses would both read "none".
        await sql`INSERT INTO "adminGuess" (client, wrong, "lastWrongAt", "blockedUntil") VALUES (${client}, 0, 0, 0)
                  ON CONFLICT (client) DO NOTHING`.execute(tx)
      }
      const found = await sql<GuessRecord>`
        SELECT wrong, "lastWrongAt", "blockedUntil" FROM "adminGuess" WHERE client = ${client} FOR UPDATE`.execute(tx)
      const record = found.rows[0]
      const verdict = judgeAttempt(record, correct, nowMs)
      if (verdict.waitMs > 0) return verdict.waitMs
      const next = verdict.next
      if (!next) {
        if (record) await sql`DELETE FROM "adminGuess" WHERE client = ${client}`.execute(tx)
        return 0
      }
      await sql`UPDATE "adminGuess" SET wrong = ${next.wrong}, "lastWrongAt" = ${next.lastWrongAt}, "blockedUntil" = ${next.blockedUntil}
                WHERE client = ${client}`.execute(tx)
      return 0
    })
  }

  async forgetQuiet(nowMs: number): Promise<number> {
    // A quiet client starts from zero anyway; its row only takes room. One still waiting is kept.
    const result = await sql`DELETE FROM "adminGuess" WHERE "lastWrongAt" <= ${nowMs - FORGET_AFTER_MS} AND "blockedUntil" <= ${nowMs}`.execute(this.db)
    return Number(result.numAffectedRows ?? 0)
  }
}
