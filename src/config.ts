import net from 'node:net'
import os from 'node:os'

export type Environment = 'test' | 'live'

/** Everything the service reads from `ATM_*` variables, parsed once at start-up. */
export interface ServerConfig {
  port: number
  publicUrl: string
  serviceDid: string
  dbPath: string
  plcUrl: string
  devMode: boolean
  adminPassword: string | null
  holdTtlSeconds: number
  signingKeyHex: string | null
  logLevel: string
  workers: number
  version: string
  /** SQLite `synchronous` level: NORMAL survives a process crash, FULL also a power cut. */
  dbSynchronous: 'NORMAL' | 'FULL'
  /** ATM_DATABASE_URL: a `postgres://` URL runs the service on that server instead of the SQLite file. */
  databaseUrl: string | null
  /** The PostgreSQL pool of each process (ATM_PG_*). */
  postgres: { poolSize: number; connectionTimeoutMs: number; statementTimeoutMs: number; idleInTransactionTimeoutMs: number }
  /** First retry delay of an undelivered event; each later one doubles, up to `deliveryRetryMaxMs`. */
  deliveryRetryBaseMs: number
  deliveryRetryMaxMs: number
  /** How long one delivery may take (connect, send, response) before it counts as failed. */
  deliveryTimeoutMs: number
  /** How often each process looks for events due (other processes' and retries); its own wake it at once. */
  deliveryPollMs: number
  /** How often holds past their expiry are marked expired and reported (`ticket.hold.expired`). */
  holdSweepMs: number
  /** Largest DID document read (bytes); a larger one fails the lookup. */
  didDocMaxBytes: number
  /** Bytes of DID documents cached for registered apps and organizers, per process. */
  didCacheMaxBytes: number
  /** Bytes of DID documents cached for every other issuer, per process. */
  didCacheUnknownMaxBytes: number
  /**
   * Reverse proxies whose `X-Forwarded-For` names the client (for counting wrong admin
   * passwords per address); empty: the connection's peer is the client.
   */
  trustedProxies: net.BlockList
}

export const SERVICE_VERSION = '0.1.0'

