import { AuthRequiredError } from '@atproto/xrpc-server'
import type { Database } from '../db/index.js'
import type { Tx } from '../storage/types.js'

export const SPENT_SQL = {
  after: 'SELECT seq, iss, jti FROM spentToken WHERE seq > ? ORDER BY seq',
  bySeq: 'SELECT iss, jti FROM spentToken WHERE seq = ?',
  append: 'INSERT INTO spentToken (iss, jti, expiresAt) VALUES (?, ?, ?) RETURNING seq',
  /** Of the oldest rows (a window of that many seqs), those expired before the cutoff. */
  purgeHead: 'DELETE FROM spentToken WHERE seq < (SELECT min(seq) FROM spentToken) + ? AND expiresAt < ?',
} as const

export const KEY_SQL = {
  after: 'SELECT seq, did, key, seenAt FROM signingKeyLog WHERE seq > ? ORDER BY seq',
  append: 'INSERT INTO signingKeyLog (did, key, seenAt) VALUES (?, ?, ?) RETURNING seq',
  /** Of the oldest rows (a window of that many seqs), those seen before the cutoff. */
  purgeHead: 'DELETE FROM signingKeyLog WHERE seq < (SELECT min(seq) FROM signingKeyLog) + ? AND seenAt < ?',
} as const

/** Spent tokens forgotten per statement. */
const PURGE_BATCH = 500
/** A token is forgotten this long after it expires: an expired token is refused for its `exp`. */
const KEPT_AFTER_EXPIRY_MS = 60_000
/**
 * The in-memory index is kept in generations of this length, four of them: every token is
 * remembered at least six minutes (lifetime at most 300 s, plus a minute), at most eight.
 */
const GENERATION_MS = 2 * 60_000
const GENERATIONS = 4

/** FNV-1a over the claims, 31 bits (a small integer for V8): a hint, always checked against the row. */
export function hintOf(iss: string, jti: string): number {
  let hash = 0x811c9dc5
  for (let index = 0; index < iss.length; index++) hash = Math.imul(hash ^ iss.charCodeAt(index), 0x01000193)
  hash = Math.imul(hash ^ 0x0a, 0x01000193)
  for (let index = 0; index < jti.length; index++) hash = Math.imul(hash ^ jti.charCodeAt(index), 0x01000193)
  return hash & 0x7fffffff
}

/**
 * The record of spent tokens and of issuers' latest keys, as the auth uses it, whichever the
 * engine (see `SpendLog` for the promise it keeps across processes).
 */
export interface TokenLedger {
  readonly signingKeys: KeyLedger
  /** Reads what it needs at start. */
  load(): Promise<void>
  /** True when this is the first use of `(iss, jti)`; in a write of its own. */
  spend(iss: string, jti: string, expiresAtMs: number, signingKey?: string): Promise<boolean>
  /**
   * Records `(iss, jti)` as spent inside `tx`, a request's own write transaction; true when this
   * is its first use. A token verified with a key its issuer has since replaced is refused
   * (401 BadJwtSignature) and not spent.
   */
  spendIn(tx: Tx, iss: string, jti: string, expiresAtMs: number, signingKey?: string): Promise<boolean>
  /** Forgets tokens long expired; answers how many. */
  purgeExpired(nowMs?: number): Promise<number>
}

export interface KeyLedger {
  /** Records `key`, just fetched for `did`, unless it is already the latest; answers once committed. */
  record(did: string, key: string): Promise<void>
  /** Told when a DID's latest key changes or is no longer held: the cached document of that DID is forgotten unless it holds that key. */
  onChange: (did: string, key: string | undefined) => void
}

/** The refusal of a token signed with a key its issuer has replaced. */
export function keyReplaced(did: string): AuthRequiredError {
  return new AuthRequiredError(
    `jwt is signed with a key that ${did} has replaced: sign with the current #atproto key of its DID document`,
    'BadJwtSignature',
  )
}

/**
 * Remembers every `(iss, jti)` it has seen until the token expires. Keyed on the claims, not
 * the token string: ECDSA signatures are malleable, so one payload can carry several valid
 * signatures.
 *
 * The record is the `spentToken` table, an append-only log shared by all workers: a spend adds
 * a row on its last page, not on a random page of a tree of every token of the last minutes
 * (that cost more than the rest of a hold's writes together, and grew with the tree). To find a
 * token without an index on it, each worker keeps the log's live rows in memory as hint → seq.
 * A hint only points at rows to read: a token counts as spent when a row with its very `iss`
 * and `jti` is there, so collisions, rolled-back appends and purged rows never decide anything.
 *
 * Exact across workers because every spend runs inside a write transaction: at the first spend
 * of each transaction the worker reads the rows appended since the last one it saw. All of them
 * are committed (no one else can write while this transaction holds the lock, and this
 * transaction has appended nothing yet), and `seq` never goes back (AUTOINCREMENT), so nothing
 * appended by another worker is ever skipped.
 */
