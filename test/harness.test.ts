// Self-test of the shared harness (test/helpers): a real PLC directory, real
// did:plc and did:web identities, real tokens checked by atproto's own
// verifyJwt. The service itself (helpers/service.ts) is not exercised here.
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { verifySignature } from '@atproto/crypto'
import { IdResolver } from '@atproto/identity'
import { verifyJwt } from '@atproto/xrpc-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  AppClient,
  b64url,
  corruptSignature,
  createKeypair,
  createPlcIdentity,
  decodeJwt,
  derVariant,
  highSVariant,
  mintServiceJwt,
  plcAtprotoKey,
  rotateAtprotoKey,
  signRawJwt,
  startDidWebHost,
  startPlc,
  tamperPayload,
  tombstonePlcIdentity,
  xrpc,
  type DidWebHost,
  type Identity,
  type PlcHandle,
  type PlcIdentity,
} from './helpers/index.js'

const AUD = 'did:web:localhost%3A2595'
const LXM = 'tickets.atmosphere.createTicketHold'

let plc: PlcHandle
let resolver: IdResolver
let k256: PlcIdentity
let p256: PlcIdentity
let web: DidWebHost
let webP256: DidWebHost

// The key getter verifyJwt calls (again with forceRefresh on a bad signature).
const getSigningKey = (iss: string, forceRefresh: boolean) => resolver.did.resolveAtprotoKey(iss, forceRefresh)
const verify = (jwt: string, aud: string | null = AUD, lxm: string | null = LXM) =>
  verifyJwt(jwt, aud, lxm, getSigningKey)
const token = (id: Identity, extra: Partial<Parameters<typeof mintServiceJwt>[0]> = {}) =>
  mintServiceJwt({ keypair: id.keypair, iss: id.did, aud: AUD, lxm: LXM, ...extra })
/** The error name verifyJwt rejects with (customErrorName), or the class name. */
const rejection = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p
  } catch (err) {
    const e = err as { error?: string; name?: string }
    return e.error ?? e.name ?? 'unknown'
  }
  return 'accepted'
}

beforeAll(async () => {
  plc = await startPlc()
  // The default fetch of @atproto/identity 0.5 refuses http:, loopback and
  // custom ports; the test directory and did:web hosts are all of those.
  resolver = new IdResolver({ plcUrl: plc.url, fetch: globalThis.fetch, timeout: 3000 })
  ;[k256, p256, web, webP256] = await Promise.all([
    createPlcIdentity(plc.url, { curve: 'k256', handle: 'alice.test' }),
    createPlcIdentity(plc.url, { curve: 'p256' }),
    startDidWebHost({ service: { id: '#atm_app', type: 'AtmApp', endpoint: 'http://localhost:1' } }),
    startDidWebHost({ curve: 'p256' }),
  ])
})

afterAll(async () => {
  await Promise.all([plc?.close(), web?.close(), webP256?.close()])
})

