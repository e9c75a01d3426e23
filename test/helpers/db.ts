// The database a started service uses, whichever engine it runs on: its SQLite file, or its
// PostgreSQL database when the suite runs with ATM_TEST_BACKEND=postgres. A test that reads rows
// (or plants one) writes the statement once, as the service's own statements are written, and
// means the same on both backends.
import Sqlite from 'better-sqlite3'
import pg from 'pg'
import { toPostgresSql } from '../../src/storage/postgres/database.js'
import type { ServiceHandle, StartServiceOptions } from './service.js'

/** Where a service keeps its data. */
export type ServiceDatabase = Pick<ServiceHandle, 'dbPath' | 'databaseUrl'>

/**
 * int8 (every integer column, `COUNT(*)`) and numeric (`SUM` of int8) as JS numbers, as SQLite
 * answers them, so one expectation holds on both backends. A value a number cannot hold exactly
 * throws rather than being compared rounded.
 */
const wholeNumbers = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid !== pg.types.builtins.INT8 && oid !== pg.types.builtins.NUMERIC) return pg.types.getTypeParser(oid, format)
    return (text: string) => {
      const value = Number(text)
      if (Number.isInteger(value) && !Number.isSafeInteger(value)) throw new RangeError(`PostgreSQL answered ${text}, which a JS number cannot hold exactly`)
      return value
    }
  },
} as pg.CustomTypesConfig

async function onPostgresDatabase<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, types: wholeNumbers })
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}

/**
 * The rows of `text`, written as for SQLite: `?` placeholders, camelCase names unquoted (on
 * PostgreSQL it goes through the service's own `toPostgresSql`). Reads the SQLite file
 * read-only, which is fine while the service runs.
 */
export async function dbAll<Row = Record<string, any>>(service: ServiceDatabase, text: string, params: unknown[] = []): Promise<Row[]> {
  if (service.databaseUrl) {
    return onPostgresDatabase(service.databaseUrl, async (client) => (await client.query(toPostgresSql(text), params)).rows as Row[])
  }
  const db = new Sqlite(service.dbPath, { readonly: true, fileMustExist: true })
  try {
    return db.prepare(text).all(...params) as Row[]
  } finally {
    db.close()
  }
}

/** Runs a statement that writes (same dialect as `dbAll`); answers how many rows it changed. */
export async function dbRun(service: ServiceDatabase, text: string, params: unknown[] = []): Promise<{ changes: number }> {
  if (service.databaseUrl) {
    return onPostgresDatabase(service.databaseUrl, async (client) => ({ changes: (await client.query(toPostgresSql(text), params)).rowCount ?? 0 }))
  }
  // The running service may hold the write lock for a moment.
  const db = new Sqlite(service.dbPath, { fileMustExist: true, timeout: 10_000 })
  try {
    return { changes: db.prepare(text).run(...params).changes }
  } finally {
    db.close()
  }
}

/** The startService options that put another service on `service`'s database. */
export function sameDatabase(service: ServiceDatabase): Pick<StartServiceOptions, 'db' | 'databaseUrl'> {
  return service.databaseUrl ? { databaseUrl: service.databaseUrl } : { db: service.dbPath }
}
