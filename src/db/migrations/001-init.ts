/** The first schema. Times are integer milliseconds since the epoch. */
export const up = `
    CREATE TABLE app (
      did TEXT PRIMARY KEY,
      name TEXT NOT NULL,
      ticketsEnabled INTEGER NOT NULL DEFAULT 1,
      webhookUrl TEXT,
      eventDelivery TEXT,
      webhookSecret TEXT,
      createdAt INTEGER NOT NULL,
      updatedAt INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE organizer (
      did TEXT PRIMARY KEY,
      displayName TEXT,
      createdAt INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE paymentSetup (
      organizerDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      accountId TEXT NOT NULL,
      completedAt INTEGER NOT NULL,
      PRIMARY KEY (organizerDid, environment)
    ) STRICT;

    CREATE TABLE event (
      id TEXT PRIMARY KEY,
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      uri TEXT,
      cid TEXT,
      title TEXT NOT NULL,
      organizerDid TEXT NOT NULL,
      status TEXT NOT NULL,
      startsAt TEXT,
      endsAt TEXT,
      timezone TEXT,
      url TEXT,
      imageUrl TEXT,
      metadata TEXT,
      checkInListId TEXT NOT NULL,
      createdAt INTEGER NOT NULL,
      updatedAt INTEGER NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX event_app_uri ON event (appDid, environment, uri) WHERE uri IS NOT NULL;
    CREATE INDEX event_organizer ON event (organizerDid, appDid, environment);

    CREATE TABLE capacityGroup (
      id TEXT PRIMARY KEY,
      eventId TEXT NOT NULL REFERENCES event(id),
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      name TEXT NOT NULL,
      totalCapacity INTEGER NOT NULL,
      held INTEGER NOT NULL DEFAULT 0,
      sold INTEGER NOT NULL DEFAULT 0,
      status TEXT NOT NULL,
      metadata TEXT,
      createdAt INTEGER NOT NULL,
      updatedAt INTEGER NOT NULL,
      CHECK (held >= 0 AND sold >= 0)
    ) STRICT;
    CREATE INDEX capacityGroup_event ON capacityGroup (eventId);

    CREATE TABLE tier (
      id TEXT PRIMARY KEY,
      eventId TEXT NOT NULL REFERENCES event(id),
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      capacityGroupId TEXT REFERENCES capacityGroup(id),
      title TEXT NOT NULL,
      description TEXT,
      currency TEXT NOT NULL,
      unitAmount INTEGER NOT NULL,
      quantityTotal INTEGER NOT NULL,
      maxPerOrder INTEGER NOT NULL,
      saleStartsAt INTEGER,
      saleEndsAt INTEGER,
      status TEXT NOT NULL,
      held INTEGER NOT NULL DEFAULT 0,
      sold INTEGER NOT NULL DEFAULT 0,
      metadata TEXT,
      createdAt INTEGER NOT NULL,
      updatedAt INTEGER NOT NULL,
      CHECK (held >= 0 AND sold >= 0)
    ) STRICT;
    CREATE INDEX tier_event ON tier (eventId);
    CREATE INDEX tier_group ON tier (capacityGroupId) WHERE capacityGroupId IS NOT NULL;

    CREATE TABLE hold (
      id TEXT PRIMARY KEY,
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      eventId TEXT NOT NULL REFERENCES event(id),
      token TEXT NOT NULL,
      buyerDid TEXT,
      customerEmail TEXT,
      status TEXT NOT NULL,
      expiresAt INTEGER NOT NULL,
      amountCents INTEGER NOT NULL,
      currency TEXT NOT NULL,
      returnUrl TEXT,
      cancelUrl TEXT,
      metadata TEXT,
      createdAt INTEGER NOT NULL,
      releasedAt INTEGER,
      releaseReason TEXT,
      completedAt INTEGER,
      paymentId TEXT
    ) STRICT;
    CREATE INDEX hold_event_active ON hold (eventId) WHERE status = 'active';

    CREATE TABLE holdItem (
      holdId TEXT NOT NULL REFERENCES hold(id),
      tierId TEXT NOT NULL REFERENCES tier(id),
      capacityGroupId TEXT,
      title TEXT NOT NULL,
      quantity INTEGER NOT NULL,
      unitAmount INTEGER NOT NULL,
      currency TEXT NOT NULL,
      expiresAt INTEGER NOT NULL,
      counted INTEGER NOT NULL,
      PRIMARY KEY (holdId, tierId)
    ) STRICT, WITHOUT ROWID;
    -- Only items still counted in the held counters are indexed: finding the expired ones
    -- touches just those, never every hold ever made.
    CREATE INDEX holdItem_tier_counted ON holdItem (tierId, expiresAt) WHERE counted = 1;
    CREATE INDEX holdItem_group_counted ON holdItem (capacityGroupId, expiresAt) WHERE counted = 1 AND capacityGroupId IS NOT NULL;

    CREATE TABLE claim (
      id TEXT PRIMARY KEY,
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      eventId TEXT NOT NULL,
      tierId TEXT NOT NULL REFERENCES tier(id),
      buyerDid TEXT NOT NULL,
      quantity INTEGER NOT NULL,
      customerEmail TEXT,
      metadata TEXT,
      createdAt INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX claim_tier_buyer ON claim (tierId, buyerDid);

    CREATE TABLE ticket (
      id TEXT PRIMARY KEY,
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      eventId TEXT NOT NULL REFERENCES event(id),
      tierId TEXT NOT NULL REFERENCES tier(id),
      capacityGroupId TEXT,
      ticketToken TEXT NOT NULL UNIQUE,
      status TEXT NOT NULL,
      buyerDid TEXT,
      customerEmail TEXT,
      paymentId TEXT,
      claimId TEXT,
      holdId TEXT,
      issuedAt INTEGER NOT NULL,
      checkedInAt INTEGER
    ) STRICT;
    CREATE INDEX ticket_buyer ON ticket (appDid, environment, buyerDid, id) WHERE buyerDid IS NOT NULL;
    CREATE INDEX ticket_payment ON ticket (paymentId, id) WHERE paymentId IS NOT NULL;
    CREATE INDEX ticket_event ON ticket (eventId, id);

    CREATE TABLE idempotency (
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      method TEXT NOT NULL,
      key TEXT NOT NULL,
      requestHash TEXT NOT NULL,
      state TEXT NOT NULL,
      owner TEXT NOT NULL,
      response TEXT,
      createdAt INTEGER NOT NULL,
      PRIMARY KEY (appDid, environment, method, key)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX idempotency_created ON idempotency (createdAt);

    CREATE TABLE replay (
      iss TEXT NOT NULL,
      jti TEXT NOT NULL,
      expiresAt INTEGER NOT NULL,
      PRIMARY KEY (iss, jti)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX replay_expires ON replay (expiresAt);

    CREATE TABLE outbox (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      id TEXT NOT NULL UNIQUE,
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      type TEXT NOT NULL,
      payload TEXT NOT NULL,
      createdAt INTEGER NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      nextAttemptAt INTEGER NOT NULL,
      deliveredAt INTEGER,
      lastError TEXT
    ) STRICT;
    CREATE INDEX outbox_due ON outbox (nextAttemptAt) WHERE deliveredAt IS NULL;
`