describe('PLC directory and did:plc identities', () => {
  it('serves the document with the #atproto key, for both curves', async () => {
    for (const id of [k256, p256]) {
      expect(id.did).toMatch(/^did:plc:[a-z2-7]{24}$/)
      const doc = (await (await fetch(`${plc.url}/${id.did}`)).json()) as {
        id: string
        verificationMethod: Array<{ id: string; type: string }>
      }
      expect(doc.id).toBe(id.did)
      expect(doc.verificationMethod.map((m) => m.id)).toContain('#atproto')
      expect(await plcAtprotoKey(plc.url, id.did)).toBe(id.keypair.did())
      expect(await resolver.did.resolveAtprotoKey(id.did)).toBe(id.keypair.did())
    }
    expect(k256.keypair.did()).toMatch(/^did:key:zQ3s/) // secp256k1 multikey
    expect(p256.keypair.did()).toMatch(/^did:key:zDn/) // P-256 multikey
    const data = await resolver.did.resolveAtprotoData(k256.did)
    expect(data.handle).toBe('alice.test')
  })

  it('rotates the #atproto key: the new key resolves, old tokens stop verifying', async () => {
    const id = await createPlcIdentity(plc.url, { curve: 'k256' })
    const before = await token(id)
    await verify(before)
    const old = await rotateAtprotoKey(plc.url, id)
    expect(id.keypair.did()).not.toBe(old.did())
    expect(await plcAtprotoKey(plc.url, id.did)).toBe(id.keypair.did())
    expect(await resolver.did.resolveAtprotoKey(id.did)).toBe(id.keypair.did())
    expect(await rejection(verify(before))).toBe('BadJwtSignature')
    await verify(await token(id))
    // rotating to another curve works too
    await rotateAtprotoKey(plc.url, id, await createKeypair('p256'))
    expect(id.curve).toBe('p256')
    expect(decodeJwt(await token(id)).header.alg).toBe('ES256')
    await verify(await token(id))
  })

  it('a tombstoned DID no longer resolves (plain Error from IdResolver)', async () => {
    const id = await createPlcIdentity(plc.url)
    await tombstonePlcIdentity(plc.url, id)
    expect((await fetch(`${plc.url}/${id.did}`)).ok).toBe(false)
    await expect(resolver.did.resolveAtprotoKey(id.did)).rejects.toThrow(/Could not resolve DID/)
    // an unknown DID: the same
    await expect(resolver.did.resolveAtprotoKey('did:plc:aaaaaaaaaaaaaaaaaaaaaaaa')).rejects.toThrow()
  })
})

describe('did:web host', () => {
  it('serves a root identity that IdResolver resolves, k256 and p256', async () => {
    for (const host of [web, webP256]) {
      expect(host.identity.did).toBe(`did:web:localhost%3A${host.port}`)
      expect(host.did()).toBe(host.identity.did)
      expect(await resolver.did.resolveAtprotoKey(host.identity.did)).toBe(host.identity.keypair.did())
    }
    expect(webP256.identity.keypair.jwtAlg).toBe('ES256')
    const doc = (await resolver.did.resolve(web.identity.did)) as { service?: Array<{ id: string }> }
    expect(doc.service?.map((s) => s.id)).toEqual(['#atm_app'])
  })

  it('serves path identities, which atproto does not resolve', async () => {
    const app = await web.addIdentity({ name: 'apps:foo', curve: 'p256' })
    expect(app.did).toBe(`did:web:localhost%3A${web.port}:apps:foo`)
    const doc = (await (await fetch(`${web.origin}/apps/foo/did.json`)).json()) as { id: string }
    expect(doc.id).toBe(app.did)
    await expect(resolver.did.resolveAtprotoKey(app.did)).rejects.toThrow(/Unsupported did:web paths/)
  })

  it('rotates keys, counts fetches, and can serve broken answers', async () => {
    const host = await startDidWebHost()
    try {
      const id = host.identity
      const before = await token(id)
      const n = host.requests.length
      await verify(before)
      expect(host.requests.length).toBe(n + 1) // no cache in this resolver
      await host.rotateKey(id)
      // bad signature -> verifyJwt fetches the document a second time (forceRefresh)
      expect(await rejection(verify(before))).toBe('BadJwtSignature')
      expect(host.requests.length).toBe(n + 3)
      await verify(await token(id))
      host.override(id, { status: 404 })
      await expect(resolver.did.resolveAtprotoKey(id.did)).rejects.toThrow(/Could not resolve DID/)
      host.override(id, { status: 200, body: '{not json' })
      await expect(resolver.did.resolveAtprotoKey(id.did)).rejects.toThrow()
      host.override(id, null)
      expect(await resolver.did.resolveAtprotoKey(id.did)).toBe(id.keypair.did())
    } finally {
      await host.close()
    }
  })
})

