// `bin.js copy-to-postgres` as an operator runs it: a SQLite file the real service wrote (an
// app, organizers, events, tiers, a capacity group, holds, a paid checkout, free claims, a
// check-in, a void, a refund, events owed to an app) copied into the run's real PostgreSQL
// server, row for row; the refusals (a non-empty target, a schema that differs, a file that is
// missing or not migrated, a bad URL, a wrong password) as one line each; and the check after
// the copy, which rolls everything back when PostgreSQL does not hold what SQLite held.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Sqlite from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openPostgres, type PostgresStorage } from '../src/storage/postgres/connect.js'
import { migratePostgres } from '../src/storage/postgres/migrate.js'
import { POSTGRES_ONLY_TABLES } from '../src/storage/postgres/migrations/index.js'
import { expectOk } from './helpers/expect.js'
import { runCommand, type CommandResult } from './helpers/service.js'
import { buyPaid, claimFree, newAppWithEvents, startSink } from './helpers/lifecycle.js'
import { adminQuery, createTestDatabase } from './helpers/postgres.js'
import { newIdentityClient, nsid, startWorld, type World } from './helpers/world.js'

const secret = 'Sup3r-s3cret-pw'
const dir = mkdtempSync(join(tmpdir(), 'atm-pg-copy-'))
let world: World
let sqlitePath: string

function copy(args: string[], env: Record<string, string> = {}): Promise<CommandResult> {
  return runCommand(['copy-to-postgres', ...args], env, 50_000)
}

/** A refusal: exit code, nothing on stdout, one plain line on stderr (no stack, no password). */
function expectOneLine(result: CommandResult, code: number, expected: RegExp): void {
  expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code, stdout: '', stderr: expect.stringMatching(expected) })
  expect(result.stderr.trimEnd()).not.toContain('\n')
  expect(result.stderr).not.toMatch(/\bat .*:\d+:\d+/)
  expect(result.stderr).not.toContain(secret)
  expect(result.stderr).not.toContain(encodeURIComponent(secret))
}

function sqliteTables(db: Sqlite.Database): string[] {
  return (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[])
}

function primaryKey(db: Sqlite.Database, table: string): string[] {
  const info = db.pragma(`table_info("${table}")`) as Array<{ name: string; pk: number }>
  return info.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk).map((c) => c.name)
}

/** Every table's full contents, ordered by primary key, as each side reads them (numbers as numbers). */
function sqliteContents(): Record<string, unknown[]> {
  const db = new Sqlite(sqlitePath, { readonly: true, fileMustExist: true })
  try {
    return Object.fromEntries(
      sqliteTables(db).map((table) => [table, db.prepare(`SELECT * FROM "${table}" ORDER BY ${primaryKey(db, table).map((c) => `"${c}"`).join(', ')}`).all()]),
    )
  } finally {
    db.close()
  }
}

async function postgresContents(storage: PostgresStorage): Promise<Record<string, unknown[]>> {
  const db = new Sqlite(sqlitePath, { readonly: true, fileMustExist: true })
  try {
    const tables = (
      await storage.pool.query<{ name: string }>(
        "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations' ORDER BY tablename COLLATE \"C\"",
      )
    ).rows.map((r) => r.name)
    const contents: Record<string, unknown[]> = {}
    for (const table of tables) {
      // The key as SQLite names it; a table PostgreSQL has and SQLite does not fails the comparison.
      const key = sqliteTables(db).includes(table) ? primaryKey(db, table) : []
      const order = key.length > 0 ? ` ORDER BY ${key.map((c) => `"${c}"`).join(', ')}` : ''
      contents[table] = (await storage.pool.query(`SELECT * FROM "${table}"${order}`)).rows
    }
    return contents
  } finally {
    db.close()
  }
}

async function rowCount(url: string): Promise<number> {
  const storage = await openPostgres(url)
  try {
    const contents = await postgresContents(storage)
    return Object.values(contents).reduce((sum, rows) => sum + rows.length, 0)
  } finally {
    await storage.close()
  }
}

