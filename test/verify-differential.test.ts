// The service's native signature checks must decide exactly as the stock path of
// @atproto/xrpc-server (noble curves, allowMalleableSig: true): same true, same false, and a
// throw where it throws. Thousands of signatures from a seeded PRNG, valid and broken in every
// way we know, go through both; so do whole tokens through verifyJwt.
import { P256Keypair, Secp256k1Keypair, type ExportableKeypair } from '@atproto/crypto'
import { cryptoVerifySignatureWithKey, verifyJwt, XRPCError } from '@atproto/xrpc-server'
import { beforeAll, describe, expect, it } from 'vitest'
import { createFastSignatureCheck, loadNativeSecp256k1, type SignatureCheck } from '../src/auth/signature.js'
import { compactToDer, CURVE_ORDER, mintServiceJwt, rng, type Curve } from './helpers/index.js'

type Decision = 'valid' | 'invalid' | 'throws'

interface Case {
  kind: string
  didKey: string
  msg: Uint8Array
  sig: Uint8Array
  alg: string
}

async function decide(check: SignatureCheck, c: Case): Promise<Decision> {
  try {
    return (await check(c.didKey, c.msg, c.sig, c.alg)) ? 'valid' : 'invalid'
  } catch {
    return 'throws'
  }
}

const random = rng(0x5eed_0008)
const bytes = (length: number) => Uint8Array.from({ length }, () => Math.floor(random() * 256))
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!

function toBigInt(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt('0x' + Buffer.from(b).toString('hex'))
}
function to32(v: bigint): Uint8Array {
  return Buffer.from(v.toString(16).padStart(64, '0'), 'hex')
}
function compact(r: bigint, s: bigint): Uint8Array {
  return Buffer.concat([to32(r), to32(s)])
}
/** Minimal big-endian bytes of a non-negative integer (empty for 0). */
function minimal(v: bigint): Buffer {
  if (v === 0n) return Buffer.alloc(0)
  let hex = v.toString(16)
  if (hex.length % 2) hex = '0' + hex
  return Buffer.from(hex, 'hex')
}
/** DER SEQUENCE { INTEGER, INTEGER } of the integer bodies as given, however (un)usual. */
function derOfBodies(rBody: Uint8Array, sBody: Uint8Array): Uint8Array {
  const seq = Buffer.concat([Buffer.of(0x02, rBody.length), rBody, Buffer.of(0x02, sBody.length), sBody])
  return Buffer.concat([Buffer.of(0x30, seq.length), seq])
}
/** DER of arbitrary integers, minimally encoded (the encoding both sides must accept). */
function der(r: bigint, s: bigint): Uint8Array {
  const body = (v: bigint) => {
    const b = minimal(v)
    return b.length > 0 && b[0]! & 0x80 ? Buffer.concat([Buffer.of(0), b]) : b
  }
  return derOfBodies(body(r), body(s))
}

interface Signer {
  curve: Curve
  keypair: ExportableKeypair
  didKey: string
  alg: string
  n: bigint
}

async function signer(curve: Curve): Promise<Signer> {
  const secret = bytes(32)
  const keypair = curve === 'k256' ? await Secp256k1Keypair.import(secret, { exportable: true }) : await P256Keypair.import(secret, { exportable: true })
  return { curve, keypair, didKey: keypair.did(), alg: keypair.jwtAlg, n: CURVE_ORDER[curve] }
}

