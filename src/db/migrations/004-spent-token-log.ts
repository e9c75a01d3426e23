/**
 * Spent tokens as an append-only log instead of a table keyed by `(iss, jti)`. Every request
 * spends a token, and a random key put each of them on a random page of a B-tree of every
 * token of the last minutes: a page written to the WAL and copied back per request, and a tree
 * too large to stay cached. Appended rows share the last page; each worker keeps an index of
 * the live ones in memory (see auth/replay-store.ts). AUTOINCREMENT: a committed `seq` is never
 * used again, even once the rows before it are purged, so a worker can read "everything after
 * the last row I saw". The tokens spent before this migration are carried over.
 */
export const up = `
    CREATE TABLE spentToken (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      iss TEXT NOT NULL,
      jti TEXT NOT NULL,
      expiresAt INTEGER NOT NULL
    ) STRICT;
    INSERT INTO spentToken (iss, jti, expiresAt) SELECT iss, jti, expiresAt FROM replay ORDER BY expiresAt;
    DROP TABLE replay;
`