export class ReplayStore implements TokenLedger {
  /** Newest generation first. */
  private generations: Array<Map<number, number | number[]>> = [new Map()]
  private generationStartedAt = Date.now()
  /** The last committed row read into the index. */
  private lastSeen = 0
  /** The write transaction whose first spend caught up with the log. */
  private caughtUpIn = -1

  /** The issuers' latest keys, caught up together with the spent tokens. */
  readonly signingKeys: SigningKeyLog

  constructor(private readonly database: Database) {
    this.signingKeys = new SigningKeyLog(database)
  }

  /**
   * Reads the whole log into the index, outside any write transaction: a worker that starts
   * under load does not hold the lock for it.
   */
  async load(): Promise<void> {
    await this.database.read(async (tx) => {
      await this.readAfter(tx)
      await this.signingKeys.catchUp(tx)
    })
  }

  /** True when this is the first use of `(iss, jti)`; in a write of its own. */
  async spend(iss: string, jti: string, expiresAtMs: number, signingKey?: string): Promise<boolean> {
    return this.database.write((tx) => this.spendIn(tx, iss, jti, expiresAtMs, signingKey))
  }

  /**
   * Records `(iss, jti)` as spent inside `tx`, a request's own write transaction; true when this
   * is its first use. `signingKey`, the key the token was verified with: a token whose key some
   * worker has since seen replaced is refused (401 BadJwtSignature) and not spent.
   */
  async spendIn(tx: Tx, iss: string, jti: string, expiresAtMs: number, signingKey?: string): Promise<boolean> {
    if (tx.transaction !== this.caughtUpIn) {
      this.caughtUpIn = tx.transaction
      await this.readAfter(tx)
      await this.signingKeys.catchUp(tx)
    }
    if (signingKey !== undefined) this.signingKeys.requireLatest(iss, signingKey)
    const hint = hintOf(iss, jti)
    for (const generation of this.generations) {
      const seqs = generation.get(hint)
      if (seqs === undefined) continue
      for (const seq of typeof seqs === 'number' ? [seqs] : seqs) {
        const row = await tx.get<{ iss: string; jti: string }>(SPENT_SQL.bySeq, seq)
        if (row?.iss === iss && row.jti === jti) return false
      }
    }
    // Not marked as seen: the append is not committed yet. The next transaction reads it back.
    this.remember(hint, (await tx.get<{ seq: number }>(SPENT_SQL.append, iss, jti, expiresAtMs))!.seq)
    return true
  }

  /** How many rows the in-memory index points at (for the tests and the bounds). */
  indexedRows(): number {
    let rows = 0
    for (const generation of this.generations) for (const seqs of generation.values()) rows += typeof seqs === 'number' ? 1 : seqs.length
    return rows
  }

  private async readAfter(tx: Tx): Promise<void> {
    for (const row of await tx.all<{ seq: number; iss: string; jti: string }>(SPENT_SQL.after, this.lastSeen)) {
      this.remember(hintOf(row.iss, row.jti), row.seq)
      this.lastSeen = row.seq
    }
  }

  private remember(hint: number, seq: number): void {
    const now = Date.now()
    if (now - this.generationStartedAt >= GENERATION_MS) {
      this.generations = [new Map(), ...this.generations.slice(0, GENERATIONS - 1)]
      this.generationStartedAt = now
    }
    const current = this.generations[0]!
    const seqs = current.get(hint)
    if (seqs === undefined) current.set(hint, seq)
    else if (typeof seqs === 'number') {
      if (seqs !== seq) current.set(hint, [seqs, seq])
    } else if (!seqs.includes(seq)) seqs.push(seq)
  }

  /**
   * Forgets tokens that expired a minute ago, from the oldest rows on, in batches, each its own
   * short write: deleting a minute of spent tokens at once would hold the write lock, and stall
   * every worker's requests, for as long as that takes. Rows behind a token that lives longer
   * wait for it (five minutes at most).
   */
  async purgeExpired(nowMs = Date.now(), batchSize = PURGE_BATCH): Promise<number> {
    await this.signingKeys.purge(nowMs, batchSize)
    return purgeHead(this.database, SPENT_SQL.purgeHead, batchSize, nowMs - KEPT_AFTER_EXPIRY_MS)
  }
}

