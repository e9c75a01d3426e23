// Group commit: writes asked for together share one transaction, each in its own savepoint.
// A write that throws leaves nothing behind and takes no other write with it; a write is
// answered only once it is committed, and its after-commit signals run only then.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Sqlite from 'better-sqlite3'
import { afterEach, beforeEach, expect, it } from 'vitest'
import { Database } from '../src/db/index.js'

let dir: string
let database: Database

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'atm-group-commit-'))
  database = new Database(join(dir, 'atm.sqlite'))
  database.migrate()
  database.sqlite.exec('CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT NOT NULL)')
})
afterEach(async () => {
  await database.close()
  rmSync(dir, { recursive: true, force: true })
})

function notes(): number[] {
  const reader = new Sqlite(join(dir, 'atm.sqlite'), { readonly: true })
  try {
    return (reader.prepare('SELECT id FROM note ORDER BY id').all() as Array<{ id: number }>).map((row) => row.id)
  } finally {
    reader.close()
  }
}

it('commits 60 concurrent writes in shared transactions; the ones that throw after writing leave nothing and fail alone', async () => {
  const committedSignals: number[] = []
  const visibleWhenAnswered: boolean[] = []
  const writes = Array.from({ length: 60 }, (_, id) =>
    database
      .write(async (tx) => {
        await tx.run('INSERT INTO note (id, text) VALUES (?, ?)', id, 'first')
        await tx.run('UPDATE note SET text = ? WHERE id = ?', 'second', id)
        tx.afterCommit(() => committedSignals.push(id))
        if (id % 3 === 0) throw new Error(`write ${id} refused`)
        return id
      })
      .then((value) => {
        // Answered only once committed: another connection already sees the row.
        visibleWhenAnswered.push(notes().includes(id))
        return value
      }),
  )
  const outcomes = await Promise.allSettled(writes)
  const kept = outcomes.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []))
  const refused = outcomes.flatMap((outcome, id) => (outcome.status === 'rejected' ? [id] : []))

  expect(refused).toEqual(Array.from({ length: 20 }, (_, index) => index * 3))
  for (const id of refused) expect(((outcomes[id] as PromiseRejectedResult).reason as Error).message).toBe(`write ${id} refused`)
  const expected = Array.from({ length: 60 }, (_, id) => id).filter((id) => id % 3 !== 0)
  expect(kept).toEqual(expected)
  expect(notes()).toEqual(expected)
  expect(visibleWhenAnswered).toEqual(expected.map(() => true))
  expect(committedSignals.sort((a, b) => a - b)).toEqual(expected)
  const texts = database.sqlite.prepare('SELECT DISTINCT text FROM note').all()
  expect(texts).toEqual([{ text: 'second' }])
})

it('writes that arrive while another process holds the lock wait without blocking, then all commit', async () => {
  const other = new Sqlite(join(dir, 'atm.sqlite'))
  other.exec('BEGIN IMMEDIATE')
  let answered = 0
  const writes = Array.from({ length: 25 }, (_, id) =>
    database.write((tx) => tx.run('INSERT INTO note (id, text) VALUES (?, ?)', id, 'x')).then(() => answered++),
  )
  // The event loop stays free while they wait: timers fire, nothing is answered yet.
  await new Promise((resolve) => setTimeout(resolve, 50))
  expect(answered).toBe(0)
  expect(notes()).toEqual([])
  other.exec('COMMIT')
  other.close()
  await Promise.all(writes)
  expect(answered).toBe(25)
  expect(notes()).toEqual(Array.from({ length: 25 }, (_, id) => id))
})

it('a write that fails alone rolls back and the next write goes on', async () => {
  await expect(
    database.write(async (tx) => {
      await tx.run('INSERT INTO note (id, text) VALUES (?, ?)', 1, 'x')
      await tx.run('INSERT INTO note (id, text) VALUES (?, ?)', 1, 'duplicate')
    }),
  ).rejects.toThrow(/UNIQUE/)
  expect(notes()).toEqual([])
  expect(database.sqlite.inTransaction).toBe(false)
  await database.write((tx) => tx.run('INSERT INTO note (id, text) VALUES (?, ?)', 2, 'y'))
  expect(notes()).toEqual([2])
})
