// The command line as an operator meets it: bad configuration and a taken port stop the
// service with a clear message and a non-zero exit code instead of a crash loop.
import { createServer } from 'node:http'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { freePort, runCommand } from './helpers/index.js'

const dir = mkdtempSync(join(tmpdir(), 'atm-cli-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** The service's command line with its database in this file's directory; stdout and stderr together. */
async function runBin(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const { code, stdout, stderr } = await runCommand([], { ATM_DB: join(dir, 'atm.sqlite'), ATM_ADMIN_PASSWORD: 'cli-test', ...env }, 30_000)
  return { code, output: stdout + stderr }
}

describe('command line', () => {
  it('an invalid variable stops it with exit code 2, naming the variable', async () => {
    const result = await runBin({ ATM_PORT: String(await freePort()), ATM_HOLD_TTL_SECONDS: 'soon' })
    expect(result.code).toBe(2)
    expect(result.output).toContain('ATM_HOLD_TTL_SECONDS')
  })

  it.each([1, 2])('an ATM_DATABASE_URL whose server is down stops it (ATM_WORKERS=%i) with exit code 1 and one line, without the password, and no SQLite file', async (workers) => {
    const sqliteFile = join(dir, `not-for-postgres-${workers}.sqlite`)
    const result = await runBin({
      ATM_PORT: String(await freePort()),
      ATM_WORKERS: String(workers),
      ATM_DB: sqliteFile,
      ATM_DATABASE_URL: `postgres://atm:cli-secret-pw@127.0.0.1:${await freePort()}/atm`,
    })
    expect(result.code).toBe(1)
    const lines = result.output.split('\n').filter((line) => line.trim() !== '')
    expect(lines, result.output).toHaveLength(1)
    expect(lines[0]).toMatch(/^atm-tickets: PostgreSQL at 127\.0\.0\.1:\d+ refused the connection .*ATM_DATABASE_URL/)
    expect(result.output).not.toContain('cli-secret-pw')
    expect(result.output).not.toMatch(/\bat .*\.js:\d+/)
    expect(existsSync(sqliteFile), 'a PostgreSQL URL is never answered by falling back to SQLite').toBe(false)
  })

  it('a malformed ATM_DATABASE_URL stops it with exit code 2, without echoing it', async () => {
    const result = await runBin({ ATM_PORT: String(await freePort()), ATM_DATABASE_URL: 'postgres://atm:cli-secret-pw@db:notaport/atm' })
    expect(result.code).toBe(2)
    expect(result.output).toContain('ATM_DATABASE_URL')
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
