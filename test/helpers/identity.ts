// Real did:plc identities on a test PLC directory (see plc.ts), with real keys.
import { randomBytes } from 'node:crypto'
import { P256Keypair, Secp256k1Keypair, type ExportableKeypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'

/** k256 = secp256k1 (JWT alg ES256K), p256 = NIST P-256 (JWT alg ES256). */
export type Curve = 'k256' | 'p256'

/** What a token signer needs: the issuer DID and its current #atproto key. */
export interface Identity {
  did: string
  keypair: ExportableKeypair
}

export interface PlcIdentity extends Identity {
  method: 'plc'
  curve: Curve
  handle: string
  /** Signs PLC operations (always secp256k1); never used for service auth. */
  rotationKey: Secp256k1Keypair
  plcUrl: string
}

export async function createKeypair(curve: Curve = 'k256'): Promise<ExportableKeypair> {
  return curve === 'p256'
    ? P256Keypair.create({ exportable: true })
    : Secp256k1Keypair.create({ exportable: true })
}

export function curveOf(keypair: { jwtAlg: string }): Curve {
  return keypair.jwtAlg === 'ES256' ? 'p256' : 'k256'
}

/** A random, valid-looking handle; PLC does not check handles, so uniqueness is ours. */
export function randomHandle(prefix = 'user'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}.test`
}

/**
 * Registers a new did:plc (genesis operation signed by a fresh rotation key)
 * whose `verificationMethods.atproto` is a fresh keypair on `curve`.
 */
export async function createPlcIdentity(
  plcUrl: string,
  opts: { curve?: Curve; handle?: string; pds?: string; keypair?: ExportableKeypair } = {},
): Promise<PlcIdentity> {
  const curve = opts.keypair ? curveOf(opts.keypair) : (opts.curve ?? 'k256')
  const keypair = opts.keypair ?? (await createKeypair(curve))
  const rotationKey = await Secp256k1Keypair.create({ exportable: true })
  const handle = opts.handle ?? randomHandle()
  const { op, did } = await plc.createOp({
    signingKey: keypair.did(),
    handle,
    pds: opts.pds ?? 'https://pds.invalid',
    rotationKeys: [rotationKey.did()],
    signer: rotationKey,
  })
  await withPlcError('create', () => new plc.Client(plcUrl).sendOperation(did, op))
  return { method: 'plc', did, keypair, curve, handle, rotationKey, plcUrl }
}

/**
 * Key rotation: submits a PLC update operation (signed by the rotation key)
 * that replaces the #atproto key with `newKeypair` (fresh one on the same curve
 * if omitted). Updates `identity.keypair` in place, so AppClients bound to the
 * identity sign with the new key from now on; returns the *old* keypair so a
 * test can still sign with it.
 */
export async function rotateAtprotoKey(
  plcUrl: string,
  identity: PlcIdentity,
  newKeypair?: ExportableKeypair,
): Promise<ExportableKeypair> {
  const next = newKeypair ?? (await createKeypair(identity.curve))
  await withPlcError('update', () =>
    new plc.Client(plcUrl).updateAtprotoKey(identity.did, identity.rotationKey, next.did()),
  )
  const old = identity.keypair
  identity.keypair = next
  identity.curve = curveOf(next)
  return old
}

/** Deactivates the DID for good; the directory then answers 404/410 for it. */
export async function tombstonePlcIdentity(plcUrl: string, identity: PlcIdentity): Promise<void> {
  await withPlcError('tombstone', () =>
    new plc.Client(plcUrl).tombstone(identity.did, identity.rotationKey),
  )
}

/** `verificationMethods.atproto` as the directory currently has it (a did:key). */
export async function plcAtprotoKey(plcUrl: string, did: string): Promise<string | undefined> {
  const res = await fetch(`${plcUrl}/${did}/data`)
  if (!res.ok) throw new Error(`PLC ${res.status} for ${did}: ${await res.text()}`)
  const data = (await res.json()) as { verificationMethods?: Record<string, string> }
  return data.verificationMethods?.atproto
}

// @did-plc/lib uses axios: turn its errors into one readable line.
async function withPlcError<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    const e = err as { message?: string; response?: { status?: number; data?: unknown } }
    const detail = e.response ? ` (${e.response.status}: ${JSON.stringify(e.response.data)})` : ''
    throw new Error(`PLC ${what} failed: ${e.message ?? String(err)}${detail}`)
  }
}
