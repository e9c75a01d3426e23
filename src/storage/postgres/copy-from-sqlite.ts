import { createHash, type Hash } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import Sqlite from 'better-sqlite3'
import type pg from 'pg'
import { migrations as sqliteMigrations } from '../../db/migrations/index.js'
import { openPostgres } from './connect.js'
import { migratePostgres } from './migrate.js'
import { POSTGRES_ONLY_TABLES } from './migrations/index.js'

/**
 * Why a copy did not happen, as one plain line for the operator (never the password). The
 * PostgreSQL transaction was rolled back: the target holds what it held before.
 */
export class CopyError extends Error {
  override readonly name = 'CopyError'
}

export interface CopyOptions {
  /** The SQLite file the service ran on (ATM_DB). */
  from: string
  /** A `postgres://` URL of an empty database. */
  to: string
  /** How the operator gave the URL, for messages about it ("--to", "ATM_DATABASE_URL"). */
  toSource: string
  /** Rows sent to PostgreSQL per statement; memory holds about one batch. */
  batchRows?: number
}

export interface TableCopy {
  table: string
  rows: number
}

export interface CopyResult {
  tables: TableCopy[]
  /** The file holding the key the SQLite service signed with, when there is one beside the database. */
  signingKeyFile: string | null
}

const DEFAULT_BATCH_ROWS = 5_000

interface TargetTable {
  name: string
  columns: Array<{ name: string; type: string }>
  /** The primary key's columns, in key order: the order rows are copied and compared in. */
  key: string[]
  /** The identity column (`seq`), whose sequence must continue after the copied numbers. */
  identity: string | null
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`

/**
 * Copies every row of a stopped service's SQLite file into an empty PostgreSQL database, in
 * one PostgreSQL transaction: the target ends with all of it, verified table by table, or with
 * nothing. Throws `StorageStartError` (cannot connect) or `CopyError`, each one plain line.
 */
export async function copySqliteToPostgres(opts: CopyOptions): Promise<CopyResult> {
  const batchRows = opts.batchRows ?? DEFAULT_BATCH_ROWS
  const source = openSource(opts.from)
  try {
    // Connect and migrate before reading anything big: a wrong URL fails in a second.
    const storage = await openPostgres(opts.to, { source: opts.toSource, poolSize: 1 })
    try {
      const migrated = await migratePostgres(storage.pool)
      if (migrated.unknown.length > 0) {
        throw new CopyError(
          `the PostgreSQL database was migrated by a newer version of the service (${migrated.unknown.join(', ')}): copy into an empty database with this version, or use the newer one`,
        )
      }
      const client = await storage.pool.connect()
      let broken: Error | undefined
      try {
        return await copyInTransaction(source, client, batchRows, opts.from)
      } catch (err) {
        broken = err as Error
        throw err
      } finally {
        client.release(broken)
      }
    } finally {
      await storage.close()
    }
  } finally {
    source.close()
  }
}

function openSource(path: string): Sqlite.Database {
  if (!existsSync(path)) throw new CopyError(`the SQLite file ${path} does not exist: give the path of the service's database (its ATM_DB)`)
  if (!statSync(path).isFile()) throw new CopyError(`${path} is not a file: give the path of the service's database file (its ATM_DB)`)
  let source: Sqlite.Database
  let version: number
  try {
    source = new Sqlite(path, { readonly: true, fileMustExist: true })
    version = source.pragma('user_version', { simple: true }) as number
  } catch (err) {
    throw new CopyError(`${path} could not be read as an SQLite database (${(err as Error).message.split('\n')[0]}): give the path of the service's database file`)
  }
  if (version < sqliteMigrations.length) {
    source.close()
    throw new CopyError(
      `${path} has ${version} of the ${sqliteMigrations.length} migrations applied: start the service once on it (ATM_DB=${path}), stop it, then copy`,
    )
  }
  if (version > sqliteMigrations.length) {
    source.close()
    throw new CopyError(`${path} was migrated by a newer version of the service (${version} migrations, this one knows ${sqliteMigrations.length}): copy it with that version`)
  }
  return source
}

