import { createHash, createPublicKey, verify as opensslVerify, type KeyObject } from 'node:crypto'
import { createRequire } from 'node:module'
import { P256_JWT_ALG, parseDidKey, SECP256K1_JWT_ALG } from '@atproto/crypto'

/**
 * Signature checks for service-auth tokens that decide exactly as the stock path
 * (`cryptoVerifySignatureWithKey` of @atproto/xrpc-server: noble curves with
 * `allowMalleableSig: true`), but natively: secp256k1 (ES256K) with libsecp256k1, P-256
 * (ES256) with OpenSSL. The pure-JS stock path costs several milliseconds per token, more
 * than the rest of a request together.
 *
 * "Exactly as" covers the odd cases too: a DER-encoded signature is accepted (DER is tried
 * first, even on 64 bytes, as noble does), so is a high-S one; a DER signature whose r or s
 * is out of range throws instead of answering false; a key of the other curve throws, but an
 * empty `alg` is checked against the key's own curve.
 */
export type SignatureCheck = (didKey: string, msgBytes: Uint8Array, sigBytes: Uint8Array, alg: string) => Promise<boolean>

export type Secp256k1Backend = 'libsecp256k1' | 'openssl'

interface CurveParams {
  n: bigint
  halfN: bigint
}

const CURVES: Record<string, CurveParams> = {
  [SECP256K1_JWT_ALG]: curve(0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n),
  [P256_JWT_ALG]: curve(0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n),
}

function curve(n: bigint): CurveParams {
  return { n, halfN: n >> 1n }
}

interface ParsedKey {
  jwtAlg: string
  curve: CurveParams
  /** Uncompressed SEC1 point: libsecp256k1 parses it without a square root. */
  point: Uint8Array
  /** The same key for OpenSSL. */
  keyObject: KeyObject
}

interface NativeSecp256k1 {
  ecdsaVerify(sig: Uint8Array, msg32: Uint8Array, pubkey: Uint8Array): boolean
}

let nativeModule: NativeSecp256k1 | null | undefined

/**
 * The N-API build of libsecp256k1 shipped inside the `secp256k1` package, or null when it
 * does not load here (another platform, no prebuilt binary): OpenSSL then checks secp256k1
 * too, slower but with the same answers. The package's own fallback (elliptic, pure JS) is
 * skipped on purpose by loading its bindings directly.
 */
export function loadNativeSecp256k1(): NativeSecp256k1 | null {
  if (nativeModule !== undefined) return nativeModule
  try {
    nativeModule = createRequire(import.meta.url)('secp256k1/bindings') as NativeSecp256k1
  } catch {
    nativeModule = null
  }
  return nativeModule
}

