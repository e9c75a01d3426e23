// `npm run bench` keeps working: short runs of the real benchmark answer every request and
// write every figure, on SQLite and on its own throwaway PostgreSQL server. Their figures are
// not judged here: nothing in the suite asserts a timing.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { REPO_ROOT } from './helpers/index.js'

async function bench(args: string[]): Promise<{ code: number | null; output: string; stdout: string }> {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'dist', 'scripts', 'bench.js'), ...args], { cwd: REPO_ROOT })
  let output = ''
  let stdout = ''
  child.stdout.on('data', (chunk) => {
    output += chunk
    stdout += chunk
  })
  child.stderr.on('data', (chunk) => (output += chunk))
  const [code] = (await once(child, 'exit')) as [number | null]
  return { code, output, stdout }
}

const SHORT = ['--duration', '1', '--warmup', '0.5', '--micro-duration', '0.5', '--concurrency', '8']

it('a one-second benchmark run measures both algorithms and every baseline, without errors', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'atm-bench-test-'))
  try {
    const json = join(dir, 'bench.json')
    const { code, output } = await bench([...SHORT, '--json', json])
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
}, 180_000)

it('--backend postgres --nodes 2 starts its own PostgreSQL server and measures two nodes on one tier and on 100, without errors', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'atm-bench-test-'))
  try {
    const json = join(dir, 'bench.json')
    const { code, output, stdout } = await bench([...SHORT, '--backend', 'postgres', '--nodes', '2', '--shape', 'both', '--alg', 'ES256K', '--json', json])
    expect(code, output).toBe(0)
    const figures = JSON.parse(readFileSync(json, 'utf8'))
    expect(figures.runs.map((run: { backend: string; nodes: number; shape: string }) => `${run.backend} ${run.nodes} ${run.shape}`)).toEqual([
      'postgres 2 hot',
      'postgres 2 spread',
    ])
    for (const run of figures.runs) {
      expect(run.load.ok, output).toBeGreaterThan(0)
      expect(run.load.errors, JSON.stringify(run.load.errorSamples)).toBe(0)
      // The PostgreSQL server's own processes were measured, not only the nodes.
      expect(run.databaseUsage.cpuSeconds, output).toBeGreaterThan(0)
      expect(Number.isFinite(run.percentOfBareHttp)).toBe(true)
    }
    // Both rows of the side-by-side table, every figure a number: holds/s, p50, p99, % of node:http, CPU of nodes and server.
    const figure = '[\\d,]+(\\.\\d+)?'
    for (const tiers of ['1', '100']) {
      const row = new RegExp(`^\\| PostgreSQL, ES256K \\| 2 × \\d+ \\| ${tiers} \\| ${figure} \\| ${figure} \\| ${figure} \\| ${figure}% \\| ${figure} \\| ${figure} \\| 0 \\|$`, 'm')
      expect(stdout).toMatch(row)
    }
    expect(stdout).toMatch(/\| \*\*createTicketHold, ES256K\*\* \(PostgreSQL, 2 nodes × \d+ workers, one tier, 8 in flight\)/)
    expect(stdout).toMatch(/\| \*\*createTicketHold, ES256K\*\* \(PostgreSQL, 2 nodes × \d+ workers, 100 tiers, 8 in flight\)/)
    // No SQLite run, so no SQLite baseline row nor the SQLite service's targets.
    expect(stdout).not.toMatch(/raw better-sqlite3/)
    expect(stdout).not.toMatch(/targets/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}, 180_000)

it('refuses options that do not go together, naming them, before starting anything', async () => {
  const nodesOnSqlite = await bench(['--nodes', '2'])
  expect(nodesOnSqlite.code).toBe(2)
  expect(nodesOnSqlite.output).toMatch(/--nodes is for PostgreSQL runs/)
  const badShape = await bench(['--backend', 'postgres', '--shape', 'warm'])
  expect(badShape.code).toBe(2)
  expect(badShape.output).toMatch(/--shape must be hot, spread or both/)
  const badSetting = await bench(['--backend', 'postgres', '--pg-setting', 'fsync'])
  expect(badSetting.code).toBe(2)
  expect(badSetting.output).toMatch(/--pg-setting must be name=value/)
})
