import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { base58btc } from 'multiformats/bases/base58'

export type IdPrefix = 'evt' | 'cg' | 'tier' | 'hold' | 'claim' | 'pay' | 'tkt' | 'cil' | 'chk' | 'dlv' | 'acct' | 'ref'

/** Prefixed, unguessable identifiers (128 random bits), Stripe style: `hold_3xK…`. */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${base58btc.baseEncode(randomBytes(16))}`
}

/** A bearer secret (256 random bits): hold checkout tokens, ticket scan tokens, webhook secrets. */
export function newSecret(prefix: string): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`
}

/**
 * Whether a presented secret is the expected one, in constant time: both are hashed first, so
 * neither their contents nor their lengths show in the time taken.
 */
export function secretMatches(given: string, expected: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest()
  return timingSafeEqual(digest(given), digest(expected))
}
