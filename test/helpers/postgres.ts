// A throwaway PostgreSQL server for the tests: started once per run by vitest's globalSetup
// (the default export), with a fresh empty database per test file (`createTestDatabase`).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { inject } from 'vitest'
import type { TestProject } from 'vitest/node'
import { freePort } from './port.js'

declare module 'vitest' {
  export interface ProvidedContext {
    /** The superuser's `postgres://` URL of the run's server; empty when it could not start. */
    postgresAdminUrl: string
    /** Why the server could not start; empty when it did. */
    postgresStartError: string
  }
}

const INSTALL_HINT = 'run scripts/install-postgres.sh (Debian: apt-get install postgresql)'
/** How long the server may take to accept connections after it was spawned. */
const READY_DEADLINE_MS = 30_000

/** The newest Debian PostgreSQL server's bin directory, or why there is none. */
function serverBinaries(): { bin: string } | { error: string } {
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
    : []
  for (const version of versions) {
    const bin = join(root, version, 'bin')
    if (['initdb', 'postgres', 'pg_ctl'].every((name) => existsSync(join(bin, name)))) {
      if (Number(version) < 14) return { error: `PostgreSQL ${version} at ${bin} is older than 14: ${INSTALL_HINT}` }
      return { bin }
    }
  }
  return { error: `no PostgreSQL server binaries under ${root}/<version>/bin: ${INSTALL_HINT}` }
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

async function waitUntilReady(url: string, server: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + READY_DEADLINE_MS
  for (;;) {
    if (server.exitCode !== null || server.signalCode !== null) {
      throw new Error(`the test PostgreSQL server exited while starting:\n${log()}`)
    }
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 })
    try {
      await client.connect()
      await client.query('SELECT 1')
      return
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`the test PostgreSQL server did not accept connections within ${READY_DEADLINE_MS} ms: ${(err as Error).message}\n${log()}`)
      await new Promise((r) => setTimeout(r, 100))
    } finally {
      await client.end().catch(() => {})
    }
  }
}

/**
 * vitest globalSetup: initdb into a temporary directory, start the server on a free loopback
 * port, provide its superuser URL; the returned teardown stops it and removes the directory.
 * A machine without the binaries still runs the other tests: the PostgreSQL tests then fail
 * in `createTestDatabase` with the reason.
 */
export default async function startTestPostgres(project: TestProject): Promise<() => Promise<void>> {
  const found = serverBinaries()
  if ('error' in found) {
    project.provide('postgresAdminUrl', '')
    project.provide('postgresStartError', found.error)
    return async () => {}
  }
  const started = Date.now()
  const user = asServerUser()
  const dir = mkdtempSync(join(tmpdir(), 'atm-test-pg-'))
  const data = join(dir, 'data')
  const socketDir = join(dir, 'socket')
  mkdirSync(socketDir)
  const password = randomBytes(18).toString('base64url')
  const passwordFile = join(dir, 'superuser-password')
  writeFileSync(passwordFile, password + '\n', { mode: 0o600 })
  if (user.uid !== undefined) for (const path of [dir, socketDir, passwordFile]) chownSync(path, user.uid, user.gid!)

  let server: ChildProcess | undefined
  const stop = async (): Promise<void> => {
    if (server && server.exitCode === null && server.signalCode === null) {
      const exited = new Promise((r) => server!.once('exit', r))
      server.kill('SIGINT') // fast shutdown: ends sessions, no checkpoint wait for clients
      const timer = setTimeout(() => server!.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }
    rmSync(dir, { recursive: true, force: true })
  }
  // If the run ends without teardown (an uncaught error in vitest itself), the server must not outlive it.
  const onExit = (): void => {
    server?.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', onExit)

  try {
    const [initdb, ...initArgs] = user.wrap([
      join(found.bin, 'initdb'),
      '-D', data,
      '-U', 'postgres',
      `--pwfile=${passwordFile}`,
      // Passwords over TCP, so a test can see a wrong one refused; the unix socket stays open.
      '--auth-host=scram-sha-256',
      '--auth-local=trust',
      '--encoding=UTF8',
      '--no-sync',
    ])
    try {
      execFileSync(initdb!, initArgs, { stdio: 'pipe' })
    } catch (err) {
      throw new Error(`initdb failed: ${String((err as { stderr?: Buffer }).stderr ?? err)}`)
    }
    const port = await freePort()
    const [postgres, ...serverArgs] = user.wrap([
      join(found.bin, 'postgres'),
      '-D', data,
      '-p', String(port),
      '-k', socketDir,
      '-c', 'listen_addresses=127.0.0.1',
      // Throwaway data: durability is not what these tests are about.
      '-c', 'fsync=off',
      '-c', 'synchronous_commit=off',
      '-c', 'full_page_writes=off',
      '-c', 'max_connections=200',
    ])
    let output = ''
    server = spawn(postgres!, serverArgs, { stdio: ['ignore', 'pipe', 'pipe'] })
    server.stdout!.on('data', (b: Buffer) => (output += b.toString()))
    server.stderr!.on('data', (b: Buffer) => (output += b.toString()))
    const adminUrl = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`
    await waitUntilReady(adminUrl, server, () => output.slice(-4000))
    console.log(`test PostgreSQL started in ${Date.now() - started} ms on 127.0.0.1:${port}`)
    project.provide('postgresAdminUrl', adminUrl)
    project.provide('postgresStartError', '')
  } catch (err) {
    await stop()
    process.removeListener('exit', onExit)
    throw err
  }
  return async () => {
    await stop()
    process.removeListener('exit', onExit)
  }
}

/** The run's server superuser URL; throws why there is none. */
export function postgresAdminUrl(): string {
  const error = inject('postgresStartError')
  if (error) throw new Error(`the PostgreSQL tests have no server: ${error}`)
  const url = inject('postgresAdminUrl')
  if (!url) throw new Error('the PostgreSQL tests have no server: vitest.config.ts must list test/helpers/postgres.ts in globalSetup')
  return url
}

/** A new empty database on the run's server, as a superuser `postgres://` URL. */
export async function createTestDatabase(prefix = 'test'): Promise<string> {
  const admin = new URL(postgresAdminUrl())
  const name = `${prefix}_${randomBytes(6).toString('hex')}`.toLowerCase().replace(/[^a-z0-9_]/g, '_')
  const client = new pg.Client({ connectionString: admin.href })
  await client.connect()
  try {
    await client.query(`CREATE DATABASE "${name}"`)
  } finally {
    await client.end()
  }
  admin.pathname = `/${name}`
  return admin.href
}

/** Runs `text` as the superuser on the run's server's default database (roles are server-wide). */
export async function adminQuery(text: string): Promise<void> {
  const client = new pg.Client({ connectionString: postgresAdminUrl() })
  await client.connect()
  try {
    await client.query(text)
  } finally {
    await client.end()
  }
}
