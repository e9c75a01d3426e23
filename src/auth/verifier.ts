import { ensureAtprotoKey, type DidDocument, type IdResolver } from '@atproto/identity'
import { AuthRequiredError, verifyJwt, XRPCError, type VerifySignatureWithKeyFn } from '@atproto/xrpc-server'
import type { IncomingMessage } from 'node:http'
import SqliteDatabase from 'better-sqlite3'
import { DomainError } from '../tickets/errors.js'
import { secretMatches } from '../util/ids.js'
import type { Tx } from '../storage/types.js'
import type { BoundedDidCache } from './did-cache.js'
import type { TokenLedger } from './replay-store.js'
import { createFastSignatureCheck, type SignatureCheck } from './signature.js'

/** Longest lifetime a service-auth token or assertion may have (CONTRACT §2). */
export const MAX_TOKEN_LIFETIME_SECONDS = 300
/** How far ahead of this server's clock a token's `iat` or `nbf` may be (the minting machine's clock may run ahead). */
export const MAX_CLOCK_SKEW_SECONDS = 60
const FORCED_REFRESH_INTERVAL_MS = 30_000

export interface VerifiedToken {
  iss: string
  jti: string
  exp: number
  /** True when `(iss, jti)` had been used before: only an exact idempotent retry may proceed. */
  replayed: boolean
}

interface RawClaims {
  iss?: unknown
  aud?: unknown
  exp?: unknown
  jti?: unknown
  lxm?: unknown
  iat?: unknown
  nbf?: unknown
}

function decodeSegment(segment: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null
  } catch {
    return null
  }
}

/**
 * `check` (deciding as the stock one does), except that a key of another curve than the
 * token's `alg` answers "no" instead of throwing: verifyJwt then re-resolves the DID once, so
 * a rotation from a k256 to a p256 key (or back) is picked up like any other rotation.
 */
function orFalse(check: SignatureCheck): VerifySignatureWithKeyFn {
  return async (key, msgBytes, sigBytes, alg) => {
    try {
      return await check(key, msgBytes, sigBytes, alg)
    } catch {
      return false
    }
  }
}

/**
 * The `#atproto` key of a document, or undefined when it has none; read once per document:
 * extracting it re-encodes the key (base58, point compression in pure JS), which costs as much
 * as a native signature check.
 */
const keyOfDocument = new WeakMap<DidDocument, string | null>()

export function atprotoKeyOf(doc: DidDocument): string | undefined {
  let key = keyOfDocument.get(doc)
  if (key === undefined) {
    try {
      key = ensureAtprotoKey(doc)
    } catch {
      key = null
    }
    keyOfDocument.set(doc, key)
  }
  return key ?? undefined
}

/** A claim that must be a number of seconds when present; the caller's mistake otherwise. */
function optionalSeconds(claims: RawClaims, name: 'iat' | 'nbf'): number | undefined {
  const value = claims[name]
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new AuthRequiredError(`jwt "${name}" must be a number of seconds since 1970`, 'BadJwt')
  }
  return value
}

function isAcceptedIssuer(iss: string): boolean {
  // did:key proves nothing (it resolves to itself); a #fragment names a service, not the caller.
  return /^did:(plc|web):[a-zA-Z0-9._:%-]+$/.test(iss)
}

/**
 * Verifies AT Protocol service-auth tokens: atproto's own `verifyJwt` for type, expiry,
 * lexicon method and signature (with one re-resolve of the issuer's key on a bad signature),
 * and on top what the contract adds: `jti` present and single-use, lifetime at most 300 s,
 * only did:plc / did:web issuers, two accepted audiences, and no 500 for malformed input.
 */
export class ServiceAuthVerifier {
  private readonly audiences: Set<string>
  /** Resolutions under way, shared by concurrent requests from the same issuer. */
  private readonly resolving = new Map<string, Promise<string>>()
  /** When each DID's document was last re-fetched because of a bad signature. */
  private readonly lastForcedRefresh = new Map<string, number>()
  private readonly verifySignature: VerifySignatureWithKeyFn
  /** The resolver's cache, when it is ours: it remembers failed lookups. */
  private readonly didCache: BoundedDidCache | undefined

