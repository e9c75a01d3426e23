import { AuthRequiredError, ForbiddenError, ResponseType, XRPCError, type MethodAuthContext } from '@atproto/xrpc-server'
import { checkAdminBasicAuth, type PendingSpend } from '../auth/verifier.js'
import type { AppContext } from '../context.js'
import type { DbConn, Tx } from '../storage/types.js'
import type { AppTable } from '../db/schema.js'
import { APP_SQL, findApp } from '../tickets/apps.js'
import { parseEnvironment } from '../tickets/environment.js'
import type { Scope } from '../tickets/events.js'
import { findStored, hashRequest, replayStored, runIdempotent, type IdempotencyScope, type IdempotentWork } from '../tickets/idempotency.js'
import { adminAttempts, clientAddress } from '../xrpc/admin-guesses.js'
import type { DirectAuthContext } from '../xrpc/direct-lane.js'

export interface AppCredentials {
  /** The calling app's DID (the token's `iss`). */
  appDid: string
  /** The app's row; with `deferred`, readable only once it is settled. */
  readonly app: AppTable
  /** The token's `(iss, jti)` was seen before: only an exact idempotent retry may go on. */
  replayed: boolean
  /** Set when the rest of the auth is left to the handler's own transaction (the direct lane). */
  deferred?: DeferredAppAuth
}

/** The app's row, or the 403 for an app that may not call. */
function requireTicketsApp(app: AppTable | undefined, did: string): AppTable {
  if (!app) {
    throw new ForbiddenError(`${did} is not registered as an ATM app: ask the operator to register it`, 'AppNotRegistered')
  }
  if (app.ticketsEnabled !== 1) {
    throw new ForbiddenError(`ATM Tickets is not enabled for ${did}: ask the operator to enable it`, 'TicketsModuleDisabled')
  }
  return app
}

/**
 * An app's auth whose second half, spending the token and reading the app, is left to the
 * handler's own write transaction: one transaction per request instead of three. The direct
 * lane settles it on its own before answering anything else (a refused input, say), so the
 * outside view is as if the auth had been done first: a verified token is spent whatever the
 * answer, and a 403 for the app comes before any complaint about the input.
 */
export class DeferredAppAuth {
  readonly credentials: AppCredentials
  private app: AppTable | undefined

  constructor(
    private readonly ctx: AppContext,
    private readonly token: PendingSpend,
  ) {
    const deferred = this
    this.credentials = {
      appDid: token.iss,
      replayed: false,
      deferred,
      get app(): AppTable {
        if (!deferred.app) throw new Error('the app was read before its deferred auth was settled')
        return deferred.app
      },
    }
  }

  get pending(): boolean {
    return this.token.pending
  }

  /** Spends the token and checks the app, each on its own; throws the 403 of an app that may not call. */
  async settle(): Promise<void> {
    this.credentials.replayed = !(await this.token.spendNow())
    this.app = requireTicketsApp(await findApp(this.ctx.db, this.token.iss), this.token.iss)
  }

  /** The same inside `tx`. Refusals are answered, not thrown: the token stays spent with the commit. */
  async settleIn(tx: Tx): Promise<'ok' | 'replayed' | ForbiddenError> {
    const firstUse = await this.token.spendIn(tx)
    try {
      this.app = requireTicketsApp(await tx.get<AppTable>(APP_SQL.byDid, this.token.iss), this.token.iss)
    } catch (err) {
      return err as ForbiddenError
    }
    if (firstUse) return 'ok'
    this.credentials.replayed = true
    return 'replayed'
  }
}

export interface UserCredentials {
  did: string
  replayed: boolean
}

/**
 * A registered app with the tickets module on, proven by a service-auth token for `nsid`.
 * `settleInHandler`: when the direct lane serves the request, the token is only verified here
 * and the method settles the rest in its own transaction (see `DeferredAppAuth`).
 */
