// Real AT Protocol service-auth tokens, the well-formed kind and the odd kinds
// a verifier must decide on.
import { randomBytes } from 'node:crypto'
import type { Keypair } from '@atproto/crypto'
import { createServiceJwt } from '@atproto/xrpc-server'

export interface MintOptions {
  keypair: Keypair
  iss: string
  aud: string
  /** NSID of the method; null leaves `lxm` out. */
  lxm: string | null
  /** Seconds since epoch; default now. */
  iat?: number
  /** Seconds since epoch; default iat + 60. */
  exp?: number
  /** Default: fresh random hex. null: no `jti` claim at all. */
  jti?: string | null
  /** Header `alg`; default the keypair's (ES256K / ES256). */
  alg?: string
  /** Header `typ`; default 'JWT'; null leaves it out. */
  typ?: string | null
  /** Extra header fields. */
  header?: Record<string, unknown>
  /** Extra payload claims; a value of `undefined` removes a claim (e.g. { exp: undefined }). */
  payload?: Record<string, unknown>
}

/**
 * Mints a service-auth JWT. The plain case goes through @atproto/xrpc-server's
 * own createServiceJwt (exactly what a PDS or app would send); anything it
 * cannot express (chosen or missing jti, other alg/typ, extra or missing
 * claims) is signed by hand with the same encoding.
 */
export async function mintServiceJwt(o: MintOptions): Promise<string> {
  const custom =
    o.jti !== undefined || o.alg !== undefined || o.typ !== undefined || o.header || o.payload
  if (!custom) {
    return createServiceJwt({ keypair: o.keypair, iss: o.iss, aud: o.aud, lxm: o.lxm, iat: o.iat, exp: o.exp })
  }
  const iat = o.iat ?? Math.floor(Date.now() / 1000)
  const header = dropUndefined({
    typ: o.typ === null ? undefined : (o.typ ?? 'JWT'),
    alg: o.alg ?? o.keypair.jwtAlg,
    ...o.header,
  })
  const payload = dropUndefined({
    iat,
    iss: o.iss,
    aud: o.aud,
    exp: o.exp ?? iat + 60,
    lxm: o.lxm ?? undefined,
    jti: o.jti === null ? undefined : (o.jti ?? randomJti()),
    ...o.payload,
  })
  return signRawJwt({ keypair: o.keypair, header, payload })
}

export function randomJti(): string {
  return randomBytes(16).toString('hex')
}

/**
 * Signs arbitrary header and payload. An object is JSON-encoded then base64url;
 * a string is used *as the segment itself*, so `header: 'not-base64-json'` or
 * `payload: b64url('{broken')` make tokens that are not base64url JSON but are
 * still correctly signed.
 */
export async function signRawJwt(o: {
  keypair: Keypair
  header: Record<string, unknown> | string
  payload: Record<string, unknown> | string
}): Promise<string> {
  const seg = (v: Record<string, unknown> | string) => (typeof v === 'string' ? v : b64url(JSON.stringify(v)))
  const signingInput = `${seg(o.header)}.${seg(o.payload)}`
  const sig = await o.keypair.sign(Buffer.from(signingInput, 'utf8'))
  return `${signingInput}.${Buffer.from(sig).toString('base64url')}`
}

export function b64url(text: string | Uint8Array): string {
  return Buffer.from(text).toString('base64url')
}

export interface DecodedJwt {
  header: Record<string, unknown>
  payload: Record<string, unknown>
  signingInput: string
  signature: Uint8Array
}

export function decodeJwt(jwt: string): DecodedJwt {
  const [h, p, s] = jwt.split('.')
  if (h === undefined || p === undefined || s === undefined) throw new Error('not a JWT')
  const json = (seg: string) => JSON.parse(Buffer.from(seg, 'base64url').toString('utf8')) as Record<string, unknown>
  return { header: json(h), payload: json(p), signingInput: `${h}.${p}`, signature: Buffer.from(s, 'base64url') }
}

// ---- signature malleability ------------------------------------------------
// ECDSA (r, s) and (r, n - s) are both valid; atproto signs low-S compact
// (r || s, 64 bytes) but verifyJwt accepts high-S and DER too
// (allowMalleableSig). So one token body can carry several valid signatures.

export const CURVE_ORDER = {
  k256: 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n,
  p256: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
} as const

/** Same token, signature s replaced by n - s (high-S if it was low-S). */
export function highSVariant(jwt: string): string {
  const { signingInput, signature, header } = decodeJwt(jwt)
  if (signature.length !== 64) throw new Error(`expected a 64-byte compact signature, got ${signature.length}`)
  const n = header.alg === 'ES256' ? CURVE_ORDER.p256 : CURVE_ORDER.k256
  const r = signature.slice(0, 32)
  const s = bytesToBigInt(signature.slice(32))
  const out = Buffer.concat([r, bigIntTo32Bytes(n - s)])
  return `${signingInput}.${out.toString('base64url')}`
}

/** Same token, compact signature re-encoded as ASN.1 DER: SEQUENCE { INTEGER r, INTEGER s }. */
export function derVariant(jwt: string): string {
  const { signingInput, signature } = decodeJwt(jwt)
  if (signature.length !== 64) throw new Error(`expected a 64-byte compact signature, got ${signature.length}`)
  const der = compactToDer(signature)
  return `${signingInput}.${Buffer.from(der).toString('base64url')}`
}

/** Same token with one bit of the signature flipped: must never verify. */
export function corruptSignature(jwt: string): string {
  const { signingInput, signature } = decodeJwt(jwt)
  const sig = Buffer.from(signature)
  sig[10] = (sig[10] ?? 0) ^ 0x01
  return `${signingInput}.${sig.toString('base64url')}`
}

/** Same signature over a different payload (claims merged in): must never verify. */
export function tamperPayload(jwt: string, claims: Record<string, unknown>): string {
  const [h, , s] = jwt.split('.')
  const { payload } = decodeJwt(jwt)
  return `${h}.${b64url(JSON.stringify({ ...payload, ...claims }))}.${s}`
}

export function compactToDer(sig: Uint8Array): Uint8Array {
  const int = (bytes: Uint8Array): number[] => {
    let i = 0
    while (i < bytes.length - 1 && bytes[i] === 0) i++ // minimal encoding
    const body = Array.from(bytes.slice(i))
    if ((body[0] ?? 0) & 0x80) body.unshift(0) // keep it positive
    return [0x02, body.length, ...body]
  }
  const seq = [...int(sig.slice(0, 32)), ...int(sig.slice(32, 64))]
  return Uint8Array.from([0x30, seq.length, ...seq])
}

function bytesToBigInt(b: Uint8Array): bigint {
  return BigInt('0x' + (Buffer.from(b).toString('hex') || '0'))
}

function bigIntTo32Bytes(v: bigint): Buffer {
  return Buffer.from(v.toString(16).padStart(64, '0'), 'hex')
}

function dropUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined))
}
