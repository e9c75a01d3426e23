import cluster from 'node:cluster'
import { IdResolver } from '@atproto/identity'
import { safeFetchWrap } from '@atproto-labs/fetch-node'
import { Secp256k1Keypair } from '@atproto/crypto'
import { BoundedDidCache, cappedFetch } from './auth/did-cache.js'
import type { TokenLedger } from './auth/replay-store.js'
import { atprotoKeyOf, ServiceAuthVerifier } from './auth/verifier.js'
import type { ServerConfig } from './config.js'
import type { Logger } from './logger.js'
import { EventRecordReader } from './records/event-record.js'
import { PostgresDatabase } from './storage/postgres/database.js'
import { loadSigningKeyHex, openStorage } from './storage/open.js'
import type { GuessStore, Storage } from './storage/types.js'

/** Everything a request handler needs, built once per process from the config. */
export interface AppContext {
  cfg: ServerConfig
  db: Storage
  logger: Logger
  idResolver: IdResolver
  didCache: BoundedDidCache
  authVerifier: ServiceAuthVerifier
  replayStore: TokenLedger
  /** The shared count of wrong admin passwords (PostgreSQL); absent, the cluster's primary counts them. */
  adminGuesses?: GuessStore
  eventRecords: EventRecordReader
  signingKey: Secp256k1Keypair
  adminPassword: string
}

export async function createContext(cfg: ServerConfig, logger: Logger, adminPassword: string): Promise<AppContext> {
  // A cluster worker leaves checkpoints to the primary (cli.ts), which has no requests to delay.
  const { storage: db, tokens: replayStore, guesses: adminGuesses } = await openStorage(cfg, logger, { autoCheckpoint: !cluster.isWorker })
  const didCache = createDidCache(cfg, db, logger, replayStore)
  const idResolver = new IdResolver({ plcUrl: cfg.plcUrl, didCache, timeout: 5000, fetch: didDocumentFetch(cfg) })
  await replayStore.load()
  const authVerifier = new ServiceAuthVerifier(cfg.serviceDid, idResolver, replayStore, { didCache })
  const signingKeyHex = await loadSigningKeyHex(cfg, db instanceof PostgresDatabase ? db.storage : undefined)
  const signingKey = await Secp256k1Keypair.import(signingKeyHex, { exportable: true })
  const eventRecords = new EventRecordReader(idResolver, cfg.devMode)
  return { cfg, db, logger, idResolver, didCache, authVerifier, replayStore, adminGuesses, eventRecords, signingKey, adminPassword }
}

/** Whether a DID is an issuer the service works for: a registered app, or an organizer. */
const KNOWN_ISSUER_SQL =
  'SELECT CASE WHEN EXISTS (SELECT 1 FROM app WHERE did = ?) OR EXISTS (SELECT 1 FROM organizer WHERE did = ?) OR EXISTS (SELECT 1 FROM event WHERE organizerDid = ?) THEN 1 ELSE 0 END AS known'

/**
 * The DID document cache, bounded in bytes, with known issuers apart from everyone else. Every
 * fresh document's key is recorded for the other workers, and a worker forgets its cached
 * document once another has recorded a different key for that DID (see SigningKeyLog).
 */
function createDidCache(cfg: ServerConfig, db: Storage, logger: Logger, replayStore: TokenLedger): BoundedDidCache {
  const didCache = new BoundedDidCache({
    knownMaxBytes: cfg.didCacheMaxBytes,
    unknownMaxBytes: cfg.didCacheUnknownMaxBytes,
    isKnown: async (did) => (await db.readRow<{ known: number }>(KNOWN_ISSUER_SQL, did, did, did))?.known === 1,
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

