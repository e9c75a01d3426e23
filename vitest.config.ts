import { configDefaults, defineConfig } from 'vitest/config'

// `npm test` runs the suite twice: on SQLite, then with ATM_TEST_BACKEND=postgres, where every
// service a test starts gets its own database on the run's PostgreSQL server. The second pass
// leaves out the files that would test the same thing again:
const SQLITE_ITSELF = [
  // The SQLite engine's parts, used without a service: group commit, the spent-token log two
  // processes share through the file (PostgreSQL's ledger is tested in postgres-parts), the WAL.
  'test/group-commit.test.ts',
  'test/replay-store.test.ts',
  'test/wal-restart.test.ts',
  // EXPLAIN QUERY PLAN on the service's SQLite file.
  'test/query-plans.test.ts',
]
const ONCE = [
  // About PostgreSQL already; postgres-copy starts from a service on SQLite.
  'test/postgres-*.test.ts',
  // The benchmark script's own run, not the suite's services.
  'test/bench.test.ts',
]

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: [...configDefaults.exclude, ...(process.env.ATM_TEST_BACKEND === 'postgres' ? [...SQLITE_ITSELF, ...ONCE] : [])],
    // Each file starts its own PLC directory and service processes; running files one at a
    // time keeps the concurrency tests' load on this machine's two cores their own.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // One throwaway PostgreSQL server for the whole run; each PostgreSQL test file makes its own database.
    globalSetup: ['test/helpers/postgres.ts'],
  },
})
