/**
 * `npm run bench`: how many createTicketHold calls per second the real service answers, each
 * with a fresh service-auth token, next to baselines measured in the same run with the same
 * load generator: bare node:http, the raw SQLite hold transaction, the stock verifyJwt and
 * the service's own verifier. Prints one table; `--json <file>` writes the figures.
 *
 * With `--backend postgres` (or `both`) it also starts a throwaway PostgreSQL server and runs
 * the service on it, as one node or as `--nodes` nodes sharing one database; `--shape` puts
 * every hold on one tier (one row every hold locks) or spreads them over 100.
 *
 *   npm run bench -- --duration 60 --concurrency 32 --json bench.json
 *   npm run bench -- --backend both --shape both --alg ES256K
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
import pg from 'pg'
import { createFastSignatureCheck } from '../src/auth/signature.js'
import { POSTGRES_DEFAULTS } from '../src/storage/postgres/connect.js'
import { serveBareHttp, serviceVerifierLoop, sqliteHoldLoop, stockVerifyLoop, timeLoop, type LoopResult } from './bench/baselines.js'
import { ownCpuSeconds, runLoad, sampleUsage, type LoadResult, type ProcessUsage } from './bench/load.js'
import { createDatabase, findPostgresServer, startThrowawayPostgres, type ThrowawayPostgres } from './bench/postgres-server.js'
import { countStatements, formatStatements, startCountingStatements, STATEMENT_COUNTING_SETTINGS, type StatementCount } from './bench/postgres-stats.js'
import { formatSummary, summarizeProfiles } from './bench/profile.js'
import { mintTokens, type Alg } from './bench/tokens.js'
import { freePort, HOLD, prepareApps, startDeployment, startPlc, TIER_CAPACITY, type Backend, type BenchApp, type Deployment } from './bench/world.js'

const ALGS: Alg[] = ['ES256K', 'ES256']
const MB = 1024 * 1024

/** `hot`: every hold on one tier, the row each of them locks; `spread`: each on one of SPREAD_TIERS tiers, picked at random. */
type Shape = 'hot' | 'spread'
const SHAPES: Shape[] = ['hot', 'spread']
const SPREAD_TIERS = 100
const BACKEND_NAMES: Record<Backend, string> = { sqlite: 'SQLite', postgres: 'PostgreSQL' }
const SHAPE_NAMES: Record<Shape, string> = { hot: 'one tier', spread: `${SPREAD_TIERS} tiers` }

/**
 * The benchmark's PostgreSQL server runs with the server's defaults, durable ones included
 * (every commit waits for its WAL to reach the disk, as ATM_DB_SYNCHRONOUS=FULL does for
 * SQLite); `--pg-setting` changes any of them.
 */
const PG_SETTINGS: Record<string, string | number> = { max_connections: 500 }