export function appAuth(ctx: AppContext, nsid: string, opts: { settleInHandler?: boolean } = {}) {
  return async (authContext: MethodAuthContext | DirectAuthContext): Promise<{ credentials: AppCredentials }> => {
    const { req } = authContext
    if (opts.settleInHandler === true && 'deferrable' in authContext) {
      return { credentials: new DeferredAppAuth(ctx, await ctx.authVerifier.verifyRequestDeferred(req, nsid)).credentials }
    }
    const token = await ctx.authVerifier.verifyRequest(req, nsid)
    const app = requireTicketsApp(await findApp(ctx.db, token.iss), token.iss)
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

/**
 * The operator's password (HTTP Basic). Every attempt is counted per client address across
 * the workers: after a few wrong passwords the address waits, a little longer with each
 * further one (see `AdminGuessBook`), and is answered 429 with Retry-After meanwhile.
 */
export function adminAuth(ctx: AppContext) {
  // Counted in the database every node shares (PostgreSQL), else by this machine's primary.
  const shared = ctx.adminGuesses
  const attempts = shared ? { attempt: (client: string, correct: boolean) => shared.attempt(client, correct, Date.now()) } : adminAttempts()
  return async ({ req, res }: MethodAuthContext | DirectAuthContext): Promise<{ credentials: { admin: true } }> => {
    let refusal: AuthRequiredError | undefined
    try {
      checkAdminBasicAuth(req, ctx.adminPassword)
    } catch (err) {
      // Without a Basic header nothing was guessed.
      if (!(err instanceof AuthRequiredError) || err.customErrorName !== 'BadAdminPassword') throw err
      refusal = err
    }
    const waitMs = await attempts.attempt(clientAddress(req, ctx.cfg.trustedProxies), refusal === undefined)
    if (waitMs > 0) {
      const seconds = Math.ceil(waitMs / 1000)
      res.setHeader('retry-after', String(seconds))
      throw new XRPCError(
        ResponseType.RateLimitExceeded,
        `too many wrong admin passwords from this address: try again in ${seconds} s`,
        'RateLimitExceeded',
      )
    }
    if (refusal) throw refusal
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
  const stored = scope ? await findStored(ctx.db.db, ctx.db.instances, scope, requestHash, Date.now()) : null
  if (!stored) refuseReplay(credentials)
  return replayStored(stored!)
}

/**
 * The course of every procedure that takes `idempotencyKey`: a token used before gets only the
 * stored answer of an exact retry; otherwise `checks` and `before` (checks whose named refusals
 * are stored under the key too) and `work` or `workSync` (in one transaction) run under the key.
 * A deferred auth (the direct lane) is settled first, inside the work's transaction when there
 * is no key and no `before`.
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
  const deferred = credentials.deferred
  if (deferred?.pending) {
    // Without a key or slow checks, the rest of the auth is the start of the request's own
    // transaction; otherwise it is done first, on its own, as elsewhere.
    if (!idempotency && !work.before) return settleAndWork(ctx, deferred, work.checks, work.work)
    await deferred.settle()
  }
  const retried = await answerReplayedRetry(ctx, credentials, idempotency, requestHash)
  if (retried) return retried as T & { reused: true }
  return runIdempotent(ctx.db, idempotency, requestHash, work)
}

/**
 * One transaction: the rest of the auth (spend the token, read the app), then, when it passes,
 * the checks and the work in a savepoint of their own, so that a refusal undoes the work but
 * the token stays spent.
 */
async function settleAndWork<T>(
  ctx: AppContext,
  deferred: DeferredAppAuth,
  checks: (() => void) | undefined,
  work: (tx: DbConn) => Promise<T>,
): Promise<T> {
  const outcome = await ctx.db.write(async (tx) => {
    const auth = await deferred.settleIn(tx)
    if (auth !== 'ok') return { auth }
    return {
      work: await tx.attempt(async () => {
        checks?.()
        return work(tx.db)
      }),
    }
  })
  if (outcome.auth === 'replayed') throw jwtReplayed()
  if (outcome.auth) throw outcome.auth
  if (!outcome.work!.ok) throw outcome.work!.error
  return outcome.work!.value
}
