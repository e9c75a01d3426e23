import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { DatabaseSchema } from '../../db/schema.js'

/** How the pool talks to the server; every field has a default (`POSTGRES_DEFAULTS`). */
export interface PostgresOptions {
  /** Connections this process keeps open at most; requests beyond it wait for a free one. */
  poolSize: number
  /** How long opening one connection may take before it fails (also the wait for a free one). */
  connectionTimeoutMs: number
  /** How long the server lets one statement run before it cancels it. */
  statementTimeoutMs: number
  /** How long the server lets a session sit idle inside a transaction, holding its locks. */
  idleInTransactionTimeoutMs: number
  /** How long an unused connection stays open in the pool before it is closed. */
  idleTimeoutMs: number
  /** Where the setting came from, as the operator knows it: it starts every start-up error line. */
  source: string
  /**
   * Told about a connection that failed while idle in the pool (the server restarted, a
   * network cut); the pool has already dropped it. Without a listener, pg's pool would throw
   * it as an unhandled 'error' event and end the process.
   */
  onIdleConnectionError: (error: Error) => void
}

export const POSTGRES_DEFAULTS: PostgresOptions = {
  poolSize: 10,
  connectionTimeoutMs: 5_000,
  statementTimeoutMs: 30_000,
  idleInTransactionTimeoutMs: 60_000,
  idleTimeoutMs: 30_000,
  source: 'ATM_DATABASE_URL',
  onIdleConnectionError: () => {},
}

/** The oldest server this storage is written for (its SQL and locking). */
const MIN_SERVER_VERSION_NUM = 140000

export type StorageStartFailure = 'malformed-url' | 'refused' | 'unreachable' | 'no-database' | 'server' | 'options'

/**
 * Why the PostgreSQL storage could not start, as one plain line for the operator: which
 * setting or which server, and what to do. Never carries the password, nor a stack the
 * operator would have to read through.
 */
export class StorageStartError extends Error {
  override readonly name = 'StorageStartError'
  constructor(
    readonly failure: StorageStartFailure,
    message: string,
  ) {
    super(message)
  }
}

/** What a valid URL names, for messages (never the password). */
interface Target {
  host: string
  port: number
  user: string
  database: string
}

/**
 * Checks a `postgres://` URL and answers what it names. Throws `StorageStartError`
 * ('malformed-url') without echoing the URL, which may hold a password.
 */
export function parsePostgresUrl(text: string, source = POSTGRES_DEFAULTS.source): Target {
  const expected = 'expected postgres://user:password@host:5432/database'
  const malformed = (why: string) => new StorageStartError('malformed-url', `${source} is not a valid PostgreSQL URL: ${why}; ${expected}`)
  let url: URL
  try {
    url = new URL(text.trim())
  } catch {
    // URL's own message would quote the input, password included.
    const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(text.trim())?.[1]
    const hostAndPort = authority?.slice(authority.lastIndexOf('@') + 1)
    throw malformed(hostAndPort && /:[^:\]]*$/.test(hostAndPort) ? 'its port is not a number from 1 to 65535' : 'it cannot be read as a URL')
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw malformed(`its scheme is "${url.protocol}", not postgres: or postgresql:`)
  }
  const socketHost = url.searchParams.get('host')
  if (!url.hostname && !socketHost) throw malformed('it names no host')
  if (url.port === '0') throw malformed('its port is not a number from 1 to 65535')
  let user: string
  let database: string
  try {
    user = decodeURIComponent(url.username)
    database = decodeURIComponent(url.pathname.replace(/^\//, ''))
    decodeURIComponent(url.password)
  } catch {
    throw malformed('its user, password or database has a broken %-escape')
  }
  if (database.includes('/')) throw malformed('its path has more than one segment; the path is the database name')
  if (!user) throw malformed('it names no user')
  return {
    host: socketHost ?? url.hostname,
    port: url.port ? Number(url.port) : 5432,
    user,
    database: database || user,
  }
}

function checkOptions(opts: PostgresOptions): void {
  const whole = (name: keyof PostgresOptions, min: number) => {
    const value = opts[name]
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
      throw new StorageStartError('options', `PostgreSQL option ${name} must be a whole number of at least ${min}, not ${String(value)}`)
    }
  }
  whole('poolSize', 1)
  whole('connectionTimeoutMs', 1)
  whole('statementTimeoutMs', 1)
  whole('idleInTransactionTimeoutMs', 1)
  whole('idleTimeoutMs', 1)
}

/**
 * int8 (bigint: every integer column, `count(*)`) and numeric (`sum` of bigints) as JS numbers,
 * as SQLite gives them, so domain code written once reads the same values from both backends.
 * pg answers them as strings by default because a bigint may not fit in a double: the stored
 * values (millisecond times, amounts, counts) stay far below 2^53, and one that does not is an
 * error rather than a silently rounded number.
 */
function parseWholeNumber(text: string): number {
  const value = Number(text)
  if (!Number.isFinite(value) || (Number.isInteger(value) && !Number.isSafeInteger(value))) {
    throw new RangeError(`PostgreSQL answered ${text}, which a JS number cannot hold exactly`)
  }
  return value
}

