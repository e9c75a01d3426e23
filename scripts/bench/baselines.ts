// The benchmark's baselines, each measured in the same run as the service: what bare node:http
// answers, what SQLite alone commits, and how many tokens the stock and the service's own
// verifiers check per second.
import cluster from 'node:cluster'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import { IdResolver } from '@atproto/identity'
import { verifyJwt } from '@atproto/xrpc-server'
import Sqlite from 'better-sqlite3'
import { BoundedDidCache } from '../../src/auth/did-cache.js'
import { ReplayStore } from '../../src/auth/replay-store.js'
import { ServiceAuthVerifier } from '../../src/auth/verifier.js'
import { Database } from '../../src/db/index.js'

export interface LoopResult {
  ops: number
  seconds: number
  perSecond: number
  p50Ms: number
  p99Ms: number
  /** CPU time of the loop's process per operation. */
  cpuMsPerOp: number
  /** Peak RSS of the process that ran the loop, when it ran alone in a child process. */
  peakRssBytes?: number
}

function cpuMs(): number {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1000
}

/** Runs `op` back to back (one at a time: one core) for `durationMs`. */
export async function timeLoop(durationMs: number, op: (index: number) => unknown): Promise<LoopResult> {
  const latencies: number[] = []
  const cpuAtStart = cpuMs()
  const started = performance.now()
  const deadline = started + durationMs
  let index = 0
  for (let now = started; now < deadline; ) {
    await op(index++)
    const after = performance.now()
    latencies.push(after - now)
    now = after
  }
  const seconds = (performance.now() - started) / 1000
  const cpuMsPerOp = (cpuMs() - cpuAtStart) / index
  latencies.sort((a, b) => a - b)
  return {
    ops: index,
    seconds,
    perSecond: index / seconds,
    cpuMsPerOp,
    p50Ms: latencies[Math.floor(latencies.length * 0.5)] ?? NaN,
    p99Ms: latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] ?? NaN,
  }
}

/**
 * The bare node:http baseline (a child process): `processes` processes share the port, as the
 * service's workers do, and answer every POST by parsing its JSON body and sending back a
 * small JSON object of about the size of a hold's answer. No routing, no validation, no auth.
 */
export function serveBareHttp(port: number, processes: number): void {
  if (cluster.isPrimary && processes > 1) {
    let listening = 0
    cluster.on('listening', () => {
      if (++listening === processes) process.send?.('ready')
    })
    for (let index = 0; index < processes; index++) cluster.fork()
    process.on('SIGTERM', () => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM')
      process.exit(0)
    })
    return
  }
  const answer = {
    holdId: 'hold_000000000000000000000',
    token: `hold_tok_${'0'.repeat(43)}`,
    url: `http://localhost:2595/checkout/hold_000000000000000000000?token=hold_tok_${'0'.repeat(43)}`,
    environment: 'test',
    expiresAt: new Date().toISOString(),
    amountCents: 2500,
    currency: 'usd',
    items: [{ tierId: 'tier_000000000000000000000', title: 'General admission', quantity: 1, unitAmount: 2500, currency: 'usd' }],
  }
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      let status = 200
      let body: string
      try {
        const input = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { items?: unknown }
        body = JSON.stringify({ ...answer, received: Array.isArray(input.items) ? input.items.length : 0 })
      } catch {
        status = 400
        body = '{"error":"InvalidRequest"}'
      }
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  })
  server.keepAliveTimeout = 65_000
  server.listen(port, () => {
    if (processes <= 1) process.send?.('ready')
  })
  process.on('SIGTERM', () => process.exit(0))
}

/**
 * The raw SQLite baseline (a child process): the hold transaction with prepared statements and
 * nothing else, on a copy of the service's database: BEGIN IMMEDIATE, read the tier, check its
 * room, add to `held`, insert the hold and its item, COMMIT. The same pragmas as the service
 * (WAL, synchronous NORMAL, foreign keys on).
 */
