// The PostgreSQL pieces that keep the service's promises across nodes, against a real server
// (test/helpers/postgres.ts). Several pools on one database stand for several nodes, and
// separate child processes for processes that die.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openPostgres, type PostgresStorage } from '../src/storage/postgres/connect.js'
import { migratePostgres } from '../src/storage/postgres/migrate.js'
import { PostgresSpendLog } from '../src/storage/postgres/spend-log.js'
import { instanceLockKeys, PostgresInstanceRegistry } from '../src/storage/postgres/instances.js'
import { PostgresGuessStore } from '../src/storage/postgres/admin-guesses.js'
import { OUTBOX_QUERIES } from '../src/delivery/deliverer.js'
import { FREE_WRONG_GUESSES } from '../src/storage/guess-rules.js'
import type { SpendOutcome } from '../src/storage/types.js'
import { createTestDatabase } from './helpers/postgres.js'

const NODES = 4
let url: string
let nodes: PostgresStorage[]

beforeAll(async () => {
  url = await createTestDatabase('parts')
  nodes = await Promise.all(Array.from({ length: NODES }, () => openPostgres(url, { poolSize: 5 })))
  await migratePostgres(nodes[0]!.pool)
})
afterAll(async () => {
  await Promise.all((nodes ?? []).map((node) => node.close()))
})

/** A promise and the means to settle it from outside, to hold a transaction open. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
  let resolve!: () => void
  let reject!: (err: Error) => void
  const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)))
  return { promise, resolve, reject }
}

/** Resolves once some session of the database waits for a lock another holds; `stop()` ends the watch. */
function watchForLockWait(node: PostgresStorage): { waiting: Promise<'waiting'>; stop: () => void } {
  let stopped = false
  const waiting = (async () => {
    while (!stopped) {
      const found = await node.pool.query<{ waiting: boolean }>(
        // By session, not by the lock's database: a wait on another transaction's row has none.
        `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                         WHERE NOT l.granted AND a.datname = current_database()) AS waiting`,
      )
      if (found.rows[0]!.waiting) return 'waiting' as const
      await new Promise((r) => setTimeout(r, 5))
    }
    return new Promise<'waiting'>(() => {})
  })()
  return { waiting, stop: () => void (stopped = true) }
}

describe('spent tokens across nodes', () => {
  const logs = () => nodes.map((node) => new PostgresSpendLog(node.db))
  const expiresAtMs = () => Date.now() + 120_000

  it('of 40 spends of one token racing from 4 nodes, exactly one is its first use', async () => {
    const token = { iss: 'did:plc:racer', jti: 'jti-race', expiresAtMs: expiresAtMs() }
    const outcomes = await Promise.all(
      Array.from({ length: 40 }, (_, i) => {
        const node = nodes[i % NODES]!
        return node.db.transaction().execute((tx) => logs()[i % NODES]!.spendIn(tx, token))
      }),
    )
    expect(outcomes.filter((o) => o === 'first-use')).toHaveLength(1)
    expect(outcomes.filter((o) => o === 'replayed')).toHaveLength(39)
  })

  it('a spend whose transaction rolls back leaves the token spendable, also to a spend that waited on it', async () => {
    const [a, b, c] = logs()
    const token = { iss: 'did:plc:rollback', jti: 'jti-rollback', expiresAtMs: expiresAtMs() }
    const spentInA = deferred()
    const rollBackA = deferred()
    const inA = nodes[0]!.db.transaction().execute(async (tx) => {
      expect(await a!.spendIn(tx, token)).toBe('first-use')
      spentInA.resolve()
      await rollBackA.promise
      throw new Error('the request failed after spending')
    })
    await spentInA.promise
    // Node 1 spends the same token while node 0's transaction is still open: it waits on it.
    const watch = watchForLockWait(nodes[2]!)
    const inB = nodes[1]!.db.transaction().execute((tx) => b!.spendIn(tx, token))
    const first = await Promise.race([watch.waiting, inB])
    watch.stop()
    rollBackA.resolve()
    expect(first).toBe('waiting')
    await expect(inA).rejects.toThrow('the request failed after spending')
    expect(await inB).toBe('first-use')
    expect(await nodes[2]!.db.transaction().execute((tx) => c!.spendIn(tx, token))).toBe('replayed')
  })

  it('a key recorded by one node makes another refuse a token checked against the older key, unspent', async () => {
    const [a, b, c, d] = logs()
    const did = 'did:plc:rotates'
    await a!.recordKey(did, 'did:key:old')
    const spend = (log: PostgresSpendLog, node: PostgresStorage, jti: string, signingKey: string): Promise<SpendOutcome> =>
      node.db.transaction().execute((tx) => log.spendIn(tx, { iss: did, jti, expiresAtMs: expiresAtMs(), signingKey }))
    expect(await spend(b!, nodes[1]!, 'before-rotation', 'did:key:old')).toBe('first-use')
    await c!.recordKey(did, 'did:key:new')
    expect(await d!.latestKey(did)).toBe('did:key:new')
    expect(await spend(d!, nodes[3]!, 'after-rotation', 'did:key:old')).toBe('key-replaced')
    // Refused, not spent: the same token signed with the new key is its first use.
    expect(await spend(b!, nodes[1]!, 'after-rotation', 'did:key:new')).toBe('first-use')
    // Seeing the old key again later does not bring it back.
    await a!.recordKey(did, 'did:key:new')
    expect(await spend(a!, nodes[0]!, 'later', 'did:key:old')).toBe('key-replaced')
  })

  it('purging forgets tokens a minute past expiry, in batches, and keeps the rest', async () => {
    const [a] = logs()
    const now = Date.now()
    await nodes[0]!.db.transaction().execute(async (tx) => {
      for (let i = 0; i < 7; i++) await a!.spendIn(tx, { iss: 'did:plc:purge', jti: `old-${i}`, expiresAtMs: now - 61_000 })
      await a!.spendIn(tx, { iss: 'did:plc:purge', jti: 'recent', expiresAtMs: now - 30_000 })
    })
    expect(await a!.purgeExpired(now, 3)).toBe(7)
    const spendAgain = (jti: string) => nodes[1]!.db.transaction().execute((tx) => a!.spendIn(tx, { iss: 'did:plc:purge', jti, expiresAtMs: now }))
    expect(await spendAgain('recent')).toBe('replayed')
    expect(await spendAgain('old-0')).toBe('first-use')
  })
})

