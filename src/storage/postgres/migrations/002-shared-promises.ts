/**
 * Tables PostgreSQL needs and SQLite does not, for promises that must hold across nodes.
 * SQLite keeps the spent tokens and signing keys as append-only logs that each worker reads
 * from its last seq on, exact only because SQLite has one writer at a time; PostgreSQL hands
 * out sequence numbers in an order commits need not follow, so a reader could skip a row. Here
 * a key decides instead, and the admin-guess count, held in one process's memory on SQLite,
 * lives in a table every node shares.
 */
const text = 'TEXT COLLATE "C"'

export const up = `
    -- One row per spent token: its primary key lets one spend of it, from any node, insert.
    CREATE TABLE "spentJti" (
      iss ${text} NOT NULL,
      jti ${text} NOT NULL,
      "expiresAt" BIGINT NOT NULL,
      PRIMARY KEY (iss, jti)
    );
    CREATE INDEX "spentJti_expires" ON "spentJti" ("expiresAt");

    -- The latest #atproto key any node fetched, per issuer.
    CREATE TABLE "signingKeyLatest" (
      did ${text} PRIMARY KEY,
      key ${text} NOT NULL,
      "seenAt" BIGINT NOT NULL
    );
    CREATE INDEX "signingKeyLatest_seen" ON "signingKeyLatest" ("seenAt");

    -- Wrong admin passwords per client address.
    CREATE TABLE "adminGuess" (
      client ${text} PRIMARY KEY,
      wrong BIGINT NOT NULL,
      "lastWrongAt" BIGINT NOT NULL,
      "blockedUntil" BIGINT NOT NULL
    );
    CREATE INDEX "adminGuess_last" ON "adminGuess" ("lastWrongAt");
`
