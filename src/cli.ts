import cluster from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { readConfig, type ServerConfig } from './config.js'
import { Database } from './db/index.js'
import { AtmService } from './index.js'
import { createLogger, type Logger } from './logger.js'
import { parsePostgresUrl, StorageStartError } from './storage/postgres/connect.js'
import { copySqliteToPostgres, CopyError } from './storage/postgres/copy-from-sqlite.js'
import { migratePostgres } from './storage/postgres/migrate.js'
import { connectPostgres, loadSigningKeyHex } from './storage/open.js'
import { serveAdminGuesses } from './xrpc/admin-guesses.js'

/**
 * `node dist/src/bin.js` starts the service. With ATM_WORKERS > 1 the primary process
 * migrates the database, then forks that many workers that share the port and the database
 * (the SQLite file, or the PostgreSQL server that other nodes share too); every promise holds
 * across them because all shared state lives in the database.
 */
async function main(): Promise<void> {
  let cfg: ServerConfig
  try {
    cfg = readConfig()
  } catch (err) {
    process.stderr.write(`atm-tickets: ${(err as Error).message}\n`)
    process.exit(2)
  }
  const logger = createLogger(cfg.logLevel)
  const multiProcess = cfg.workers > 1 && (cfg.databaseUrl !== null || cfg.dbPath !== ':memory:')

  if (cluster.isPrimary) {
    let adminPassword = cfg.adminPassword
    if (!adminPassword) {
      adminPassword = randomBytes(18).toString('base64url')
      // Printed once, to the operator's terminal, outside the structured logs.
      process.stderr.write(`ATM admin password (generated for this run; set ATM_ADMIN_PASSWORD to choose one): ${adminPassword}\n`)
    }
    if (multiProcess) return runPrimary(cfg, logger, adminPassword)
    return runWorker(cfg, logger, adminPassword)
  }
  return runWorker(cfg, logger, process.env.ATM_ADMIN_PASSWORD!)
}

/** A WAL this large is copied out in full and started over (see `Database.checkpoint`). */
const WAL_RESTART_BYTES = 256 * 1024 * 1024
/** How long the primary waits for the workers' writes and reads when it does so. */
const WAL_RESTART_WAIT_MS = 200

/** How often the primary moves the WAL into the database file (the workers never do). */
const CHECKPOINT_INTERVAL_MS = 250

/** The primary's own hold on the storage: the SQLite file it checkpoints, or nothing once PostgreSQL is migrated. */
async function prepareStorage(cfg: ServerConfig, logger: Logger): Promise<{ stop: () => Promise<void> }> {
  if (cfg.databaseUrl) {
    const postgres = await connectPostgres(cfg, logger)
    try {
      await migratePostgres(postgres.pool)
      await loadSigningKeyHex(cfg, postgres)
    } finally {
      await postgres.close()
    }
    return { stop: async () => {} }
  }
  const db = new Database(cfg.dbPath, { synchronous: cfg.dbSynchronous })
  db.migrate()
  // The primary serves no requests, so the checkpoints' writes and fsync delay none; a busy
  // WAL then stays a few hundred milliseconds of writes long.
  const checkpoints = setInterval(() => {
    try {
      db.checkpoint({ restartBytes: WAL_RESTART_BYTES, waitMs: WAL_RESTART_WAIT_MS })
    } catch (err) {
      logger.warn({ err }, 'checkpoint failed')
    }
  }, CHECKPOINT_INTERVAL_MS)
  await loadSigningKeyHex(cfg)
  return {
    stop: async () => {
      clearInterval(checkpoints)
      await db.close()
    },
  }
}

async function runPrimary(cfg: ServerConfig, logger: Logger, adminPassword: string): Promise<void> {
  const storage = await prepareStorage(cfg, logger)
  let stopping = false
  const listening = new Set<number>()
  cluster.on('listening', (worker) => listening.add(worker.id))
  serveAdminGuesses(cluster)
  const fork = () => cluster.fork({ ATM_ADMIN_PASSWORD: adminPassword })
  for (let index = 0; index < cfg.workers; index++) fork()
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return
    // A worker that never started listening (port taken, bad database path) will not do
    // better on a second try: stop with its error instead of restarting it forever.
    if (!listening.has(worker.id)) {
      logger.error({ pid: worker.process.pid, code, signal }, 'a worker failed to start; stopping')
      stopping = true
      for (const other of Object.values(cluster.workers ?? {})) other?.process.kill('SIGTERM')
      void storage.stop()
      process.exitCode = 1
      return
    }
    logger.error({ pid: worker.process.pid, code, signal }, 'worker died; starting another')
    fork()
  })
  const stop = () => {
    if (stopping) return
    stopping = true
    logger.info('stopping workers')
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM')
    const check = setInterval(() => {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        clearInterval(check)
        void storage.stop().finally(() => {
          logger.info('stopped')
          process.exit(0)
        })
      }
    }, 20)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  logger.info({ port: cfg.port, workers: cfg.workers, serviceDid: cfg.serviceDid }, 'primary started')
}

