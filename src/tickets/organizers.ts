import type { Environment } from '../config.js'
import type { DbConn, Tx } from '../storage/types.js'
import type { OrganizerTable } from '../db/schema.js'
import { newId } from '../util/ids.js'
import { fail } from './errors.js'

/** Statements of `requireOrganizer`, which runs inside holds' and claims' write transactions. */
export const ORGANIZER_SQL = {
  organizer: 'SELECT * FROM organizer WHERE did = ?',
  paymentSetup: 'SELECT 1 FROM paymentSetup WHERE organizerDid = ? AND environment = ?',
} as const

export async function getOrganizer(db: DbConn, did: string): Promise<OrganizerTable | undefined> {
  return db.selectFrom('organizer').selectAll().where('did', '=', did).executeTakeFirst()
}

export async function paymentSetupStatus(db: DbConn, did: string): Promise<{ test: boolean; live: boolean }> {
  const rows = await db.selectFrom('paymentSetup').select('environment').where('organizerDid', '=', did).execute()
  const done = new Set(rows.map((r) => r.environment))
  return { test: done.has('test'), live: done.has('live') }
}

export async function hasPaymentSetup(db: DbConn, did: string, environment: Environment): Promise<boolean> {
  const row = await db
    .selectFrom('paymentSetup')
    .select('organizerDid')
    .where('organizerDid', '=', did)
    .where('environment', '=', environment)
    .executeTakeFirst()
  return row !== undefined
}

/** Sign-in is idempotent: a second call keeps the first sign-in time and updates the name. */
export async function registerOrganizer(
  tx: DbConn,
  did: string,
  displayName: string | undefined,
  nowMs: number,
): Promise<OrganizerTable> {
  const existing = await getOrganizer(tx, did)
  if (existing) {
    if (displayName !== undefined) {
      await tx.updateTable('organizer').set({ displayName }).where('did', '=', did).execute()
      return { ...existing, displayName }
    }
    return existing
  }
  const row: OrganizerTable = { did, displayName: displayName ?? null, createdAt: nowMs }
  await tx.insertInto('organizer').values(row).execute()
  return row
}

/**
 * Finishes payment setup. In test a simulated account completes at once; live payments are
 * refused plainly, as no live provider is configured on this server.
 */
export async function completePaymentSetup(
  tx: DbConn,
  did: string,
  environment: Environment,
  nowMs: number,
): Promise<OrganizerTable> {
  const organizer = await getOrganizer(tx, did)
  if (!organizer) fail('OrganizerNotRegistered', `${did} has not signed in: call registerOrganizer first`)
  if (environment === 'live') {
    fail('LivePaymentsUnavailable', 'live payments are not configured on this server: use environment "test"')
  }
  await tx
    .insertInto('paymentSetup')
    .values({ organizerDid: did, environment, accountId: newId('acct'), completedAt: nowMs })
    .onConflict((oc) => oc.doNothing())
    .execute()
  return organizer
}

/** The organizer must have signed in; anything in live, or anything sold for money, needs payment setup. */
export async function requireOrganizer(tx: Tx, did: string, environment: Environment, needsPayments: boolean): Promise<OrganizerTable> {
  const organizer = await tx.get<OrganizerTable>(ORGANIZER_SQL.organizer, did)
  if (!organizer) {
    fail('OrganizerNotRegistered', `organizer ${did} has not signed in to ATM: they must call registerOrganizer first`)
  }
  if ((needsPayments || environment === 'live') && !(await tx.get(ORGANIZER_SQL.paymentSetup, did, environment))) {
    fail(
      'PaymentSetupIncomplete',
      `organizer ${did} has not finished payment setup for ${environment}: they must call completePaymentSetup`,
    )
  }
  return organizer
}
