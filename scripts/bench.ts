/**
 * `npm run bench`: how many createTicketHold calls per second the real service answers, each
 * with a fresh service-auth token, next to baselines measured in the same run with the same
 * load generator: bare node:http, the raw SQLite hold transaction, the stock verifyJwt and
 * the service's own verifier. Prints one table; `--json <file>` writes the figures.
 *
 *   npm run bench -- --duration 60 --concurrency 32 --json bench.json
 */
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { verifyJwt } from '@atproto/xrpc-server'
import { createFastSignatureCheck } from '../src/auth/signature.js'
import { serveBareHttp, serviceVerifierLoop, sqliteHoldLoop, stockVerifyLoop, timeLoop, type LoopResult } from './bench/baselines.js'
import { ownCpuSeconds, runLoad, sampleUsage, type LoadResult, type ProcessUsage } from './bench/load.js'
import { formatSummary, summarizeProfiles } from './bench/profile.js'
import { mintTokens, type Alg } from './bench/tokens.js'
import { freePort, HOLD, prepareApps, startPlc, startService, type BenchApp, type Service } from './bench/world.js'

const ALGS: Alg[] = ['ES256K', 'ES256']
const MB = 1024 * 1024

interface Options {
  durationS: number
  warmupS: number
  microS: number
  concurrency: number
  workers: number | undefined
  json: string | undefined
  profile: string | undefined
  algs: Alg[]
}

function readOptions(): Options {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '3' },
      'micro-duration': { type: 'string', default: '3' },
      concurrency: { type: 'string', default: '32' },
      workers: { type: 'string' },
      json: { type: 'string' },
      profile: { type: 'string' },
      alg: { type: 'string', multiple: true },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) {
    process.stdout.write(
      [
        'npm run bench -- [options]',
        '  --duration S        seconds of load per measured run (default 10; tokens live 300 s, so at most 200)',
        '  --warmup S          seconds of unmeasured load before each service run (default 3)',
        '  --micro-duration S  seconds for each single-core loop: SQLite, verifiers (default 3)',
        '  --concurrency N     requests in flight (default 32)',
        '  --workers N         ATM_WORKERS of the service and processes of the node:http baseline (default: the service default, one per CPU)',
        '  --json FILE         also write every figure to FILE',
        '  --profile DIR       CPU-profile the service (node --cpu-prof into DIR) and print where its time went',
        '  --alg ES256K|ES256  only this token algorithm (repeatable; default both)',
        '',
      ].join('\n'),
    )
    process.exit(0)
  }
  const number = (name: string, value: string | undefined, min: number, max: number) => {
    const parsed = Number(value)
    if (!Number.isFinite(parsed) || parsed < min || parsed > max) {
      process.stderr.write(`--${name} must be a number from ${min} to ${max}\n`)
      process.exit(2)
    }
    return parsed
  }
  return {
    durationS: number('duration', values.duration, 1, 200),
    warmupS: number('warmup', values.warmup, 0, 60),
    microS: number('micro-duration', values['micro-duration'], 0.5, 60),
    concurrency: number('concurrency', values.concurrency, 1, 1024),
    workers: values.workers === undefined ? undefined : number('workers', values.workers, 1, 256),
    json: values.json,
    profile: values.profile,
    algs: values.alg?.length ? values.alg.map((alg) => {
      if (!ALGS.includes(alg as Alg)) {
        process.stderr.write(`--alg must be ES256K or ES256\n`)
        process.exit(2)
      }
      return alg as Alg
    }) : ALGS,
  }
}

/** A pool of pre-minted tokens; minting more on the spot (counted) if the run outlasts it. */
class TokenPool {
  private tokens: string[] = []
  private next = 0
  mintedDuringRun = 0
  constructor(
    private readonly app: BenchApp,
    private readonly aud: string,
  ) {}
  fill(count: number): void {
    this.tokens = mintTokens(this.app.identity.key, this.app.identity.did, this.aud, HOLD, count)
    this.next = 0
    this.mintedDuringRun = 0
  }
  take = (): string => {
    if (this.next < this.tokens.length) {
      const token = this.tokens[this.next]!
      this.tokens[this.next++] = ''
      return token
    }
    this.mintedDuringRun++
    return mintTokens(this.app.identity.key, this.app.identity.did, this.aud, HOLD, 1)[0]!
  }
}

