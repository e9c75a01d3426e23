import { createHash, randomFillSync, timingSafeEqual } from 'node:crypto'

export type IdPrefix = 'evt' | 'cg' | 'tier' | 'hold' | 'claim' | 'pay' | 'tkt' | 'cil' | 'chk' | 'dlv' | 'acct' | 'ref'

/**
 * Random bytes drawn from the CSPRNG a page at a time and handed out once each: a hold takes
 * an id and a secret, and asking the OS-seeded generator for 16 bytes at a time cost more
 * than the rest of making them.
 */
const randomPool = Buffer.allocUnsafe(4096)
let randomUsed = randomPool.length

function takeRandom(length: number): Buffer {
  if (randomUsed + length > randomPool.length) {
    randomFillSync(randomPool)
    randomUsed = 0
  }
  const bytes = randomPool.subarray(randomUsed, randomUsed + length)
  randomUsed += length
  return bytes
}

/** Characters of an id after its prefix: 128 bits in base58 (at most 22 digits), zero-padded. */
const ID_CHARS = 22
const BASE58_DIGITS = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'

/**
 * Prefixed identifiers, Stripe style: `hold_3xK…`. 128 bits: the creation time in milliseconds
 * (48 bits) then 80 random bits, so ids are unguessable yet made in order. In order matters:
 * a new row's key then lands on the last page of its table and index, where the rows written
 * just before it are, instead of on a random page, and a commit writes a few pages, not one
 * per row. The digits are base58btc's, in ASCII order, so fixed-width ids sort as their numbers.
 */
export function newId(prefix: IdPrefix): string {
  const random = takeRandom(10)
  const nowMs = Date.now()
  // The 128-bit number as four 32-bit limbs, most significant first.
  const limbs = [
    Math.floor(nowMs / 0x10000),
    ((nowMs % 0x10000) * 0x10000 + random.readUInt16BE(0)) >>> 0,
    random.readUInt32BE(2),
    random.readUInt32BE(6),
  ]
  let digits = ''
  for (let place = 0; place < ID_CHARS; place++) {
    // Long division by 58: each step's dividend stays below 58 * 2^32, exact in a double.
    let remainder = 0
    for (let index = 0; index < limbs.length; index++) {
      const dividend = remainder * 0x100000000 + limbs[index]!
      limbs[index] = Math.floor(dividend / 58)
      remainder = dividend % 58
    }
    digits = BASE58_DIGITS[remainder]! + digits
  }
  return `${prefix}_${digits}`
}

/** A bearer secret (256 random bits): hold checkout tokens, ticket scan tokens, webhook secrets. */
export function newSecret(prefix: string): string {
  return `${prefix}_${takeRandom(32).toString('base64url')}`
}

/**
 * Whether a presented secret is the expected one, in constant time: both are hashed first, so
 * neither their contents nor their lengths show in the time taken.
 */
export function secretMatches(given: string, expected: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest()
  return timingSafeEqual(digest(given), digest(expected))
}
