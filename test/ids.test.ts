// Ids are unguessable (80 random bits) yet made in order, so new rows land on the last page
// of their indexes: fixed width, and ids of later milliseconds sort after earlier ones.
import { expect, it } from 'vitest'
import { newId } from '../src/util/ids.js'

/** An id with the clock read just before and just after it was made. */
function madeNow(): { id: string; ms: number; msAfter: number } {
  const ms = Date.now()
  const id = newId('hold')
  return { id, ms, msAfter: Date.now() }
}

it('ids of later milliseconds sort after earlier ones, all of one width and all distinct', () => {
  // Each id made in a millisecond strictly after the one its predecessor was finished in.
  const made = [madeNow()]
  while (made.length < 20) {
    const last = made[made.length - 1]!
    while (Date.now() <= last.msAfter) {
      // Wait for the next millisecond.
    }
    made.push(madeNow())
  }
  expect(new Set(made.map((entry) => entry.id)).size).toBe(made.length)
  for (const { id } of made) expect(id).toMatch(/^hold_[1-9A-HJ-NP-Za-km-z]{22}$/)
  for (let index = 1; index < made.length; index++) {
    const before = made[index - 1]!
    const after = made[index]!
    expect(after.ms, 'made in a later millisecond').toBeGreaterThan(before.msAfter)
    expect(after.id > before.id, `${after.id} after ${before.id}`).toBe(true)
  }
})

it('ids of one millisecond are distinct and not a counter', () => {
  // Ids made within one millisecond (the clock read the same before and after each).
  let sameMs: string[] = []
  while (sameMs.length < 12) {
    const first = madeNow()
    if (first.msAfter !== first.ms) continue
    sameMs = [first.id]
    for (let entry = madeNow(); entry.ms === first.ms && entry.msAfter === first.ms; entry = madeNow()) sameMs.push(entry.id)
  }
  expect(new Set(sameMs).size).toBe(sameMs.length)
  // A counter would make them ascend; random tails come in any order.
  const tails = sameMs.map((id) => id.slice(-10))
  expect([...tails].sort(), 'the random part of one millisecond is not ascending').not.toEqual(tails)
})
