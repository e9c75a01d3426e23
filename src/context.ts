import cluster from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { IdResolver } from '@atproto/identity'
import { Secp256k1Keypair } from '@atproto/crypto'
import { BoundedDidCache } from './auth/did-cache.js'
import { ReplayStore } from './auth/replay-store.js'
import { ServiceAuthVerifier } from './auth/verifier.js'
import type { ServerConfig } from './config.js'
import { Database } from './db/index.js'
import type { Logger } from './logger.js'
import { EventRecordReader } from './records/event-record.js'
import { sleepSync } from './util/time.js'

/** Everything a request handler needs, built once per process from the config. */
export interface AppContext {
  cfg: ServerConfig
  db: Database
  logger: Logger
  idResolver: IdResolver
  didCache: BoundedDidCache
  authVerifier: ServiceAuthVerifier
  replayStore: ReplayStore
  eventRecords: EventRecordReader
  signingKey: Secp256k1Keypair
  adminPassword: string
}

export async function createContext(cfg: ServerConfig, logger: Logger, adminPassword: string): Promise<AppContext> {
  // A cluster worker leaves checkpoints to the primary (cli.ts), which has no requests to delay.
  const db = new Database(cfg.dbPath, { synchronous: cfg.dbSynchronous, autoCheckpoint: !cluster.isWorker })
  db.migrate()
  db.recordInstance()
  const didCache = new BoundedDidCache()
  const idResolver = new IdResolver({
    plcUrl: cfg.plcUrl,
    didCache,
    timeout: 5000,
    // The default fetch refuses http, loopback and private addresses (SSRF protection);
    // only a developer's machine, with its local PLC and did:web on localhost, may lift that.
    ...(cfg.devMode ? { fetch: globalThis.fetch } : {}),
  })
  const replayStore = new ReplayStore(db)
  await replayStore.load()
  const authVerifier = new ServiceAuthVerifier(cfg.serviceDid, idResolver, replayStore)
  const signingKey = await Secp256k1Keypair.import(loadSigningKeyHex(cfg), { exportable: true })
  const eventRecords = new EventRecordReader(idResolver, cfg.devMode)
  return { cfg, db, logger, idResolver, didCache, authVerifier, replayStore, eventRecords, signingKey, adminPassword }
}

/**
 * ATM_SIGNING_KEY, or a key generated once and kept beside the database, so the service's
 * did:web document stays the same across restarts. Created with O_EXCL: of several workers
 * starting at once, one writes it and the others read it.
 */
export function loadSigningKeyHex(cfg: ServerConfig): string {
  if (cfg.signingKeyHex) return cfg.signingKeyHex.toLowerCase()
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