describe('service-auth tokens', () => {
  const signers = () => [
    ['plc k256', k256],
    ['plc p256', p256],
    ['web k256', web.identity],
    ['web p256', webP256.identity],
  ] as const

  it('mints tokens that verifyJwt accepts', async () => {
    for (const [, id] of signers()) {
      const jwt = await token(id)
      const { header, payload } = decodeJwt(jwt)
      expect(header).toEqual({ typ: 'JWT', alg: id.keypair.jwtAlg })
      expect(payload).toMatchObject({ iss: id.did, aud: AUD, lxm: LXM })
      expect(payload.jti).toMatch(/^[0-9a-f]{32}$/)
      const verified = await verify(jwt)
      expect(verified.iss).toBe(id.did)
    }
  })

  it('high-S and DER variants verify (malleable), a corrupted signature does not', async () => {
    for (const [name, id] of signers()) {
      const jwt = await token(id)
      const { signingInput, signature } = decodeJwt(jwt)
      const msg = Buffer.from(signingInput, 'utf8')
      const didKey = id.keypair.did()
      const variants = { highS: highSVariant(jwt), der: derVariant(jwt), derHighS: derVariant(highSVariant(jwt)) }
      expect(await verifySignature(didKey, msg, signature), name).toBe(true)
      for (const [kind, v] of Object.entries(variants)) {
        expect(v, `${name} ${kind}`).not.toBe(jwt)
        expect(v.slice(0, signingInput.length)).toBe(signingInput) // same header and payload
        const sig = decodeJwt(v).signature
        expect(await verifySignature(didKey, msg, sig, { allowMalleableSig: true }), `${name} ${kind}`).toBe(true)
        // strict verification refuses them (false for high-S, throws for DER):
        // they really are the malleable forms
        const strict = await verifySignature(didKey, msg, sig).catch(() => 'threw')
        expect(strict, `${name} ${kind} strict`).not.toBe(true)
        expect((await verify(v)).jti, `${name} ${kind} verifyJwt`).toBe(decodeJwt(jwt).payload.jti)
      }
      expect(decodeJwt(variants.der).signature[0]).toBe(0x30)
      expect(await rejection(verify(corruptSignature(jwt))), name).toBe('BadJwtSignature')
      expect(await rejection(verify(corruptSignature(variants.highS))), name).toBe('BadJwtSignature')
      expect(await rejection(verify(tamperPayload(jwt, { jti: 'other' }))), name).toBe('BadJwtSignature')
    }
  })

  it('hand-rolled tokens: what verifyJwt itself lets through', async () => {
    const now = Math.floor(Date.now() / 1000)
    // no jti: verifyJwt accepts it (single use is the service's job)
    const noJti = await token(k256, { jti: null })
    expect(decodeJwt(noJti).payload).not.toHaveProperty('jti')
    await verify(noJti)
    // exp a day ahead: accepted too (the 300 s limit is the service's job)
    const farExp = await token(p256, { exp: now + 86_400 })
    expect(decodeJwt(farExp).payload.exp).toBe(now + 86_400)
    await verify(farExp)
    // chosen jti, no typ: accepted
    const chosen = await token(k256, { jti: 'abc', typ: null })
    expect(decodeJwt(chosen).header).toEqual({ alg: 'ES256K' })
    expect((await verify(chosen)).jti).toBe('abc')
    // iss with a #fragment passes verifyJwt's own checks and reaches the key
    // getter as is (IdResolver cannot resolve it; a getter that strips it would accept)
    const asked: string[] = []
    const fragment = await token(k256, { iss: `${k256.did}#atproto` })
    const payload = await verifyJwt(fragment, AUD, LXM, (iss, force) => {
      asked.push(iss)
      return getSigningKey(iss.split('#')[0] ?? iss, force)
    })
    expect(payload.iss).toBe(`${k256.did}#atproto`)
    expect(asked).toEqual([`${k256.did}#atproto`])
  })

  it('hand-rolled tokens: what verifyJwt rejects, and how', async () => {
    const now = Math.floor(Date.now() / 1000)
    expect(await rejection(verify(await token(k256, { typ: 'at+jwt' })))).toBe('BadJwtType')
    expect(await rejection(verify(await token(k256, { typ: 'dpop+jwt' })))).toBe('BadJwtType')
    expect(await rejection(verify(await token(k256, { iat: now - 120, exp: now - 60 })))).toBe('JwtExpired')
    expect(await rejection(verify(await token(k256, { aud: 'did:web:elsewhere' })))).toBe('BadJwtAudience')
    expect(await rejection(verify(await token(k256, { lxm: 'tickets.atmosphere.other' })))).toBe('BadJwtLexiconMethod')
    expect(await rejection(verify(await token(k256, { lxm: null })))).toBe('BadJwtLexiconMethod')
    expect(await rejection(verify(await token(k256, { iss: 'not-a-did' })))).toBe('BadJwtIss')
    expect(await rejection(verify(await token(k256, { payload: { exp: undefined } })))).toBe('BadJwt')
    // alg that does not match the key: verifySignature throws -> BadJwtSignature
    expect(await rejection(verify(await token(k256, { alg: 'ES256' })))).toBe('BadJwtSignature')
    // a did:key issuer verifies against itself with IdResolver: the service must refuse did:key
    const selfMade = await createKeypair('k256')
    await verify(await mintServiceJwt({ keypair: selfMade, iss: selfMade.did(), aud: AUD, lxm: LXM }))
    // header / payload that are not base64url JSON: a plain SyntaxError escapes verifyJwt
    const payload = { iss: k256.did, aud: AUD, lxm: LXM, exp: now + 60, jti: 'x' }
    const badHeader = await signRawJwt({ keypair: k256.keypair, header: 'not-json', payload })
    expect(await rejection(verify(badHeader))).toBe('SyntaxError')
    const badPayload = await signRawJwt({
      keypair: k256.keypair,
      header: { typ: 'JWT', alg: 'ES256K' },
      payload: b64url('{"iss":'),
    })
    expect(await rejection(verify(badPayload))).toBe('SyntaxError')
    expect(await rejection(verify('a.b'))).toBe('BadJwt')
  })
})