/** Every way to present or break one signature of `msg` by `s`. */
async function casesFor(s: Signer, other: Signer, otherCurve: Signer): Promise<Case[]> {
  const msg = bytes(1 + Math.floor(random() * 300))
  const sig = new Uint8Array(await s.keypair.sign(msg))
  const r = toBigInt(sig.subarray(0, 32))
  const sv = toBigInt(sig.subarray(32))
  const highS = compact(r, s.n - sv)
  const base = { didKey: s.didKey, msg, alg: s.alg, sig }
  const flipped = Uint8Array.from(sig)
  flipped[Math.floor(random() * 64)]! ^= 1 << Math.floor(random() * 8)
  const derSig = compactToDer(sig)
  const rBody = derSig.subarray(4, 4 + derSig[3]!)
  const sBody = derSig.subarray(6 + derSig[3]!)
  const mutatedDer = Uint8Array.from(derSig)
  mutatedDer[Math.floor(random() * mutatedDer.length)] = Math.floor(random() * 256)
  const cases: Case[] = [
    { kind: 'valid', ...base, sig },
    { kind: 'high-S', ...base, sig: highS },
    { kind: 'DER', ...base, sig: derSig },
    { kind: 'DER high-S', ...base, sig: der(r, s.n - sv) },
    { kind: 'DER, long-form length', ...base, sig: Buffer.concat([Buffer.of(0x30, 0x81, derSig.length - 2), derSig.subarray(2)]) },
    { kind: 'DER, needless leading zero', ...base, sig: derOfBodies(Buffer.concat([Buffer.of(0), rBody]), sBody) },
    { kind: 'DER, trailing byte', ...base, sig: Buffer.concat([derSig, Buffer.of(0)]) },
    { kind: 'DER, one byte changed', ...base, sig: mutatedDer },
    { kind: 'DER, r = n + r', ...base, sig: der(s.n + r, sv) },
    { kind: 'DER, r = 0', ...base, sig: der(0n, sv) },
    { kind: 'DER, s = n', ...base, sig: der(r, s.n) },
    { kind: 'corrupted bit', ...base, sig: flipped },
    { kind: 'other message', ...base, msg: Buffer.concat([msg, Buffer.of(0x2e)]) },
    { kind: 'wrong key', ...base, didKey: other.didKey },
    { kind: 'wrong curve key', ...base, didKey: otherCurve.didKey },
    { kind: 'alg of the other curve', ...base, alg: otherCurve.alg },
    { kind: 'unknown alg', ...base, alg: pick(['RS256', 'none', 'ES384', 'HS256', 'es256k']) },
    // The stock check compares a non-empty alg only: an empty one lets the key decide.
    { kind: 'empty alg', ...base, alg: '' },
    { kind: 'truncated', ...base, sig: sig.subarray(0, Math.floor(random() * 64)) },
    { kind: 'extended', ...base, sig: Buffer.concat([sig, bytes(1 + Math.floor(random() * 8))]) },
    { kind: 'r = 0', ...base, sig: compact(0n, sv) },
    { kind: 's = 0', ...base, sig: compact(r, 0n) },
    { kind: 'r = n', ...base, sig: compact(s.n, sv) },
    { kind: 's = n - 1', ...base, sig: compact(r, s.n - 1n) },
    { kind: 'all ones', ...base, sig: new Uint8Array(64).fill(0xff) },
    { kind: 'random 64 bytes', ...base, sig: bytes(64) },
    { kind: 'random bytes', ...base, sig: bytes(Math.floor(random() * 100)) },
    { kind: 'random DER-looking bytes', ...base, sig: Buffer.concat([Buffer.of(0x30, 62, 0x02, 29), bytes(60)]) },
    // 64 bytes that are also well-formed DER: both sides must read them as DER, not compact.
    { kind: '64 bytes of valid DER', ...base, sig: derOfBodies(Buffer.concat([Buffer.of(0x11), bytes(28)]), Buffer.concat([Buffer.of(0x22), bytes(28)])) },
    { kind: 'malformed did:key', ...base, didKey: pick(['did:key:zQ3sh', 'did:key:abc', 'did:plc:abc', s.didKey.slice(0, -2), `${s.didKey}x`]) },
  ]
  return cases
}

const signers: Signer[] = []
const cases: Case[] = []
/** The stock verifier's decision on each case (it takes milliseconds each: computed once). */
const stockDecisions: Decision[] = []

beforeAll(async () => {
  for (let index = 0; index < 4; index++) signers.push(await signer('k256'), await signer('p256'))
  const rounds = 40
  for (let round = 0; round < rounds; round++) {
    for (const s of signers) {
      const sameCurve = signers.filter((o) => o.curve === s.curve && o !== s)
      const otherCurve = signers.filter((o) => o.curve !== s.curve)
      cases.push(...(await casesFor(s, pick(sameCurve), pick(otherCurve))))
    }
  }
  for (const c of cases) stockDecisions.push(await decide(cryptoVerifySignatureWithKey, c))
}, 180_000)