export function sqliteHoldLoop(opts: { source: string; copy: string; tierId: string; durationMs: number }): LoopResult {
  const source = new Sqlite(opts.source, { readonly: true })
  source.prepare('VACUUM INTO ?').run(opts.copy)
  source.close()
  const db = new Sqlite(opts.copy)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = NORMAL')
  db.pragma('foreign_keys = ON')
  const selectTier = db.prepare('SELECT * FROM tier WHERE id = ?')
  const addHeld = db.prepare('UPDATE tier SET held = held + ? WHERE id = ?')
  const insertHold = db.prepare(
    `INSERT INTO hold (id, appDid, environment, eventId, token, buyerDid, customerEmail, status, expiresAt, amountCents, currency, createdAt)
     VALUES (?, ?, ?, ?, ?, NULL, NULL, 'active', ?, ?, ?, ?)`,
  )
  const insertItem = db.prepare(
    `INSERT INTO holdItem (holdId, tierId, capacityGroupId, title, quantity, unitAmount, currency, expiresAt, counted)
     VALUES (?, ?, ?, ?, 1, ?, ?, ?, 1)`,
  )
  type Tier = { id: string; appDid: string; environment: string; eventId: string; capacityGroupId: string | null; title: string; unitAmount: number; currency: string; quantityTotal: number; held: number; sold: number }
  const hold = db.transaction(() => {
    const tier = selectTier.get(opts.tierId) as Tier
    if (tier.quantityTotal - tier.sold - tier.held < 1) throw new Error('the baseline tier ran out')
    const now = Date.now()
    const holdId = `hold_${randomBytes(16).toString('base64url')}`
    addHeld.run(1, tier.id)
    insertHold.run(holdId, tier.appDid, tier.environment, tier.eventId, `hold_tok_${randomBytes(32).toString('base64url')}`, now + 600_000, tier.unitAmount, tier.currency, now)
    insertItem.run(holdId, tier.id, tier.capacityGroupId, tier.title, tier.unitAmount, tier.currency, now + 600_000)
  })
  const latencies: number[] = []
  const cpuAtStart = cpuMs()
  const started = performance.now()
  let ops = 0
  for (let now = started; now < started + opts.durationMs; ops++) {
    hold.immediate()
    const after = performance.now()
    latencies.push(after - now)
    now = after
  }
  const seconds = (performance.now() - started) / 1000
  const cpuMsPerOp = (cpuMs() - cpuAtStart) / ops
  db.close()
  latencies.sort((a, b) => a - b)
  return {
    ops,
    seconds,
    perSecond: ops / seconds,
    cpuMsPerOp,
    p50Ms: latencies[Math.floor(latencies.length * 0.5)] ?? NaN,
    p99Ms: latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] ?? NaN,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
  }
}

/** verifyJwt as it comes (noble, pure JS), with the issuer's key at hand. */
export function stockVerifyLoop(tokens: string[], didKey: string, aud: string, lxm: string, durationMs: number): Promise<LoopResult> {
  return timeLoop(durationMs, (index) => verifyJwt(tokens[index % tokens.length]!, aud, lxm, async () => didKey))
}

/**
 * The service's own verifier, all of it: its claim checks, verifyJwt with the native signature
 * check, the issuer's key from the DID cache (warm: the first token resolved it), and spending
 * the token in the replay store (SQLite, WAL) — everything a request's authentication costs.
 */
export async function serviceVerifierLoop(opts: {
  tokens: () => string
  serviceDid: string
  plcUrl: string
  dbPath: string
  lxm: string
  durationMs: number
}): Promise<LoopResult> {
  const database = new Database(opts.dbPath)
  database.migrate()
  const idResolver = new IdResolver({ plcUrl: opts.plcUrl, didCache: new BoundedDidCache(), fetch: globalThis.fetch })
  const verifier = new ServiceAuthVerifier(opts.serviceDid, idResolver, new ReplayStore(database))
  try {
    await verifier.verify(opts.tokens(), opts.lxm)
    return await timeLoop(opts.durationMs, async () => {
      const verified = await verifier.verify(opts.tokens(), opts.lxm)
      if (verified.replayed) throw new Error('a benchmark token was replayed')
    })
  } finally {
    await database.close()
  }
}