describe('xrpc() and AppClient', () => {
  it('sends queries, procedures, bearer and basic auth; a fresh token per call', async () => {
    const seen: Array<{ method?: string; url?: string; auth?: string; type?: string; body: string }> = []
    const server = createServer(async (req: IncomingMessage, res) => {
      let body = ''
      for await (const chunk of req) body += chunk
      seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, type: req.headers['content-type'], body })
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' })
      res.end(JSON.stringify({ ok: true }))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    try {
      const q = await xrpc(url, 'tickets.atmosphere.getTicketHold', { params: { holdId: 'hold_1', tag: ['a', 'b'] } })
      expect(q).toMatchObject({ status: 200, body: { ok: true } })
      expect(seen[0]).toMatchObject({ method: 'GET', url: '/xrpc/tickets.atmosphere.getTicketHold?holdId=hold_1&tag=a&tag=b' })
      await xrpc(url, 'tickets.atmosphere.admin.registerApp', { body: { did: 'did:plc:x' }, basic: 'pw' })
      expect(seen[1]).toMatchObject({ method: 'POST', type: 'application/json', body: '{"did":"did:plc:x"}' })
      expect(seen[1]?.auth).toBe(`Basic ${Buffer.from('admin:pw').toString('base64')}`)

      const app = new AppClient({ url, serviceDid: AUD }, k256)
      await app.call('tickets.atmosphere.createTicketHold', { items: [] })
      await app.call('tickets.atmosphere.createTicketHold', { items: [] })
      await app.call('tickets.atmosphere.getTicketAvailability', { eventId: 'evt_1' })
      const [a, b, c] = seen.slice(2)
      expect([a?.method, b?.method, c?.method]).toEqual(['POST', 'POST', 'GET'])
      expect(c?.url).toBe('/xrpc/tickets.atmosphere.getTicketAvailability?eventId=evt_1')
      const jwts = [a, b, c].map((s) => s?.auth?.replace(/^Bearer /, '') ?? '')
      const payloads = jwts.map((j) => decodeJwt(j).payload)
      expect(new Set(payloads.map((p) => p.jti)).size).toBe(3)
      expect(payloads[2]).toMatchObject({ iss: k256.did, aud: AUD, lxm: 'tickets.atmosphere.getTicketAvailability' })
      await verifyJwt(jwts[2] ?? '', AUD, 'tickets.atmosphere.getTicketAvailability', getSigningKey)
    } finally {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    }
  })
})
