// The spent-token log: single use decided exactly by the rows (the in-memory index only points
// at them), across two stores on one database as two workers have, and bounded: tokens are
// forgotten a minute after they expire, in batches, and a live one never is.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, expect, it } from 'vitest'
import { hintOf, ReplayStore } from '../src/auth/replay-store.js'
import { Database } from '../src/db/index.js'

let dir: string
let database: Database
let other: Database

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'atm-replay-'))
  database = new Database(join(dir, 'atm.sqlite'))
  database.migrate()
  // A second connection, as a second worker has.
  other = new Database(join(dir, 'atm.sqlite'))
})
afterEach(async () => {
  await other.close()
  await database.close()
  rmSync(dir, { recursive: true, force: true })
})

const live = () => Date.now() + 200_000

it('purges every token expired over a minute ago, batch after batch, and keeps the rest', async () => {
  const store = new ReplayStore(database)
  const now = Date.now()
  for (let index = 0; index < 53; index++) expect(await store.spend('did:plc:app', `old-${index}`, now - 61_000)).toBe(true)
  for (let index = 0; index < 5; index++) expect(await store.spend('did:plc:app', `recent-${index}`, now - 30_000)).toBe(true)
  for (let index = 0; index < 5; index++) expect(await store.spend('did:plc:app', `live-${index}`, now + 200_000)).toBe(true)

  expect(await store.purgeExpired(now, 10)).toBe(53)
  const left = database.sqlite.prepare('SELECT jti FROM spentToken ORDER BY jti').all() as Array<{ jti: string }>
  expect(left.map((row) => row.jti.replace(/-\d+$/, ''))).toEqual([...Array(5).fill('live'), ...Array(5).fill('recent')])
  // A token still alive stays spent.
  expect(await store.spend('did:plc:app', 'live-0', now + 200_000)).toBe(false)
  expect(await store.purgeExpired(now, 10)).toBe(0)
})

it('a token spent through one worker is refused through the other, both ways, also when sent at once', async () => {
  const first = new ReplayStore(database)
  const second = new ReplayStore(other)
  await first.load()
  await second.load()
  expect(await first.spend('did:plc:app', 'a', live())).toBe(true)
  expect(await second.spend('did:plc:app', 'a', live())).toBe(false)
  expect(await second.spend('did:plc:app', 'b', live())).toBe(true)
  expect(await first.spend('did:plc:app', 'b', live())).toBe(false)
  // The same jti from another issuer is another token.
  expect(await second.spend('did:plc:other', 'a', live())).toBe(true)

  // 40 tokens, each sent to both workers at the same time: each is spent exactly once.
  const races = await Promise.all(
    Array.from({ length: 40 }, (_, index) =>
      Promise.all([first.spend('did:plc:app', `race-${index}`, live()), second.spend('did:plc:app', `race-${index}`, live())]),
    ),
  )
  for (const [one, two] of races) expect([one, two].filter(Boolean)).toHaveLength(1)
})

it('a worker started later knows the tokens spent before (it reads the log), and a rolled-back spend leaves the token unspent', async () => {
  const first = new ReplayStore(database)
  await first.load()
  for (let index = 0; index < 30; index++) expect(await first.spend('did:plc:app', `t-${index}`, live())).toBe(true)
  const late = new ReplayStore(other)
  await late.load()
  expect(late.indexedRows()).toBe(30)
  for (let index = 0; index < 30; index++) expect(await late.spend('did:plc:app', `t-${index}`, live())).toBe(false)

  // A spend whose write then fails: rolled back with it, the token stays usable.
  await expect(
    database.write(async (tx) => {
      expect(await first.spendIn(tx, 'did:plc:app', 'rolled-back', live())).toBe(true)
      throw new Error('refused after the spend')
    }),
  ).rejects.toThrow('refused after the spend')
  expect(await late.spend('did:plc:app', 'rolled-back', live())).toBe(true)
  expect(await first.spend('did:plc:app', 'rolled-back', live())).toBe(false)
})