  /** `signatureCheck`: natively by default (see signature.ts); the stock check is the reference. */
  constructor(
    private readonly serviceDid: string,
    private readonly idResolver: IdResolver,
    private readonly replayStore: TokenLedger,
    opts: { signatureCheck?: SignatureCheck; didCache?: BoundedDidCache } = {},
  ) {
    this.audiences = new Set([serviceDid, `${serviceDid}#atm_tickets`])
    this.verifySignature = orFalse(opts.signatureCheck ?? createFastSignatureCheck().check)
    this.didCache = opts.didCache
  }

  /** Verifies and spends a token; throws 401 AuthRequiredError with the contract's names. */
  async verify(token: string, lxm: string): Promise<VerifiedToken> {
    const checked = await this.check(token, lxm)
    const replayed = !(await this.replayStore.spend(checked.iss, checked.jti, checked.expiresAtMs, checked.signingKey))
    return { iss: checked.iss, jti: checked.jti, exp: checked.exp, replayed }
  }

  /**
   * Verifies a token without spending it yet: the request's handler spends it in its own write
   * transaction (one commit instead of two), and whoever answers the request first makes sure
   * it is spent before the answer goes out (see `PendingSpend`).
   */
  async verifyDeferred(token: string, lxm: string): Promise<PendingSpend> {
    const checked = await this.check(token, lxm)
    return new PendingSpend(this.replayStore, checked.iss, checked.jti, checked.exp, checked.expiresAtMs, checked.signingKey)
  }

  private async check(token: string, lxm: string): Promise<{ iss: string; jti: string; exp: number; expiresAtMs: number; signingKey: string }> {
    const parts = token.split('.')
    if (parts.length !== 3) throw new AuthRequiredError('poorly formatted jwt: expected three base64url parts', 'BadJwt')
    const header = decodeSegment(parts[0]!)
    const claims = decodeSegment(parts[1]!) as RawClaims | null
    if (!header || !claims) throw new AuthRequiredError('poorly formatted jwt: header and payload must be base64url JSON objects', 'BadJwt')
    if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) {
      throw new AuthRequiredError('jwt has no numeric "exp": mint a token with an expiry', 'BadJwt')
    }
    if (typeof claims.jti !== 'string' || claims.jti.length === 0 || claims.jti.length > 256) {
      throw new AuthRequiredError('jwt has no "jti": mint a fresh token with a unique jti for every request', 'BadJwt')
    }
    if (typeof claims.iss !== 'string' || !isAcceptedIssuer(claims.iss)) {
      throw new AuthRequiredError('jwt "iss" must be a did:plc or did:web without a #fragment', 'BadJwtIss')
    }
    const nowSeconds = Date.now() / 1000
    if (claims.exp > nowSeconds + MAX_TOKEN_LIFETIME_SECONDS) {
      throw new AuthRequiredError(
        `jwt expires more than ${MAX_TOKEN_LIFETIME_SECONDS} s from now: mint a short-lived token`,
        'BadJwtLifetime',
      )
    }
    const iat = optionalSeconds(claims, 'iat')
    if (iat !== undefined && iat > nowSeconds + MAX_CLOCK_SKEW_SECONDS) {
      throw new AuthRequiredError(
        `jwt "iat" is ${Math.round(iat - nowSeconds)} s in the future (${MAX_CLOCK_SKEW_SECONDS} s of clock skew is allowed): mint tokens with the current time, and check the clock of the machine that mints them`,
        'BadJwtLifetime',
      )
    }
    const nbf = optionalSeconds(claims, 'nbf')
    if (nbf !== undefined && nbf > nowSeconds + MAX_CLOCK_SKEW_SECONDS) {
      throw new AuthRequiredError(
        `jwt is not valid for another ${Math.round(nbf - nowSeconds)} s ("nbf"; ${MAX_CLOCK_SKEW_SECONDS} s of clock skew is allowed): send a token that is valid now`,
        'BadJwtLifetime',
      )
    }
    if (typeof claims.aud !== 'string' || !this.audiences.has(claims.aud)) {
      // Expiry is reported first, as verifyJwt does.
      if (nowSeconds > claims.exp) throw new AuthRequiredError('jwt expired', 'JwtExpired')
      throw new AuthRequiredError(`jwt "aud" must be ${this.serviceDid}`, 'BadJwtAudience')
    }

