import { createHash, randomBytes } from 'node:crypto'
import type { ExpressionBuilder } from 'kysely'
import type { DatabaseSchema } from '../db/schema.js'
import type { DbConn, InstanceRegistry, Storage } from '../storage/types.js'
import { DomainError, fail } from './errors.js'

/** Keys are remembered for 24 h (CONTRACT §5.4). */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000
/**
 * A pending key is taken over at once when the process that took it is gone (a crash), and
 * after this long in any case: its request is stuck, or the key was taken before processes
 * were recorded.
 */
const ABANDONED_AFTER_MS = 60_000

export interface IdempotencyScope {
  appDid: string
  environment: string
  method: string
  key: string
}

export type StoredResponse =
  | { ok: true; body: Record<string, unknown> }
  | { ok: false; errorName: string; message: string; kind: DomainError['kind'] }

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical)
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value as Record<string, unknown>)
        .sort()
        .map((key) => [key, canonical((value as Record<string, unknown>)[key])]),
    )
  }
  return value
}

/**
 * Same input, same hash, whatever the key order the caller's JSON had. Assertions are left
 * out: they are single-use, so a retry of the same request carries a freshly minted one.
 */
export function hashRequest(input: Record<string, unknown>): string {
  const { buyerAssertionJwt: _buyer, organizerAssertionJwt: _organizer, ...request } = input
  return createHash('sha256').update(JSON.stringify(canonical(request))).digest('hex')
}

export type ClaimResult = { kind: 'claimed'; owner: string } | { kind: 'stored'; response: StoredResponse }

type IdempotencyFilter = ExpressionBuilder<DatabaseSchema, 'idempotency'>

/** The row of this key (its primary key). */
function keyIs(eb: IdempotencyFilter, scope: IdempotencyScope) {
  return eb.and([
    eb('appDid', '=', scope.appDid),
    eb('environment', '=', scope.environment),
    eb('method', '=', scope.method),
    eb('key', '=', scope.key),
  ])
}

function keyInUse(scope: IdempotencyScope): never {
  return fail('IdempotencyKeyInUse', `a request with idempotencyKey "${scope.key}" is still running: retry in a moment`, 'conflict')
}

type IdempotencyRecord = DatabaseSchema['idempotency']

/**
 * Whether the request holding a pending key may still be running. A retry after its process
 * died must not wait: nothing will ever finish that request.
 */
async function pendingIsLive(db: DbConn, instances: InstanceRegistry, record: IdempotencyRecord, nowMs: number): Promise<boolean> {
  if (nowMs - record.createdAt >= ABANDONED_AFTER_MS) return false
  return record.ownerInstance === null || (await instances.isAlive(record.ownerInstance, db))
}

async function readRecord(db: DbConn, scope: IdempotencyScope, nowMs: number) {
  return IDEMPOTENCY_QUERIES.record(db, scope, nowMs).executeTakeFirst()
}

/**
 * Looks up a key for a request with this hash: a stored answer is returned as is; a different
 * input under the same key is IdempotencyKeyMismatch; a first request still running is
 * IdempotencyKeyInUse. Otherwise the key is taken (pending) for this request.
 *
 * The key is inserted first and only read when it was there: of claims racing on several
 * nodes, the database lets one insert, and a takeover (of a key past 24 h, or left pending by
 * a process that died) changes the row only as it was read, so only one claim can win it.
 */
export async function claimKey(
  tx: DbConn,
  instances: InstanceRegistry,
  scope: IdempotencyScope,
  requestHash: string,
  nowMs: number,
): Promise<ClaimResult> {
  const owner = randomBytes(16).toString('hex')
  const pending = { requestHash, state: 'pending', owner, ownerInstance: instances.id, response: null, createdAt: nowMs }
  const inserted = await tx
    .insertInto('idempotency')
    .values({ ...scope, ...pending })
    .onConflict((oc) => oc.columns(['appDid', 'environment', 'method', 'key']).doNothing())
    .executeTakeFirst()
  if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 1) return { kind: 'claimed', owner }
  const record = await readRecord(tx, scope, nowMs)
  if (record) {
    if (record.requestHash !== requestHash) {
      fail(
        'IdempotencyKeyMismatch',
        `idempotencyKey "${scope.key}" was used with a different request in the last 24 h: use a new key for a new request`,
        'conflict',
      )
    }
    if (record.state === 'done') return { kind: 'stored', response: JSON.parse(record.response!) as StoredResponse }
    if (await pendingIsLive(tx, instances, record, nowMs)) keyInUse(scope)
  }
  const takeover = tx
    .updateTable('idempotency')
    .set(pending)
    .where((eb) => keyIs(eb, scope))
  // The row as it was read: pending for the owner that died, or (none read) past its 24 h.
  const taken = await (record
    ? takeover.where('state', '=', 'pending').where('owner', '=', record.owner)
    : takeover.where('createdAt', '<=', nowMs - IDEMPOTENCY_TTL_MS)
  ).executeTakeFirst()
  if (Number(taken.numUpdatedRows) === 0) keyInUse(scope)
  return { kind: 'claimed', owner }
}

/**
 * Looks up a finished answer for an exact retry (a replayed token may only receive this). A
 * key left pending by a request that died has none: nothing will ever store one.
 */