it('two tokens whose hints collide are told apart by the rows', async () => {
  // Find two jtis with the same 31-bit hint (a birthday search: some 10^5 tries).
  const seen = new Map<number, string>()
  let pair: [string, string] | undefined
  for (let index = 0; !pair; index++) {
    const jti = `c-${index}`
    const hint = hintOf('did:plc:app', jti)
    const earlier = seen.get(hint)
    if (earlier !== undefined) pair = [earlier, jti]
    else seen.set(hint, jti)
  }
  const store = new ReplayStore(database)
  await store.load()
  expect(await store.spend('did:plc:app', pair[0], live())).toBe(true)
  expect(await store.spend('did:plc:app', pair[1], live())).toBe(true)
  expect(await store.spend('did:plc:app', pair[0], live())).toBe(false)
  expect(await store.spend('did:plc:app', pair[1], live())).toBe(false)
  // And through a worker that learned both from the log.
  const late = new ReplayStore(other)
  await late.load()
  expect(await late.spend('did:plc:app', pair[1], live())).toBe(false)
  expect(await late.spend('did:plc:app', pair[0], live())).toBe(false)
})

it('a key recorded through one worker makes the other refuse any other key at its next spend, and tell its cache', async () => {
  const first = new ReplayStore(database)
  const second = new ReplayStore(other)
  await first.load()
  await second.load()
  const changes: Array<[string, string | undefined]> = []
  second.signingKeys.onChange = (did, key) => changes.push([did, key])

  // Both workers fetched the old key; the first records it (the second finds it recorded).
  await first.signingKeys.record('did:plc:app', 'did:key:old')
  expect(await second.spend('did:plc:app', 'a', live(), 'did:key:old')).toBe(true)
  await second.signingKeys.record('did:plc:app', 'did:key:old')
  expect(database.sqlite.prepare('SELECT count(*) AS n FROM signingKeyLog').get()).toEqual({ n: 1 })

  // The first worker fetches the rotated document; the second still holds the old one.
  await first.signingKeys.record('did:plc:app', 'did:key:new')
  changes.length = 0
  await expect(second.spend('did:plc:app', 'b', live(), 'did:key:old')).rejects.toMatchObject({ customErrorName: 'BadJwtSignature' })
  expect(changes).toContainEqual(['did:plc:app', 'did:key:new'])
  // Refused, not spent: the token's jti is still unused (with the right key it would pass).
  expect(await second.spend('did:plc:app', 'b', live(), 'did:key:new')).toBe(true)
  expect(await first.spend('did:plc:app', 'c', live(), 'did:key:old').catch((err: { customErrorName?: string }) => err.customErrorName)).toBe(
    'BadJwtSignature',
  )
  // A DID with no key recorded is not held to one.
  expect(await first.spend('did:plc:other', 'd', live(), 'did:key:any')).toBe(true)
})

it('key rows are forgotten 25 h after they were seen, and a worker started later knows the latest key', async () => {
  const first = new ReplayStore(database)
  await first.load()
  await first.signingKeys.record('did:plc:app', 'did:key:one')
  await first.signingKeys.record('did:plc:app', 'did:key:two')
  const late = new ReplayStore(other)
  await late.load()
  expect(late.signingKeys.latestKey('did:plc:app')).toBe('did:key:two')

  await first.purgeExpired(Date.now() + 24 * 3600_000)
  expect(database.sqlite.prepare('SELECT count(*) AS n FROM signingKeyLog').get()).toEqual({ n: 2 })
  await first.purgeExpired(Date.now() + 25 * 3600_000 + 1000)
  expect(database.sqlite.prepare('SELECT count(*) AS n FROM signingKeyLog').get()).toEqual({ n: 0 })
  expect(first.signingKeys.latestKey('did:plc:app')).toBeUndefined()
})
