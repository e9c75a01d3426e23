import type { Database, SyncTx } from '../db/index.js'

export const SPENT_SQL = {
  after: 'SELECT seq, iss, jti FROM spentToken WHERE seq > ? ORDER BY seq',
  bySeq: 'SELECT iss, jti FROM spentToken WHERE seq = ?',
  append: 'INSERT INTO spentToken (iss, jti, expiresAt) VALUES (?, ?, ?)',
  /** Of the oldest rows (a window of that many seqs), those expired before the cutoff. */
  purgeHead: 'DELETE FROM spentToken WHERE seq < (SELECT min(seq) FROM spentToken) + ? AND expiresAt < ?',
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
export class ReplayStore {
  /** Newest generation first. */
  private generations: Array<Map<number, number | number[]>> = [new Map()]
  private generationStartedAt = Date.now()
  /** The last committed row read into the index. */
  private lastSeen = 0
  /** The write transaction whose first spend caught up with the log. */
  private caughtUpIn = -1

  constructor(private readonly database: Database) {}

  /**
   * Reads the whole log into the index, outside any write transaction: a worker that starts
   * under load does not hold the lock for it.
   */
  async load(): Promise<void> {
    await this.database.readSync((tx) => this.readAfter(tx))
  }

  /** True when this is the first use of `(iss, jti)`; in a write of its own. */
  async spend(iss: string, jti: string, expiresAtMs: number): Promise<boolean> {
    return this.database.writeSync((tx) => this.spendIn(tx, iss, jti, expiresAtMs))
  }

  /** Records `(iss, jti)` as spent inside `tx`, a request's own write transaction; true when this is its first use. */
  spendIn(tx: SyncTx, iss: string, jti: string, expiresAtMs: number): boolean {
    if (tx.transaction !== this.caughtUpIn) {
      this.caughtUpIn = tx.transaction
      this.readAfter(tx)
    }
    const hint = hintOf(iss, jti)
    for (const generation of this.generations) {
      const seqs = generation.get(hint)
      if (seqs === undefined) continue
      for (const seq of typeof seqs === 'number' ? [seqs] : seqs) {
        const row = tx.get<{ iss: string; jti: string }>(SPENT_SQL.bySeq, seq)
        if (row?.iss === iss && row.jti === jti) return false
      }
    }
    // Not marked as seen: the append is not committed yet. The next transaction reads it back.
    this.remember(hint, tx.insert(SPENT_SQL.append, iss, jti, expiresAtMs))
    return true
  }

  /** How many rows the in-memory index points at (for the tests and the bounds). */
  indexedRows(): number {
    let rows = 0
    for (const generation of this.generations) for (const seqs of generation.values()) rows += typeof seqs === 'number' ? 1 : seqs.length
    return rows
  }

  private readAfter(tx: SyncTx): void {
    for (const row of tx.all<{ seq: number; iss: string; jti: string }>(SPENT_SQL.after, this.lastSeen)) {
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
    let purged = 0
    for (;;) {
      const deleted = await this.database.writeSync((tx) => tx.run(SPENT_SQL.purgeHead, batchSize, nowMs - KEPT_AFTER_EXPIRY_MS))
      purged += deleted
      // Nothing expired at the head: what is left waits for the next purge.
      if (deleted === 0) return purged
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
}
