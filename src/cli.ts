import cluster from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { loadSigningKeyHex } from './context.js'
import { readConfig, type ServerConfig } from './config.js'
import { Database } from './db/index.js'
import { AtmService } from './index.js'
import { createLogger, type Logger } from './logger.js'
import { serveAdminGuesses } from './xrpc/admin-guesses.js'

/**
 * `node dist/src/bin.js` starts the service. With ATM_WORKERS > 1 the primary process
 * migrates the database, then forks that many workers that share the port and the SQLite
 * file; every promise holds across them because all shared state lives in the database.
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
  const multiProcess = cfg.workers > 1 && cfg.dbPath !== ':memory:'

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

async function runPrimary(cfg: ServerConfig, logger: Logger, adminPassword: string): Promise<void> {
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
  loadSigningKeyHex(cfg)
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
      clearInterval(checkpoints)
      void db.close()
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
        clearInterval(checkpoints)
        void db.close().finally(() => {
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
    { port: cfg.port, publicUrl: cfg.publicUrl, serviceDid: cfg.serviceDid, db: cfg.dbPath, devMode: cfg.devMode, pid: process.pid },
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

export function run(): void {
  main().catch((err: unknown) => {
    process.stderr.write(`atm-tickets failed to start: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
