import type pg from 'pg'
import { migrations as allMigrations } from './migrations/index.js'

/**
 * The advisory lock every node takes to migrate: one number the whole schema agrees on
 * ("atm_mig" in ASCII). Advisory locks are per database, so two services sharing a server
 * but not a database do not wait for each other.
 */
const MIGRATION_LOCK = 0x61746d5f6d6967n

export interface MigrationResult {
  /** The migrations this call applied, in order (empty when another node had applied them). */
  applied: string[]
  /** Migrations recorded in the database that this code does not know: a newer version ran. */
  unknown: string[]
}

/**
 * Applies the migrations the database has not seen, each in its own transaction, while holding
 * a session advisory lock: when several nodes start at the same moment, one applies them and the
 * others wait for it, then find nothing left to do. A node killed mid-migration loses its
 * session, so its lock goes and its open transaction rolls back; the next node does the work.
 */
export async function migratePostgres(
  pool: pg.Pool,
  migrations: ReadonlyArray<{ name: string; up: string }> = allMigrations,
): Promise<MigrationResult> {
  const client = await pool.connect()
  let broken: Error | undefined
  try {
    // A migration (or the wait for another node's) may take longer than any request may.
    await client.query('SET statement_timeout = 0')
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK.toString()])
    try {
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT COLLATE "C" PRIMARY KEY, "appliedAt" BIGINT NOT NULL)')
      const done = new Set((await client.query<{ name: string }>('SELECT name FROM schema_migrations')).rows.map((r) => r.name))
      const known = new Set(migrations.map((m) => m.name))
      const applied: string[] = []
      for (const migration of migrations) {
        if (done.has(migration.name)) continue
        await client.query('BEGIN')
        try {
          await client.query(migration.up)
          await client.query('INSERT INTO schema_migrations (name, "appliedAt") VALUES ($1, $2)', [migration.name, Date.now()])
          await client.query('COMMIT')
        } catch (err) {
          await client.query('ROLLBACK').catch(() => {})
          throw new Error(`PostgreSQL migration ${migration.name} failed: ${(err as Error).message}`, { cause: err })
        }
        applied.push(migration.name)
      }
      return { applied, unknown: [...done].filter((name) => !known.has(name)).sort() }
    } finally {
      // Failing here (the connection is gone) must not hide the error that got us here; the
      // connection is then closed below, and the lock goes with its session.
      try {
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK.toString()])
        await client.query('RESET statement_timeout')
      } catch (err) {
        broken = err as Error
      }
    }
  } catch (err) {
    broken = err as Error
    throw err
  } finally {
    // A connection whose session state is unknown is closed rather than given back to the pool.
    client.release(broken)
  }
}