interface Options {
  durationS: number
  warmupS: number
  microS: number
  concurrency: number
  workers: number | undefined
  json: string | undefined
  profile: string | undefined
  algs: Alg[]
  backends: Backend[]
  /** Node counts of the PostgreSQL runs. */
  nodeCounts: number[]
  shapes: Shape[]
  pgPoolSize: number | undefined
  pgSettings: Record<string, string>
  pgStatements: boolean
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
      backend: { type: 'string', default: 'sqlite' },
      nodes: { type: 'string' },
      shape: { type: 'string', default: 'hot' },
      'pg-pool-size': { type: 'string' },
      'pg-setting': { type: 'string', multiple: true },
      'pg-statements': { type: 'boolean', default: false },
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
        '  --workers N         ATM_WORKERS of each service node and processes of the node:http baseline (default: the service default, one per CPU)',
        '  --json FILE         also write every figure to FILE',
        '  --profile DIR       CPU-profile the service (node --cpu-prof into DIR) and print where its time went',
        '  --alg ES256K|ES256  only this token algorithm (repeatable; default both)',
        '  --backend B         sqlite (default), postgres (a throwaway PostgreSQL server the benchmark starts),',
        '                      or both: SQLite first, then PostgreSQL',
        '  --nodes N[,N…]      PostgreSQL runs with N service nodes sharing one database, the requests sent to',
        '                      them in turn; a list runs each (default 1, with --backend both 1,2); SQLite runs one node',
        `  --shape S           hot (default): every hold on one tier; spread: each on one of ${SPREAD_TIERS} tiers at random; both`,
        '  --pg-pool-size N    ATM_PG_POOL_SIZE of each PostgreSQL node (default: the service default)',
        '  --pg-setting K=V    a setting of the throwaway PostgreSQL server (repeatable), e.g. synchronous_commit=off',
        '  --pg-statements     count the statements of each PostgreSQL run (pg_stat_statements) and print them per hold',
        '',
        'Every backend, both shapes, ES256K tokens, in one run:',
        '  npm run bench -- --backend both --shape both --alg ES256K',
        '',
      ].join('\n'),
    )
    process.exit(0)
  }
  const fail = (message: string): never => {
    process.stderr.write(`${message}\n`)
    process.exit(2)
  }
  const number = (name: string, value: string | undefined, min: number, max: number) => {
    const parsed = Number(value)
    if (!Number.isInteger(parsed) && ['concurrency', 'workers', 'nodes', 'pg-pool-size'].includes(name)) fail(`--${name} must be a whole number from ${min} to ${max}`)
    if (!Number.isFinite(parsed) || parsed < min || parsed > max) fail(`--${name} must be a number from ${min} to ${max}`)
    return parsed
  }
  const backend = values.backend
  if (backend !== 'sqlite' && backend !== 'postgres' && backend !== 'both') fail('--backend must be sqlite, postgres or both')
  const backends: Backend[] = backend === 'both' ? ['sqlite', 'postgres'] : [backend as Backend]
  if (values.nodes !== undefined && !backends.includes('postgres')) fail('--nodes is for PostgreSQL runs (--backend postgres or both): an SQLite service is one node, whose workers share its file')
  const nodeCounts = values.nodes === undefined ? (backend === 'both' ? [1, 2] : [1]) : [...new Set(values.nodes.split(',').map((part) => number('nodes', part.trim(), 1, 16)))]
  const shape = values.shape
  if (shape !== 'hot' && shape !== 'spread' && shape !== 'both') fail('--shape must be hot, spread or both')
  const pgSettings: Record<string, string> = {}
  for (const setting of values['pg-setting'] ?? []) {
    const match = /^([a-z_][a-z0-9_.]*)=(.+)$/i.exec(setting)
    if (!match) fail(`--pg-setting must be name=value (a PostgreSQL server setting), got "${setting}"`)
    pgSettings[match![1]!] = match![2]!
  }
  if ((values['pg-setting'] || values['pg-pool-size'] !== undefined || values['pg-statements']) && !backends.includes('postgres')) {
    fail('--pg-setting, --pg-pool-size and --pg-statements are for PostgreSQL runs (--backend postgres or both)')
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
      if (!ALGS.includes(alg as Alg)) fail('--alg must be ES256K or ES256')
      return alg as Alg
    }) : ALGS,
    backends,
    nodeCounts,
    shapes: shape === 'both' ? SHAPES : [shape as Shape],
    pgPoolSize: values['pg-pool-size'] === undefined ? undefined : number('pg-pool-size', values['pg-pool-size'], 1, 1000),
    pgSettings,
    pgStatements: values['pg-statements'],
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

/**
 * The JSON body of each request. `hot`: the first tier until TIER_CAPACITY requests were sent
 * there, then the next one (a long run at a high rate outlasts one tier's seats). `spread`:
 * one of the first SPREAD_TIERS tiers at random.
 */
function holdBody(app: BenchApp, shape: Shape): () => string {
  const body = (tierId: string) => JSON.stringify({ eventId: app.eventId, items: [{ tierId, quantity: 1 }] })
  if (shape === 'spread') return () => body(app.tierIds[Math.floor(Math.random() * SPREAD_TIERS)]!)
  let sent = 0
  return () => body(app.tierIds[Math.min(app.tierIds.length - 1, Math.floor(sent++ / TIER_CAPACITY))]!)
}