beforeAll(async () => {
  const sink = await startSink()
  world = await startWorld()
  try {
    // An app with a webhook, so the events it is owed are in the outbox (whose `seq` is an identity).
    const app = await newAppWithEvents(world, sink.url)
    const paid = await buyPaid(world, 3, { app, unitAmount: 1500, quantityTotal: 10, groupCapacity: 8 })
    const free = await claimFree(world, 3, { app })
    expectOk(await app.call(nsid('checkInTicket'), { ticketToken: free.tickets[0]!.ticketToken }))
    expectOk(await app.call(nsid('voidTickets'), { ticketIds: [free.tickets[1]!.id], idempotencyKey: 'void-one' }))
    expectOk(await app.call(nsid('refundTickets'), { ticketIds: [paid.tickets[0]!.id], reason: 'cannot come' }))
    // A hold left open, and one released.
    expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId: paid.tierId, quantity: 1 }] }))
    const released = expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId: paid.tierId, quantity: 2 }] }))
    expectOk(await app.call(nsid('releaseTicketHold'), { holdId: released.holdId }))
    // A second organizer, signed in without payment setup.
    const other = await newIdentityClient(world)
    expectOk(await other.call(nsid('registerOrganizer'), {}))
  } finally {
    await sink.close()
  }
  expect(await world.service.stop()).toBe(0)
  sqlitePath = world.service.dbPath
})

afterAll(async () => {
  await world?.close()
  rmSync(dir, { recursive: true, force: true })
})

describe('copy-to-postgres', () => {
  let target: string

  it('copies every table row for row, value for value, and says where the signing key is', async () => {
    const contents = sqliteContents()
    // The file has rows in the tables the business lives in.
    const empty = Object.entries(contents).filter(([, rows]) => rows.length === 0).map(([table]) => table)
    for (const table of ['app', 'organizer', 'paymentSetup', 'event', 'capacityGroup', 'tier', 'hold', 'holdItem', 'claim', 'ticket', 'payment', 'refund', 'checkInList', 'checkIn', 'idempotency', 'outbox', 'signingKeyLog']) {
      expect({ table, empty: empty.includes(table) }).toEqual({ table, empty: false })
    }

    target = await createTestDatabase('copy')
    const result = await copy(['--from', sqlitePath, '--to', target])
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' })
    for (const [table, rows] of Object.entries(contents)) expect(result.stdout).toMatch(new RegExp(`^  ${table} +${rows.length}$`, 'm'))
    const keyFile = `${sqlitePath}.signing-key`
    expect(result.stdout).toContain(`The service's signing key (${keyFile}) was copied too`)
    expect(result.stdout).not.toContain(readFileSync(keyFile, 'utf8').trim())

    const storage = await openPostgres(target)
    try {
      const everything = await postgresContents(storage)
      // Every table but those only PostgreSQL has is the file's.
      const copied = Object.fromEntries(Object.entries(everything).filter(([table]) => !POSTGRES_ONLY_TABLES.has(table)))
      // The tables only PostgreSQL has are left empty, but for the service's key, copied from beside the file.
      for (const table of POSTGRES_ONLY_TABLES) {
        if (table === 'serviceKey') expect(everything[table]!.map((row) => (row as { keyHex: string }).keyHex)).toEqual([readFileSync(keyFile, 'utf8').trim()])
        else expect({ table, rows: everything[table] }).toEqual({ table, rows: [] })
      }
      expect(Object.keys(copied).sort()).toEqual(Object.keys(contents).sort())
      for (const table of Object.keys(contents)) expect({ table, rows: copied[table] }).toStrictEqual({ table, rows: contents[table] })
    } finally {
      await storage.close()
    }
  })

  it('new rows in a table with an identity seq continue after the copied numbers', async () => {
    const db = new Sqlite(sqlitePath, { readonly: true, fileMustExist: true })
    const highest = (table: string) =>
      Math.max(
        (db.prepare(`SELECT max(seq) FROM "${table}"`).pluck().get() as number | null) ?? 0,
        (db.prepare('SELECT seq FROM sqlite_sequence WHERE name = ?').pluck().get(table) as number | undefined) ?? 0,
      )
    const copiedOutbox = highest('outbox')
    const copiedKeys = highest('signingKeyLog')
    db.close()
    expect(copiedOutbox).toBeGreaterThan(1)
    expect(copiedKeys).toBeGreaterThan(0)

    const storage = await openPostgres(target)
    try {
      const outbox = await storage.pool.query<{ seq: number }>(
        `INSERT INTO outbox (id, "appDid", environment, type, payload, "createdAt", "nextAttemptAt")
         VALUES ('evt_after_copy', 'did:plc:after', 'test', 'test.event', '{}', 1, 1) RETURNING seq`,
      )
      expect(outbox.rows[0]!.seq).toBe(copiedOutbox + 1)
      const keys = await storage.pool.query<{ seq: number }>(`INSERT INTO "signingKeyLog" (did, key, "seenAt") VALUES ('did:plc:after', 'zQ3s', 1) RETURNING seq`)
      expect(keys.rows[0]!.seq).toBe(copiedKeys + 1)
      await storage.pool.query(`DELETE FROM outbox WHERE id = 'evt_after_copy'`)
      await storage.pool.query(`DELETE FROM "signingKeyLog" WHERE did = 'did:plc:after'`)
    } finally {
      await storage.close()
    }
  })

  it('refuses to copy into the same database again, naming a table that has rows, and changes nothing', async () => {
    const before = await rowCount(target)
    const result = await copy(['--from', sqlitePath, '--to', target])
    expectOneLine(result, 1, /^atm-tickets copy-to-postgres: the PostgreSQL table "app" already has rows: copy into an empty database/)
    expect(await rowCount(target)).toBe(before)
  })
})