describe('service instances across nodes', () => {
  const holderScript = fileURLToPath(new URL('./fixtures/instance-holder.mjs', import.meta.url))
  const children: ChildProcess[] = []
  afterAll(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })

  async function startHolder(): Promise<{ child: ChildProcess; id: string }> {
    const child = spawn(process.execPath, [holderScript, url], { stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(child)
    let out = ''
    for await (const chunk of child.stdout!) {
      out += String(chunk)
      if (out.includes('\n')) break
    }
    const id = out.trim()
    expect(id).toMatch(/^[A-Za-z0-9_-]{16}$/)
    return { child, id }
  }

  it('a process is alive while it holds its lock, and dead once killed, without waiting out any lease', async () => {
    const [first, second] = await Promise.all([startHolder(), startHolder()])
    const observer = new PostgresInstanceRegistry(nodes[3]!.pool)
    expect(await observer.isAlive(first.id)).toBe(true)
    expect(await observer.isAlive(second.id)).toBe(true)
    expect(await observer.isAlive('never-registered')).toBe(false)

    first.child.kill('SIGKILL')
    await once(first.child, 'exit')
    // The server ends the session when the killed process's socket closes; no timeout is involved.
    while (await observer.isAlive(first.id)) await new Promise((r) => setTimeout(r, 5))
    expect(await observer.isAlive(second.id)).toBe(true)
  })

  it('a registered process is alive to every node until it closes', async () => {
    const registry = new PostgresInstanceRegistry(nodes[0]!.pool)
    await registry.register()
    const others = nodes.slice(1).map((node) => new PostgresInstanceRegistry(node.pool))
    expect(await Promise.all(others.map((other) => other.isAlive(registry.id)))).toEqual([true, true, true])
    await registry.close()
    expect(await Promise.all(others.map((other) => other.isAlive(registry.id)))).toEqual([false, false, false])
  })
})

describe('service instances cut off from the server', () => {
  it('a process whose lock session the server ends is told so, and is dead to the others at once', async () => {
    const lost: Error[] = []
    const registry = new PostgresInstanceRegistry(nodes[0]!.pool, { onLost: (error) => lost.push(error) })
    await registry.register()
    const [high, low] = instanceLockKeys(registry.id).unsigned
    const holder = await nodes[1]!.pool.query<{ pid: number }>(
      `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND classid = $1::bigint::oid AND objid = $2::bigint::oid`,
      [high, low],
    )
    expect(holder.rows).toHaveLength(1)
    // As a network cut or an operator's pg_terminate_backend would.
    await nodes[1]!.pool.query('SELECT pg_terminate_backend($1)', [holder.rows[0]!.pid])
    // The signal is sent at once, the session ends a moment later: its locks are released before
    // it leaves pg_stat_activity, so once it has left, no node may still see the process alive.
    const gone = async () =>
      (await nodes[1]!.pool.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [holder.rows[0]!.pid])).rowCount === 0
    while (!(await gone())) await new Promise((r) => setTimeout(r, 5))
    expect(await new PostgresInstanceRegistry(nodes[2]!.pool).isAlive(registry.id)).toBe(false)
    while (lost.length === 0) await new Promise((r) => setTimeout(r, 5))
    expect(await registry.isAlive(registry.id)).toBe(false)
    await registry.close()
  })
})

