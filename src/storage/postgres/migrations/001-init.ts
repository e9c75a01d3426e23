/**
 * The schema SQLite's migrations 001 to 006 build, in one step: the same tables, columns,
 * keys and indexes, so domain code written once reads and writes both alike.
 *
 * - Names are quoted: PostgreSQL folds unquoted names to lower case, and kysely quotes them.
 * - Every SQLite INTEGER is a bigint (SQLite's integers are 64-bit; times are milliseconds),
 *   read back as a JS number (see connect.ts). Flags stay 0/1 integers, as SQLite stores them.
 * - Every text column compares byte by byte (`COLLATE "C"`), as SQLite's do: ids and cursors
 *   sort the same whatever locale the operator's database was created with.
 * - The append-only logs' `seq` is an identity column, BY DEFAULT so that a copy of a SQLite
 *   file keeps its numbers.
 */
const text = 'TEXT COLLATE "C"'

export const up = `
    CREATE TABLE app (
      did ${text} PRIMARY KEY,
      name ${text} NOT NULL,
      "ticketsEnabled" BIGINT NOT NULL DEFAULT 1,
      "webhookUrl" ${text},
      "eventDelivery" ${text},
      "webhookSecret" ${text},
      "createdAt" BIGINT NOT NULL,
      "updatedAt" BIGINT NOT NULL
    );

    CREATE TABLE organizer (
      did ${text} PRIMARY KEY,
      "displayName" ${text},
      "createdAt" BIGINT NOT NULL
    );

    CREATE TABLE "paymentSetup" (
      "organizerDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      "accountId" ${text} NOT NULL,
      "completedAt" BIGINT NOT NULL,
      PRIMARY KEY ("organizerDid", environment)
    );

    CREATE TABLE event (
      id ${text} PRIMARY KEY,
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      uri ${text},
      cid ${text},
      title ${text} NOT NULL,
      "organizerDid" ${text} NOT NULL,
      status ${text} NOT NULL,
      "startsAt" ${text},
      "endsAt" ${text},
      timezone ${text},
      url ${text},
      "imageUrl" ${text},
      metadata ${text},
      "checkInListId" ${text} NOT NULL,
      "createdAt" BIGINT NOT NULL,
      "updatedAt" BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX event_app_uri ON event ("appDid", environment, uri) WHERE uri IS NOT NULL;
    CREATE INDEX event_organizer ON event ("organizerDid", "appDid", environment);

    CREATE TABLE "capacityGroup" (
      id ${text} PRIMARY KEY,
      "eventId" ${text} NOT NULL REFERENCES event(id),
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      name ${text} NOT NULL,
      "totalCapacity" BIGINT NOT NULL,
      held BIGINT NOT NULL DEFAULT 0,
      sold BIGINT NOT NULL DEFAULT 0,
      status ${text} NOT NULL,
      metadata ${text},
      "createdAt" BIGINT NOT NULL,
      "updatedAt" BIGINT NOT NULL,
      CHECK (held >= 0 AND sold >= 0)
    );
    CREATE INDEX "capacityGroup_event" ON "capacityGroup" ("eventId");

    CREATE TABLE tier (
      id ${text} PRIMARY KEY,
      "eventId" ${text} NOT NULL REFERENCES event(id),
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      "capacityGroupId" ${text} REFERENCES "capacityGroup"(id),
      title ${text} NOT NULL,
      description ${text},
      currency ${text} NOT NULL,
      "unitAmount" BIGINT NOT NULL,
      "quantityTotal" BIGINT NOT NULL,
      "maxPerOrder" BIGINT NOT NULL,
      "saleStartsAt" BIGINT,
      "saleEndsAt" BIGINT,
      status ${text} NOT NULL,
      held BIGINT NOT NULL DEFAULT 0,
      sold BIGINT NOT NULL DEFAULT 0,
      metadata ${text},
      "createdAt" BIGINT NOT NULL,
      "updatedAt" BIGINT NOT NULL,
      CHECK (held >= 0 AND sold >= 0)
    );
    CREATE INDEX tier_event ON tier ("eventId");
    CREATE INDEX tier_group ON tier ("capacityGroupId") WHERE "capacityGroupId" IS NOT NULL;

    CREATE TABLE hold (
      id ${text} PRIMARY KEY,
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      "eventId" ${text} NOT NULL REFERENCES event(id),
      token ${text} NOT NULL,
      "buyerDid" ${text},
      "customerEmail" ${text},
      status ${text} NOT NULL,
      "expiresAt" BIGINT NOT NULL,
      "amountCents" BIGINT NOT NULL,
      currency ${text} NOT NULL,
      "returnUrl" ${text},
      "cancelUrl" ${text},
      metadata ${text},
      "createdAt" BIGINT NOT NULL,
      "releasedAt" BIGINT,
      "releaseReason" ${text},
      "completedAt" BIGINT,
      "paymentId" ${text}
    );
    CREATE INDEX hold_event_active ON hold ("eventId") WHERE status = 'active';
    CREATE INDEX hold_active_expiry ON hold ("expiresAt") WHERE status = 'active';

    CREATE TABLE "holdItem" (
      "holdId" ${text} NOT NULL REFERENCES hold(id),
      "tierId" ${text} NOT NULL REFERENCES tier(id),
      "capacityGroupId" ${text},
      title ${text} NOT NULL,
      quantity BIGINT NOT NULL,
      "unitAmount" BIGINT NOT NULL,
      currency ${text} NOT NULL,
      "expiresAt" BIGINT NOT NULL,
      counted BIGINT NOT NULL,
      PRIMARY KEY ("holdId", "tierId")
    );
    CREATE INDEX "holdItem_tier_counted" ON "holdItem" ("tierId", "expiresAt") WHERE counted = 1;
    CREATE INDEX "holdItem_group_counted" ON "holdItem" ("capacityGroupId", "expiresAt") WHERE counted = 1 AND "capacityGroupId" IS NOT NULL;

    CREATE TABLE claim (
      id ${text} PRIMARY KEY,
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      "eventId" ${text} NOT NULL,
      "tierId" ${text} NOT NULL REFERENCES tier(id),
      "buyerDid" ${text} NOT NULL,
      quantity BIGINT NOT NULL,
      "customerEmail" ${text},
      metadata ${text},
      "createdAt" BIGINT NOT NULL
    );
    CREATE INDEX claim_tier_buyer ON claim ("tierId", "buyerDid");

    CREATE TABLE ticket (
      id ${text} PRIMARY KEY,
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      "eventId" ${text} NOT NULL REFERENCES event(id),
      "tierId" ${text} NOT NULL REFERENCES tier(id),
      "capacityGroupId" ${text},
      "ticketToken" ${text} NOT NULL UNIQUE,
      status ${text} NOT NULL,
      "buyerDid" ${text},
      "customerEmail" ${text},
      "paymentId" ${text},
      "claimId" ${text},
      "holdId" ${text},
      "issuedAt" BIGINT NOT NULL,
      "checkedInAt" BIGINT,
      "unitAmount" BIGINT NOT NULL DEFAULT 0,
      currency ${text},
      "refundId" ${text},
      "voidedAt" BIGINT,
      "refundedAt" BIGINT,
      "statusReason" ${text}
    );
    CREATE INDEX ticket_buyer ON ticket ("appDid", environment, "buyerDid", id) WHERE "buyerDid" IS NOT NULL;
    CREATE INDEX ticket_payment ON ticket ("paymentId", id) WHERE "paymentId" IS NOT NULL;
    CREATE INDEX ticket_event ON ticket ("eventId", id);
    CREATE INDEX ticket_hold ON ticket ("holdId") WHERE "holdId" IS NOT NULL;
    CREATE INDEX ticket_claim ON ticket ("claimId") WHERE "claimId" IS NOT NULL;

    CREATE TABLE idempotency (
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      method ${text} NOT NULL,
      key ${text} NOT NULL,
      "requestHash" ${text} NOT NULL,
      state ${text} NOT NULL,
      owner ${text} NOT NULL,
      response ${text},
      "createdAt" BIGINT NOT NULL,
      "ownerInstance" ${text},
      PRIMARY KEY ("appDid", environment, method, key)
    );
    CREATE INDEX idempotency_created ON idempotency ("createdAt");

    CREATE TABLE outbox (
      seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      id ${text} NOT NULL UNIQUE,
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      type ${text} NOT NULL,
      payload ${text} NOT NULL,
      "createdAt" BIGINT NOT NULL,
      attempts BIGINT NOT NULL DEFAULT 0,
      "nextAttemptAt" BIGINT NOT NULL,
      "deliveredAt" BIGINT,
      "lastError" ${text}
    );
    CREATE INDEX outbox_due ON outbox ("nextAttemptAt") WHERE "deliveredAt" IS NULL;

    CREATE TABLE payment (
      id ${text} PRIMARY KEY,
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      -- One payment at most per hold: a second completion of the same hold cannot insert.
      "holdId" ${text} NOT NULL UNIQUE REFERENCES hold(id),
      "eventId" ${text} NOT NULL REFERENCES event(id),
      amount BIGINT NOT NULL,
      currency ${text} NOT NULL,
      status ${text} NOT NULL,
      "refundedAmount" BIGINT NOT NULL DEFAULT 0,
      provider ${text} NOT NULL,
      "providerRef" ${text} NOT NULL,
      "cardBrand" ${text},
      "cardLast4" ${text},
      "buyerDid" ${text},
      "customerEmail" ${text},
      "pageSecret" ${text} NOT NULL,
      "createdAt" BIGINT NOT NULL,
      "updatedAt" BIGINT NOT NULL,
      CHECK ("refundedAmount" >= 0 AND "refundedAmount" <= amount)
    );
    CREATE INDEX payment_event ON payment ("eventId");

    CREATE TABLE refund (
      id ${text} PRIMARY KEY,
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      "paymentId" ${text} NOT NULL REFERENCES payment(id),
      amount BIGINT NOT NULL,
      currency ${text} NOT NULL,
      reason ${text},
      forced BIGINT NOT NULL DEFAULT 0,
      "providerRef" ${text} NOT NULL,
      "createdAt" BIGINT NOT NULL
    );
    CREATE INDEX refund_payment ON refund ("paymentId");

    CREATE TABLE "checkInList" (
      id ${text} PRIMARY KEY,
      "eventId" ${text} NOT NULL REFERENCES event(id),
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      name ${text} NOT NULL,
      "createdAt" BIGINT NOT NULL
    );
    CREATE INDEX "checkInList_event" ON "checkInList" ("eventId");

    CREATE TABLE "checkIn" (
      id ${text} PRIMARY KEY,
      "ticketId" ${text} NOT NULL REFERENCES ticket(id),
      "checkInListId" ${text} NOT NULL REFERENCES "checkInList"(id),
      "appDid" ${text} NOT NULL,
      environment ${text} NOT NULL,
      "checkedInAt" BIGINT NOT NULL,
      metadata ${text},
      -- Admitted once per list: of any number of concurrent scans, one insert wins.
      UNIQUE ("ticketId", "checkInListId")
    );
    CREATE INDEX "checkIn_list" ON "checkIn" ("checkInListId");

    CREATE TABLE "spentToken" (
      seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      iss ${text} NOT NULL,
      jti ${text} NOT NULL,
      "expiresAt" BIGINT NOT NULL
    );

    CREATE TABLE "serviceInstance" (
      id ${text} PRIMARY KEY,
      pid BIGINT NOT NULL UNIQUE,
      "startedAt" BIGINT NOT NULL
    );

    CREATE TABLE "signingKeyLog" (
      seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      did ${text} NOT NULL,
      key ${text} NOT NULL,
      "seenAt" BIGINT NOT NULL
    );
`