async function purgeHead(database: Database, sql: string, batchSize: number, cutoff: number): Promise<number> {
  let purged = 0
  for (;;) {
    const deleted = await database.write((tx) => tx.run(sql, batchSize, cutoff))
    purged += deleted
    // Nothing old enough at the head: what is left waits for the next purge.
    if (deleted === 0) return purged
    await new Promise((resolve) => setImmediate(resolve))
  }
}

/**
 * A key row is kept this long: longer than any cached DID document lives (24 h), so every
 * document a worker holds was fetched after the rows about its DID that are gone.
 */
const KEY_KEPT_MS = 25 * 60 * 60 * 1000
/** Latest keys held in memory at most; see `SigningKeyLog.remember`. */
const MAX_KEYS = 50_000

/**
 * The latest `#atproto` key any worker has fetched for each issuer, from the `signingKeyLog`
 * table (shared by all workers, as `spentToken` is). Each worker keeps its own DID document
 * cache, and one whose cached document predates a key rotation would otherwise go on trusting
 * the old key until the entry goes stale, while another already refuses it.
 *
 * A worker that fetches a document whose key is not the latest it knows appends a row before
 * the token is checked against that key (`record`); every worker reads new rows at the first
 * spend of each write transaction, with the spent tokens, and a token verified with any other
 * key than the latest is then refused instead of spent (`requireLatest`). Rows are ordered by
 * `seq`, that is by commit: the last fetch recorded wins, and should a fetch begun before a
 * rotation be recorded after it, the worker holding the newer key refuses one token, forgets
 * its document, fetches it again and records the newer key once more.
 */
export class SigningKeyLog implements KeyLedger {
  private readonly latest = new Map<string, { key: string; seenAt: number }>()
  private lastSeen = 0
  /**
   * Told when a DID's latest key changes or is no longer held: the worker forgets its cached
   * document of that DID unless it holds that very key, so the next token fetches it again.
   */
  onChange: (did: string, key: string | undefined) => void = () => undefined

  constructor(private readonly database: Database) {}

  /** The latest key recorded for `did`, if any row about it is held. */
  latestKey(did: string): string | undefined {
    return this.latest.get(did)?.key
  }

  /** Reads the rows appended since the last look; `tx` must see every committed row (a write transaction, or a fresh read). */
  async catchUp(tx: Tx): Promise<void> {
    for (const row of await tx.all<{ seq: number; did: string; key: string; seenAt: number }>(KEY_SQL.after, this.lastSeen)) {
      this.remember(row.did, row.key, row.seenAt)
      this.lastSeen = row.seq
    }
  }

  /** Throws 401 BadJwtSignature when `key` is not the latest key recorded for `did`. */
  requireLatest(did: string, key: string): void {
    const latest = this.latest.get(did)
    if (latest === undefined || latest.key === key) return
    // This worker's cached document is older than the recorded one: fetch it again next time.
    this.onChange(did, latest.key)
    throw keyReplaced(did)
  }

  /** Records `key`, just fetched for `did`, unless it is already the latest; answers once committed. */
  async record(did: string, key: string): Promise<void> {
    if (this.latest.get(did)?.key === key) return
    await this.database.write(async (tx) => {
      await this.catchUp(tx)
      if (this.latest.get(did)?.key === key) return
      const seenAt = Date.now()
      await tx.get(KEY_SQL.append, did, key, seenAt)
      // Holding the write lock, and caught up: this row is the last one of the log. Not marked
      // as seen, as it is not committed yet: the next catch-up reads it back.
      this.remember(did, key, seenAt)
    })
  }

  private remember(did: string, key: string, seenAt: number): void {
    const before = this.latest.get(did)
    this.latest.delete(did)
    this.latest.set(did, { key, seenAt })
    if (before?.key !== key) this.onChange(did, key)
    if (this.latest.size > MAX_KEYS) {
      // Forgetting a DID's latest key is only safe along with its cached document: the next
      // token then fetches the document afresh and records its key again.
      const oldest = this.latest.keys().next().value!
      this.latest.delete(oldest)
      this.onChange(oldest, undefined)
    }
  }

  /** Forgets rows (and latest keys) older than any cached document can be. */
  async purge(nowMs: number, batchSize: number): Promise<void> {
    const cutoff = nowMs - KEY_KEPT_MS
    await purgeHead(this.database, KEY_SQL.purgeHead, batchSize, cutoff)
    for (const [did, latest] of this.latest) if (latest.seenAt < cutoff) this.latest.delete(did)
  }
}
