import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each file starts its own PLC directory and service processes; running files one at a
    // time keeps the concurrency tests' load on this machine's two cores their own.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // One throwaway PostgreSQL server for the whole run; each PostgreSQL test file makes its own database.
    globalSetup: ['test/helpers/postgres.ts'],
  },
})
