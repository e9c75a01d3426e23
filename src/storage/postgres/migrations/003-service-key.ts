/**
 * The service's own signing key (its did:web document, the signatures of the events it sends
 * apps), when the operator does not give one in ATM_SIGNING_KEY: every node must sign with the
 * same key, so the first node to start creates it here and the others read it. With SQLite it
 * is a file beside the database.
 */
export const up = `
    CREATE TABLE "serviceKey" (
      name TEXT COLLATE "C" PRIMARY KEY,
      "keyHex" TEXT COLLATE "C" NOT NULL,
      "createdAt" BIGINT NOT NULL
    );
`
