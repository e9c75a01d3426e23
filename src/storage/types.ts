/**
 * What the service asks of its storage to keep its promises when several processes, on one
 * machine or on several, share one database. Each engine answers these its own way (SQLite:
 * its single writer and this machine's process table; PostgreSQL: keys, row locks and session
 * advisory locks), and the request pipeline is written once against them.
 */

/** A token being spent: its issuer and id, when it expires, and the key it was verified with. */
export interface SpendAttempt {
  iss: string
  jti: string
  expiresAtMs: number
  /** The issuer's key the token's signature was checked against, when it was checked. */
  signingKey?: string
}

/**
 * - `first-use`: the token is now spent (once the caller's transaction commits).
 * - `replayed`: the same `(iss, jti)` was spent before, by this process or any other.
 * - `key-replaced`: the token was checked against a key its issuer no longer has as the latest
 *   recorded one; it is not spent, and the caller should fetch the issuer's document again.
 */
export type SpendOutcome = 'first-use' | 'replayed' | 'key-replaced'

/**
 * The record of spent service-auth tokens and of each issuer's latest signing key.
 *
 * Contract: of any number of spends of one `(iss, jti)`, from any number of processes on any
 * number of nodes, at most one answers `first-use` among those whose transactions commit; a
 * spend whose transaction rolls back leaves the token unspent. Once `recordKey` has answered,
 * every later spend anywhere checked against an older key of that issuer answers
 * `key-replaced`.
 */
export interface SpendLog<Tx> {
  /** Spends the token inside `tx`, the request's own transaction, so that it stands or falls with it. */
  spendIn(tx: Tx, token: SpendAttempt): Promise<SpendOutcome>
  /** Records `key`, just fetched from `did`'s document, as its latest; answers once it is committed. */
  recordKey(did: string, key: string): Promise<void>
  /** The latest key recorded for `did`, if any. */
  latestKey(did: string): Promise<string | undefined>
  /** Forgets tokens long expired and keys older than any cached document; answers how many tokens went. */
  purgeExpired(nowMs: number): Promise<number>
}

/**
 * The running service processes, as owners of work they may leave half done (a pending
 * idempotency key).
 *
 * Contract: `isAlive(id)` is true while the process that registered `id` runs and reaches the
 * database, and false as soon as it has died or lost its connection, on whatever node it ran:
 * no lease to wait out, so its work is taken over at once.
 */
export interface InstanceRegistry {
  /** This process's id, new at every start. */
  readonly id: string
  /** Makes this process known as alive; until `close`, or until it dies. */
  register(): Promise<void>
  isAlive(id: string): Promise<boolean>
  /** Stops being alive (at shutdown). */
  close(): Promise<void>
}

/**
 * The count of wrong admin passwords per client (see `guessRules`).
 *
 * Contract: one count per client across every process and node, and attempts arriving at once
 * are counted one after the other: of any number of wrong guesses racing from one client, no
 * more than the free ones are heard.
 */
export interface GuessStore {
  /**
   * One admin attempt from `client`: how long it must still wait (the attempt is refused
   * unheard and not counted), or 0 once the outcome is counted (a right password clears it).
   */
  attempt(client: string, correct: boolean, nowMs: number): Promise<number>
  /** Forgets clients quiet for long enough to start from zero; answers how many. */
  forgetQuiet(nowMs: number): Promise<number>
}
