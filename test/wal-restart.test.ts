// Under a steady stream of writes the WAL never starts over by itself: the primary's
// checkpoint starts it over once it passes a size, waiting for readers of older snapshots.
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Sqlite from 'better-sqlite3'
import { afterEach, beforeEach, expect, it } from 'vitest'
import { Database } from '../src/db/index.js'

let dir: string
let path: string
let primary: Database
let worker: Database

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'atm-wal-'))
  path = join(dir, 'atm.sqlite')
  primary = new Database(path)
  primary.migrate()
  primary.sqlite.exec('CREATE TABLE note (id INTEGER PRIMARY KEY, body BLOB NOT NULL)')
  worker = new Database(path, { autoCheckpoint: false })
})
afterEach(async () => {
  await worker.close()
  await primary.close()
  rmSync(dir, { recursive: true, force: true })
})

const walBytes = () => statSync(`${path}-wal`).size

async function writeNotes(count: number): Promise<void> {
  for (let index = 0; index < count; index++) {
    await worker.write((tx) => tx.run('INSERT INTO note (body) VALUES (?)', Buffer.alloc(8192, index)))
  }
}

it('waits for a reader of an older snapshot, then starts the WAL over: later writes reuse its file', async () => {
  const reader = new Sqlite(path, { readonly: true })
  reader.exec('BEGIN')
  reader.prepare('SELECT count(*) FROM note').get()
  await writeNotes(40)
  const grown = walBytes()
  expect(grown).toBeGreaterThan(40 * 8192)

  // Under the size: only the passive copy, which the reader's snapshot holds back.
  expect(primary.checkpoint({ restartBytes: grown + 1, waitMs: 20 })).toBe(false)
  // Over it, but the reader still needs the old pages: the restart gives up after waitMs.
  expect(primary.checkpoint({ restartBytes: 1, waitMs: 20 })).toBe(false)
  reader.exec('COMMIT')
  reader.close()
  expect(primary.checkpoint({ restartBytes: 1, waitMs: 20 })).toBe(true)

  // The next writes go to the start of the WAL: its file does not grow.
  await writeNotes(20)
  expect(walBytes()).toBe(grown)
  const count = new Sqlite(path, { readonly: true })
  expect((count.prepare('SELECT count(*) AS n FROM note').get() as { n: number }).n).toBe(60)
  count.close()
})
