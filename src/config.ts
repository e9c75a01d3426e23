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
  }
}
