// The real service, started the way users start it: `node dist/src/bin.js`
// (built by `npm run build`, which `npm test` runs first), configured by ATM_*
// environment variables, one temp directory per service.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from './port.js'
import { createTestDatabase } from './postgres.js'

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const BIN = join(REPO_ROOT, 'dist', 'src', 'bin.js')

export interface StartServiceOptions {
  /** ATM_PLC_URL, normally startPlc().url */
  plcUrl: string
  /** Default: a free port picked before spawning. */
  port?: number
  /** ATM_ADMIN_PASSWORD; default random. null: leave it unset (the service makes one up). */
  adminPassword?: string | null
  /** ATM_LOG_LEVEL, default 'info'. */
  logLevel?: string
  /** ATM_HOLD_TTL_SECONDS */
  holdTtlSeconds?: number
  /** ATM_DEV_MODE, default true (local PLC over http, did:web:localhost%3APORT). */
  devMode?: boolean
  /** ATM_WORKERS; default unset (the service's own default). */
  workers?: number
  /** ATM_DB; default <tempdir>/atm.sqlite. Naming a file also keeps the service on SQLite. */
  db?: string
  /**
   * ATM_DATABASE_URL. Default: with ATM_TEST_BACKEND=postgres, a new empty database on the run's
   * PostgreSQL server (unless `db` names a SQLite file); otherwise none, and the SQLite file.
   */
  databaseUrl?: string
  /** More variables; a value of undefined removes one. */
  env?: Record<string, string | undefined>
  /** Script to run instead of dist/src/bin.js (relative to the repo root or absolute). */
  entry?: string
  /** How long to wait for /xrpc/_health (default 20 s). */
  readyTimeoutMs?: number
}

export interface ServiceHandle {
  url: string
  port: number
  /** did:web:localhost%3A<port>: the `aud` of every token. */
  serviceDid: string
  dbPath: string
  /** ATM_DATABASE_URL when the service runs on PostgreSQL. */
  databaseUrl: string | undefined
  /** The temp directory (database, generated signing key). */
  dir: string
  /** undefined when started with adminPassword: null */
  adminPassword: string | undefined
  /** The primary process's pid (also its process group id). */
  pid(): number | undefined
  running(): boolean
  /** All stdout + stderr so far, across restarts. */
  logs(): string
  /** The output lines that are JSON objects. */
  jsonLogs(): Array<Record<string, unknown>>
  /**
   * SIGTERM to the primary process (as `kill <pid>` would), wait for it to
   * exit, return its exit code (null if a signal ended it). If anything else in
   * its process group (workers) is still alive then, it is killed and
   * `orphansAfterStop()` says so.
   */
  stop(timeoutMs?: number): Promise<number | null>
  orphansAfterStop(): boolean
  /** SIGKILL to the whole process group (primary and workers): a crash. */
  kill9(): Promise<void>
  /** Start again on the same port, database and environment; waits for health. */
  restart(): Promise<void>
  /** Stop if running, delete the temp directory. */
  close(): Promise<void>
}

// Whatever happens to the test process, leave no service behind. One registry
// per process (vitest may load this module once per test file in one fork).
interface Registry {
  live: Set<ChildProcess>
  tempDirs: Set<string>
}
const REGISTRY = Symbol.for('atm-tickets.test.service-registry')
const g = globalThis as typeof globalThis & { [REGISTRY]?: Registry }
const registry: Registry = (g[REGISTRY] ??= (() => {
  const r: Registry = { live: new Set(), tempDirs: new Set() }
  process.once('exit', () => {
    for (const child of r.live) killGroup(child, 'SIGKILL')
    for (const dir of r.tempDirs) rmSync(dir, { recursive: true, force: true })
  })
  return r
})())
const { live, tempDirs } = registry

/** The suite runs against PostgreSQL (ATM_TEST_BACKEND=postgres) instead of SQLite files. */
export function onPostgres(): boolean {
  return process.env.ATM_TEST_BACKEND === 'postgres'
}

