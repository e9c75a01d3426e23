// A throwaway PostgreSQL server, for the tests (test/helpers/postgres.ts) and the benchmark
// (`npm run bench -- --backend postgres`): Debian's server binaries, a new cluster in a
// temporary directory, a free loopback port, a random superuser password; stopping it removes
// everything. Nothing is installed: when the binaries are missing, the error says how to get them.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { freePort } from './port.js'

export const POSTGRES_INSTALL_HINT = 'run scripts/install-postgres.sh (Debian: apt-get install postgresql)'
/** The oldest server the service is written for. */
const MIN_MAJOR = 14
/** How long the server may take to accept connections after it was spawned. */
const READY_DEADLINE_MS = 30_000
/** How long a fast shutdown may take before the server is killed. */
const STOP_DEADLINE_MS = 10_000

/** The newest Debian PostgreSQL server's bin directory, or why there is none. */
export function findPostgresServer(): { bin: string; major: number } | { error: string } {
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
    : []
  for (const version of versions) {
    const bin = join(root, version, 'bin')
    if (['initdb', 'postgres', 'pg_ctl'].every((name) => existsSync(join(bin, name)))) {
      if (Number(version) < MIN_MAJOR) return { error: `PostgreSQL ${version} at ${bin} is older than ${MIN_MAJOR}: ${POSTGRES_INSTALL_HINT}` }
      return { bin, major: Number(version) }
    }
  }
  return { error: `no PostgreSQL server binaries under ${root}/<version>/bin: ${POSTGRES_INSTALL_HINT}` }
}

/**
 * The server refuses to run as root: as root, every PostgreSQL command runs as the `postgres`
 * user the Debian package creates (setpriv execs in place, so the child's pid is the server's).
 */
function asServerUser(): { wrap: (cmd: string[]) => string[]; uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return { wrap: (cmd) => cmd }
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
  return {
    uid,
    gid,
    wrap: (cmd) => ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', ...cmd],
  }
}

async function waitUntilReady(name: string, url: string, server: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + READY_DEADLINE_MS
  for (;;) {
    if (server.exitCode !== null || server.signalCode !== null) {
      throw new Error(`${name} exited while starting:\n${log()}`)
    }
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 })
    try {
      await client.connect()
      await client.query('SELECT 1')
      return
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${name} did not accept connections within ${READY_DEADLINE_MS} ms: ${(err as Error).message}\n${log()}`)
      await new Promise((r) => setTimeout(r, 100))
    } finally {
      await client.end().catch(() => {})
    }
  }
}

export interface ThrowawayPostgres {
  /** The superuser's `postgres://` URL, to the `postgres` database, over loopback TCP with a password. */
  adminUrl: string
  /** The postmaster's pid: every session's process is its child, so its tree is all the server's work. */
  pid: number
  /** The last of what the server printed (for error reports). */
  output(): string
  /** Stops the server (fast shutdown) and removes its directory. */
  stop(): Promise<void>
}

/**
 * initdb into a temporary directory and start `postgres` on a free loopback port, with
 * `settings` given as `-c name=value`. `name` says whose server it is in error messages.
 */
export async function startThrowawayPostgres(opts: {
  bin: string
  name: string
  settings: Record<string, string | number>
}): Promise<ThrowawayPostgres> {
  const user = asServerUser()
  const dir = mkdtempSync(join(tmpdir(), 'atm-pg-'))
  const data = join(dir, 'data')
  const socketDir = join(dir, 'socket')
  mkdirSync(socketDir)
  const password = randomBytes(18).toString('base64url')
  const passwordFile = join(dir, 'superuser-password')
  writeFileSync(passwordFile, password + '\n', { mode: 0o600 })
  if (user.uid !== undefined) for (const path of [dir, socketDir, passwordFile]) chownSync(path, user.uid, user.gid!)

  let server: ChildProcess | undefined
  let output = ''
  // If this process ends without stopping it (an uncaught error), the server must not outlive it.
  const onExit = (): void => {
    server?.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', onExit)
  const stop = async (): Promise<void> => {
    if (server && server.exitCode === null && server.signalCode === null) {
      const exited = new Promise((r) => server!.once('exit', r))
      server.kill('SIGINT') // fast shutdown: ends sessions, no checkpoint wait for clients
      const timer = setTimeout(() => server!.kill('SIGKILL'), STOP_DEADLINE_MS)
      await exited
      clearTimeout(timer)
    }
    rmSync(dir, { recursive: true, force: true })
    process.removeListener('exit', onExit)
  }

  try {
    const [initdb, ...initArgs] = user.wrap([
      join(opts.bin, 'initdb'),
      '-D', data,
      '-U', 'postgres',
      `--pwfile=${passwordFile}`,
      // Passwords over TCP, as a node connects; the unix socket stays open.
      '--auth-host=scram-sha-256',
      '--auth-local=trust',
      '--encoding=UTF8',
      '--no-sync',
    ])
    try {
      execFileSync(initdb!, initArgs, { stdio: 'pipe' })
    } catch (err) {
      throw new Error(`initdb failed for ${opts.name}: ${String((err as { stderr?: Buffer }).stderr ?? err)}`)
    }
    const port = await freePort()
    const [postgres, ...serverArgs] = user.wrap([
      join(opts.bin, 'postgres'),
      '-D', data,
      '-p', String(port),
      '-k', socketDir,
      '-c', 'listen_addresses=127.0.0.1',
      ...Object.entries(opts.settings).flatMap(([name, value]) => ['-c', `${name}=${value}`]),
    ])
    server = spawn(postgres!, serverArgs, { stdio: ['ignore', 'pipe', 'pipe'] })
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-8000)
    }
    server.stdout!.on('data', keep)
    server.stderr!.on('data', keep)
    const adminUrl = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`
    await waitUntilReady(opts.name, adminUrl, server, () => output.slice(-4000))
    return { adminUrl, pid: server.pid!, output: () => output, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

/** A new empty database on the server `adminUrl` names; answers its URL (same user and password). */
export async function createDatabase(adminUrl: string, prefix: string): Promise<string> {
  const url = new URL(adminUrl)
  const name = `${prefix}_${randomBytes(6).toString('hex')}`.toLowerCase().replace(/[^a-z0-9_]/g, '_')
  const client = new pg.Client({ connectionString: url.href })
  await client.connect()
  try {
    await client.query(`CREATE DATABASE "${name}"`)
  } finally {
    await client.end()
  }
  url.pathname = `/${name}`
  return url.href
}