export async function findStored(
  db: DbConn,
  instances: InstanceRegistry,
  scope: IdempotencyScope,
  requestHash: string,
  nowMs: number,
): Promise<StoredResponse | null> {
  const record = await readRecord(db, scope, nowMs)
  if (!record || record.requestHash !== requestHash) return null
  if (record.state !== 'done') {
    if (await pendingIsLive(db, instances, record, nowMs)) keyInUse(scope)
    return null
  }
  return JSON.parse(record.response!) as StoredResponse
}

/** The key's row, while it is still pending for `owner`. */
function ownedBy(scope: IdempotencyScope, owner: string) {
  return (eb: IdempotencyFilter) => eb.and([keyIs(eb, scope), eb('state', '=', 'pending'), eb('owner', '=', owner)])
}

/** This module's statements, as the service runs them (the query-plan tests EXPLAIN these). */
export const IDEMPOTENCY_QUERIES = {
  record: (db: DbConn, scope: IdempotencyScope, nowMs: number) =>
    db
      .selectFrom('idempotency')
      .selectAll()
      .where((eb) => keyIs(eb, scope))
      .where('createdAt', '>', nowMs - IDEMPOTENCY_TTL_MS),
  store: (tx: DbConn, scope: IdempotencyScope, owner: string, response: StoredResponse) =>
    tx.updateTable('idempotency').set({ state: 'done', response: JSON.stringify(response) }).where(ownedBy(scope, owner)),
  purge: (db: DbConn, nowMs: number) => db.deleteFrom('idempotency').where('createdAt', '<', nowMs - IDEMPOTENCY_TTL_MS),
}

/**
 * Whether this request still holds its key. A request that stalled past the abandonment
 * delay may have lost it to a retry, which then did the work: it must not do it again.
 */
export async function stillOwned(tx: DbConn, scope: IdempotencyScope, owner: string): Promise<boolean> {
  // An update, not a read: it locks the row until this transaction ends, so a retry taking the
  // key over now waits, then finds it no longer as it read it, and does not do the work too.
  const touched = await tx.updateTable('idempotency').set({ owner }).where(ownedBy(scope, owner)).executeTakeFirst()
  return Number(touched.numUpdatedRows) > 0
}

export async function storeResponse(tx: DbConn, scope: IdempotencyScope, owner: string, response: StoredResponse): Promise<void> {
  await IDEMPOTENCY_QUERIES.store(tx, scope, owner, response).execute()
}

/** Frees a key whose request failed for a reason that is not a named answer (a 500). */
export async function releaseKey(tx: DbConn, scope: IdempotencyScope, owner: string): Promise<void> {
  await tx.deleteFrom('idempotency').where(ownedBy(scope, owner)).execute()
}

export function replayStored(response: StoredResponse): Record<string, unknown> {
  if (response.ok) return { ...response.body, reused: true }
  throw new DomainError(response.errorName, response.message, response.kind)
}

export async function purgeExpiredKeys(db: DbConn, nowMs = Date.now()): Promise<void> {
  await IDEMPOTENCY_QUERIES.purge(db, nowMs).execute()
}

/** What a request does in its write transaction (`txOf(tx)` gives its plain statements). */
export type IdempotentWork<T> = {
  /** Checks of the input alone, synchronous and without effects. */
  checks?: () => void
  /** Slow checks (assertion signatures), outside any transaction. */
  before?: () => Promise<void>
  work: (tx: DbConn) => Promise<T>
}

/**
 * Runs a request under an optional idempotency key: the key is taken first (so a concurrent
 * twin answers IdempotencyKeyInUse instead of taking capacity again), then `before` runs
 * outside any transaction (slow checks such as assertion signatures), then the work runs in
 * one write transaction together with storing its answer. A named failure is stored too.
 * `checks` run just before `before`, with the same effect; they are apart so that a caller may
 * run them inside a transaction (see `idempotentProcedure`).
 */
export async function runIdempotent<T extends Record<string, unknown>>(
  database: Storage,
  scope: IdempotencyScope | null,
  requestHash: string,
  steps: IdempotentWork<T>,
): Promise<T & { reused?: boolean }> {
  if (!scope) {
    steps.checks?.()
    await steps.before?.()
    return database.transaction(steps.work)
  }
  const claim = await database.transaction((tx) => claimKey(tx, database.instances, scope, requestHash, Date.now()))
  if (claim.kind === 'stored') return replayStored(claim.response) as T & { reused: true }
  const { owner } = claim
  try {
    steps.checks?.()
    await steps.before?.()
    return await database.transaction(async (tx) => {
      if (!(await stillOwned(tx, scope, owner))) {
        const stored = await findStored(tx, database.instances, scope, requestHash, Date.now())
        if (stored) return replayStored(stored) as T & { reused: true }
        keyInUse(scope)
      }
      const body = await steps.work(tx)
      await storeResponse(tx, scope, owner, { ok: true, body })
      return body
    })
  } catch (err) {
    if (err instanceof DomainError) {
      if (err.errorName !== 'IdempotencyKeyInUse') {
        await database.transaction((tx) =>
          storeResponse(tx, scope, owner, { ok: false, errorName: err.errorName, message: err.message, kind: err.kind }),
        )
      }
    } else {
      await database.transaction((tx) => releaseKey(tx, scope, owner)).catch(() => undefined)
    }
    throw err
  }
}
