import cluster from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { IdResolver } from '@atproto/identity'
import { safeFetchWrap } from '@atproto-labs/fetch-node'
import { Secp256k1Keypair } from '@atproto/crypto'
import { BoundedDidCache, cappedFetch } from './auth/did-cache.js'
import { ReplayStore } from './auth/replay-store.js'
import { atprotoKeyOf, ServiceAuthVerifier } from './auth/verifier.js'
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
  const replayStore = new ReplayStore(db)
  const didCache = createDidCache(cfg, db, logger, replayStore)
  const idResolver = new IdResolver({ plcUrl: cfg.plcUrl, didCache, timeout: 5000, fetch: didDocumentFetch(cfg) })
  await replayStore.load()
  const authVerifier = new ServiceAuthVerifier(cfg.serviceDid, idResolver, replayStore, { didCache })
  const signingKey = await Secp256k1Keypair.import(loadSigningKeyHex(cfg), { exportable: true })
  const eventRecords = new EventRecordReader(idResolver, cfg.devMode)
  return { cfg, db, logger, idResolver, didCache, authVerifier, replayStore, eventRecords, signingKey, adminPassword }
}

/** Whether a DID is an issuer the service works for: a registered app, or an organizer. */
const KNOWN_ISSUER_SQL =
  'SELECT EXISTS (SELECT 1 FROM app WHERE did = ?) OR EXISTS (SELECT 1 FROM organizer WHERE did = ?) OR EXISTS (SELECT 1 FROM event WHERE organizerDid = ?) AS known'

/**
 * The DID document cache, bounded in bytes, with known issuers apart from everyone else. Every
 * fresh document's key is recorded for the other workers, and a worker forgets its cached
 * document once another has recorded a different key for that DID (see SigningKeyLog).
 */
function createDidCache(cfg: ServerConfig, db: Database, logger: Logger, replayStore: ReplayStore): BoundedDidCache {
  const didCache = new BoundedDidCache({
    knownMaxBytes: cfg.didCacheMaxBytes,
    unknownMaxBytes: cfg.didCacheUnknownMaxBytes,
    isKnown: (did) => db.readSync((tx) => tx.get<{ known: number }>(KNOWN_ISSUER_SQL, did, did, did)?.known === 1),
    onFetched: async (did, doc) => {
      const key = atprotoKeyOf(doc)
      if (key !== undefined) await replayStore.signingKeys.record(did, key)
    },
    onStored: (did, stats) => logger.debug({ did, didCache: stats }, 'DID document cached'),
  })
  replayStore.signingKeys.onChange = (did, key) => {
    const cached = didCache.peek(did)
    if (cached !== undefined && (key === undefined || atprotoKeyOf(cached) !== key)) didCache.forget(did)
  }
  return didCache
}

/**
 * Fetches DID documents, each read up to ATM_DID_DOC_MAX_BYTES and no further. The default
 * fetch refuses http, loopback and private addresses (SSRF protection); only a developer's
 * machine, with its local PLC and did:web on localhost, may lift that.
 */
function didDocumentFetch(cfg: ServerConfig): typeof globalThis.fetch {
  const base = cfg.devMode
    ? globalThis.fetch
    : (safeFetchWrap({ allowIpHost: false, allowImplicitRedirect: false, responseMaxSize: cfg.didDocMaxBytes }) as typeof globalThis.fetch)
  return cappedFetch(base, cfg.didDocMaxBytes)
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
