/**
 * The service processes that opened this file, one row per pid, so that work a process left
 * pending (an idempotency key) can be known as abandoned the moment that process is gone,
 * instead of after a timeout. A pid is reused by the operating system; the row of a pid names
 * the last process that had it, and a process that took the pid over replaces the row.
 */
export const up = `
    CREATE TABLE serviceInstance (
      id TEXT PRIMARY KEY,
      pid INTEGER NOT NULL UNIQUE,
      startedAt INTEGER NOT NULL
    ) STRICT;
    ALTER TABLE idempotency ADD COLUMN ownerInstance TEXT;
`