async function copyInTransaction(source: Sqlite.Database, client: pg.PoolClient, batchRows: number, from: string): Promise<CopyResult> {
  await client.query('BEGIN')
  try {
    // A big table's copy or read-back may take longer than a request may.
    await client.query('SET LOCAL statement_timeout = 0')
    // A node already running on the target holds locks on its tables: say so rather than wait forever.
    await client.query("SET LOCAL lock_timeout = '10s'")
    const allTables = await targetTables(client)
    const tables = allTables.filter((table) => !POSTGRES_ONLY_TABLES.has(table.name))
    checkSameTables(source, tables)
    const names = allTables.map((t) => quote(t.name)).join(', ')
    // Nothing else writes while we check that the tables are empty and fill them (reads go on).
    await client.query(`LOCK TABLE ${names} IN EXCLUSIVE MODE`)
    for (const table of allTables) {
      const found = await client.query(`SELECT 1 FROM ${quote(table.name)} LIMIT 1`)
      if (found.rowCount) {
        throw new CopyError(`the PostgreSQL table "${table.name}" already has rows: copy into an empty database (create a new one), so nothing is mixed or overwritten`)
      }
    }
    // One read transaction: every table is read from the same moment of the file.
    source.prepare('BEGIN').run()
    const copied: TableCopy[] = []
    try {
      for (const table of tables) {
        const { rows, digest } = await copyTable(source, client, table, batchRows)
        const sourceCount = Number((source.prepare(`SELECT count(*) FROM ${quote(table.name)}`).pluck().get() as number | bigint))
        const target = await targetDigest(client, table, batchRows)
        if (rows !== sourceCount || target.rows !== sourceCount) {
          throw new CopyError(`table "${table.name}" has ${sourceCount} rows in SQLite but ${target.rows} in PostgreSQL after the copy: nothing was copied; report this`)
        }
        if (target.digest !== digest) {
          throw new CopyError(`table "${table.name}" holds different values in PostgreSQL than in SQLite after the copy: nothing was copied; report this`)
        }
        if (table.identity) await continueIdentity(source, client, table, table.identity)
        copied.push({ table: table.name, rows })
      }
    } finally {
      source.prepare('COMMIT').run()
    }
    // The service's own key goes too, so every node signs as the SQLite service did.
    const keyFile = `${from}.signing-key`
    const keyHex = existsSync(keyFile) ? readFileSync(keyFile, 'utf8').trim().toLowerCase() : ''
    if (keyHex !== '' && !/^[0-9a-f]{64}$/.test(keyHex)) {
      throw new CopyError(`${keyFile} does not hold a 64-hex-digit key: nothing was copied; put the service's key back in it, or move it away and set ATM_SIGNING_KEY on every node`)
    }
    if (keyHex !== '') {
      await client.query('INSERT INTO "serviceKey" (name, "keyHex", "createdAt") VALUES ($1, $2, $3)', ['service', keyHex, Date.now()])
    }
    await client.query('COMMIT')
    return { tables: copied, signingKeyFile: keyHex !== '' ? keyFile : null }
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  }
}

/**
 * The target's tables as its catalog describes them (the migrations made them), ordered so
 * that a table comes after every table its foreign keys point to.
 */
