/**
 * Checkout and the ticket lifecycle: payments, refunds, check-in lists and admissions,
 * and what the expiry sweeper needs to find holds that ran out.
 */
export const up = `
    CREATE TABLE payment (
      id TEXT PRIMARY KEY,
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      -- One payment at most per hold: a second completion of the same hold cannot insert.
      holdId TEXT NOT NULL UNIQUE REFERENCES hold(id),
      eventId TEXT NOT NULL REFERENCES event(id),
      amount INTEGER NOT NULL,
      currency TEXT NOT NULL,
      -- succeeded | partially_refunded | refunded
      status TEXT NOT NULL,
      refundedAmount INTEGER NOT NULL DEFAULT 0,
      provider TEXT NOT NULL,
      providerRef TEXT NOT NULL,
      cardBrand TEXT,
      cardLast4 TEXT,
      buyerDid TEXT,
      customerEmail TEXT,
      -- Secret of the buyer's ticket page link; never given to anyone else.
      pageSecret TEXT NOT NULL,
      createdAt INTEGER NOT NULL,
      updatedAt INTEGER NOT NULL,
      CHECK (refundedAmount >= 0 AND refundedAmount <= amount)
    ) STRICT;
    CREATE INDEX payment_event ON payment (eventId);

    CREATE TABLE refund (
      id TEXT PRIMARY KEY,
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      paymentId TEXT NOT NULL REFERENCES payment(id),
      amount INTEGER NOT NULL,
      currency TEXT NOT NULL,
      reason TEXT,
      forced INTEGER NOT NULL DEFAULT 0,
      providerRef TEXT NOT NULL,
      createdAt INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX refund_payment ON refund (paymentId);

    -- What each ticket cost, so a partial refund returns exactly the price of its tickets.
    ALTER TABLE ticket ADD COLUMN unitAmount INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE ticket ADD COLUMN currency TEXT;
    ALTER TABLE ticket ADD COLUMN refundId TEXT;
    ALTER TABLE ticket ADD COLUMN voidedAt INTEGER;
    ALTER TABLE ticket ADD COLUMN refundedAt INTEGER;
    ALTER TABLE ticket ADD COLUMN statusReason TEXT;
    CREATE INDEX ticket_hold ON ticket (holdId) WHERE holdId IS NOT NULL;
    CREATE INDEX ticket_claim ON ticket (claimId) WHERE claimId IS NOT NULL;

    CREATE TABLE checkInList (
      id TEXT PRIMARY KEY,
      eventId TEXT NOT NULL REFERENCES event(id),
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      name TEXT NOT NULL,
      createdAt INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX checkInList_event ON checkInList (eventId);
    -- Every event already has its own list; give the existing ones their rows.
    INSERT INTO checkInList (id, eventId, appDid, environment, name, createdAt)
      SELECT checkInListId, id, appDid, environment, 'Main entrance', createdAt FROM event;

    CREATE TABLE checkIn (
      id TEXT PRIMARY KEY,
      ticketId TEXT NOT NULL REFERENCES ticket(id),
      checkInListId TEXT NOT NULL REFERENCES checkInList(id),
      appDid TEXT NOT NULL,
      environment TEXT NOT NULL,
      checkedInAt INTEGER NOT NULL,
      metadata TEXT,
      -- Admitted once per list: of any number of concurrent scans, one insert wins.
      UNIQUE (ticketId, checkInListId)
    ) STRICT;

    -- The expiry sweeper's work list: only holds still marked active are indexed.
    CREATE INDEX hold_active_expiry ON hold (expiresAt) WHERE status = 'active';
`
