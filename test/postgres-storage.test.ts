// The PostgreSQL storage's foundation against a real server (test/helpers/postgres.ts): the
// schema its migrations build is SQLite's, several nodes migrating at once apply each migration
// once, bigints read back as numbers, and each way of failing to start says which in one line.
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Database } from '../src/db/index.js'
import { openPostgres, StorageStartError, type PostgresStorage } from '../src/storage/postgres/connect.js'
import { migratePostgres } from '../src/storage/postgres/migrate.js'
import { migrations, POSTGRES_ONLY_TABLES as POSTGRES_ONLY_TABLES_OF_MIGRATIONS } from '../src/storage/postgres/migrations/index.js'
import { adminQuery, createTestDatabase, postgresAdminUrl } from './helpers/postgres.js'
import { freePort } from './helpers/port.js'

interface Column {
  name: string
  kind: 'integer' | 'text'
  notNull: boolean
}
interface Index {
  table: string
  columns: string[]
  unique: boolean
  partial: boolean
}
interface Schema {
  /** table → its columns, by name. */
  columns: Record<string, Column[]>
  /** table → its primary key's columns, in key order. */
  primaryKeys: Record<string, string[]>
  /** The unique keys other than primary keys, named or not, as "table(a,b)" (+ " partial"). */
  uniques: string[]
  /** The indexes made by CREATE INDEX, by name. */
  indexes: Record<string, Index>
}

/**
 * Tables only PostgreSQL has (migrations 002 and 003): SQLite keeps the same promises with
 * append-only logs its single writer makes exact, a count in the cluster primary's memory, and
 * its signing key in a file beside the database.
 */
const POSTGRES_ONLY_TABLES = ['adminGuess', 'serviceKey', 'signingKeyLatest', 'spentJti']

/** `schema` without the PostgreSQL-only tables, their keys and indexes. */
function withoutPostgresOnly(schema: Schema): Schema {
  const ours = (table: string) => POSTGRES_ONLY_TABLES.includes(table)
  return {
    columns: Object.fromEntries(Object.entries(schema.columns).filter(([table]) => !ours(table))),
    primaryKeys: Object.fromEntries(Object.entries(schema.primaryKeys).filter(([table]) => !ours(table))),
    uniques: schema.uniques.filter((key) => !ours(key.slice(0, key.indexOf('(')))),
    indexes: Object.fromEntries(Object.entries(schema.indexes).filter(([, index]) => !ours(index.table))),
  }
}

const byName = <T extends { name: string }>(list: T[]) => [...list].sort((a, b) => (a.name < b.name ? -1 : 1))
const uniqueKey = (i: Index) => `${i.table}(${i.columns.join(',')})${i.partial ? ' partial' : ''}`

function sqliteSchema(database: Database): Schema {
  const sqlite = database.sqlite
  const tables = (sqlite.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as { name: string }[]).map((t) => t.name)
  const schema: Schema = { columns: {}, primaryKeys: {}, uniques: [], indexes: {} }
  for (const table of tables) {
    const info = sqlite.pragma(`table_info("${table}")`) as { name: string; type: string; notnull: number; pk: number }[]
    schema.columns[table] = byName(
      info.map((c) => ({
        name: c.name,
        kind: c.type === 'INTEGER' ? 'integer' : c.type === 'TEXT' ? 'text' : (`unknown ${c.type}` as 'text'),
        // SQLite lets a non-integer primary key hold NULL (a legacy quirk); no row does.
        notNull: c.notnull === 1 || c.pk > 0,
      })),
    )
    schema.primaryKeys[table] = info.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk).map((c) => c.name)
    const indexList = sqlite.pragma(`index_list("${table}")`) as { name: string; unique: number; origin: string; partial: number }[]
    for (const entry of indexList) {
      if (entry.origin === 'pk') continue
      const columns = (sqlite.pragma(`index_info("${entry.name}")`) as { seqno: number; name: string }[]).sort((a, b) => a.seqno - b.seqno).map((c) => c.name)
      const index: Index = { table, columns, unique: entry.unique === 1, partial: entry.partial === 1 }
      if (index.unique) schema.uniques.push(uniqueKey(index))
      if (entry.origin === 'c') schema.indexes[entry.name] = index
    }
  }
  schema.uniques.sort()
  return schema
}