function intVar(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer from ${min} to ${max}, got "${raw}"`)
  }
  return value
}

function boolVar(env: NodeJS.ProcessEnv, name: string): boolean {
  const raw = (env[name] ?? '').trim().toLowerCase()
  if (raw === '' || raw === 'false' || raw === '0' || raw === 'no') return false
  if (raw === 'true' || raw === '1' || raw === 'yes') return true
  throw new Error(`${name} must be true or false, got "${env[name]}"`)
}

function deliveryConfig(env: NodeJS.ProcessEnv) {
  const deliveryRetryBaseMs = intVar(env, 'ATM_DELIVERY_RETRY_BASE_MS', 10_000, 1, 24 * 3600_000)
  const deliveryRetryMaxMs = intVar(env, 'ATM_DELIVERY_RETRY_MAX_MS', Math.max(3600_000, deliveryRetryBaseMs), 1, 7 * 24 * 3600_000)
  if (deliveryRetryMaxMs < deliveryRetryBaseMs) {
    throw new Error(`ATM_DELIVERY_RETRY_MAX_MS (${deliveryRetryMaxMs}) must be at least ATM_DELIVERY_RETRY_BASE_MS (${deliveryRetryBaseMs})`)
  }
  return {
    deliveryRetryBaseMs,
    deliveryRetryMaxMs,
    deliveryTimeoutMs: intVar(env, 'ATM_DELIVERY_TIMEOUT_MS', 10_000, 100, 120_000),
    deliveryPollMs: intVar(env, 'ATM_DELIVERY_POLL_MS', 1000, 10, 60_000),
    holdSweepMs: intVar(env, 'ATM_HOLD_SWEEP_MS', 15_000, 10, 60_000),
  }
}

function didCacheConfig(env: NodeJS.ProcessEnv) {
  return {
    didDocMaxBytes: intVar(env, 'ATM_DID_DOC_MAX_BYTES', 64 * 1024, 1024, 1024 * 1024),
    didCacheMaxBytes: intVar(env, 'ATM_DID_CACHE_MAX_BYTES', 32 * 1024 * 1024, 64 * 1024, 4 * 1024 * 1024 * 1024),
    didCacheUnknownMaxBytes: intVar(env, 'ATM_DID_CACHE_UNKNOWN_MAX_BYTES', 2 * 1024 * 1024, 0, 1024 * 1024 * 1024),
  }
}

/** `ATM_TRUSTED_PROXIES`: addresses and CIDR ranges, separated by commas. */
function trustedProxies(env: NodeJS.ProcessEnv): net.BlockList {
  const list = new net.BlockList()
  for (const entry of (env.ATM_TRUSTED_PROXIES ?? '').split(',').map((part) => part.trim()).filter(Boolean)) {
    const [address = '', bits] = entry.split('/', 2)
    const version = net.isIP(address)
    const prefix = bits === undefined ? null : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN
    if (version === 0 || (prefix !== null && !(prefix <= (version === 4 ? 32 : 128)))) {
      throw new Error(`ATM_TRUSTED_PROXIES must list IP addresses or CIDR ranges (10.0.0.0/8), separated by commas; "${entry}" is neither`)
    }
    const type = version === 4 ? 'ipv4' : 'ipv6'
    if (prefix === null) list.addAddress(address, type)
    else list.addSubnet(address, prefix, type)
  }
  return list
}

export function readConfig(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const port = intVar(env, 'ATM_PORT', 2595, 0, 65535)
  const publicUrl = (env.ATM_PUBLIC_URL || `http://localhost:${port}`).replace(/\/+$/, '')
  try {
    new URL(publicUrl)
  } catch {
    throw new Error(`ATM_PUBLIC_URL must be an absolute URL, got "${publicUrl}"`)
  }
  const serviceDid = env.ATM_SERVICE_DID || `did:web:localhost%3A${port}`
  if (!/^did:[a-z]+:[a-zA-Z0-9._:%-]+$/.test(serviceDid)) {
    throw new Error(`ATM_SERVICE_DID must be a DID, got "${serviceDid}"`)
  }
  const signingKeyHex = env.ATM_SIGNING_KEY?.trim() || null
  if (signingKeyHex !== null && !/^[0-9a-fA-F]{64}$/.test(signingKeyHex)) {
    throw new Error('ATM_SIGNING_KEY must be 64 hex characters (a secp256k1 private key)')
  }
  const synchronous = (env.ATM_DB_SYNCHRONOUS || 'NORMAL').toUpperCase()
  if (synchronous !== 'NORMAL' && synchronous !== 'FULL') {
    throw new Error(`ATM_DB_SYNCHRONOUS must be NORMAL or FULL, got "${env.ATM_DB_SYNCHRONOUS}"`)
  }
  return {
    port,
    publicUrl,
    serviceDid,
    dbPath: env.ATM_DB || './data/atm.sqlite',
    plcUrl: (env.ATM_PLC_URL || 'https://plc.directory').replace(/\/+$/, ''),
    devMode: boolVar(env, 'ATM_DEV_MODE'),
    adminPassword: env.ATM_ADMIN_PASSWORD || null,
    holdTtlSeconds: intVar(env, 'ATM_HOLD_TTL_SECONDS', 600, 1, 7 * 24 * 3600),
    signingKeyHex,
    logLevel: env.ATM_LOG_LEVEL || 'info',
    workers: intVar(env, 'ATM_WORKERS', os.availableParallelism(), 1, 256),
    version: SERVICE_VERSION,
    dbSynchronous: synchronous,
    databaseUrl: env.ATM_DATABASE_URL?.trim() || null,
    postgres: {
      poolSize: intVar(env, 'ATM_PG_POOL_SIZE', 10, 1, 1000),
      connectionTimeoutMs: intVar(env, 'ATM_PG_CONNECT_TIMEOUT_MS', 5_000, 100, 600_000),
      statementTimeoutMs: intVar(env, 'ATM_PG_STATEMENT_TIMEOUT_MS', 30_000, 100, 3_600_000),
      idleInTransactionTimeoutMs: intVar(env, 'ATM_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS', 60_000, 100, 3_600_000),
    },
    ...deliveryConfig(env),
    ...didCacheConfig(env),
    trustedProxies: trustedProxies(env),
  }
}