describe('admin guesses across nodes', () => {
  it('of 20 wrong guesses racing from 4 nodes for one client, exactly the free ones are heard', async () => {
    const stores = nodes.map((node) => new PostgresGuessStore(node.db))
    const now = Date.now()
    const waits = await Promise.all(Array.from({ length: 20 }, (_, i) => stores[i % NODES]!.attempt('203.0.113.7', false, now)))
    expect(waits.filter((wait) => wait === 0)).toHaveLength(FREE_WRONG_GUESSES)
    expect(waits.filter((wait) => wait > 0)).toHaveLength(20 - FREE_WRONG_GUESSES)
    // Waiting, the right password is refused unheard too.
    expect(await stores[1]!.attempt('203.0.113.7', true, now + 1)).toBeGreaterThan(0)
    // Another client is not held up.
    expect(await stores[2]!.attempt('198.51.100.9', false, now)).toBe(0)
    expect(await stores[3]!.attempt('198.51.100.9', true, now)).toBe(0)
  })

  it('waits double from 2 s, and the right password after the wait clears the count', async () => {
    const [a, b] = nodes.map((node) => new PostgresGuessStore(node.db))
    const client = '2001:db8:1:2::/64'
    let now = 1_700_000_000_000
    for (let i = 0; i < FREE_WRONG_GUESSES; i++) expect(await (i % 2 ? a! : b!).attempt(client, false, now)).toBe(0)
    expect(await a!.attempt(client, false, now)).toBe(2_000)
    now += 2_000
    expect(await b!.attempt(client, false, now)).toBe(0)
    expect(await a!.attempt(client, false, now)).toBe(4_000)
    now += 4_000
    expect(await b!.attempt(client, true, now)).toBe(0)
    // From zero again: five free wrong guesses.
    for (let i = 0; i < FREE_WRONG_GUESSES; i++) expect(await a!.attempt(client, false, now)).toBe(0)
    // A quarter of an hour without a wrong guess starts from zero too, and the quiet row can go.
    now += 15 * 60_000
    expect(await b!.forgetQuiet(now)).toBeGreaterThanOrEqual(1)
    expect(await b!.attempt(client, false, now)).toBe(0)
  })
})

/** The deliverer's claim as a node on PostgreSQL runs it: rows picked under FOR UPDATE SKIP LOCKED, leased for 10 minutes. */
function claimDue(db: Parameters<typeof OUTBOX_QUERIES.claimDue>[0], now: number, limit: number) {
  return OUTBOX_QUERIES.claimDue(db, now, now + 600_000, limit, { skipLocked: true }).execute()
}

describe('outbox claims across nodes', () => {
  async function addDueRows(count: number, prefix: string, dueAt: number): Promise<number[]> {
    const rows = await nodes[0]!.db
      .insertInto('outbox')
      .values(
        Array.from({ length: count }, (_, i) => ({
          id: `${prefix}-${i}`,
          appDid: 'did:web:app.test',
          environment: 'test',
          type: 'tickets.issued',
          payload: '{}',
          createdAt: dueAt,
          attempts: 0,
          nextAttemptAt: dueAt,
          deliveredAt: null,
          lastError: null,
        })),
      )
      .returning('seq')
      .execute()
    return rows.map((r) => r.seq)
  }

  it('4 nodes claiming due rows at once claim every row exactly once', async () => {
    const seqs = await addDueRows(300, 'race', Date.now() - 1_000)
    const claimedBy = new Map<number, number>()
    const claimer = async (node: number) => {
      for (;;) {
        const now = Date.now()
        const rows = await claimDue(nodes[node]!.db, now, 7)
        if (rows.length === 0) return
        for (const row of rows) claimedBy.set(row.seq, (claimedBy.get(row.seq) ?? 0) + 1)
      }
    }
    // Three claimers per node, as several deliverer wake-ups would.
    await Promise.all(Array.from({ length: NODES * 3 }, (_, i) => claimer(i % NODES)))
    expect([...claimedBy.keys()].sort((x, y) => x - y)).toEqual(seqs)
    expect([...claimedBy.values()].filter((times) => times !== 1)).toEqual([])
    const attempts = await nodes[1]!.db.selectFrom('outbox').select('attempts').where('id', 'like', 'race-%').execute()
    expect(attempts.every((row) => row.attempts === 1)).toBe(true)
  })

  it('a node takes the next due rows instead of waiting for rows another node is claiming', async () => {
    const seqs = await addDueRows(10, 'skip', Date.now() - 1_000)
    const claimedInA = deferred()
    const commitA = deferred()
    let heldByA: number[] = []
    const inA = nodes[0]!.db.transaction().execute(async (tx) => {
      const now = Date.now()
      heldByA = (await claimDue(tx, now, 4)).map((row) => row.seq)
      claimedInA.resolve()
      await commitA.promise
    })
    await claimedInA.promise
    const watch = watchForLockWait(nodes[2]!)
    const now = Date.now()
    const byB = claimDue(nodes[1]!.db, now, 100)
    const first = await Promise.race([byB, watch.waiting])
    watch.stop()
    commitA.resolve()
    await inA
    expect(first).not.toBe('waiting')
    const takenByB = (await byB).map((row) => row.seq)
    expect(heldByA).toHaveLength(4)
    expect([...heldByA, ...takenByB].sort((x, y) => x - y)).toEqual(seqs)
  })
})
