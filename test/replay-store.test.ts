// The replay table stays bounded: spent tokens are forgotten a minute after they expire, in
// batches of short writes, and a token still within its lifetime is never forgotten.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, expect, it } from 'vitest'
import { ReplayStore } from '../src/auth/replay-store.js'
import { Database } from '../src/db/index.js'

let dir: string
let database: Database

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'atm-replay-'))
  database = new Database(join(dir, 'atm.sqlite'))
  database.migrate()
})
afterEach(async () => {
  await database.close()
  rmSync(dir, { recursive: true, force: true })
})

it('purges every token expired over a minute ago, batch after batch, and keeps the rest', async () => {
  const store = new ReplayStore(database)
  const now = Date.now()
  for (let index = 0; index < 53; index++) expect(await store.spend('did:plc:app', `old-${index}`, now - 61_000)).toBe(true)
  for (let index = 0; index < 5; index++) expect(await store.spend('did:plc:app', `recent-${index}`, now - 30_000)).toBe(true)
  for (let index = 0; index < 5; index++) expect(await store.spend('did:plc:app', `live-${index}`, now + 200_000)).toBe(true)

  expect(await store.purgeExpired(now, 10)).toBe(53)
  const left = database.sqlite.prepare('SELECT jti FROM replay ORDER BY jti').all() as Array<{ jti: string }>
  expect(left.map((row) => row.jti.replace(/-\d+$/, ''))).toEqual([...Array(5).fill('live'), ...Array(5).fill('recent')])
  // A token still alive stays spent.
  expect(await store.spend('did:plc:app', 'live-0', now + 200_000)).toBe(false)
  expect(await store.purgeExpired(now, 10)).toBe(0)
})
