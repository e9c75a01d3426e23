/**
 * The `#atproto` key each issuer's DID document had when some worker last fetched it fresh,
 * as an append-only log like `spentToken`. Every worker keeps its own DID document cache; a
 * worker whose cached document predates a key rotation would go on accepting the rotated-away
 * key. Each worker reads the rows appended since its last look at the first spend of every
 * write transaction (see auth/replay-store.ts), so once one worker has seen the new key, no
 * token signed with another one is spent by any worker. A row is kept for a day and an hour,
 * longer than any cached document lives.
 */
export const up = `
    CREATE TABLE signingKeyLog (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      did TEXT NOT NULL,
      key TEXT NOT NULL,
      seenAt INTEGER NOT NULL
    ) STRICT;
`
