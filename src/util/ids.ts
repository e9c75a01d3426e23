import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { base58btc } from 'multiformats/bases/base58'

export type IdPrefix = 'evt' | 'cg' | 'tier' | 'hold' | 'claim' | 'pay' | 'tkt' | 'cil' | 'chk' | 'dlv' | 'acct' | 'ref'

/** Characters of an id after its prefix: 128 bits in base58, padded so that all ids are as long. */
const ID_CHARS = 22

/**
 * Prefixed identifiers, Stripe style: `hold_3xK…`. 128 bits: the creation time in milliseconds
 * (48 bits) then 80 random bits, so ids are unguessable yet made in order. In order matters:
 * a new row's key then lands on the last page of its table and index, where the rows written
 * just before it are, instead of on a random page, and a commit writes a few pages, not one
 * per row. base58btc's digits are in ASCII order, so fixed-width ids sort as their numbers.
 */
export function newId(prefix: IdPrefix): string {
  const bytes = randomBytes(16)
  bytes.writeUIntBE(Date.now(), 0, 6)
  return `${prefix}_${base58btc.baseEncode(bytes).padStart(ID_CHARS, '1')}`
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