async function targetTables(client: pg.PoolClient): Promise<TargetTable[]> {
  const columns = await client.query<{ table: string; column: string; type: string; identity: boolean; key: number | null }>(
    `SELECT c.relname AS table, a.attname AS column, format_type(a.atttypid, NULL) AS type,
            a.attidentity <> '' AS identity, array_position(i.indkey::int2[], a.attnum) AS key
       FROM pg_class c
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
      WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace AND c.relname <> 'schema_migrations'
      ORDER BY c.relname, a.attnum`,
  )
  const byName = new Map<string, TargetTable>()
  const keyPositions = new Map<string, Array<[number, string]>>()
  for (const row of columns.rows) {
    let table = byName.get(row.table)
    if (!table) byName.set(row.table, (table = { name: row.table, columns: [], key: [], identity: null }))
    table.columns.push({ name: row.column, type: row.type })
    if (row.identity) table.identity = row.column
    if (row.key !== null) keyPositions.set(row.table, [...(keyPositions.get(row.table) ?? []), [row.key, row.column]])
  }
  for (const table of byName.values()) {
    const key = (keyPositions.get(table.name) ?? []).sort((a, b) => a[0] - b[0]).map(([, column]) => column)
    // A table without a primary key is ordered by all its columns, which is as deterministic.
    table.key = key.length > 0 ? key : table.columns.map((c) => c.name)
  }
  const references = await client.query<{ table: string; referenced: string }>(
    `SELECT c.relname AS table, r.relname AS referenced
       FROM pg_constraint k
       JOIN pg_class c ON c.oid = k.conrelid
       JOIN pg_class r ON r.oid = k.confrelid
      WHERE k.contype = 'f' AND k.connamespace = current_schema()::regnamespace`,
  )
  const dependsOn = new Map<string, Set<string>>()
  for (const { table, referenced } of references.rows) {
    if (table !== referenced) (dependsOn.get(table) ?? dependsOn.set(table, new Set()).get(table)!).add(referenced)
  }
  const ordered: TargetTable[] = []
  const placed = new Set<string>()
  const remaining = [...byName.keys()].sort()
  while (remaining.length > 0) {
    const next = remaining.findIndex((name) => [...(dependsOn.get(name) ?? [])].every((d) => placed.has(d) || !byName.has(d)))
    if (next < 0) throw new CopyError(`the PostgreSQL tables ${remaining.join(', ')} reference each other in a circle: this copy cannot order them`)
    const [name] = remaining.splice(next, 1)
    placed.add(name!)
    ordered.push(byName.get(name!)!)
  }
  return ordered
}