/** Big-endian unsigned integer of any length. */
function toBigInt(bytes: Uint8Array): bigint {
  return bytes.length === 0 ? 0n : BigInt('0x' + Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex'))
}

function to32Bytes(value: bigint): Buffer {
  return Buffer.from(value.toString(16).padStart(64, '0'), 'hex')
}

/** A DER INTEGER's content: big-endian, no leading zero byte unless the high bit needs one. */
function derInteger(value: bigint): Buffer {
  let hex = value.toString(16)
  if (hex.length % 2) hex = '0' + hex
  const bytes = Buffer.from(hex, 'hex')
  return bytes[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes
}

/** SEQUENCE { INTEGER r, INTEGER s }: at most 72 bytes, so every length fits one byte. */
function derSignature(r: bigint, s: bigint): Buffer {
  const rBytes = derInteger(r)
  const sBytes = derInteger(s)
  return Buffer.concat([
    Buffer.from([0x30, rBytes.length + sBytes.length + 4, 0x02, rBytes.length]),
    rBytes,
    Buffer.from([0x02, sBytes.length]),
    sBytes,
  ])
}

/** Thrown inside the DER reader only, for "this is not DER"; never leaves this module. */
const NOT_DER = Symbol('not DER')

/** One DER tag-length-value, with the same strictness as noble's parser. */
function readTlv(tag: number, data: Uint8Array): { value: Uint8Array; rest: Uint8Array } {
  let pos = 0
  if (data.length < 2 || data[pos++] !== tag) throw NOT_DER
  const first = data[pos++]!
  let length = 0
  if (!(first & 0x80)) {
    length = first
  } else {
    const lengthOfLength = first & 0x7f
    if (!lengthOfLength || lengthOfLength > 4) throw NOT_DER
    const lengthBytes = data.subarray(pos, pos + lengthOfLength)
    if (lengthBytes.length !== lengthOfLength || lengthBytes[0] === 0) throw NOT_DER
    for (const byte of lengthBytes) length = (length << 8) | byte
    pos += lengthOfLength
    if (length < 128) throw NOT_DER
  }
  const value = data.subarray(pos, pos + length)
  if (value.length !== length) throw NOT_DER
  return { value, rest: data.subarray(pos + length) }
}

function readDerInteger(bytes: Uint8Array): bigint {
  if ((bytes[0] ?? 0) & 0x80) throw NOT_DER
  if (bytes[0] === 0 && !((bytes[1] ?? 0) & 0x80)) throw NOT_DER
  return toBigInt(bytes)
}

/** (r, s) of a DER signature, or null when `sig` is not DER as noble reads it. */
function parseDer(sig: Uint8Array): { r: bigint; s: bigint } | null {
  // The common case, a compact signature, is told apart without an exception.
  if (sig[0] !== 0x30) return null
  try {
    const sequence = readTlv(0x30, sig)
    if (sequence.rest.length) return null
    const r = readTlv(0x02, sequence.value)
    const s = readTlv(0x02, r.rest)
    if (s.rest.length) return null
    return { r: readDerInteger(r.value), s: readDerInteger(s.value) }
  } catch (err) {
    if (err === NOT_DER) return null
    throw err
  }
}

/**
 * The signature as (r, s), or null for "does not verify". Throws where the stock path throws:
 * well-formed DER whose r or s is not in [1, n-1].
 */
export function parseSignature(sig: Uint8Array, params: CurveParams): { r: bigint; s: bigint } | null {
  const der = parseDer(sig)
  if (der) {
    if (der.r <= 0n || der.r >= params.n || der.s <= 0n || der.s >= params.n) {
      throw new Error('invalid signature: r or s out of range')
    }
    return der
  }
  if (sig.length !== 64) return null
  const r = toBigInt(sig.subarray(0, 32))
  const s = toBigInt(sig.subarray(32, 64))
  if (r <= 0n || r >= params.n || s <= 0n || s >= params.n) return null
  return { r, s }
}

function jwkCoordinates(point: Uint8Array): { x: string; y: string } {
  return {
    x: Buffer.from(point.subarray(1, 33)).toString('base64url'),
    y: Buffer.from(point.subarray(33, 65)).toString('base64url'),
  }
}

/**
 * Parses a did:key once; the same errors as the stock path for a malformed or unsupported
 * key (`parseDidKey` is the stock parser). Both curves get an OpenSSL key object.
 */
function parseKey(didKey: string): ParsedKey {
  const { jwtAlg, keyBytes } = parseDidKey(didKey)
  const params = CURVES[jwtAlg]
  if (!params || keyBytes.length !== 65) throw new Error(`Unsupported signature alg: ${jwtAlg}`)
  const crv = jwtAlg === SECP256K1_JWT_ALG ? 'secp256k1' : 'P-256'
  const keyObject = createPublicKey({ key: { kty: 'EC', crv, ...jwkCoordinates(keyBytes) }, format: 'jwk' })
  return { jwtAlg, curve: params, point: keyBytes, keyObject }
}

export interface FastSignatureCheckOptions {
  /** Use libsecp256k1 for ES256K when it loads (default true); false forces OpenSSL. */
  nativeSecp256k1?: boolean
  /** How many parsed keys to keep (least recently used go first). */
  maxKeys?: number
}

export interface FastSignatureCheck {
  check: SignatureCheck
  secp256k1Backend: Secp256k1Backend
  /** Parsed keys held now (bounded by maxKeys). */
  cachedKeys(): number
}

export function createFastSignatureCheck(opts: FastSignatureCheckOptions = {}): FastSignatureCheck {
  const native = opts.nativeSecp256k1 === false ? null : loadNativeSecp256k1()
  const maxKeys = opts.maxKeys ?? 10_000
  const keys = new Map<string, ParsedKey>()

  const keyFor = (didKey: string): ParsedKey => {
    let key = keys.get(didKey)
    if (key) {
      // Least recently used first: a hit moves the key to the end.
      keys.delete(didKey)
      keys.set(didKey, key)
      return key
    }
    key = parseKey(didKey)
    keys.set(didKey, key)
    if (keys.size > maxKeys) keys.delete(keys.keys().next().value!)
    return key
  }

  const checkNow = (didKey: string, msgBytes: Uint8Array, sigBytes: Uint8Array, alg: string): boolean => {
    const key = keyFor(didKey)
    // An empty alg is not compared, as in the stock path: the key alone decides the curve.
    if (alg && alg !== key.jwtAlg) throw new Error(`Expected key alg ${alg}, got ${key.jwtAlg}`)
    const rs = parseSignature(sigBytes, key.curve)
    if (!rs) return false
    if (native && key.jwtAlg === SECP256K1_JWT_ALG) {
      // libsecp256k1 accepts low-S only; (r, n - s) verifies exactly when (r, s) does.
      const s = rs.s > key.curve.halfN ? key.curve.n - rs.s : rs.s
      const digest = createHash('sha256').update(msgBytes).digest()
      return native.ecdsaVerify(Buffer.concat([to32Bytes(rs.r), to32Bytes(s)]), digest, key.point)
    }
    // OpenSSL accepts high-S as it is. Given the key object itself and DER, node:crypto skips
    // the option parsing and signature conversion that cost a third of the check.
    return opensslVerify('sha256', msgBytes, key.keyObject, derSignature(rs.r, rs.s))
  }

  return {
    check: async (didKey, msgBytes, sigBytes, alg) => checkNow(didKey, msgBytes, sigBytes, alg),
    secp256k1Backend: native ? 'libsecp256k1' : 'openssl',
    cachedKeys: () => keys.size,
  }
}