    // The key of the last lookup is the one the signature verified with (verifyJwt asks again
    // only after a failed check): the spend makes sure no worker has seen it replaced since.
    let signingKey = ''
    const keyOf = async (iss: string, forceRefresh: boolean) => (signingKey = await this.signingKey(iss, forceRefresh))
    const payload = await verifyJwt(token, null, lxm, keyOf, this.verifySignature).catch((err: unknown) => {
      if (err instanceof XRPCError) throw err
      throw new AuthRequiredError('could not verify jwt', 'BadJwt')
    })

    return { iss: payload.iss as string, jti: claims.jti, exp: claims.exp, expiresAtMs: Math.ceil(claims.exp * 1000), signingKey }
  }

  /**
   * The issuer's `#atproto` key (cached). A burst of requests from one issuer on a cold cache
   * shares one resolution instead of fetching the DID document once per request.
   */
  private signingKey(iss: string, requestedRefresh: boolean): Promise<string> {
    // A re-fetch already under way for this DID answers every request that wants one.
    const refreshing = requestedRefresh ? this.resolving.get(`fresh ${iss}`) : undefined
    if (refreshing) return refreshing
    const forceRefresh = requestedRefresh && this.mayForceRefresh(iss)
    const key = `${forceRefresh ? 'fresh' : 'cached'} ${iss}`
    let pending = this.resolving.get(key)
    if (!pending) {
      const waitMs = forceRefresh ? 0 : (this.didCache?.failedRecently(iss) ?? 0)
      if (waitMs > 0) {
        // Every token of a DID that cannot be resolved would otherwise cost a fetch.
        return Promise.reject(
          new AuthRequiredError(
            `could not resolve an atproto signing key for ${iss} moments ago: fix its DID document, then retry in ${Math.ceil(waitMs / 1000)} s`,
            'BadJwtIss',
          ),
        )
      }
      pending = this.idResolver.did
        .ensureResolve(iss, forceRefresh)
        .then((doc) => {
          const signingKey = atprotoKeyOf(doc)
          if (signingKey === undefined) throw new Error('no #atproto key')
          return signingKey
        })
        .catch((err: unknown) => {
          // Recording the key for the other workers failed: ours to answer (500), not the issuer's.
          if (err instanceof SqliteDatabase.SqliteError) throw err
          // A forced re-fetch after a bad signature is rate-limited on its own, and must not
          // shut out a DID whose cached key still works.
          if (!forceRefresh) this.didCache?.noteFailure(iss)
          throw new AuthRequiredError(
            `could not resolve an atproto signing key for ${iss}: its DID document must be reachable, at most the size this server allows, and have an #atproto key`,
            'BadJwtIss',
          )
        })
        .finally(() => this.resolving.delete(key))
      this.resolving.set(key, pending)
    }
    return pending
  }

  /**
   * A bad signature re-fetches the issuer's document (it may have rotated its key), but at most
   * once per DID every 30 s: anyone can send tokens with a bad signature, and each must not
   * cost a request to the PLC directory or the issuer's host.
   */
  private mayForceRefresh(iss: string): boolean {
    const now = Date.now()
    const last = this.lastForcedRefresh.get(iss)
    if (last !== undefined && now - last < FORCED_REFRESH_INTERVAL_MS) return false
    this.lastForcedRefresh.delete(iss)
    this.lastForcedRefresh.set(iss, now)
    if (this.lastForcedRefresh.size > 10_000) {
      const oldest = this.lastForcedRefresh.keys().next().value
      if (oldest !== undefined) this.lastForcedRefresh.delete(oldest)
    }
    return true
  }

  /** Reads `Authorization: Bearer …` and verifies it for `lxm`. */
  async verifyRequest(req: IncomingMessage, lxm: string): Promise<VerifiedToken> {
    return this.verify(bearerToken(req), lxm)
  }

  /** Reads `Authorization: Bearer …` and verifies it for `lxm`, leaving it to be spent (`verifyDeferred`). */
  async verifyRequestDeferred(req: IncomingMessage, lxm: string): Promise<PendingSpend> {
    return this.verifyDeferred(bearerToken(req), lxm)
  }

  /**
   * Checks a user's assertion (buyer or organizer) as fully as a caller's token, for the
   * method it was sent with. Failures are named domain errors (400): InvalidAssertion, UserDidMismatch.
   */
  async verifyAssertion(field: string, token: string, lxm: string, expectedDid: string): Promise<void> {
    let verified: VerifiedToken
    try {
      verified = await this.verify(token, lxm)
    } catch (err) {
      // Only a verdict on the token is the caller's fault; a database or network failure is
      // ours, answered as a 500 (and never stored as the answer of an idempotency key).
      if (!(err instanceof AuthRequiredError)) throw err
      throw new DomainError('InvalidAssertion', `${field} is invalid (${err.customErrorName ?? 'BadJwt'}): ${err.errorMessage}`)
    }
    if (verified.iss !== expectedDid) {
      throw new DomainError('UserDidMismatch', `${field} was issued by ${verified.iss}, not by ${expectedDid}`)
    }
    if (verified.replayed) {
      throw new DomainError('InvalidAssertion', `${field} has been used before: mint a fresh assertion for each request`)
    }
  }
}