function holdBody(app: BenchApp): () => string {
  let index = 0
  return () => JSON.stringify({ eventId: app.eventId, items: [{ tierId: app.tierIds[index++ % app.tierIds.length], quantity: 1 }] })
}

/** Runs a baseline role in a child process (a fresh V8, one core's worth of work). */
async function inChild<T>(role: string, args: Record<string, unknown>): Promise<T> {
  const child = fork(fileURLToPath(import.meta.url), ['--role', role], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  child.send(args)
  const [message] = (await once(child, 'message')) as [T]
  await once(child, 'exit')
  return message
}

interface EndToEnd {
  alg: Alg
  load: LoadResult
  usage: ProcessUsage
  /** CPU time of the load generator (this process) per request. */
  generatorCpuMsPerRequest: number
  warmupPerSecond: number
  tokensPreMinted: number
}

async function measureService(service: Service, app: BenchApp, opts: Options): Promise<EndToEnd> {
  const pool = new TokenPool(app, service.serviceDid)
  const body = holdBody(app)
  const base = { url: service.url, path: `/xrpc/${HOLD}`, concurrency: opts.concurrency, nextBody: body }
  pool.fill(Math.ceil(2000 * opts.warmupS) + opts.concurrency)
  const warmup = opts.warmupS > 0 ? await runLoad({ ...base, durationMs: opts.warmupS * 1000, nextToken: pool.take }) : undefined
  if (warmup && warmup.errors > 0) throw new Error(`warm-up requests failed: ${warmup.errorSamples.join('\n')}\n${service.output()}`)
  const expected = warmup ? warmup.perSecond : 3000
  // Twice the warm-up rate: minting during the run would take CPU from the service being measured.
  const tokensPreMinted = Math.ceil(expected * opts.durationS * 2) + 1000
  process.stderr.write(`  minting ${tokensPreMinted} ${app.alg} tokens\n`)
  pool.fill(tokensPreMinted)
  const usage = sampleUsage(service.process.pid!)
  const generatorCpu = ownCpuSeconds()
  process.stderr.write(`  ${app.alg}: ${opts.durationS} s of createTicketHold at ${opts.concurrency} in flight\n`)
  const load = await runLoad({ ...base, durationMs: opts.durationS * 1000, nextToken: pool.take, mintedDuringRun: () => pool.mintedDuringRun })
  const generatorCpuMsPerRequest = ((ownCpuSeconds() - generatorCpu) * 1000) / (load.ok + load.errors)
  return { alg: app.alg, load, usage: usage.stop(), generatorCpuMsPerRequest, warmupPerSecond: warmup?.perSecond ?? NaN, tokensPreMinted }
}

async function measureBareHttp(opts: Options, processes: number, tokens: () => string, body: () => string) {
  const port = await freePort()
  const child = fork(fileURLToPath(import.meta.url), ['--role', 'bare-http', String(port), String(processes)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  try {
    await once(child, 'message')
    const base = { url: `http://127.0.0.1:${port}`, path: `/xrpc/${HOLD}`, concurrency: opts.concurrency, nextBody: body, nextToken: tokens }
    if (opts.warmupS > 0) await runLoad({ ...base, durationMs: opts.warmupS * 1000 })
    const usage = sampleUsage(child.pid!)
    const generatorCpu = ownCpuSeconds()
    const load = await runLoad({ ...base, durationMs: opts.durationS * 1000 })
    const generatorCpuMsPerRequest = ((ownCpuSeconds() - generatorCpu) * 1000) / (load.ok + load.errors)
    return { load, usage: usage.stop(), generatorCpuMsPerRequest }
  } finally {
    child.kill('SIGTERM')
    await once(child, 'exit').catch(() => undefined)
  }
}

interface Row {
  what: string
  perSecond: number
  p50Ms?: number
  p99Ms?: number
  cpuMsPerOp?: number
  peakRssMb?: number
  vsStock?: number
  vsHttp?: number
  vsSqlite?: number
}

function formatTable(rows: Row[]): string {
  const num = (value: number | undefined, digits = 0) =>
    value === undefined || !Number.isFinite(value) ? '' : value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
  const header = ['measurement', 'per second', 'p50 ms', 'p99 ms', 'CPU ms each', 'peak RSS MB', '× stock verifyJwt', '% of node:http', '% of raw SQLite']
  const lines = rows.map((row) => [
    row.what,
    num(row.perSecond),
    num(row.p50Ms, 2),
    num(row.p99Ms, 2),
    num(row.cpuMsPerOp, 3),
    num(row.peakRssMb),
    row.vsStock === undefined ? '' : `${num(row.vsStock, 1)}×`,
    row.vsHttp === undefined ? '' : `${num(row.vsHttp * 100)}%`,
    row.vsSqlite === undefined ? '' : `${num(row.vsSqlite * 100)}%`,
  ])
  const out = [`| ${header.join(' | ')} |`, `|${header.map((_, index) => (index === 0 ? '---' : '---:')).join('|')}|`]
  for (const line of lines) out.push(`| ${line.join(' | ')} |`)
  return out.join('\n')
}

async function main(): Promise<void> {
  const opts = readOptions()
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const dir = mkdtempSync(join(tmpdir(), 'atm-bench-'))
  const adminPassword = randomBytes(18).toString('base64url')
  const processes = opts.workers ?? availableParallelism()
  const plc = await startPlc()
  let service: Service | undefined
  const stopAll = async () => {
    await service?.stop().catch(() => undefined)
    await plc.close().catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)))
  try {
    process.stderr.write(`starting the service (${opts.workers ?? 'default'} workers) on a temporary database, with a local PLC directory\n`)
    const profileDir = opts.profile ? resolve(opts.profile) : undefined
    if (profileDir) mkdirSync(profileDir, { recursive: true })
    const profileOf = (alg: Alg): string | undefined => {
      if (!profileDir) return undefined
      mkdirSync(join(profileDir, alg), { recursive: true })
      return join(profileDir, alg)
    }
    service = await startService({ root, dir: join(dir, opts.algs[0]!), plcUrl: plc.url, adminPassword, workers: opts.workers, profileDir: profileOf(opts.algs[0]!) })
    // Capacity for the warm-up and the run at up to twice the bare node:http rate of this machine.
    const capacity = 2 * 12_000 * (opts.durationS + opts.warmupS)
    const apps = await prepareApps(service, plc.url, adminPassword, [...new Set(['ES256K' as Alg, ...opts.algs])], capacity)
    const k256App = apps.find((app) => app.alg === 'ES256K')!

    process.stderr.write(`baseline: bare node:http (${processes} processes), ${opts.durationS} s at ${opts.concurrency} in flight\n`)
    // The bare server checks nothing: a thousand tokens, reused, give its requests the same size.
    const httpTokens = mintTokens(k256App.identity.key, k256App.identity.did, service.serviceDid, HOLD, 1000)
    let httpIndex = 0
    const nextHttpToken = () => httpTokens[httpIndex++ % httpTokens.length]!
    const bare = await measureBareHttp(opts, processes, nextHttpToken, holdBody(k256App))

    process.stderr.write(`baseline: raw better-sqlite3 hold transaction, ${opts.microS} s\n`)
    const sqlite = await inChild<LoopResult>('sqlite', {
      source: join(dir, opts.algs[0]!, 'atm.sqlite'),
      copy: join(dir, 'baseline.sqlite'),
      tierId: k256App.tierIds[0],
      durationMs: opts.microS * 1000,
    })

    const stock = new Map<Alg, LoopResult>()
    const ours = new Map<Alg, LoopResult>()
    const signatureOnly = new Map<Alg, LoopResult>()
    for (const app of apps.filter((app) => opts.algs.includes(app.alg))) {
      const aud = service.serviceDid
      process.stderr.write(`baseline: stock verifyJwt, ${app.alg}, ${opts.microS} s\n`)
      const few = mintTokens(app.identity.key, app.identity.did, aud, HOLD, 200)
      stock.set(app.alg, await stockVerifyLoop(few, app.identity.key.didKey, aud, HOLD, opts.microS * 1000))
      process.stderr.write(`baseline: verifyJwt with the native signature check, ${app.alg}, ${opts.microS} s\n`)
      const fast = createFastSignatureCheck().check
      signatureOnly.set(app.alg, await timeLoop(opts.microS * 1000, (index) => verifyJwt(few[index % few.length]!, aud, HOLD, async () => app.identity.key.didKey, fast)))
      process.stderr.write(`baseline: the service's verifier (with replay store), ${app.alg}, ${opts.microS} s\n`)
      const pool = new TokenPool(app, aud)
      pool.fill(Math.ceil(opts.microS * 20_000))
      ours.set(app.alg, await serviceVerifierLoop({ tokens: pool.take, serviceDid: aud, plcUrl: plc.url, dbPath: join(dir, `verifier-${app.alg}.sqlite`), lxm: HOLD, durationMs: opts.microS * 1000 }))
    }

    // Each algorithm's run gets a service of its own on a new database: a service slows as its
    // database fills (see the README), and the second run would otherwise start where the first
    // left it.
    const endToEnd: EndToEnd[] = []
    for (const [index, alg] of opts.algs.entries()) {
      let app = apps.find((candidate) => candidate.alg === alg)!
      if (index > 0) {
        process.stderr.write(`starting a new service on a new database for the ${alg} run\n`)
        service = await startService({ root, dir: join(dir, alg), plcUrl: plc.url, adminPassword, workers: opts.workers, profileDir: profileOf(alg) })
        ;[app] = await prepareApps(service, plc.url, adminPassword, [alg], capacity)
      }
      endToEnd.push(await measureService(service, app!, opts))
      await service.stop()
      if (profileDir) {
        process.stderr.write(`${alg} run:\n${formatSummary(summarizeProfiles(profileOf(alg)!, root, service.process.pid))}\n\n`)
      }
    }

    const rows: Row[] = [
      { what: `bare node:http JSON POST (${processes} processes, ${opts.concurrency} in flight)`, perSecond: bare.load.perSecond, p50Ms: bare.load.p50Ms, p99Ms: bare.load.p99Ms, cpuMsPerOp: (bare.usage.cpuSeconds * 1000) / bare.load.ok, peakRssMb: bare.usage.peakBytes / MB, vsHttp: 1 },
      { what: 'raw better-sqlite3 hold transaction (1 process)', perSecond: sqlite.perSecond, p50Ms: sqlite.p50Ms, p99Ms: sqlite.p99Ms, cpuMsPerOp: sqlite.cpuMsPerOp, peakRssMb: (sqlite.peakRssBytes ?? NaN) / MB, vsSqlite: 1 },
    ]
    for (const alg of opts.algs) {
      rows.push({ what: `stock verifyJwt, ${alg} (1 core)`, perSecond: stock.get(alg)!.perSecond, p50Ms: stock.get(alg)!.p50Ms, p99Ms: stock.get(alg)!.p99Ms, cpuMsPerOp: stock.get(alg)!.cpuMsPerOp, vsStock: 1 })
    }
    for (const alg of opts.algs) {
      const result = signatureOnly.get(alg)!
      rows.push({ what: `verifyJwt + native signature check, ${alg} (1 core)`, perSecond: result.perSecond, p50Ms: result.p50Ms, p99Ms: result.p99Ms, cpuMsPerOp: result.cpuMsPerOp, vsStock: result.perSecond / stock.get(alg)!.perSecond })
    }
    for (const alg of opts.algs) {
      const result = ours.get(alg)!
      rows.push({ what: `service verifier with replay store, ${alg} (1 core)`, perSecond: result.perSecond, p50Ms: result.p50Ms, p99Ms: result.p99Ms, cpuMsPerOp: result.cpuMsPerOp, vsStock: result.perSecond / stock.get(alg)!.perSecond })
    }
    for (const run of endToEnd) {
      rows.push({
        what: `**createTicketHold, ${run.alg}** (service, ${processes} workers, ${opts.concurrency} in flight)`,
        perSecond: run.load.perSecond,
        p50Ms: run.load.p50Ms,
        p99Ms: run.load.p99Ms,
        cpuMsPerOp: (run.usage.cpuSeconds * 1000) / run.load.ok,
        peakRssMb: run.usage.peakBytes / MB,
        vsStock: run.load.perSecond / stock.get(run.alg)!.perSecond,
        vsHttp: run.load.perSecond / bare.load.perSecond,
        vsSqlite: run.load.perSecond / sqlite.perSecond,
      })
    }

    const cpu = cpus()[0]?.model ?? 'unknown CPU'
    const out: string[] = []
    out.push(`ATM Tickets benchmark — ${new Date().toISOString()}, Node ${process.version}, ${availableParallelism()} CPUs (${cpu})`)
    out.push(`signature checks: ES256K by ${createFastSignatureCheck().secp256k1Backend}, ES256 by OpenSSL; ${opts.durationS} s per load run after ${opts.warmupS} s of warm-up, ${opts.microS} s per single-core loop`)
    out.push('')
    out.push(formatTable(rows))
    out.push('')
    for (const run of endToEnd) {
      const l = run.load
      out.push(
        `${run.alg}: ${l.ok.toLocaleString('en-US')} holds in ${l.seconds.toFixed(1)} s, ${l.errors} errors; service RSS ${(run.usage.startBytes / MB).toFixed(0)} MB at start, ${(run.usage.endBytes / MB).toFixed(0)} MB at end, ${(run.usage.peakBytes / MB).toFixed(0)} MB peak; load generator ${run.generatorCpuMsPerRequest.toFixed(3)} CPU ms per request` +
          (l.tokensMintedDuringRun ? `; ${l.tokensMintedDuringRun} tokens minted during the run (pre-minted ran out)` : ''),
      )
      for (const sample of l.errorSamples) out.push(`  error: ${sample}`)
    }
    out.push('')
    const k256 = endToEnd.find((run) => run.alg === 'ES256K')
    const p256 = endToEnd.find((run) => run.alg === 'ES256')
    const targets: Array<{ name: string; value: number; goal: number; unit: '×' | '%' | 'ms' }> = []
    if (k256) {
      targets.push(
        { name: 'ES256K end to end ≥ 10× the stock verifyJwt rate', value: k256.load.perSecond / stock.get('ES256K')!.perSecond, goal: 10, unit: '×' },
        { name: 'ES256K end to end ≥ 35% of bare node:http', value: k256.load.perSecond / bare.load.perSecond, goal: 0.35, unit: '%' },
        { name: `ES256K p99 < 50 ms at ${opts.concurrency} in flight`, value: k256.load.p99Ms, goal: 50, unit: 'ms' },
      )
    }
    if (p256) {
      targets.push(
        { name: 'ES256 end to end ≥ 40% of bare node:http', value: p256.load.perSecond / bare.load.perSecond, goal: 0.4, unit: '%' },
        { name: `ES256 p99 < 50 ms at ${opts.concurrency} in flight`, value: p256.load.p99Ms, goal: 50, unit: 'ms' },
      )
    }
    out.push('targets:')
    for (const target of targets) {
      const met = target.unit === 'ms' ? target.value < target.goal : target.value >= target.goal
      const shown = target.unit === '%' ? `${(target.value * 100).toFixed(0)}%` : target.unit === '×' ? `${target.value.toFixed(1)}×` : `${target.value.toFixed(1)} ms`
      out.push(`  ${met ? 'met   ' : 'MISSED'} ${target.name}: ${shown}`)
    }
    process.stdout.write(out.join('\n') + '\n')

    if (opts.json) {
      const figures = {
        at: new Date().toISOString(),
        node: process.version,
        cpus: availableParallelism(),
        cpu,
        options: opts,
        serviceWorkers: processes,
        secp256k1Backend: createFastSignatureCheck().secp256k1Backend,
        baselines: {
          bareHttp: { ...bare.load, usage: bare.usage, generatorCpuMsPerRequest: bare.generatorCpuMsPerRequest, processes },
          rawSqliteHold: sqlite,
          stockVerifyJwt: Object.fromEntries(stock),
          verifyJwtNativeSignature: Object.fromEntries(signatureOnly),
          serviceVerifier: Object.fromEntries(ours),
        },
        createTicketHold: Object.fromEntries(endToEnd.map((run) => [run.alg, run])),
        rows,
        targets: targets.map((target) => ({ ...target, met: target.unit === 'ms' ? target.value < target.goal : target.value >= target.goal })),
      }
      writeFileSync(opts.json, JSON.stringify(figures, null, 2) + '\n')
      process.stderr.write(`figures written to ${opts.json}\n`)
    }
  } finally {
    await stopAll()
  }
}

const roleIndex = process.argv.indexOf('--role')
if (roleIndex === -1) {
  main().catch((err: unknown) => {
    process.stderr.write(`benchmark failed: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
} else {
  const role = process.argv[roleIndex + 1]
  if (role === 'bare-http') {
    serveBareHttp(Number(process.argv[roleIndex + 2]), Number(process.argv[roleIndex + 3]))
  } else if (role === 'sqlite') {
    process.once('message', (args) => {
      const result = sqliteHoldLoop(args as Parameters<typeof sqliteHoldLoop>[0])
      process.send!(result, () => process.exit(0))
    })
  }
}