export async function startService(opts: StartServiceOptions): Promise<ServiceHandle> {
  const entry = opts.entry ?? 'dist/src/bin.js'
  if (!existsSync(resolvePath(REPO_ROOT, entry))) {
    throw new Error(`${resolvePath(REPO_ROOT, entry)} does not exist: run \`npm run build\` first (npm test does it)`)
  }
  const port = opts.port ?? (await freePort())
  const dir = mkdtempSync(join(tmpdir(), 'atm-test-'))
  tempDirs.add(dir)
  const dbPath = opts.db ?? join(dir, 'atm.sqlite')
  const databaseUrl = opts.databaseUrl ?? (onPostgres() && opts.db === undefined ? await createTestDatabase('svc') : undefined)
  const adminPassword =
    opts.adminPassword === null ? undefined : (opts.adminPassword ?? randomBytes(18).toString('base64url'))

  // Start from this process's environment minus any ATM_* the developer has set.
  const env: Record<string, string | undefined> = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('ATM_')),
  )
  Object.assign(env, {
    ATM_PORT: String(port),
    ATM_DB: dbPath,
    ATM_PLC_URL: opts.plcUrl,
    ATM_DEV_MODE: String(opts.devMode ?? true),
    ATM_ADMIN_PASSWORD: adminPassword,
    ATM_LOG_LEVEL: opts.logLevel ?? 'info',
    ATM_HOLD_TTL_SECONDS: opts.holdTtlSeconds?.toString(),
    ATM_WORKERS: opts.workers?.toString(),
    ATM_DATABASE_URL: databaseUrl,
    ...opts.env,
  })
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k]

  const url = `http://localhost:${port}`
  let output = ''
  let child: ChildProcess | undefined
  let exited: Promise<number | null> = Promise.resolve(null)
  let orphans = false

  // Healthy means one worker answers; a test that spreads requests over the workers needs them
  // all, so a start waits for every worker's 'listening' line too.
  const workers = env.ATM_WORKERS ? Number(env.ATM_WORKERS) : Math.min(availableParallelism(), 256)
  const spawnOnce = async (): Promise<void> => {
    const outputBefore = output.length
    const c = spawn(process.execPath, [entry], {
      cwd: REPO_ROOT,
      env: env as NodeJS.ProcessEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
      // Own process group, so kill9() can take the workers down with it.
      detached: true,
    })
    child = c
    live.add(c)
    c.stdout?.setEncoding('utf8').on('data', (d: string) => (output += d))
    c.stderr?.setEncoding('utf8').on('data', (d: string) => (output += d))
    exited = new Promise((resolve) => {
      c.once('exit', (code) => {
        live.delete(c)
        resolve(code)
      })
      c.once('error', (err) => {
        output += `\n[harness] spawn error: ${err.message}\n`
        live.delete(c)
        resolve(null)
      })
    })
    const listening = () => output.slice(outputBefore).split('"msg":"ATM Tickets listening"').length - 1
    await waitHealthy(url, exited, () => output, listening, workers, opts.readyTimeoutMs ?? 20_000).catch(async (err) => {
      killGroup(c, 'SIGKILL')
      await exited
      throw err
    })
  }

  const handle: ServiceHandle = {
    url,
    port,
    serviceDid: `did:web:localhost%3A${port}`,
    dbPath,
    databaseUrl,
    dir,
    adminPassword,
    pid: () => child?.pid,
    running: () => child !== undefined && child.exitCode === null && child.signalCode === null,
    logs: () => output,
    jsonLogs: () =>
      output.split('\n').flatMap((line) => {
        if (!line.startsWith('{')) return []
        try {
          return [JSON.parse(line) as Record<string, unknown>]
        } catch {
          return []
        }
      }),
    async stop(timeoutMs = 15_000) {
      const c = child
      if (!c || !handle.running()) return c?.exitCode ?? null
      c.kill('SIGTERM')
      const code = await Promise.race([exited, sleep(timeoutMs).then(() => 'timeout' as const)])
      if (code === 'timeout') {
        killGroup(c, 'SIGKILL')
        await exited
        throw new Error(`service did not exit within ${timeoutMs} ms of SIGTERM\n--- output ---\n${output}`)
      }
      // Give exiting workers a moment to be reaped before calling them orphans.
      for (let i = 0; i < 50 && groupAlive(c); i++) await sleep(20)
      orphans = groupAlive(c)
      if (orphans) killGroup(c, 'SIGKILL')
      return code
    },
    orphansAfterStop: () => orphans,
    async kill9() {
      const c = child
      if (!c) return
      killGroup(c, 'SIGKILL')
      await exited
      // Workers may take a moment to be reaped; wait until the group is gone.
      for (let i = 0; i < 50 && groupAlive(c); i++) await sleep(20)
    },
    async restart() {
      if (handle.running()) throw new Error('restart: the service is still running; stop() or kill9() first')
      output += '\n[harness] --- restart ---\n'
      await spawnOnce()
    },
    async close() {
      if (child && handle.running()) await handle.stop().catch(() => handle.kill9())
      if (child && groupAlive(child)) killGroup(child, 'SIGKILL')
      rmSync(dir, { recursive: true, force: true })
      tempDirs.delete(dir)
    },
  }

  try {
    await spawnOnce()
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    tempDirs.delete(dir)
    throw err
  }
  return handle
}

async function waitHealthy(
  url: string,
  exited: Promise<number | null>,
  output: () => string,
  listening: () => number,
  workers: number,
  timeoutMs: number,
): Promise<void> {
  let exitCode: number | null | undefined
  void exited.then((code) => (exitCode = code))
  const deadline = Date.now() + timeoutMs
  let lastError = ''
  while (Date.now() < deadline) {
    if (exitCode !== undefined) {
      throw new Error(`service exited (code ${exitCode}) before it was healthy\n--- output ---\n${output()}`)
    }
    try {
      const res = await fetch(`${url}/xrpc/_health`, { signal: AbortSignal.timeout(1000) })
      const text = await res.text()
      if (res.status === 200 && listening() >= workers) return
      lastError = res.status === 200 ? `${listening()} of ${workers} workers listening` : `${res.status} ${text}`
    } catch (err) {
      lastError = (err as Error).message
    }
    await sleep(50)
  }
  throw new Error(
    `service not healthy after ${timeoutMs} ms (last: ${lastError})\n--- output ---\n${output()}`,
  )
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    // already gone
  }
}

function groupAlive(child: ChildProcess): boolean {
  if (child.pid === undefined) return false
  try {
    process.kill(-child.pid, 0)
    return true
  } catch {
    return false
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export interface CommandResult {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * Runs `node dist/src/bin.js ...args` to its end, as an operator would, with none of this
 * process's ATM_* variables (only `env`), killed after `timeoutMs`.
 */
export async function runCommand(args: string[], env: Record<string, string>, timeoutMs: number): Promise<CommandResult> {
  const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('ATM_')))
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, env: { ...cleanEnv, ...env } })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (chunk) => (stdout += chunk))
  child.stderr!.on('data', (chunk) => (stderr += chunk))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  return { code, stdout, stderr }
}
