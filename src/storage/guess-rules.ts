/**
 * The rules for wrong admin passwords, apart from where the count is kept: a client has a few
 * free wrong guesses, then waits before each next one, twice as long each time up to a
 * minute; a right password, or a quarter of an hour without a wrong one, starts it from zero.
 */

/** Wrong admin passwords a client may send before it has to wait. */
export const FREE_WRONG_GUESSES = 5
/** The first wait; it doubles with every further wrong guess, up to `MAX_WAIT_MS`. */
export const FIRST_WAIT_MS = 2_000
/** The longest wait: the operator, at the same address as a guesser, waits no longer. */
export const MAX_WAIT_MS = 60_000
/** A client whose last wrong guess is this old starts from zero again. */
export const FORGET_AFTER_MS = 15 * 60_000

export interface GuessRecord {
  wrong: number
  lastWrongAt: number
  blockedUntil: number
}

/** The record after one more wrong guess, heard at `nowMs` (the client was not waiting). */
export function afterWrongGuess(record: GuessRecord | undefined, nowMs: number): GuessRecord {
  const wrong = record && nowMs - record.lastWrongAt < FORGET_AFTER_MS ? record.wrong + 1 : 1
  const blockedUntil = wrong >= FREE_WRONG_GUESSES ? nowMs + Math.min(MAX_WAIT_MS, FIRST_WAIT_MS * 2 ** (wrong - FREE_WRONG_GUESSES)) : 0
  return { wrong, lastWrongAt: nowMs, blockedUntil }
}

/**
 * One admin attempt from a client whose record is `record`, at `nowMs`: `waitMs` > 0 while it
 * must still wait (the attempt is refused unheard and the record stays as it is: otherwise the
 * answer would still tell a guesser when a guess was right); else the record to keep from now
 * on, undefined once a right password has cleared it.
 */
export function judgeAttempt(
  record: GuessRecord | undefined,
  correct: boolean,
  nowMs: number,
): { waitMs: number; next?: undefined } | { waitMs: 0; next: GuessRecord | undefined } {
  if (record && record.blockedUntil > nowMs) return { waitMs: record.blockedUntil - nowMs }
  return { waitMs: 0, next: correct ? undefined : afterWrongGuess(record, nowMs) }
}
