// The command line as an operator meets it: bad configuration and a taken port stop the
// service with a clear message and a non-zero exit code instead of a crash loop.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BIN, REPO_ROOT, freePort } from './helpers/index.js'

const dir = mkdtempSync(join(tmpdir(), 'atm-cli-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

async function runBin(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('ATM_')))
  const child = spawn(process.execPath, [BIN], {
    cwd: REPO_ROOT,
    env: { ...cleanEnv, ATM_DB: join(dir, 'atm.sqlite'), ATM_ADMIN_PASSWORD: 'cli-test', ...env },
  })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  child.stderr.on('data', (chunk) => (output += chunk))
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  return { code, output }
}

describe('command line', () => {
  it('an invalid variable stops it with exit code 2, naming the variable', async () => {
    const result = await runBin({ ATM_PORT: String(await freePort()), ATM_HOLD_TTL_SECONDS: 'soon' })
    expect(result.code).toBe(2)
    expect(result.output).toContain('ATM_HOLD_TTL_SECONDS')
  })

  it('ATM_DATABASE_URL stops it with exit code 2: the service does not run on PostgreSQL yet, and says so without the password', async () => {
    const result = await runBin({ ATM_PORT: String(await freePort()), ATM_DATABASE_URL: 'postgres://atm:cli-secret-pw@127.0.0.1:1/atm' })
    expect(result.code).toBe(2)
    expect(result.output).toContain('ATM_DATABASE_URL is set, but the service does not run on PostgreSQL yet')
    expect(result.output).not.toContain('cli-secret-pw')
  })

  it.each([1, 2])('a port already in use stops it with exit code 1 (ATM_WORKERS=%i), not a restart loop', async (workers) => {
    const blocker = createServer()
    const port = await freePort()
    await new Promise<void>((resolve) => blocker.listen(port, resolve))
    try {
      const result = await runBin({ ATM_PORT: String(port), ATM_WORKERS: String(workers) })
      expect(result.code).toBe(1)
      expect(result.output).toMatch(/EADDRINUSE|failed to start/)
      expect(result.output).not.toContain('starting another')
    } finally {
      blocker.close()
    }
  })
})