function bearerToken(req: IncomingMessage): string {
  const header = req.headers.authorization
  if (!header) throw new AuthRequiredError('Authorization: Bearer <service-auth jwt> is required', 'AuthMissing')
  const match = /^Bearer\s+(\S+)$/i.exec(header)
  if (!match) throw new AuthRequiredError('Authorization must be "Bearer <service-auth jwt>"', 'AuthMissing')
  return match[1]!
}

/**
 * A verified token not recorded as spent yet. It is spent exactly once, before the request is
 * answered (CONTRACT §2: spent once it verifies, whatever the method answers): in the handler's
 * own write transaction (`spendIn`), or on its own (`spendNow`) when the request ends another way.
 */
export class PendingSpend {
  private settled = false

  constructor(
    private readonly store: TokenLedger,
    readonly iss: string,
    readonly jti: string,
    readonly exp: number,
    readonly expiresAtMs: number,
    /** The key the token was verified with. */
    readonly signingKey: string,
  ) {}

  /** Not yet spent nor handed to a transaction. */
  get pending(): boolean {
    return !this.settled
  }

  /** Spends it inside `tx`; true when this is its first use. */
  spendIn(tx: Tx): Promise<boolean> {
    this.settled = true
    return this.store.spendIn(tx, this.iss, this.jti, this.expiresAtMs, this.signingKey)
  }

  /** Spends it in a write of its own; true when this is its first use. */
  async spendNow(): Promise<boolean> {
    this.settled = true
    return this.store.spend(this.iss, this.jti, this.expiresAtMs, this.signingKey)
  }
}

/** HTTP Basic for the operator, user `admin`, compared in constant time. */
export function checkAdminBasicAuth(req: IncomingMessage, password: string): void {
  const header = req.headers.authorization ?? ''
  const match = /^Basic\s+(\S+)$/i.exec(header)
  if (!match) throw new AuthRequiredError('admin methods need Authorization: Basic with user "admin"', 'AuthMissing')
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8')
  if (!secretMatches(decoded, `admin:${password}`)) {
    throw new AuthRequiredError('wrong admin user or password', 'BadAdminPassword')
  }
}