describe('native signature checks decide as the stock verifier', () => {
  const backends = [
    { name: 'libsecp256k1 + OpenSSL', native: true },
    { name: 'OpenSSL only (the fallback)', native: false },
  ]

  it('loads the native secp256k1 binding on this machine', () => {
    expect(loadNativeSecp256k1()).not.toBeNull()
    expect(createFastSignatureCheck().secp256k1Backend).toBe('libsecp256k1')
    expect(createFastSignatureCheck({ nativeSecp256k1: false }).secp256k1Backend).toBe('openssl')
  })

  it(`runs thousands of cases of every kind`, () => {
    expect(cases.length).toBeGreaterThan(8_000)
    const kinds = new Set(cases.map((c) => c.kind))
    expect(kinds.size).toBeGreaterThanOrEqual(30)
  })

  for (const backend of backends) {
    it(`${backend.name}: identical decisions on every case`, async () => {
      const fast = createFastSignatureCheck({ nativeSecp256k1: backend.native, maxKeys: 3 })
      const mismatches: string[] = []
      const seen = new Map<string, Set<Decision>>()
      for (const [index, c] of cases.entries()) {
        const stock = stockDecisions[index]!
        const ours = await decide(fast.check, c)
        if (stock !== ours) {
          mismatches.push(`${c.kind} (${c.alg}, sig ${Buffer.from(c.sig).toString('hex')}): stock ${stock}, ours ${ours}`)
        }
        const decisions = seen.get(c.kind) ?? new Set()
        decisions.add(stock)
        seen.set(c.kind, decisions)
      }
      expect(mismatches.slice(0, 5)).toEqual([])
      // The cases mean what they say: the stock verifier accepts the malleable forms...
      for (const kind of ['valid', 'high-S', 'DER', 'DER high-S']) expect([...seen.get(kind)!]).toEqual(['valid'])
      // ...and never accepts a broken one.
      for (const kind of ['corrupted bit', 'other message', 'wrong key', 'truncated', 'extended', 'r = 0', 'DER, trailing byte']) {
        expect(seen.get(kind)!.has('valid'), kind).toBe(false)
      }
      // Each side of the throw-or-false line is exercised.
      expect(seen.get('wrong curve key')).toEqual(new Set(['throws']))
      expect(seen.get('DER, r = 0')).toEqual(new Set(['throws']))
      expect(seen.get('r = 0')).toEqual(new Set(['invalid']))
      expect(seen.get('empty alg')).toEqual(new Set(['valid']))
      // The key cache stays within its bound however many keys pass through it.
      expect(fast.cachedKeys()).toBeLessThanOrEqual(3)
    })
  }

  it('whole tokens through verifyJwt: the same payload or the same error name', async () => {
    const fast = createFastSignatureCheck()
    const aud = 'did:web:tickets.test'
    const lxm = 'tickets.atmosphere.createTicketHold'
    const outcome = async (token: string, key: string, check: SignatureCheck) => {
      try {
        return JSON.stringify(await verifyJwt(token, aud, lxm, async () => key, check))
      } catch (err) {
        return err instanceof XRPCError ? `${err.customErrorName}: ${err.errorMessage}` : `thrown ${(err as Error).name}`
      }
    }
    let compared = 0
    for (const s of signers) {
      const token = await mintServiceJwt({ keypair: s.keypair, iss: 'did:plc:abcdefghijklmnopqrstuvwx', aud, lxm })
      const [header, payload, sig] = token.split('.') as [string, string, string]
      const raw = Buffer.from(sig, 'base64url')
      const variants = [
        token,
        `${header}.${payload}.${Buffer.from(compactToDer(raw)).toString('base64url')}`,
        `${header}.${payload}.${sig.slice(0, -4)}`,
        `${header}.${payload}.`,
        `${header}.${payload}.${Buffer.from(bytes(64)).toString('base64url')}`,
        `${header}.${Buffer.from('{"iss":"did:plc:x"').toString('base64url')}.${sig}`,
      ]
      for (const other of signers) {
        for (const variant of variants) {
          expect(await outcome(variant, other.didKey, fast.check)).toBe(await outcome(variant, other.didKey, cryptoVerifySignatureWithKey))
          compared++
        }
      }
    }
    expect(compared).toBe(signers.length * signers.length * 6)
  })
})
