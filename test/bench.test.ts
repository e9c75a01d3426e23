// `npm run bench` keeps working: a short run of the real benchmark answers every request and
// writes every figure. Its figures are not judged here: nothing in the suite asserts a timing.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { REPO_ROOT } from './helpers/index.js'

it('a one-second benchmark run measures both algorithms and every baseline, without errors', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'atm-bench-test-'))
  try {
    const json = join(dir, 'bench.json')
    const child = spawn(
      process.execPath,
      [join(REPO_ROOT, 'dist', 'scripts', 'bench.js'), '--duration', '1', '--warmup', '0.5', '--micro-duration', '0.5', '--concurrency', '8', '--json', json],
      { cwd: REPO_ROOT },
    )
    let output = ''
    child.stdout.on('data', (chunk) => (output += chunk))
    child.stderr.on('data', (chunk) => (output += chunk))
    const [code] = (await once(child, 'exit')) as [number | null]
    expect(code, output).toBe(0)
    const figures = JSON.parse(readFileSync(json, 'utf8'))
    for (const alg of ['ES256K', 'ES256']) {
      const run = figures.createTicketHold[alg]
      expect(run.load.ok, output).toBeGreaterThan(0)
      expect(run.load.errors, JSON.stringify(run.load.errorSamples)).toBe(0)
      expect(figures.baselines.stockVerifyJwt[alg].ops).toBeGreaterThan(0)
      expect(figures.baselines.serviceVerifier[alg].ops).toBeGreaterThan(0)
    }
    expect(figures.baselines.bareHttp.ok).toBeGreaterThan(0)
    expect(figures.baselines.bareHttp.errors).toBe(0)
    expect(figures.baselines.rawSqliteHold.ops).toBeGreaterThan(0)
    expect(output).toMatch(/\| \*\*createTicketHold, ES256K\*\*/)
    expect(output).toMatch(/targets:/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}, 120_000)