async function postgresSchema(client: pg.Client): Promise<Schema> {
  const schema: Schema = { columns: {}, primaryKeys: {}, uniques: [], indexes: {} }
  const columns = await client.query<{ table_name: string; column_name: string; data_type: string; is_nullable: string }>(
    `SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
      WHERE table_schema = 'public' AND table_name <> 'schema_migrations'`,
  )
  for (const c of columns.rows) {
    ;(schema.columns[c.table_name] ??= []).push({
      name: c.column_name,
      kind: c.data_type === 'bigint' ? 'integer' : c.data_type === 'text' ? 'text' : (`unknown ${c.data_type}` as 'text'),
      notNull: c.is_nullable === 'NO',
    })
  }
  for (const table of Object.keys(schema.columns)) schema.columns[table] = byName(schema.columns[table]!)
  const indexes = await client.query<{ index: string; table: string; columns: string[]; unique: boolean; primary: boolean; partial: boolean; constraint: boolean }>(
    `SELECT ic.relname AS index, tc.relname AS table, i.indisunique AS unique, i.indisprimary AS primary,
            i.indpred IS NOT NULL AS partial,
            EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) AS constraint,
            ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n) AS columns
       FROM pg_index i
       JOIN pg_class ic ON ic.oid = i.indexrelid
       JOIN pg_class tc ON tc.oid = i.indrelid
       JOIN pg_namespace ns ON ns.oid = tc.relnamespace
      WHERE ns.nspname = 'public' AND tc.relname <> 'schema_migrations'`,
  )
  for (const row of indexes.rows) {
    const index: Index = { table: row.table, columns: row.columns, unique: row.unique, partial: row.partial }
    if (row.primary) schema.primaryKeys[row.table] = row.columns
    else if (index.unique) schema.uniques.push(uniqueKey(index))
    if (!row.constraint) schema.indexes[row.index] = index
  }
  for (const table of Object.keys(schema.columns)) schema.primaryKeys[table] ??= []
  schema.uniques.sort()
  return schema
}

describe('PostgreSQL schema', () => {
  let dir: string
  let sqlite: Database
  let storage: PostgresStorage

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'atm-pg-schema-'))
    sqlite = new Database(join(dir, 'atm.sqlite'))
    sqlite.migrate()
    storage = await openPostgres(await createTestDatabase('schema'))
    await migratePostgres(storage.pool)
  })
  afterAll(async () => {
    await storage?.close()
    await sqlite?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('has exactly the tables, columns, keys and indexes of the SQLite schema, besides its own listed tables', async () => {
    const client = new pg.Client({ connectionString: (storage.pool.options as { connectionString: string }).connectionString })
    await client.connect()
    try {
      const fullSchema = await postgresSchema(client)
      for (const table of POSTGRES_ONLY_TABLES) expect(Object.keys(fullSchema.columns)).toContain(table)
      // The copy from SQLite leaves out exactly these tables.
      expect([...POSTGRES_ONLY_TABLES_OF_MIGRATIONS].sort()).toEqual(POSTGRES_ONLY_TABLES)
      const pgSchema = withoutPostgresOnly(fullSchema)
      const liteSchema = sqliteSchema(sqlite)
      expect(Object.keys(pgSchema.columns).sort()).toEqual(Object.keys(liteSchema.columns).sort())
      for (const table of Object.keys(liteSchema.columns)) {
        expect({ table, columns: pgSchema.columns[table] }).toEqual({ table, columns: liteSchema.columns[table] })
      }
      expect(pgSchema.primaryKeys).toEqual(liteSchema.primaryKeys)
      expect(pgSchema.uniques).toEqual(liteSchema.uniques)
      expect(pgSchema.indexes).toEqual(liteSchema.indexes)
    } finally {
      await client.end()
    }
  })

  it('compares every text column byte by byte, as SQLite does, whatever the database locale', async () => {
    const result = await storage.pool.query<{ column: string; collation: string | null }>(
      `SELECT table_name || '.' || column_name AS column, collation_name AS collation FROM information_schema.columns
        WHERE table_schema = 'public' AND data_type = 'text' AND table_name <> 'schema_migrations'`,
    )
    expect(result.rows.length).toBeGreaterThan(0)
    expect(result.rows.filter((r) => r.collation !== 'C')).toEqual([])
  })

  it('reads a bigint millisecond time, a count and a sum back as JS numbers', async () => {
    const at = 1_767_225_600_123 // beyond 2^31, as every millisecond time is
    await storage.db.insertInto('organizer').values({ did: 'did:plc:bigint', displayName: null, createdAt: at }).execute()
    await storage.db.insertInto('organizer').values({ did: 'did:plc:bigint2', displayName: null, createdAt: 1 }).execute()
    const row = await storage.db.selectFrom('organizer').select('createdAt').where('did', '=', 'did:plc:bigint').executeTakeFirstOrThrow()
    expect(row.createdAt).toBe(at)
    const totals = await storage.db
      .selectFrom('organizer')
      .select((eb) => [eb.fn.countAll<number>().as('count'), eb.fn.sum<number>('createdAt').as('sum')])
      .executeTakeFirstOrThrow()
    expect(totals).toEqual({ count: 2, sum: at + 1 })
  })
})

