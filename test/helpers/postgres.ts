// A throwaway PostgreSQL server for the tests: started once per run by vitest's globalSetup
// (the default export), with a fresh empty database per test file (`createTestDatabase`).
import pg from 'pg'
import { inject } from 'vitest'
import type { TestProject } from 'vitest/node'
import { createDatabase, findPostgresServer, startThrowawayPostgres } from '../../scripts/bench/postgres-server.js'

declare module 'vitest' {
  export interface ProvidedContext {
    /** The superuser's `postgres://` URL of the run's server; empty when it could not start. */
    postgresAdminUrl: string
    /** Why the server could not start; empty when it did. */
    postgresStartError: string
  }
}

/**
 * vitest globalSetup: start the run's server (scripts/bench/postgres-server.ts, shared with the
 * benchmark) and provide its superuser URL; the returned teardown stops it and removes its
 * directory. A machine without the binaries still runs the other tests: the PostgreSQL tests
 * then fail in `createTestDatabase` with the reason.
 */
export default async function startTestPostgres(project: TestProject): Promise<() => Promise<void>> {
  const found = findPostgresServer()
  if ('error' in found) {
    project.provide('postgresAdminUrl', '')
    project.provide('postgresStartError', found.error)
    return async () => {}
  }
  const started = Date.now()
  const server = await startThrowawayPostgres({
    bin: found.bin,
    name: 'the test PostgreSQL server',
    // Throwaway data: durability is not what these tests are about.
    settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: 200 },
  })
  console.log(`test PostgreSQL started in ${Date.now() - started} ms on ${new URL(server.adminUrl).host}`)
  project.provide('postgresAdminUrl', server.adminUrl)
  project.provide('postgresStartError', '')
  return server.stop
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
export function createTestDatabase(prefix = 'test'): Promise<string> {
  return createDatabase(postgresAdminUrl(), prefix)
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