/** Refuses when a table or a column exists on one side only: the two schemas are not the same version. */
function checkSameTables(source: Sqlite.Database, tables: TargetTable[]): void {
  const sourceTables = (source.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").pluck().all() as string[]).sort()
  const targetNames = new Set(tables.map((t) => t.name))
  const sourceNames = new Set(sourceTables)
  const onlySource = sourceTables.filter((name) => !targetNames.has(name))
  const onlyTarget = [...targetNames].filter((name) => !sourceNames.has(name)).sort()
  if (onlySource.length > 0 || onlyTarget.length > 0) {
    const parts = [
      onlySource.length > 0 ? `only in SQLite: ${onlySource.join(', ')}` : '',
      onlyTarget.length > 0 ? `only in PostgreSQL: ${onlyTarget.join(', ')}` : '',
    ].filter(Boolean)
    throw new CopyError(`the SQLite and PostgreSQL schemas do not have the same tables (${parts.join('; ')}): copy with the version of the service that wrote the file`)
  }
  for (const table of tables) {
    const sourceColumns = (source.pragma(`table_info(${quote(table.name)})`) as Array<{ name: string }>).map((c) => c.name).sort()
    const targetColumns = table.columns.map((c) => c.name).sort()
    if (sourceColumns.join('\0') !== targetColumns.join('\0')) {
      const onlySourceColumns = sourceColumns.filter((c) => !targetColumns.includes(c))
      const onlyTargetColumns = targetColumns.filter((c) => !sourceColumns.includes(c))
      throw new CopyError(
        `table "${table.name}" has different columns in SQLite and PostgreSQL (only in SQLite: ${onlySourceColumns.join(', ') || 'none'}; only in PostgreSQL: ${onlyTargetColumns.join(', ') || 'none'}): copy with the version of the service that wrote the file`,
      )
    }
  }
}

/**
 * One value as both sides write it down for comparison: integers in decimal (SQLite's 64-bit
 * integers read exactly, as bigint), text as itself, NULL as null.
 */
function canonical(value: unknown): string | null {
  if (value === null || value === undefined) return null
  if (typeof value === 'bigint' || typeof value === 'number') return String(value)
  if (typeof value === 'string') return value
  if (Buffer.isBuffer(value)) return `\\x${value.toString('hex')}`
  return String(value)
}

function addRow(hash: Hash, row: Array<string | null>): void {
  hash.update(JSON.stringify(row))
  hash.update('\n')
}

/** Streams one table from SQLite in primary-key order into PostgreSQL, a batch per statement. */
async function copyTable(source: Sqlite.Database, client: pg.PoolClient, table: TargetTable, batchRows: number): Promise<{ rows: number; digest: string }> {
  const columnList = table.columns.map((c) => quote(c.name)).join(', ')
  const select = source
    .prepare(`SELECT ${columnList} FROM ${quote(table.name)} ORDER BY ${table.key.map(quote).join(', ')}`)
    .raw(true)
    .safeIntegers(true)
  // One array per column, unnested into rows: a batch is one statement whatever its size.
  const insert = `INSERT INTO ${quote(table.name)} (${columnList}) OVERRIDING SYSTEM VALUE SELECT * FROM unnest(${table.columns
    .map((c, index) => `$${index + 1}::${c.type}[]`)
    .join(', ')})`
  const hash = createHash('sha256')
  let rows = 0
  let batch: Array<Array<string | null>> = table.columns.map(() => [])
  let batchSize = 0
  const flush = async () => {
    if (batchSize === 0) return
    await client.query(insert, batch)
    batch = table.columns.map(() => [])
    batchSize = 0
  }
  for (const values of select.iterate() as IterableIterator<unknown[]>) {
    const row = values.map(canonical)
    addRow(hash, row)
    row.forEach((value, index) => batch[index]!.push(value))
    batchSize++
    rows++
    if (batchSize >= batchRows) await flush()
  }
  await flush()
  return { rows, digest: hash.digest('hex') }
}

/** Reads a table back from PostgreSQL in the same order and writes it down the same way. */
async function targetDigest(client: pg.PoolClient, table: TargetTable, batchRows: number): Promise<{ rows: number; digest: string }> {
  // As text, so that integers come back exactly as written, whatever their size. The ORDER BY
  // names the table's columns, qualified: a bare name would sort by the text output column.
  const columns = table.columns.map((c) => `copied.${quote(c.name)}::text`).join(', ')
  await client.query(
    `DECLARE copy_check NO SCROLL CURSOR FOR SELECT ${columns} FROM ${quote(table.name)} AS copied
      ORDER BY ${table.key.map((k) => `copied.${quote(k)} NULLS FIRST`).join(', ')}`,
  )
  const hash = createHash('sha256')
  let rows = 0
  for (;;) {
    const fetched = await client.query<Array<string | null>>({ text: `FETCH ${batchRows} FROM copy_check`, rowMode: 'array' })
    for (const row of fetched.rows) addRow(hash, row)
    rows += fetched.rows.length
    if (fetched.rows.length < batchRows) break
  }
  await client.query('CLOSE copy_check')
  return { rows, digest: hash.digest('hex') }
}

/**
 * Moves the identity's sequence past every number the SQLite table ever gave out: its highest
 * row, and its AUTOINCREMENT counter, which is ahead of it when the newest rows were deleted.
 */
async function continueIdentity(source: Sqlite.Database, client: pg.PoolClient, table: TargetTable, column: string): Promise<void> {
  const highest = source.prepare(`SELECT max(${quote(column)}) FROM ${quote(table.name)}`).pluck().safeIntegers(true).get() as bigint | null
  const hasCounter = source.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'").get() !== undefined
  const counter = hasCounter ? ((source.prepare('SELECT seq FROM sqlite_sequence WHERE name = ?').pluck().safeIntegers(true).get(table.name) as bigint | undefined) ?? null) : null
  const last = [highest, counter].reduce<bigint | null>((max, value) => (value !== null && (max === null || value > max) ? value : max), null)
  if (last === null || last < 1n) return
  await client.query(`SELECT setval(pg_get_serial_sequence($1, $2), $3::bigint, true)`, [quote(table.name), column, last.toString()])
}