describe('PostgreSQL migrations', () => {
  it('run once when six nodes start at the same moment', async () => {
    const url = await createTestDatabase('migrate')
    const nodes = await Promise.all(Array.from({ length: 6 }, () => openPostgres(url, { poolSize: 2 })))
    try {
      const results = await Promise.all(nodes.map((node) => migratePostgres(node.pool)))
      const names = migrations.map((m) => m.name)
      expect(results.map((r) => r.applied).filter((applied) => applied.length > 0)).toEqual([names])
      expect(results.every((r) => r.unknown.length === 0)).toBe(true)
      const rows = await nodes[0]!.pool.query<{ name: string }>('SELECT name FROM schema_migrations ORDER BY name')
      expect(rows.rows.map((r) => r.name)).toEqual(names)
      // A node started later finds nothing to do.
      expect((await migratePostgres(nodes[0]!.pool)).applied).toEqual([])
    } finally {
      await Promise.all(nodes.map((node) => node.close()))
    }
  })
})

describe('PostgreSQL start-up failures', () => {
  const secret = 'Sup3r-s3cret-pw'

  async function startFailure(url: string, connectionTimeoutMs = 5_000): Promise<StorageStartError> {
    const error = await openPostgres(url, { connectionTimeoutMs }).then(
      async (storage) => {
        await storage.close()
        throw new Error(`openPostgres(${url}) opened, and was expected to fail`)
      },
      (err: unknown) => err,
    )
    expect(error).toBeInstanceOf(StorageStartError)
    const message = (error as StorageStartError).message
    // One plain line: no stack, no password, names the setting or the server.
    expect(message).not.toContain('\n')
    expect(message).not.toMatch(/\bat .*:\d+:\d+/)
    expect(message).not.toContain(secret)
    expect(message).not.toContain(encodeURIComponent(secret))
    return error as StorageStartError
  }

  it('a malformed URL says what is wrong with it, without echoing it', async () => {
    const cases: Array<[string, RegExp]> = [
      [`mysql://atm:${secret}@127.0.0.1:3306/atm`, /ATM_DATABASE_URL .*scheme is "mysql:", not postgres:/],
      [`postgres://atm:${secret}@127.0.0.1:99999/atm`, /ATM_DATABASE_URL .*port is not a number from 1 to 65535/],
      [`postgres://atm:${secret}@127.0.0.1:port/atm`, /ATM_DATABASE_URL .*port is not a number from 1 to 65535/],
      [`host=127.0.0.1 user=atm password=${secret}`, /ATM_DATABASE_URL .*cannot be read as a URL/],
      [`postgres://:${secret}@127.0.0.1/atm`, /ATM_DATABASE_URL .*names no user/],
      [`postgres:///atm`, /ATM_DATABASE_URL .*names no host/],
    ]
    for (const [url, expected] of cases) {
      const error = await startFailure(url)
      expect({ url, failure: error.failure, message: error.message }).toEqual({ url, failure: 'malformed-url', message: expect.stringMatching(expected) })
    }
  })

  it('a refused password names the user and the server', async () => {
    await adminQuery(`CREATE ROLE atm_refused LOGIN PASSWORD 'the-right-one'`)
    const url = new URL(postgresAdminUrl())
    url.username = 'atm_refused'
    url.password = secret
    const error = await startFailure(url.href)
    expect(error.failure).toBe('refused')
    expect(error.message).toMatch(new RegExp(`^PostgreSQL at 127\\.0\\.0\\.1:${url.port} refused the password of user "atm_refused"`))
  })

  it('a server that is down says so, with its address', async () => {
    const port = await freePort()
    const error = await startFailure(`postgres://atm:${secret}@127.0.0.1:${port}/atm`)
    expect(error.failure).toBe('unreachable')
    expect(error.message).toMatch(new RegExp(`^PostgreSQL at 127\\.0\\.0\\.1:${port} refused the connection \\(no server listening\\)`))
  })

  it('a server that accepts but never answers is named once the connection timeout passes', async () => {
    // A TCP listener that takes the connection and says nothing, as a hung server or a firewall that swallows packets.
    const sockets: Socket[] = []
    const silent = createServer((socket) => void sockets.push(socket))
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const port = (silent.address() as AddressInfo).port
    try {
      const error = await startFailure(`postgres://atm:${secret}@127.0.0.1:${port}/atm`, 300)
      expect(error.failure).toBe('unreachable')
      expect(error.message).toBe(`PostgreSQL at 127.0.0.1:${port} did not answer within 300 ms: check that it runs and that this machine may reach it`)
    } finally {
      for (const socket of sockets) socket.destroy()
      silent.close()
    }
  })

  it('a missing database is named', async () => {
    await adminQuery(`CREATE ROLE atm_nodb LOGIN PASSWORD '${secret}'`)
    const url = new URL(postgresAdminUrl())
    url.username = 'atm_nodb'
    url.password = secret
    url.pathname = '/no_such_database'
    const error = await startFailure(url.href)
    expect(error.failure).toBe('no-database')
    expect(error.message).toMatch(/has no database "no_such_database": create it/)
  })
})
