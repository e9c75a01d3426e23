// Ids are unguessable (80 random bits) yet made in order, so new rows land on the last page
// of their indexes: fixed width, and ids of later milliseconds sort after earlier ones.
import { expect, it } from 'vitest'
import { newId } from '../src/util/ids.js'

it('ids of later milliseconds sort after earlier ones, all of one width and all distinct', async () => {
  // Each id with the clock read just before and just after it was made.
  const made: Array<{ id: string; ms: number; msAfter: number }> = []
  const until = Date.now() + 30
  while (Date.now() < until) {
    const ms = Date.now()
    const id = newId('hold')
    made.push({ id, ms, msAfter: Date.now() })
  }
  expect(new Set(made.map((entry) => entry.id)).size).toBe(made.length)
  for (const { id } of made) expect(id).toMatch(/^hold_[1-9A-HJ-NP-Za-km-z]{22}$/)
  for (let index = 1; index < made.length; index++) {
    const before = made[index - 1]!
    const after = made[index]!
    if (after.ms > before.msAfter) expect(after.id > before.id, `${after.id} after ${before.id}`).toBe(true)
  }
  // Within one millisecond the order is random: the random part is not a counter.
  const sameMs = made.filter((entry) => entry.ms === made[0]!.ms && entry.msAfter === entry.ms).map((entry) => entry.id.slice(-10))
  expect(new Set(sameMs).size).toBe(sameMs.length)
})