/** Runs a baseline role in a child process (a fresh V8, one core's worth of work). */
async function inChild<T>(role: string, args: Record<string, unknown>): Promise<T> {
  const child = fork(fileURLToPath(import.meta.url), ['--role', role], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  child.send(args)
  const [message] = (await once(child, 'message')) as [T]
  await once(child, 'exit')
  return message
}

/** One measured run: the service on one backend, with some nodes, one shape, one token algorithm. */
interface RunPlan {
  backend: Backend
  nodes: number
  shape: Shape
  alg: Alg
}

const runName = (run: RunPlan) => `${BACKEND_NAMES[run.backend]}, ${run.nodes} node${run.nodes === 1 ? '' : 's'}, ${SHAPE_NAMES[run.shape]}, ${run.alg}`
const runDir = (run: RunPlan) => `${run.backend}-${run.nodes}n-${run.shape}-${run.alg}`

interface EndToEnd extends RunPlan {
  load: LoadResult
  /** The service's processes, every node. */
  usage: ProcessUsage
  /** The PostgreSQL server's processes (PostgreSQL runs). */
  databaseUsage?: ProcessUsage
  /** What the holds asked of PostgreSQL (`--pg-statements`). */
  statements?: StatementCount
  /** CPU time of the load generator (this process) per request. */
  generatorCpuMsPerRequest: number
  warmupPerSecond: number
  tokensPreMinted: number
}

async function measureService(
  plan: RunPlan,
  deployment: Deployment,
  app: BenchApp,
  opts: Options,
  database?: { server: ThrowawayPostgres; url: string },
): Promise<EndToEnd> {
  const pool = new TokenPool(app, deployment.serviceDid)
  const body = holdBody(app, plan.shape)
  const base = { urls: deployment.nodes.map((node) => node.url), path: `/xrpc/${HOLD}`, concurrency: opts.concurrency, nextBody: body }
  pool.fill(Math.ceil(2000 * opts.warmupS) + opts.concurrency)
  const warmup = opts.warmupS > 0 ? await runLoad({ ...base, durationMs: opts.warmupS * 1000, nextToken: pool.take }) : undefined
  if (warmup && warmup.errors > 0) throw new Error(`warm-up requests failed: ${warmup.errorSamples.join('\n')}\n${deployment.output()}`)
  const expected = warmup ? warmup.perSecond : 3000
  // Twice the warm-up rate: minting during the run would take CPU from the service being measured.
  const tokensPreMinted = Math.ceil(expected * opts.durationS * 2) + 1000
  process.stderr.write(`  minting ${tokensPreMinted} ${app.alg} tokens\n`)
  pool.fill(tokensPreMinted)
  if (database && opts.pgStatements) await startCountingStatements(database.url)
  const usage = sampleUsage(deployment.nodes.map((node) => node.process.pid!))
  const databaseUsage = database ? sampleUsage(database.server.pid) : undefined
  const generatorCpu = ownCpuSeconds()
  process.stderr.write(`  ${runName(plan)}: ${opts.durationS} s of createTicketHold at ${opts.concurrency} in flight\n`)
  const load = await runLoad({ ...base, durationMs: opts.durationS * 1000, nextToken: pool.take, mintedDuringRun: () => pool.mintedDuringRun })
  const generatorCpuMsPerRequest = ((ownCpuSeconds() - generatorCpu) * 1000) / (load.ok + load.errors)
  const statements = database && opts.pgStatements ? await countStatements(database.url, load.ok + load.errors) : undefined
  return {
    ...plan,
    load,
    usage: usage.stop(),
    databaseUsage: databaseUsage?.stop(),
    statements,
    generatorCpuMsPerRequest,
    warmupPerSecond: warmup?.perSecond ?? NaN,
    tokensPreMinted,
  }
}

async function measureBareHttp(opts: Options, processes: number, tokens: () => string, body: () => string) {
  const port = await freePort()
  const child = fork(fileURLToPath(import.meta.url), ['--role', 'bare-http', String(port), String(processes)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  try {
    await once(child, 'message')
    const base = { urls: [`http://127.0.0.1:${port}`], path: `/xrpc/${HOLD}`, concurrency: opts.concurrency, nextBody: body, nextToken: tokens }
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

const num = (value: number | undefined, digits = 0) =>
  value === undefined || !Number.isFinite(value) ? '' : value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })

function markdownTable(header: string[], lines: string[][]): string {
  const out = [`| ${header.join(' | ')} |`, `|${header.map((_, index) => (index === 0 ? '---' : '---:')).join('|')}|`]
  for (const line of lines) out.push(`| ${line.join(' | ')} |`)
  return out.join('\n')
}

function formatTable(rows: Row[]): string {
  const header = ['measurement', 'per second', 'p50 ms', 'p99 ms', 'CPU ms each', 'peak RSS MB', '× stock verifyJwt', '% of node:http', '% of raw SQLite']
  return markdownTable(header, rows.map((row) => [
    row.what,
    num(row.perSecond),
    num(row.p50Ms, 2),
    num(row.p99Ms, 2),
    num(row.cpuMsPerOp, 3),
    num(row.peakRssMb),
    row.vsStock === undefined ? '' : `${num(row.vsStock, 1)}×`,
    row.vsHttp === undefined ? '' : `${num(row.vsHttp * 100)}%`,
    row.vsSqlite === undefined ? '' : `${num(row.vsSqlite * 100)}%`,
  ]))
}

/** A share in whole percent, with a decimal below 10% (PostgreSQL's runs here are 1% or 2% of node:http). */
function percentOf(value: number, whole: number): string {
  const percent = (value / whole) * 100
  return `${num(percent, percent < 10 ? 1 : 0)}%`
}

/** The runs side by side: what the comparison between the backends, node counts and shapes reads from. */
function formatComparison(runs: EndToEnd[], bareHttpPerSecond: number, processes: number): string {
  const header = ['createTicketHold', 'nodes × workers', 'tiers', 'holds/s', 'p50 ms', 'p99 ms', '% of node:http', 'service CPU ms each', 'database CPU ms each', 'errors']
  return markdownTable(header, runs.map((run) => [
    `${BACKEND_NAMES[run.backend]}, ${run.alg}`,
    `${run.nodes} × ${processes}`,
    String(run.shape === 'hot' ? 1 : SPREAD_TIERS),
    num(run.load.perSecond),
    num(run.load.p50Ms, 2),
    num(run.load.p99Ms, 2),
    percentOf(run.load.perSecond, bareHttpPerSecond),
    num((run.usage.cpuSeconds * 1000) / run.load.ok, 3),
    run.databaseUsage ? num((run.databaseUsage.cpuSeconds * 1000) / run.load.ok, 3) : '',
    String(run.load.errors),
  ]))
}

/** The runs in the order they are measured: SQLite first (as `npm run bench` always did), then PostgreSQL by node count. */
function planRuns(opts: Options): RunPlan[] {
  const plans: RunPlan[] = []
  for (const backend of opts.backends) {
    for (const nodes of backend === 'sqlite' ? [1] : opts.nodeCounts) {
      for (const shape of opts.shapes) for (const alg of opts.algs) plans.push({ backend, nodes, shape, alg })
    }
  }
  return plans
}

async function main(): Promise<void> {
  const opts = readOptions()
  const plans = planRuns(opts)
  const postgresBinaries = opts.backends.includes('postgres') ? findPostgresServer() : undefined
  if (postgresBinaries && 'error' in postgresBinaries) {
    process.stderr.write(`--backend postgres needs a PostgreSQL server, and the benchmark installs nothing: ${postgresBinaries.error}\n`)
    process.exit(1)
  }
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const dir = mkdtempSync(join(tmpdir(), 'atm-bench-'))
  const adminPassword = randomBytes(18).toString('base64url')
  const processes = opts.workers ?? availableParallelism()
  const plc = await startPlc()
  let postgres: ThrowawayPostgres | undefined
  let deployment: Deployment | undefined
  const stopAll = async () => {
    await deployment?.stop().catch(() => undefined)
    await postgres?.stop().catch(() => undefined)
    await plc.close().catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)))
  try {
    const poolSize = opts.pgPoolSize ?? POSTGRES_DEFAULTS.poolSize
    if (postgresBinaries) {
      const mostNodes = Math.max(...opts.nodeCounts)
      // Every node's primary and workers keep a pool each; and room for this process's own sessions.
      const connections = mostNodes * (processes + 1) * poolSize + 20
      const settings = {
        ...PG_SETTINGS,
        max_connections: Math.max(Number(PG_SETTINGS.max_connections), connections),
        ...(opts.pgStatements ? STATEMENT_COUNTING_SETTINGS : {}),
        ...opts.pgSettings,
      }
      process.stderr.write(`starting a throwaway PostgreSQL server (${postgresBinaries.bin}) with ${Object.entries(settings).map(([name, value]) => `${name}=${value}`).join(', ')}\n`)
      postgres = await startThrowawayPostgres({ bin: postgresBinaries.bin, name: "the benchmark's PostgreSQL server", settings })
    }
    const profileDir = opts.profile ? resolve(opts.profile) : undefined
    if (profileDir) mkdirSync(profileDir, { recursive: true })
    const profileOf = (plan: RunPlan): string | undefined => {
      if (!profileDir) return undefined
      mkdirSync(join(profileDir, runDir(plan)), { recursive: true })
      return join(profileDir, runDir(plan))
    }
    // Capacity for the warm-up and the run at up to twice the bare node:http rate of this machine.
    const hotTiers = Math.max(1, Math.ceil((2 * 12_000 * (opts.durationS + opts.warmupS)) / TIER_CAPACITY))
    const tiersFor = (shape: Shape) => (shape === 'hot' ? hotTiers : SPREAD_TIERS)
    let databaseUrl: string | undefined
    /** A new service on a new database: a service slows as its database fills (see the README), and a run would otherwise start where the last one left it. */
    const deploy = async (plan: RunPlan): Promise<Deployment> => {
      const runDirectory = join(dir, runDir(plan))
      mkdirSync(runDirectory, { recursive: true })
      databaseUrl = plan.backend === 'postgres' ? await createDatabase(postgres!.adminUrl, 'bench') : undefined
      const where = plan.backend === 'sqlite' ? 'a temporary SQLite file' : `a new database of the PostgreSQL server, ${plan.nodes} node${plan.nodes === 1 ? '' : 's'}`
      process.stderr.write(`starting the service (${opts.workers ?? 'default'} workers) on ${where}, for ${runName(plan)}\n`)
      return startDeployment({
        backend: plan.backend,
        nodes: plan.nodes,
        root,
        dir: runDirectory,
        plcUrl: plc.url,
        adminPassword,
        workers: opts.workers,
        profileDir: profileOf(plan),
        databaseUrl,
        poolSize: opts.pgPoolSize,
      })
    }
    const dropDatabase = async () => {
      if (!databaseUrl) return
      const name = new URL(databaseUrl).pathname.slice(1)
      const admin = new pg.Client({ connectionString: postgres!.adminUrl })
      await admin.connect()
      await admin.query(`DROP DATABASE IF EXISTS "${name}"`).finally(() => admin.end())
      databaseUrl = undefined
    }

    // The first run's service also serves the baselines' setup: the apps' identities, and the
    // database the raw SQLite loop copies.
    const first = plans[0]!
    deployment = await deploy(first)
    const apps = await prepareApps(deployment.nodes[0]!, plc.url, adminPassword, [...new Set(['ES256K' as Alg, ...opts.algs])], tiersFor(first.shape))
    const k256App = apps.find((app) => app.alg === 'ES256K')!

    process.stderr.write(`baseline: bare node:http (${processes} processes), ${opts.durationS} s at ${opts.concurrency} in flight\n`)
    // The bare server checks nothing: a thousand tokens, reused, give its requests the same size.
    const httpTokens = mintTokens(k256App.identity.key, k256App.identity.did, deployment.serviceDid, HOLD, 1000)
    let httpIndex = 0
    const nextHttpToken = () => httpTokens[httpIndex++ % httpTokens.length]!
    const bare = await measureBareHttp(opts, processes, nextHttpToken, holdBody(k256App, 'hot'))

    let sqlite: LoopResult | undefined
    if (first.backend === 'sqlite') {
      process.stderr.write(`baseline: raw better-sqlite3 hold transaction, ${opts.microS} s\n`)
      sqlite = await inChild<LoopResult>('sqlite', {
        source: join(dir, runDir(first), 'atm.sqlite'),
        copy: join(dir, 'baseline.sqlite'),
        tierId: k256App.tierIds[0],
        durationMs: opts.microS * 1000,
      })
    }

    const stock = new Map<Alg, LoopResult>()
    const ours = new Map<Alg, LoopResult>()
    const signatureOnly = new Map<Alg, LoopResult>()
    for (const app of apps.filter((app) => opts.algs.includes(app.alg))) {
      const aud = deployment.serviceDid
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

    const endToEnd: EndToEnd[] = []
    for (const [index, plan] of plans.entries()) {
      const running = index === 0 ? deployment! : (deployment = await deploy(plan))
      const [app] = index === 0 ? apps.filter((candidate) => candidate.alg === plan.alg) : await prepareApps(running.nodes[0]!, plc.url, adminPassword, [plan.alg], tiersFor(plan.shape))
      const database = plan.backend === 'postgres' ? { server: postgres!, url: databaseUrl! } : undefined
      endToEnd.push(await measureService(plan, running, app!, opts, database))
      const primaries = running.nodes.map((node) => node.process.pid!)
      await running.stop()
      deployment = undefined
      await dropDatabase()
      if (profileDir) {
        process.stderr.write(`${runName(plan)} run:\n${formatSummary(summarizeProfiles(profileOf(plan)!, root, primaries))}\n\n`)
      }
    }

    const rows: Row[] = [
      { what: `bare node:http JSON POST (${processes} processes, ${opts.concurrency} in flight)`, perSecond: bare.load.perSecond, p50Ms: bare.load.p50Ms, p99Ms: bare.load.p99Ms, cpuMsPerOp: (bare.usage.cpuSeconds * 1000) / bare.load.ok, peakRssMb: bare.usage.peakBytes / MB, vsHttp: 1 },
    ]
    if (sqlite) {
      rows.push({ what: 'raw better-sqlite3 hold transaction (1 process)', perSecond: sqlite.perSecond, p50Ms: sqlite.p50Ms, p99Ms: sqlite.p99Ms, cpuMsPerOp: sqlite.cpuMsPerOp, peakRssMb: (sqlite.peakRssBytes ?? NaN) / MB, vsSqlite: 1 })
    }
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
      const nodes = run.nodes === 1 ? `${processes} workers` : `${run.nodes} nodes × ${processes} workers`
      rows.push({
        what: `**createTicketHold, ${run.alg}** (${BACKEND_NAMES[run.backend]}, ${nodes}, ${SHAPE_NAMES[run.shape]}, ${opts.concurrency} in flight)`,
        perSecond: run.load.perSecond,
        p50Ms: run.load.p50Ms,
        p99Ms: run.load.p99Ms,
        // The database server's CPU counts too: on SQLite that work is done inside the workers.
        cpuMsPerOp: ((run.usage.cpuSeconds + (run.databaseUsage?.cpuSeconds ?? 0)) * 1000) / run.load.ok,
        peakRssMb: run.usage.peakBytes / MB,
        vsStock: run.load.perSecond / stock.get(run.alg)!.perSecond,
        vsHttp: run.load.perSecond / bare.load.perSecond,
        vsSqlite: sqlite ? run.load.perSecond / sqlite.perSecond : undefined,
      })
    }

    const cpu = cpus()[0]?.model ?? 'unknown CPU'
    const out: string[] = []
    out.push(`ATM Tickets benchmark — ${new Date().toISOString()}, Node ${process.version}, ${availableParallelism()} CPUs (${cpu})`)
    out.push(`signature checks: ES256K by ${createFastSignatureCheck().secp256k1Backend}, ES256 by OpenSSL; ${opts.durationS} s per load run after ${opts.warmupS} s of warm-up, ${opts.microS} s per single-core loop`)
    if (postgres) {
      out.push(`PostgreSQL: a throwaway server on this machine (${postgresBinaries && 'bin' in postgresBinaries ? postgresBinaries.bin : ''}), ${Object.keys(opts.pgSettings).length ? `with ${Object.entries(opts.pgSettings).map(([name, value]) => `${name}=${value}`).join(', ')}` : "its default settings (durable commits)"}; pool of ${poolSize} connections per service process; nodes take requests in turn`)
    }
    out.push('')
    out.push(formatTable(rows))
    out.push('')
    if (plans.some((plan) => plan.backend !== 'sqlite' || plan.shape !== 'hot')) {
      out.push('createTicketHold side by side (service CPU: every node; database CPU: the PostgreSQL server):')
      out.push('')
      out.push(formatComparison(endToEnd, bare.load.perSecond, processes))
      out.push('')
    }
    for (const run of endToEnd) {
      const l = run.load
      out.push(
        `${runName(run)}: ${l.ok.toLocaleString('en-US')} holds in ${l.seconds.toFixed(1)} s, ${l.errors} errors; service RSS ${(run.usage.startBytes / MB).toFixed(0)} MB at start, ${(run.usage.endBytes / MB).toFixed(0)} MB at end, ${(run.usage.peakBytes / MB).toFixed(0)} MB peak; load generator ${run.generatorCpuMsPerRequest.toFixed(3)} CPU ms per request` +
          (run.databaseUsage ? `; PostgreSQL server ${((run.databaseUsage.cpuSeconds * 1000) / l.ok).toFixed(3)} CPU ms per hold` : '') +
          (l.tokensMintedDuringRun ? `; ${l.tokensMintedDuringRun} tokens minted during the run (pre-minted ran out)` : ''),
      )
      for (const sample of l.errorSamples) out.push(`  error: ${sample}`)
      if (run.statements) out.push(formatStatements(run.statements))
    }
    out.push('')
    // The targets are the SQLite service's, on one tier as `npm run bench` has always measured it.
    const targetRun = (alg: Alg) => endToEnd.find((run) => run.backend === 'sqlite' && run.shape === 'hot' && run.alg === alg)
    const k256 = targetRun('ES256K')
    const p256 = targetRun('ES256')
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
    if (targets.length > 0) {
      out.push(postgres ? 'targets (of the SQLite runs on one tier):' : 'targets:')
      for (const target of targets) {
        const met = target.unit === 'ms' ? target.value < target.goal : target.value >= target.goal
        const shown = target.unit === '%' ? `${(target.value * 100).toFixed(0)}%` : target.unit === '×' ? `${target.value.toFixed(1)}×` : `${target.value.toFixed(1)} ms`
        out.push(`  ${met ? 'met   ' : 'MISSED'} ${target.name}: ${shown}`)
      }
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
        /** The SQLite runs on one tier, by algorithm: what `npm run bench` has always measured. */
        createTicketHold: Object.fromEntries(endToEnd.filter((run) => run.backend === 'sqlite' && run.shape === 'hot').map((run) => [run.alg, run])),
        runs: endToEnd.map((run) => ({ ...run, name: runName(run), percentOfBareHttp: (run.load.perSecond / bare.load.perSecond) * 100 })),
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