const typeParsers = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === pg.types.builtins.INT8 || oid === pg.types.builtins.NUMERIC) return parseWholeNumber
    return pg.types.getTypeParser(oid, format)
  },
} as pg.CustomTypesConfig

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string') return code
  // Node tries every address of a host name and reports all of them together.
  if (err instanceof AggregateError) for (const inner of err.errors) {
    const innerCode = codeOf(inner)
    if (innerCode) return innerCode
  }
  return undefined
}

/** One plain line for a failure to connect and open a session (no stack, no password). */
export function classifyStartError(err: unknown, target: Target, opts: Pick<PostgresOptions, 'source' | 'connectionTimeoutMs'>): StorageStartError {
  if (err instanceof StorageStartError) return err
  const where = `PostgreSQL at ${target.host}:${target.port}`
  const code = codeOf(err)
  const serverMessage = String((err as { message?: unknown } | null)?.message ?? err)
  switch (code) {
    case '28P01':
      return new StorageStartError('refused', `${where} refused the password of user "${target.user}": fix the user or password in ${opts.source}`)
    case '28000':
      return new StorageStartError('refused', `${where} refused user "${target.user}" (${serverMessage}): allow it in the server's pg_hba.conf or fix ${opts.source}`)
    case '3D000':
      return new StorageStartError('no-database', `${where} has no database "${target.database}": create it (createdb ${target.database}) or fix the database name in ${opts.source}`)
    case 'ECONNREFUSED':
      return new StorageStartError('unreachable', `${where} refused the connection (no server listening): start PostgreSQL or fix the host and port in ${opts.source}`)
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new StorageStartError('unreachable', `the host "${target.host}" in ${opts.source} could not be resolved: fix the host name`)
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ECONNRESET':
      return new StorageStartError('unreachable', `${where} could not be reached (${code}): check that it runs and that this machine may reach it`)
    case '57P03':
      return new StorageStartError('unreachable', `${where} is starting up or shutting down and refuses sessions: start the service again once it is up`)
    case '53300':
      return new StorageStartError('server', `${where} has no free connection slot (too many clients): lower the pool size of the nodes or raise the server's max_connections`)
  }
  if (/timeout/i.test(serverMessage)) {
    return new StorageStartError('unreachable', `${where} did not answer within ${opts.connectionTimeoutMs} ms: check that it runs and that this machine may reach it`)
  }
  const sqlState = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? ` (SQLSTATE ${code})` : code ? ` (${code})` : ''
  return new StorageStartError('server', `${where} could not be used: ${serverMessage.split('\n')[0]}${sqlState}`)
}

export interface PostgresStorage {
  readonly db: Kysely<DatabaseSchema>
  readonly pool: pg.Pool
  /** The server's version as a number, e.g. 150004. */
  readonly serverVersionNum: number
  close(): Promise<void>
}

/**
 * Opens a pool to the server a `postgres://` URL names, behind kysely's PostgreSQL dialect, and
 * checks it once by opening a session (which is where a refused password, a missing database or
 * a server that is down shows). Throws `StorageStartError` with one plain line on any failure.
 */
export async function openPostgres(url: string, options: Partial<PostgresOptions> = {}): Promise<PostgresStorage> {
  const opts: PostgresOptions = { ...POSTGRES_DEFAULTS, ...options }
  const target = parsePostgresUrl(url, opts.source)
  checkOptions(opts)
  const pool = new pg.Pool({
    connectionString: url.trim(),
    max: opts.poolSize,
    connectionTimeoutMillis: opts.connectionTimeoutMs,
    idleTimeoutMillis: opts.idleTimeoutMs,
    statement_timeout: opts.statementTimeoutMs,
    idle_in_transaction_session_timeout: opts.idleInTransactionTimeoutMs,
    types: typeParsers,
  })
  pool.on('error', (error) => opts.onIdleConnectionError(error))
  // The pool listens for errors only on connections it holds idle. One lent out (to a request
  // between two statements) that the server ends would otherwise throw its 'error' event and
  // end the process; heard here, the next statement on it fails instead, that request answers
  // 503, and the pool drops the connection when it comes back.
  pool.on('connect', (client) => client.on('error', (error) => opts.onIdleConnectionError(error)))
  let serverVersionNum: number
  try {
    const client = await pool.connect()
    try {
      const result = await client.query<{ server_version_num: string }>('SHOW server_version_num')
      serverVersionNum = Number(result.rows[0]!.server_version_num)
    } finally {
      client.release()
    }
    if (!(serverVersionNum >= MIN_SERVER_VERSION_NUM)) {
      throw new StorageStartError('server', `PostgreSQL at ${target.host}:${target.port} is version ${Math.floor(serverVersionNum / 10000)}; the service needs 14 or newer`)
    }
  } catch (err) {
    await pool.end().catch(() => {})
    throw classifyStartError(err, target, opts)
  }
  const db = new Kysely<DatabaseSchema>({ dialect: new PostgresDialect({ pool }) })
  return {
    db,
    pool,
    serverVersionNum,
    // Destroying kysely ends the pool it was given.
    close: () => db.destroy(),
  }
}
