import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { ReplayStore, type TokenLedger } from '../auth/replay-store.js'
import type { ServerConfig } from '../config.js'
import { Database } from '../db/index.js'
import type { Logger } from '../logger.js'
import { sleepSync } from '../util/time.js'
import { PostgresGuessStore } from './postgres/admin-guesses.js'
import { openPostgres, type PostgresStorage } from './postgres/connect.js'
import { PostgresDatabase } from './postgres/database.js'
import { migratePostgres } from './postgres/migrate.js'
import { PostgresTokenLedger } from './postgres/token-ledger.js'
import type { GuessStore, Storage } from './types.js'

/** What a process serves requests with, on the engine the config names. */
export interface OpenedStorage {
  storage: Storage
  tokens: TokenLedger
  /** The shared count of wrong admin passwords, when the engine keeps it (PostgreSQL); else the cluster's primary counts. */
  guesses?: GuessStore
}

/** How long a lost instance lock waits before it is taken again. */
const RELOCK_DELAY_MS = 1_000

/**
 * Opens the storage `cfg` names (ATM_DATABASE_URL, else the SQLite file of ATM_DB), applies its
 * migrations and records this process as a running instance. Throws `StorageStartError` (one
 * plain line) when PostgreSQL cannot be used.
 */
export async function openStorage(cfg: ServerConfig, logger: Logger, opts: { autoCheckpoint?: boolean } = {}): Promise<OpenedStorage> {
  if (!cfg.databaseUrl) {
    const database = new Database(cfg.dbPath, { synchronous: cfg.dbSynchronous, autoCheckpoint: opts.autoCheckpoint })
    database.migrate()
    database.recordInstance()
    return { storage: database, tokens: new ReplayStore(database) }
  }
  const connected = await connectPostgres(cfg, logger)
  try {
    await migratePostgres(connected.pool)
    const database: PostgresDatabase = new PostgresDatabase(connected, {
      // Until its lock is back, other nodes take this process for dead and may take over its
      // pending idempotency keys; the requests that held them then find them gone and stop.
      onInstanceLost: (err) => {
        logger.error({ err: { message: err.message } }, 'lost the database session that marks this process alive; taking it again')
        const relock = () =>
          void database.instances.register().catch(() => setTimeout(relock, RELOCK_DELAY_MS).unref())
        setTimeout(relock, RELOCK_DELAY_MS).unref()
      },
    })
    await database.instances.register()
    return { storage: database, tokens: new PostgresTokenLedger(database), guesses: new PostgresGuessStore(connected.db) }
  } catch (err) {
    await connected.close().catch(() => {})
    throw err
  }
}

/** A pool to ATM_DATABASE_URL with the ATM_PG_* settings; checked once, so a bad URL or password stops the start. */
export function connectPostgres(cfg: ServerConfig, logger: Logger): Promise<PostgresStorage> {
  return openPostgres(cfg.databaseUrl!, {
    ...cfg.postgres,
    onIdleConnectionError: (err) => logger.warn({ err: { message: err.message } }, 'a database connection failed; it is dropped and another opened when needed'),
  })
}

/**
 * The service's signing key, the same in every process: ATM_SIGNING_KEY; else, on PostgreSQL, one
 * key kept in the database (the first node to start creates it); else one kept in a file beside
 * the SQLite database, created with O_EXCL (of several workers starting at once, one writes it).
 */
export async function loadSigningKeyHex(cfg: ServerConfig, postgres?: PostgresStorage): Promise<string> {
  if (cfg.signingKeyHex) return cfg.signingKeyHex.toLowerCase()
  if (postgres) {
    await postgres.pool.query(
      'INSERT INTO "serviceKey" (name, "keyHex", "createdAt") VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING',
      ['service', randomBytes(32).toString('hex'), Date.now()],
    )
    const row = await postgres.pool.query<{ keyHex: string }>('SELECT "keyHex" FROM "serviceKey" WHERE name = $1', ['service'])
    return row.rows[0]!.keyHex
  }
  return signingKeyFile(cfg)
}

function signingKeyFile(cfg: ServerConfig): string {
  if (cfg.dbPath === ':memory:') return randomBytes(32).toString('hex')
  const path = `${cfg.dbPath}.signing-key`
  try {
    writeFileSync(path, randomBytes(32).toString('hex') + '\n', { flag: 'wx', mode: 0o600 })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  for (let attempt = 0; ; attempt++) {
    const hex = readFileSync(path, 'utf8').trim()
    if (/^[0-9a-f]{64}$/.test(hex)) return hex
    if (attempt > 50) throw new Error(`${path} does not hold a 64-hex-digit key`)
    sleepSync(10)
  }
}
