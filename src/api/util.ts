import { AuthRequiredError, ForbiddenError, type MethodAuthContext } from '@atproto/xrpc-server'
import { checkAdminBasicAuth, PendingSpend } from '../auth/verifier.js'
import type { AppContext } from '../context.js'
import type { SyncTx } from '../db/index.js'
import type { AppTable } from '../db/schema.js'
import { findApp } from '../tickets/apps.js'
import { parseEnvironment } from '../tickets/environment.js'
import type { Scope } from '../tickets/events.js'
import { findStored, hashRequest, replayStored, runIdempotent, type IdempotencyScope, type IdempotentWork } from '../tickets/idempotency.js'
import type { DirectAuthContext } from '../xrpc/direct-lane.js'

export interface AppCredentials {
  /** The calling app's DID (the token's `iss`). */
  appDid: string
  app: AppTable
  /** The token's `(iss, jti)` was seen before: only an exact idempotent retry may go on. */
  replayed: boolean
  /**
   * The token, verified but not spent yet (the direct lane, for methods that take it): until it
   * is spent, `replayed` means nothing. `idempotentProcedure` spends it.
   */
  pendingSpend?: PendingSpend
}

export interface UserCredentials {
  did: string
  replayed: boolean
}

/**
 * A registered app with the tickets module on, proven by a service-auth token for `nsid`.
 * `spendInHandler`: the method spends the token in its own write transaction when the direct
 * lane, which makes sure it is spent before any answer, serves the request (see `PendingSpend`).
 */
export function appAuth(ctx: AppContext, nsid: string, opts: { spendInHandler?: boolean } = {}) {
  return async (authContext: MethodAuthContext | DirectAuthContext): Promise<{ credentials: AppCredentials }> => {
    const { req } = authContext
    const deferred = opts.spendInHandler === true && 'spendDeferred' in authContext
    const token = deferred ? await ctx.authVerifier.verifyRequestDeferred(req, nsid) : await ctx.authVerifier.verifyRequest(req, nsid)
    const app = await findApp(ctx.db, token.iss)
    if (!app) {
      throw new ForbiddenError(`${token.iss} is not registered as an ATM app: ask the operator to register it`, 'AppNotRegistered')
    }
    if (app.ticketsEnabled !== 1) {
      throw new ForbiddenError(`ATM Tickets is not enabled for ${token.iss}: ask the operator to enable it`, 'TicketsModuleDisabled')
    }
    if (token instanceof PendingSpend) return { credentials: { appDid: token.iss, app, replayed: false, pendingSpend: token } }
    return { credentials: { appDid: token.iss, app, replayed: token.replayed } }
  }
}

/** Any did:plc / did:web user acting for themselves (an organizer signing in). */
export function userAuth(ctx: AppContext, nsid: string) {
  return async ({ req }: MethodAuthContext): Promise<{ credentials: UserCredentials }> => {
    const token = await ctx.authVerifier.verifyRequest(req, nsid)
    return { credentials: { did: token.iss, replayed: token.replayed } }
  }
}

export function adminAuth(ctx: AppContext) {
  return async ({ req }: MethodAuthContext): Promise<{ credentials: { admin: true } }> => {
    checkAdminBasicAuth(req, ctx.adminPassword)
    return { credentials: { admin: true } }
  }
}

export function refuseReplay(credentials: { replayed: boolean }): void {
  if (credentials.replayed) throw jwtReplayed()
}

function jwtReplayed(): AuthRequiredError {
  return new AuthRequiredError('this token (iss, jti) was already used: mint a fresh token for every request', 'JwtReplayed')
}

export function scopeOf(credentials: AppCredentials, environment: string | undefined): Scope {
  return { appDid: credentials.appDid, environment: parseEnvironment(environment) }
}

export function json<T>(body: T) {
  return { encoding: 'application/json' as const, body }
}

/** The idempotency scope and request hash of a procedure that takes `idempotencyKey`. */
export function idempotencyOf(
  scope: Scope,
  nsid: string,
  body: { idempotencyKey?: string | null },
): { scope: IdempotencyScope | null; requestHash: string } {
  return {
    scope: body.idempotencyKey ? { ...scope, method: nsid, key: body.idempotencyKey } : null,
    // Only a key's stored answer is compared with the request.
    requestHash: body.idempotencyKey ? hashRequest(body) : '',
  }
}

/**
 * A token used before may only receive the stored answer of an exact retry (same
 * idempotencyKey, same input); anything else is JwtReplayed.
 */
export async function answerReplayedRetry(
  ctx: AppContext,
  credentials: AppCredentials,
  scope: IdempotencyScope | null,
  requestHash: string,
): Promise<Record<string, unknown> | null> {
  if (!credentials.replayed) return null
  const stored = scope ? await findStored(ctx.db.db, scope, requestHash, Date.now()) : null
  if (!stored) refuseReplay(credentials)
  return replayStored(stored!)
}

/**
 * The course of every procedure that takes `idempotencyKey`: a token used before gets only the
 * stored answer of an exact retry; otherwise `before` (checks whose named refusals are stored
 * under the key too) and `work` or `workSync` (in one transaction) run under the key.
 */
export async function idempotentProcedure<T extends Record<string, unknown>>(
  ctx: AppContext,
  credentials: AppCredentials,
  nsid: string,
  body: { environment?: string; idempotencyKey?: string | null },
  steps: (scope: Scope) => IdempotentWork<T>,
): Promise<T & { reused?: boolean }> {
  const scope = scopeOf(credentials, body.environment)
  const { scope: idempotency, requestHash } = idempotencyOf(scope, nsid, body)
  const work = steps(scope)
  const pending = credentials.pendingSpend
  if (pending?.pending) {
    // Without a key or slow checks, spending the token is the first write of the request's own
    // transaction; otherwise it is spent first, on its own, as the auth step does elsewhere.
    if (!idempotency && !work.before && work.workSync) return spendAndWork(ctx, pending, work.checks, work.workSync)
    credentials = { ...credentials, replayed: !(await pending.spendNow()) }
  }
  const retried = await answerReplayedRetry(ctx, credentials, idempotency, requestHash)
  if (retried) return retried as T & { reused: true }
  return runIdempotent(ctx.db, idempotency, requestHash, work)
}

/**
 * One transaction: spend the token, then (when it was not used before) the checks and the work
 * in a savepoint of their own, so that a refusal undoes the work but the token stays spent.
 */
async function spendAndWork<T>(ctx: AppContext, pending: PendingSpend, checks: (() => void) | undefined, workSync: (tx: SyncTx) => T): Promise<T> {
  const outcome = await ctx.db.writeSync((tx) =>
    pending.spendIn(tx)
      ? tx.attempt(() => {
          checks?.()
          return workSync(tx)
        })
      : null,
  )
  if (outcome === null) throw jwtReplayed()
  if (!outcome.ok) throw outcome.error
  return outcome.value
}