describe('copy-to-postgres checks', () => {
  it('rolls everything back when PostgreSQL holds fewer rows than SQLite after the copy', async () => {
    const url = await createTestDatabase('copy_short')
    await prepareTarget(
      url,
      // A trigger that drops organizer rows on the floor, as a broken target might.
      `CREATE FUNCTION drop_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
       CREATE TRIGGER drop_organizers BEFORE INSERT ON organizer FOR EACH ROW EXECUTE FUNCTION drop_row();`,
    )
    const result = await copy(['--from', sqlitePath, '--to', url])
    expectOneLine(result, 1, /table "organizer" has \d+ rows in SQLite but 0 in PostgreSQL after the copy: nothing was copied/)
    expect(await rowCount(url)).toBe(0)
  })

  it('rolls everything back when a value in PostgreSQL differs from SQLite after the copy', async () => {
    const url = await createTestDatabase('copy_changed')
    await prepareTarget(
      url,
      `CREATE FUNCTION change_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW."unitAmount" := NEW."unitAmount" + 1; RETURN NEW; END $$;
       CREATE TRIGGER change_tiers BEFORE INSERT ON tier FOR EACH ROW EXECUTE FUNCTION change_row();`,
    )
    const result = await copy(['--from', sqlitePath, '--to', url])
    expectOneLine(result, 1, /table "tier" holds different values in PostgreSQL than in SQLite after the copy: nothing was copied/)
    expect(await rowCount(url)).toBe(0)
  })

  it('refuses a target with a table SQLite does not have', async () => {
    const url = await createTestDatabase('copy_extra')
    await prepareTarget(url, 'CREATE TABLE "laterFeature" (id TEXT PRIMARY KEY)')
    const result = await copy(['--from', sqlitePath, '--to', url])
    expectOneLine(result, 1, /do not have the same tables \(only in PostgreSQL: laterFeature\)/)
    expect(await rowCount(url)).toBe(0)
  })

  it('refuses a missing file, a file the service never migrated, a malformed URL and a wrong password, one line each', async () => {
    const url = await createTestDatabase('copy_refused')
    const missing = join(dir, 'nowhere.sqlite')
    expectOneLine(await copy(['--from', missing, '--to', url]), 1, new RegExp(`the SQLite file ${missing} does not exist`))

    const unmigrated = join(dir, 'unmigrated.sqlite')
    new Sqlite(unmigrated).exec('CREATE TABLE app (did TEXT PRIMARY KEY)').close()
    expectOneLine(await copy(['--from', unmigrated, '--to', url]), 1, /has 0 of the \d+ migrations applied: start the service once on it/)

    expectOneLine(await copy(['--from', sqlitePath, '--to', `mysql://atm:${secret}@127.0.0.1:3306/atm`]), 2, /--to is not a valid PostgreSQL URL: its scheme is "mysql:"/)

    await adminQuery(`CREATE ROLE atm_copy LOGIN PASSWORD 'the-right-one'`)
    const wrong = new URL(url)
    wrong.username = 'atm_copy'
    wrong.password = secret
    expectOneLine(await copy(['--from', sqlitePath], { ATM_DATABASE_URL: wrong.href }), 1, /refused the password of user "atm_copy": fix the user or password in ATM_DATABASE_URL/)

    expectOneLine(await copy(['--to', url]), 2, /say which SQLite file to copy with --from/)
    expect(await rowCount(url)).toBe(0)
  })
})

/** A target migrated ahead of the copy, with `sql` run on it. */
async function prepareTarget(url: string, sql: string): Promise<void> {
  const storage = await openPostgres(url)
  try {
    await migratePostgres(storage.pool)
    await storage.pool.query(sql)
  } finally {
    await storage.close()
  }
}
