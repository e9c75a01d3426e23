// Service-auth tokens for the benchmark, minted ahead of the run and fast: the same header and
// claims as createServiceJwt of @atproto/xrpc-server (a fresh jti each, low-S compact
// signatures as a PDS makes them), but signed natively, so that minting a few hundred
// thousand of them takes seconds, not minutes.
import { createHash, createPrivateKey, randomBytes, sign as opensslSign, type KeyObject } from 'node:crypto'
import { P256Keypair, parseDidKey, Secp256k1Keypair } from '@atproto/crypto'
import { loadNativeSecp256k1 } from '../../src/auth/signature.js'

export type Alg = 'ES256K' | 'ES256'

const ORDER: Record<Alg, bigint> = {
  ES256K: 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n,
  ES256: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
}

interface NativeSigner {
  ecdsaSign(msg32: Uint8Array, privateKey: Uint8Array): { signature: Uint8Array }
}

export interface BenchKey {
  alg: Alg
  /** did:key of the public key: what the DID document publishes as #atproto. */
  didKey: string
  /** Signs `data` (SHA-256, ECDSA), answering a 64-byte low-S r || s. */
  sign(data: Uint8Array): Uint8Array
}

export async function createBenchKey(alg: Alg): Promise<BenchKey> {
  const secret = randomBytes(32)
  const keypair = alg === 'ES256K' ? await Secp256k1Keypair.import(secret) : await P256Keypair.import(secret)
  const didKey = keypair.did()
  const native = alg === 'ES256K' ? (loadNativeSecp256k1() as unknown as NativeSigner | null) : null
  if (native) {
    return { alg, didKey, sign: (data) => native.ecdsaSign(createHash('sha256').update(data).digest(), secret).signature }
  }
  const point = parseDidKey(didKey).keyBytes
  const privateKey: KeyObject = createPrivateKey({
    key: {
      kty: 'EC',
      crv: alg === 'ES256K' ? 'secp256k1' : 'P-256',
      d: secret.toString('base64url'),
      x: Buffer.from(point.subarray(1, 33)).toString('base64url'),
      y: Buffer.from(point.subarray(33, 65)).toString('base64url'),
    },
    format: 'jwk',
  })
  const n = ORDER[alg]
  return {
    alg,
    didKey,
    sign: (data) => {
      const sig = opensslSign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' })
      const s = BigInt('0x' + sig.subarray(32).toString('hex'))
      if (s <= n >> 1n) return sig
      return Buffer.concat([sig.subarray(0, 32), Buffer.from((n - s).toString(16).padStart(64, '0'), 'hex')])
    },
  }
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')

/** `count` tokens of `iss` for `lxm`, each with its own jti, valid for 300 s from now. */
export function mintTokens(key: BenchKey, iss: string, aud: string, lxm: string, count: number): string[] {
  const header = b64({ typ: 'JWT', alg: key.alg })
  const iat = Math.floor(Date.now() / 1000)
  const tokens: string[] = new Array(count)
  const jtis = randomBytes(16 * count)
  for (let index = 0; index < count; index++) {
    const jti = jtis.subarray(index * 16, index * 16 + 16).toString('hex')
    const signingInput = `${header}.${b64({ iat, iss, aud, exp: iat + 300, lxm, jti })}`
    const sig = key.sign(Buffer.from(signingInput, 'utf8'))
    tokens[index] = `${signingInput}.${Buffer.from(sig).toString('base64url')}`
  }
  return tokens
}