async function runWorker(cfg: ServerConfig, logger: Logger, adminPassword: string): Promise<void> {
  const service = await AtmService.create(cfg, logger, adminPassword)
  await service.start()
  logger.info(
    { port: cfg.port, publicUrl: cfg.publicUrl, serviceDid: cfg.serviceDid, storage: cfg.databaseUrl ? 'postgres' : cfg.dbPath, devMode: cfg.devMode, pid: process.pid },
    'ATM Tickets listening',
  )
  let stopping = false
  const stop = async (signal: string) => {
    if (stopping) return
    stopping = true
    logger.info({ signal }, 'shutting down: finishing in-flight requests')
    try {
      await service.destroy()
      logger.info('shut down cleanly')
      process.exit(0)
    } catch (err) {
      logger.error({ err }, 'shutdown failed')
      process.exit(1)
    }
  }
  process.on('SIGTERM', () => void stop('SIGTERM'))
  process.on('SIGINT', () => void stop('SIGINT'))
}

const COPY_USAGE = 'usage: atm-tickets copy-to-postgres --from <sqlite file> --to <postgres://user:password@host:5432/database> (or ATM_DB and ATM_DATABASE_URL instead)'

/**
 * `node dist/src/bin.js copy-to-postgres --from <file> --to <url>`: copies a stopped service's
 * SQLite database into an empty PostgreSQL database (see storage/postgres/copy-from-sqlite.ts).
 * Exit 0 copied and checked; 1 nothing copied, with one line saying why; 2 bad usage.
 */
async function copyToPostgres(args: string[]): Promise<void> {
  const fail = (code: number, line: string): never => {
    process.stderr.write(`atm-tickets copy-to-postgres: ${line}\n`)
    process.exit(code)
  }
  let values: { from?: string; to?: string; help?: boolean }
  let positionals: string[]
  try {
    ;({ values, positionals } = parseArgs({
      args,
      options: { from: { type: 'string' }, to: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
    }))
  } catch (err) {
    return fail(2, `${(err as Error).message.split('\n')[0]}; ${COPY_USAGE}`)
  }
  if (values.help) {
    process.stdout.write(`${COPY_USAGE}\n`)
    return
  }
  // Not echoed: a stray argument may be the URL, password and all.
  if (positionals.length > 0) fail(2, `unexpected argument (${positionals.length} of them); ${COPY_USAGE}`)
  const from = values.from ?? process.env.ATM_DB
  const to = values.to ?? process.env.ATM_DATABASE_URL
  const toSource = values.to !== undefined ? '--to' : 'ATM_DATABASE_URL'
  if (!from) return fail(2, `say which SQLite file to copy with --from; ${COPY_USAGE}`)
  if (!to) return fail(2, `say which PostgreSQL database to copy into with --to; ${COPY_USAGE}`)
  try {
    const target = parsePostgresUrl(to, toSource)
    const result = await copySqliteToPostgres({ from, to, toSource })
    const width = Math.max(5, ...result.tables.map((t) => t.table.length))
    const lines = [
      `Copied ${from} into database "${target.database}" at ${target.host}:${target.port}; every table has the same rows in both, value for value:`,
      `  ${'table'.padEnd(width)}  rows`,
      ...result.tables.map((t) => `  ${t.table.padEnd(width)}  ${t.rows}`),
      result.signingKeyFile
        ? `The service's signing key (${result.signingKeyFile}) was copied too: every node on this database signs with it, as the SQLite service did.`
        : `No ${from}.signing-key beside the file: if the service ran with ATM_SIGNING_KEY, set that same value on every node (else the first node makes a new key).`,
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
  } catch (err) {
    // A URL that is not one is bad usage, as a bad variable is when the service starts.
    if (err instanceof StorageStartError) return fail(err.failure === 'malformed-url' ? 2 : 1, err.message)
    if (err instanceof CopyError) return fail(1, err.message)
    // Anything else (the server went away, a value PostgreSQL refused) comes from the server or
    // the file, never with the URL in it.
    return fail(1, `the copy failed and nothing was copied: ${String((err as Error).message ?? err).split('\n')[0]}`)
  }
}

export function run(): void {
  const [command, ...args] = process.argv.slice(2)
  if (command === 'copy-to-postgres') {
    copyToPostgres(args).then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`atm-tickets copy-to-postgres: ${String((err as Error).message ?? err).split('\n')[0]}\n`)
        process.exit(1)
      },
    )
    return
  }
  if (command !== undefined) {
    process.stderr.write(`atm-tickets: unknown command (the only one is copy-to-postgres; with none, the service starts)\n`)
    process.exit(2)
  }
  main().catch((err: unknown) => {
    // The database named by the operator cannot be used: one line that says which and why.
    if (err instanceof StorageStartError) {
      process.stderr.write(`atm-tickets: ${err.message}\n`)
      process.exit(err.failure === 'malformed-url' || err.failure === 'options' ? 2 : 1)
    }
    process.stderr.write(`atm-tickets failed to start: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
