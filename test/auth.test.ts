// Who may call, and how they prove it (CONTRACT §2, §3 on apps), through real HTTP against the
// real service process: real keys, real did:plc identities on a local PLC directory, real
// did:web documents served on localhost. Every hole listed in LIBRARY-NOTES.md (what stock
// verifyJwt / IdResolver let through) has a test here.
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expectOk, expectError } from './helpers/expect.js'
import {
  AppClient,
  b64url,
  corruptSignature,
  createKeypair,
  createPlcIdentity,
  decodeJwt,
  derVariant,
  highSVariant,
  methodType,
  mintServiceJwt,
  randomJti,
  rotateAtprotoKey,
  signRawJwt,
  startDidWebHost,
  tamperPayload,
  tombstonePlcIdentity,
  xrpc,
  type Curve,
  type DidWebHost,
  type MintOptions,
  type PlcIdentity,
  type XrpcResponse,
} from './helpers/index.js'
import {
  createEventWithTier,
  eventUri,
  newApp,
  newIdentityClient,
  nsid,
  registerApp,
  startWorld,
  type World,
} from './helpers/world.js'

const AVAILABILITY = nsid('getTicketAvailability')
const CREATE_EVENT = nsid('createTicketEvent')
const HOLD = nsid('createTicketHold')
const CLAIM = nsid('claimFreeTicket')
const REGISTER_APP = nsid('admin.registerApp')

let world: World
/** The shared event of world.app (a paid tier of 100): the target of most auth probes. */
let shared: { eventId: string; tierId: string }
/** Every bearer token and assertion this file sent: none may show up in the service's logs. */
const sentTokens = new Set<string>()
const didWebHosts: DidWebHost[] = []

const nowSeconds = () => Math.floor(Date.now() / 1000)

/** Sends `token` (recorded) as the bearer of a call to `method`. */
async function send(method: string, token: string, input: Record<string, unknown> = {}, headers?: Record<string, string>): Promise<XrpcResponse> {
  sentTokens.add(token)
  return methodType(method) === 'query'
    ? xrpc(world.service.url, method, { method: 'GET', params: input as Record<string, string>, token, headers })
    : xrpc(world.service.url, method, { method: 'POST', body: input, token, headers })
}

/** A token from `client` for `method` (recorded), with any claim or header overridden. */
async function tokenOf(client: AppClient, method: string, overrides: Partial<MintOptions> = {}): Promise<string> {
  const token = await client.token(method, overrides)
  sentTokens.add(token)
  return token
}

/** The standard probe: getTicketAvailability of the shared event with this token. */
function probe(token: string): Promise<XrpcResponse> {
  return send(AVAILABILITY, token, { eventId: shared.eventId })
}



/** Binds a new event of `app` to the world's organizer (with their assertion). */
async function bindEvent(app: AppClient, appToken?: string): Promise<XrpcResponse> {
  return send(CREATE_EVENT, appToken ?? (await tokenOf(app, CREATE_EVENT)), {
    organizerDid: world.organizer.did,
    organizerAssertionJwt: await tokenOf(world.organizer, CREATE_EVENT),
    event: { uri: eventUri(world.organizer.did), title: 'Auth test event' },
  })
}

/** Remaining capacity of a tier, read with a fresh token of world.app. */
async function remainingOf(eventId: string, tierId: string): Promise<number> {
  const res = await probeEvent(world.app, eventId)
  expectOk(res)
  const tier = (res.body.tiers as Array<{ tierId: string; remaining: number }>).find((t) => t.tierId === tierId)
  expect(tier, JSON.stringify(res.body)).toBeDefined()
  return tier!.remaining
}

async function probeEvent(app: AppClient, eventId: string, headers?: Record<string, string>): Promise<XrpcResponse> {
  return send(AVAILABILITY, await tokenOf(app, AVAILABILITY), { eventId }, headers)
}

/** A did:web identity on its own localhost host (IdResolver refuses did:web paths). */
async function didWebApp(curve: Curve = 'k256', register = true): Promise<{ host: DidWebHost; client: AppClient }> {
  const host = await startDidWebHost({ curve })
  didWebHosts.push(host)
  const client = new AppClient(world.service, host.identity)
  if (register) {
    const res = await registerApp(world.service, { did: client.did, name: `web app ${host.port}` })
    expectOk(res)
  }
  return { host, client }
}

/** Fires the same request shape concurrently, so the calls land on different workers. */
function parallel<T>(n: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => fn(i)))
}

beforeAll(async () => {
  // Debug level: the most the service ever logs, so "no secret in the logs" means the most.
  world = await startWorld({ logLevel: 'debug' })
  const created = await createEventWithTier(world, { quantityTotal: 100 })
  shared = { eventId: created.eventId, tierId: created.tierId }
})

afterAll(async () => {
  for (const host of didWebHosts) await host.close()
  await world?.close()
})

// ---------------------------------------------------------------------------------------------
describe('apps that prove who they are', () => {
  // Each kind of app the contract admits: register with the operator, then real calls.
  it('accepts an ES256K (secp256k1) did:plc app', async () => {
    const app = await newApp(world, 'k256')
    const token = await tokenOf(app, CREATE_EVENT)
    expect(decodeJwt(token).header.alg).toBe('ES256K')
    const bound = await bindEvent(app, token)
    expectOk(bound)
    expect(bound.body.event.appDid).toBe(app.did)
    const avail = await probeEvent(app, bound.body.event.id)
    expectOk(avail)
    expect(avail.body.eventId).toBe(bound.body.event.id)
  })

  it('accepts an ES256 (P-256) did:plc app', async () => {
    const app = await newApp(world, 'p256')
    const token = await tokenOf(app, CREATE_EVENT)
    expect(decodeJwt(token).header.alg).toBe('ES256')
    const bound = await bindEvent(app, token)
    expectOk(bound)
    expect(bound.body.event.appDid).toBe(app.did)
    const avail = await probeEvent(app, bound.body.event.id)
    expectOk(avail)
    expect(avail.body.eventId).toBe(bound.body.event.id)
  })

  it('accepts a did:web app served on localhost', async () => {
    const { client } = await didWebApp('k256')
    expect(client.did).toMatch(/^did:web:localhost%3A\d+$/)
    const bound = await bindEvent(client)
    expectOk(bound)
    expect(bound.body.event.appDid).toBe(client.did)
    const avail = await probeEvent(client, bound.body.event.id)
    expectOk(avail)
    expect(avail.body.eventId).toBe(bound.body.event.id)
  })

  it('accepts a P-256 did:web app', async () => {
    const { client } = await didWebApp('p256')
    expect(decodeJwt(await client.token(AVAILABILITY)).header.alg).toBe('ES256')
    const bound = await bindEvent(client)
    expectOk(bound)
    expectOk(await probeEvent(client, bound.body.event.id))
  })
})

// ---------------------------------------------------------------------------------------------
describe('aud and lxm', () => {
  it('accepts aud = the service DID', async () => {
    expectOk(await probe(await tokenOf(world.app, AVAILABILITY, { aud: world.service.serviceDid })))
  })

  it('accepts aud = serviceDid#atm_tickets', async () => {
    expectOk(await probe(await tokenOf(world.app, AVAILABILITY, { aud: `${world.service.serviceDid}#atm_tickets` })))
  })

  it.each([
    ['another service', 'did:web:api.example.com'],
    ['the service with another fragment', '#atproto_pds'],
    ['the service DID with a trailing path', ':extra'],
  ])('refuses aud = %s (BadJwtAudience)', async (_label, aud) => {
    const full = aud.startsWith('did:') ? aud : `${world.service.serviceDid}${aud}`
    expectError(await probe(await tokenOf(world.app, AVAILABILITY, { aud: full })), 401, 'BadJwtAudience')
  })

  it('refuses a token whose lxm names another method (BadJwtLexiconMethod)', async () => {
    expectError(await probe(await tokenOf(world.app, CREATE_EVENT)), 401, 'BadJwtLexiconMethod')
  })

  it('refuses a token with no lxm (BadJwtLexiconMethod)', async () => {
    const token = await tokenOf(world.app, AVAILABILITY, { lxm: null })
    expect(decodeJwt(token).payload.lxm).toBeUndefined()
    expectError(await probe(token), 401, 'BadJwtLexiconMethod')
  })
})

// ---------------------------------------------------------------------------------------------
describe('exp, lifetime and jti', () => {
  it('refuses an expired token (JwtExpired)', async () => {
    const now = nowSeconds()
    expectError(await probe(await tokenOf(world.app, AVAILABILITY, { iat: now - 120, exp: now - 60 })), 401, 'JwtExpired')
  })

  it('accepts a token that expires 290 s from now (within the 300 s limit)', async () => {
    expectOk(await probe(await tokenOf(world.app, AVAILABILITY, { exp: nowSeconds() + 290 })))
  })

  it('refuses a token that expires more than 300 s ahead (BadJwtLifetime), saying the limit', async () => {
    // Stock verifyJwt accepts this (LIBRARY-NOTES): the service must enforce it.
    const res = await probe(await tokenOf(world.app, AVAILABILITY, { exp: nowSeconds() + 330 }))
    expectError(res, 401, 'BadJwtLifetime', /300/)
    const dayAhead = await probe(await tokenOf(world.app, AVAILABILITY, { exp: nowSeconds() + 86_400 }))
    expectError(dayAhead, 401, 'BadJwtLifetime')
  })

  it('refuses a token with no jti (BadJwt), saying so', async () => {
    const token = await tokenOf(world.app, AVAILABILITY, { jti: null })
    expect(decodeJwt(token).payload.jti).toBeUndefined()
    expectError(await probe(token), 401, 'BadJwt', /jti/)
  })

  it('refuses a token whose iat is beyond the 60 s of clock skew (BadJwtLifetime), saying which claim', async () => {
    const now = nowSeconds()
    const yearAhead = await probe(await tokenOf(world.app, AVAILABILITY, { iat: now + 365 * 86_400, exp: now + 60 }))
    expectError(yearAhead, 401, 'BadJwtLifetime', /"iat".*60 s/)
    expectError(await probe(await tokenOf(world.app, AVAILABILITY, { iat: now + 90, exp: now + 120 })), 401, 'BadJwtLifetime', /iat/)
  })

  it('accepts a token whose iat is a little ahead, within the clock skew', async () => {
    const now = nowSeconds()
    expectOk(await probe(await tokenOf(world.app, AVAILABILITY, { iat: now + 30, exp: now + 90 })))
  })

  it('refuses a token that is not valid yet, nbf beyond the clock skew (BadJwtLifetime), saying so', async () => {
    const now = nowSeconds()
    const dayAhead = await probe(await tokenOf(world.app, AVAILABILITY, { payload: { nbf: now + 86_400 } }))
    expectError(dayAhead, 401, 'BadJwtLifetime', /nbf/)
    expectOk(await probe(await tokenOf(world.app, AVAILABILITY, { payload: { nbf: now } })))
  })

  it('refuses an iat or nbf that is not a number (BadJwt)', async () => {
    expectError(await probe(await tokenOf(world.app, AVAILABILITY, { payload: { iat: 'now' } })), 401, 'BadJwt', /iat/)
    expectError(await probe(await tokenOf(world.app, AVAILABILITY, { payload: { nbf: null } })), 401, 'BadJwt', /nbf/)
  })

  it('refuses a token with no exp (BadJwt), saying so', async () => {
    const token = await tokenOf(world.app, AVAILABILITY, { payload: { exp: undefined } })
    expect(decodeJwt(token).payload.exp).toBeUndefined()
    expectError(await probe(token), 401, 'BadJwt', /exp/)
  })
})

// ---------------------------------------------------------------------------------------------
describe('single use: (iss, jti) is spent once the token verifies', () => {
  it('refuses the same token twice on a procedure (JwtReplayed)', async () => {
    const app = await newApp(world)
    const token = await tokenOf(app, CREATE_EVENT)
    const body = {
      organizerDid: world.organizer.did,
      organizerAssertionJwt: await tokenOf(world.organizer, CREATE_EVENT),
      event: { uri: eventUri(world.organizer.did), title: 'Replayed' },
    }
    expectOk(await send(CREATE_EVENT, token, body))
    // A fresh organizer assertion, so only the app's token is the replay.
    const again = await send(CREATE_EVENT, token, { ...body, organizerAssertionJwt: await tokenOf(world.organizer, CREATE_EVENT) })
    expectError(again, 401, 'JwtReplayed')
  })

  it('refuses the same token twice on a query too (JwtReplayed)', async () => {
    const token = await tokenOf(world.app, AVAILABILITY)
    expectOk(await probe(token))
    expectError(await probe(token), 401, 'JwtReplayed')
  })

  it('spends a token even when the method then fails (a 400 answer)', async () => {
    const token = await tokenOf(world.app, AVAILABILITY)
    expectError(await send(AVAILABILITY, token, { eventId: 'evt_doesnotexist' }), 400, 'EventNotFound')
    // Same token, now with a valid input: it was spent by the first call.
    expectError(await probe(token), 401, 'JwtReplayed')
  })

  it('spends a token that verified even when the caller was not yet a registered app', async () => {
    const app = await newIdentityClient(world)
    const token = await tokenOf(app, CREATE_EVENT)
    const input = {
      organizerDid: world.organizer.did,
      organizerAssertionJwt: await tokenOf(world.organizer, CREATE_EVENT),
      event: { uri: eventUri(world.organizer.did), title: 'Early' },
    }
    expectError(await send(CREATE_EVENT, token, input), 403, 'AppNotRegistered')
    expectOk(await registerApp(world.service, { did: app.did, name: 'late app' }))
    const again = await send(CREATE_EVENT, token, { ...input, organizerAssertionJwt: await tokenOf(world.organizer, CREATE_EVENT) })
    expectError(again, 401, 'JwtReplayed')
    // …while a fresh token of the same app now works.
    expectOk(await bindEvent(app))
  })

  it('keys the store on (iss, jti), not the token string: a re-signed token with a used jti is refused', async () => {
    const jti = randomJti()
    const now = nowSeconds()
    expectOk(await probe(await tokenOf(world.app, AVAILABILITY, { jti, iat: now })))
    // Different iat and exp, so a different token string and a different signature.
    const second = await tokenOf(world.app, AVAILABILITY, { jti, iat: now - 5, exp: now + 100 })
    expectError(await probe(second), 401, 'JwtReplayed')
  })

  it('scopes jti per issuer: another app may use the same jti', async () => {
    const jti = randomJti()
    const other = await newApp(world)
    const bound = await bindEvent(other)
    expectOk(bound)
    expectOk(await probe(await tokenOf(world.app, AVAILABILITY, { jti })))
    expectOk(await send(AVAILABILITY, await tokenOf(other, AVAILABILITY, { jti }), { eventId: bound.body.event.id }))
  })

  it('lets exactly one of many concurrent copies (and malleable variants) of one token through', async () => {
    const token = await tokenOf(world.app, AVAILABILITY)
    const copies = [token, highSVariant(token), derVariant(token), token, highSVariant(token), derVariant(token)]
    const results = await Promise.all(copies.map((t) => probe(t)))
    const ok = results.filter((r) => r.status === 200)
    expect(ok.length, JSON.stringify(results.map((r) => [r.status, r.body?.error]))).toBe(1)
    for (const r of results.filter((r) => r.status !== 200)) expectError(r, 401, 'JwtReplayed')
  })

  // ECDSA signatures are malleable and atproto's verifyJwt accepts high-S and DER forms
  // (allowMalleableSig): one payload, several valid tokens.
  describe.each(['k256', 'p256'] as const)('malleable signatures (%s)', (curve) => {
    let app: AppClient
    let eventId: string
    beforeAll(async () => {
      app = curve === 'k256' ? world.app : await newApp(world, 'p256')
      if (curve === 'k256') eventId = shared.eventId
      else {
        const bound = await bindEvent(app)
        expectOk(bound)
        eventId = bound.body.event.id
      }
    })
    const call = (token: string) => send(AVAILABILITY, token, { eventId })

    it('refuses the high-S variant of a used token (JwtReplayed)', async () => {
      const token = await tokenOf(app, AVAILABILITY)
      expectOk(await call(token))
      const variant = highSVariant(token)
      expect(variant).not.toBe(token)
      sentTokens.add(variant)
      expectError(await call(variant), 401, 'JwtReplayed')
    })

    it('refuses the DER variant of a used token (JwtReplayed)', async () => {
      const token = await tokenOf(app, AVAILABILITY)
      expectOk(await call(token))
      const variant = derVariant(token)
      expect(variant).not.toBe(token)
      sentTokens.add(variant)
      expectError(await call(variant), 401, 'JwtReplayed')
    })

    it('accepts the high-S variant of an unused token, and then refuses the original', async () => {
      const token = await tokenOf(app, AVAILABILITY)
      const variant = highSVariant(token)
      sentTokens.add(variant)
      expectOk(await call(variant))
      expectError(await call(token), 401, 'JwtReplayed')
    })

    it('accepts the DER variant of an unused token, and then refuses the original', async () => {
      const token = await tokenOf(app, AVAILABILITY)
      const variant = derVariant(token)
      sentTokens.add(variant)
      expectOk(await call(variant))
      expectError(await call(token), 401, 'JwtReplayed')
    })
  })
})

// ---------------------------------------------------------------------------------------------
describe('signatures', () => {
  it('refuses a corrupted signature (BadJwtSignature)', async () => {
    const token = corruptSignature(await tokenOf(world.app, AVAILABILITY))
    sentTokens.add(token)
    expectError(await probe(token), 401, 'BadJwtSignature')
  })

  it('refuses a token signed by another key on the same curve (BadJwtSignature)', async () => {
    const stranger = await createKeypair('k256')
    expectError(await probe(await tokenOf(world.app, AVAILABILITY, { keypair: stranger })), 401, 'BadJwtSignature')
  })

  it('refuses a token signed by a key on the other curve (BadJwtSignature)', async () => {
    const stranger = await createKeypair('p256')
    const token = await tokenOf(world.app, AVAILABILITY, { keypair: stranger })
    expect(decodeJwt(token).header.alg).toBe('ES256')
    expectError(await probe(token), 401, 'BadJwtSignature')
  })

  it('refuses a used token whose jti was changed to dodge the replay store (BadJwtSignature)', async () => {
    const token = await tokenOf(world.app, AVAILABILITY)
    expectOk(await probe(token))
    const tampered = tamperPayload(token, { jti: randomJti() })
    sentTokens.add(tampered)
    expectError(await probe(tampered), 401, 'BadJwtSignature')
  })

  it('refuses alg "none" with an empty signature (BadJwtSignature)', async () => {
    const now = nowSeconds()
    const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'none' }))
    const payload = b64url(
      JSON.stringify({ iss: world.app.did, aud: world.service.serviceDid, lxm: AVAILABILITY, iat: now, exp: now + 60, jti: randomJti() }),
    )
    const token = `${header}.${payload}.`
    sentTokens.add(token)
    expectError(await probe(token), 401, 'BadJwtSignature')
  })
})

// ---------------------------------------------------------------------------------------------
describe('key rotation', () => {
  // The service caches DID documents; on a bad signature it must resolve once more. With
  // several workers each has its own cache, so every step is sent several times, each on a
  // new connection: the primary hands new connections to the workers in turn, so every worker
  // sees the new key (and learns it) before the old key is tried. Over reused keep-alive
  // connections one worker could miss the new-key step and still hold the old document,
  // which it would rightly trust until its cache entry goes stale.
  const SPREAD = 8
  const NEW_CONNECTION = { connection: 'close' }

  async function rotationCase(from: Curve, to: Curve) {
    const app = await newApp(world, from)
    const bound = await bindEvent(app)
    expectOk(bound)
    const eventId = bound.body.event.id as string
    // Calls before the rotation: the service has the old document cached.
    for (const res of await parallel(SPREAD, async () => probeEvent(app, eventId, NEW_CONNECTION))) expectOk(res)

    const identity = app.identity as PlcIdentity
    const oldKey = await rotateAtprotoKey(world.plc.url, identity, await createKeypair(to))
    expect(identity.keypair.did()).not.toBe(oldKey.did())

    // Signed with the NEW key: accepted (the cached key fails, the re-resolved one verifies).
    for (const res of await parallel(SPREAD, async () => probeEvent(app, eventId, NEW_CONNECTION))) expectOk(res)
    // Signed with the OLD key afterwards: refused.
    const old = await parallel(SPREAD, async () => send(AVAILABILITY, await tokenOf(app, AVAILABILITY, { keypair: oldKey }), { eventId }, NEW_CONNECTION))
    for (const res of old) expectError(res, 401, 'BadJwtSignature')
  }

  it('did:plc (k256 -> k256): the new key is accepted at once, the old one refused', async () => {
    await rotationCase('k256', 'k256')
  })

  it('did:plc (p256 -> p256): the new key is accepted at once, the old one refused', async () => {
    await rotationCase('p256', 'p256')
  })

  // LIBRARY-NOTES: stock verifyJwt does not re-resolve when the cached key's type differs from
  // the token's alg. The contract says "on a bad signature the document is resolved once more".
  it('did:plc (k256 -> p256, a change of curve): the new key is accepted at once', async () => {
    await rotationCase('k256', 'p256')
  })

  it('did:web: the new key is accepted at once, the old one refused', async () => {
    const { host, client } = await didWebApp('k256')
    const bound = await bindEvent(client)
    expectOk(bound)
    const eventId = bound.body.event.id as string
    for (const res of await parallel(SPREAD, async () => probeEvent(client, eventId, NEW_CONNECTION))) expectOk(res)
    const oldKey = await host.rotateKey(host.identity)
    for (const res of await parallel(SPREAD, async () => probeEvent(client, eventId, NEW_CONNECTION))) expectOk(res)
    const old = await parallel(SPREAD, async () =>
      send(AVAILABILITY, await tokenOf(client, AVAILABILITY, { keypair: oldKey }), { eventId }, NEW_CONNECTION),
    )
    for (const res of old) expectError(res, 401, 'BadJwtSignature')
  })
})

// ---------------------------------------------------------------------------------------------
describe('iss: only a did:plc or did:web whose document can be fetched', () => {
  it('refuses an iss with a #fragment, even signed by the right key (BadJwtIss)', async () => {
    // Stock verifyJwt accepts "did:plc:…#x" (LIBRARY-NOTES).
    const token = await tokenOf(world.app, AVAILABILITY, { iss: `${world.app.did}#atm_tickets` })
    expectError(await probe(token), 401, 'BadJwtIss')
  })

  it('refuses a self-made did:key issuer signed with its own key (BadJwtIss)', async () => {
    // IdResolver resolves a did:key to itself, so it would "verify". Registered with the operator
    // (if the operator takes it), so a verifier that trusted it would answer 200 here.
    const keypair = await createKeypair('k256')
    const didKey = keypair.did()
    await registerApp(world.service, { did: didKey, name: 'did:key app' })
    const token = await mintServiceJwt({ keypair, iss: didKey, aud: world.service.serviceDid, lxm: CREATE_EVENT })
    sentTokens.add(token)
    const res = await send(CREATE_EVENT, token, {
      organizerDid: world.organizer.did,
      organizerAssertionJwt: await tokenOf(world.organizer, CREATE_EVENT),
      event: { uri: eventUri(world.organizer.did), title: 'did:key' },
    })
    expectError(res, 401, 'BadJwtIss')
  })

  it.each([['not-a-did'], ['did:example:123'], ['https://app.example.com']])('refuses iss = %s (BadJwtIss)', async (iss) => {
    expectError(await probe(await tokenOf(world.app, AVAILABILITY, { iss })), 401, 'BadJwtIss')
  })

  it('refuses a did:plc that does not exist on the PLC directory (BadJwtIss, not 500)', async () => {
    const alphabet = 'abcdefghijklmnopqrstuvwxyz234567'
    const missing = `did:plc:${Array.from(randomBytes(24), (b) => alphabet[b % 32]).join('')}`
    expectError(await probe(await tokenOf(world.app, AVAILABILITY, { iss: missing })), 401, 'BadJwtIss')
  })

  it('refuses a tombstoned did:plc (BadJwtIss, not 500)', async () => {
    const identity = await createPlcIdentity(world.plc.url)
    expectOk(await registerApp(world.service, { did: identity.did, name: 'tombstoned' }))
    await tombstonePlcIdentity(world.plc.url, identity)
    const client = new AppClient(world.service, identity)
    expectError(await probe(await tokenOf(client, AVAILABILITY)), 401, 'BadJwtIss')
  })

  it('refuses a did:web whose host answers 404 (BadJwtIss, not 500)', async () => {
    const { host, client } = await didWebApp('k256')
    host.override(host.identity, { status: 404, body: { error: 'NotFound' } })
    expectError(await probe(await tokenOf(client, AVAILABILITY)), 401, 'BadJwtIss')
    expect(host.requests).toContain('/.well-known/did.json') // the service did ask
  })

  it('refuses a did:web whose host answers something that is not JSON (BadJwtIss, not 500)', async () => {
    const { host, client } = await didWebApp('k256')
    host.override(host.identity, { status: 200, body: '{not json' })
    expectError(await probe(await tokenOf(client, AVAILABILITY)), 401, 'BadJwtIss')
  })

  it('refuses a did:web whose document has no #atproto key (BadJwtIss, not 500)', async () => {
    const { host, client } = await didWebApp('k256')
    host.override(host.identity, { status: 200, body: { ...host.document(host.identity), verificationMethod: [] } })
    expectError(await probe(await tokenOf(client, AVAILABILITY)), 401, 'BadJwtIss')
  })

  it('refuses a did:web whose host is down (BadJwtIss, not 500)', async () => {
    const { host, client } = await didWebApp('k256')
    await host.close()
    expectError(await probe(await tokenOf(client, AVAILABILITY)), 401, 'BadJwtIss')
  })

  it('refuses a did:web with a path, which atproto cannot resolve (BadJwtIss, not 500)', async () => {
    const host = await startDidWebHost()
    didWebHosts.push(host)
    const pathIdentity = await host.addIdentity({ name: 'apps:foo' })
    expect(pathIdentity.did).toMatch(/^did:web:localhost%3A\d+:apps:foo$/)
    expectOk(await registerApp(world.service, { did: pathIdentity.did, name: 'path app' }))
    const client = new AppClient(world.service, pathIdentity)
    expectError(await probe(await tokenOf(client, AVAILABILITY)), 401, 'BadJwtIss')
  })
})

// ---------------------------------------------------------------------------------------------
describe('malformed tokens are 401, never 500', () => {
  const claims = () => {
    const now = nowSeconds()
    return { iss: world.app.did, aud: world.service.serviceDid, lxm: AVAILABILITY, iat: now, exp: now + 60, jti: randomJti() }
  }
  const signed = async (header: Record<string, unknown> | string, payload: Record<string, unknown> | string) => {
    const token = await signRawJwt({ keypair: world.app.identity.keypair, header, payload })
    sentTokens.add(token)
    return token
  }

  it.each([
    ['base64url of text that is not JSON', b64url('not json at all')],
    ['not base64url at all', '%%%'],
    ['JSON that is not an object', b64url('[1,2,3]')],
    ['JSON null', b64url('null')],
  ])('header: %s → BadJwt', async (_label, header) => {
    expectError(await probe(await signed(header, claims())), 401, 'BadJwt')
  })

  it.each([
    ['broken JSON', b64url('{broken')],
    ['not base64url at all', '***'],
    ['JSON that is not an object', b64url('"a string"')],
    ['JSON null', b64url('null')],
  ])('payload: %s → BadJwt', async (_label, payload) => {
    expectError(await probe(await signed({ typ: 'JWT', alg: 'ES256K' }, payload)), 401, 'BadJwt')
  })

  it('a header with no alg → BadJwt', async () => {
    expectError(await probe(await signed({ typ: 'JWT' }, claims())), 401, 'BadJwt')
  })

  it('a token in 2 parts → BadJwt', async () => {
    const [h, p] = (await tokenOf(world.app, AVAILABILITY)).split('.')
    const token = `${h}.${p}`
    sentTokens.add(token)
    expectError(await probe(token), 401, 'BadJwt')
  })

  it('a token in 4 parts → BadJwt', async () => {
    const token = `${await tokenOf(world.app, AVAILABILITY)}.extra`
    sentTokens.add(token)
    expectError(await probe(token), 401, 'BadJwt')
  })

  it('a bearer that is not a JWT at all → BadJwt', async () => {
    expectError(await probe('hello'), 401, 'BadJwt')
  })

  it.each(['at+jwt', 'refresh+jwt', 'dpop+jwt'])('typ "%s" → BadJwtType', async (typ) => {
    expectError(await probe(await tokenOf(world.app, AVAILABILITY, { typ })), 401, 'BadJwtType')
  })
})

// ---------------------------------------------------------------------------------------------
describe('the Authorization header', () => {
  it('no Authorization header on a tickets method → AuthMissing', async () => {
    const res = await xrpc(world.service.url, AVAILABILITY, { params: { eventId: shared.eventId } })
    expectError(res, 401, 'AuthMissing')
  })

  it('no Authorization header on a tickets procedure → AuthMissing', async () => {
    const res = await xrpc(world.service.url, CREATE_EVENT, {
      body: { organizerDid: world.organizer.did, event: { uri: eventUri(world.organizer.did), title: 'x' } },
    })
    expectError(res, 401, 'AuthMissing')
  })

  it('Authorization: Basic (the admin password) on a tickets method → AuthMissing', async () => {
    const res = await xrpc(world.service.url, AVAILABILITY, { params: { eventId: shared.eventId }, basic: world.service.adminPassword! })
    expectError(res, 401, 'AuthMissing')
  })
})

// ---------------------------------------------------------------------------------------------
describe('apps must be registered, with tickets enabled', () => {
  it('a valid token from an unregistered DID → 403 AppNotRegistered, naming the DID', async () => {
    const stranger = await newIdentityClient(world)
    const res = await probe(await tokenOf(stranger, AVAILABILITY))
    expectError(res, 403, 'AppNotRegistered')
    expect(res.body.message).toContain(stranger.did)
  })

  it('ticketsEnabled:false → 403 TicketsModuleDisabled; re-enabled (upsert keeps the name) → works', async () => {
    const app = await newIdentityClient(world)
    const first = await registerApp(world.service, { did: app.did, name: 'Disabled Co', ticketsEnabled: false })
    expectOk(first)
    expect(first.body.app.ticketsEnabled).toBe(false)
    expectError(await bindEvent(app), 403, 'TicketsModuleDisabled')

    const again = await registerApp(world.service, { did: app.did, ticketsEnabled: true })
    expectOk(again)
    expect(again.body.app).toMatchObject({ did: app.did, name: 'Disabled Co', ticketsEnabled: true })
    const bound = await bindEvent(app)
    expectOk(bound)
    expect(bound.body.event.appDid).toBe(app.did)
  })

  it('disabling an app again takes effect at once', async () => {
    const app = await newApp(world)
    const bound = await bindEvent(app)
    expectOk(bound)
    expectOk(await registerApp(world.service, { did: app.did, ticketsEnabled: false }))
    expectError(await probeEvent(app, bound.body.event.id), 403, 'TicketsModuleDisabled')
  })
})

// ---------------------------------------------------------------------------------------------
describe('admin.registerApp: HTTP Basic with the operator password', () => {
  const wrongPassword = `wrong-${randomBytes(9).toString('base64url')}`

  it('no Authorization → 401, and nothing is registered', async () => {
    const target = await newIdentityClient(world)
    const res = await xrpc(world.service.url, REGISTER_APP, { body: { did: target.did, name: 'sneaky' } })
    expectError(res, 401, 'AuthMissing')
    expectError(await probe(await tokenOf(target, AVAILABILITY)), 403, 'AppNotRegistered')
  })

  it('a wrong password → 401 that does not echo it, and nothing is registered', async () => {
    const target = await newIdentityClient(world)
    const res = await xrpc(world.service.url, REGISTER_APP, { body: { did: target.did, name: 'sneaky' }, basic: wrongPassword })
    expectError(res, 401, 'BadAdminPassword')
    expect(JSON.stringify(res.body)).not.toContain(wrongPassword)
    expect(JSON.stringify(res.body)).not.toContain(world.service.adminPassword!)
    expectError(await probe(await tokenOf(target, AVAILABILITY)), 403, 'AppNotRegistered')
  })

  it('the right password but another user name → 401', async () => {
    const target = await newIdentityClient(world)
    const basic = Buffer.from(`root:${world.service.adminPassword}`).toString('base64')
    const res = await xrpc(world.service.url, REGISTER_APP, {
      body: { did: target.did, name: 'sneaky' },
      headers: { authorization: `Basic ${basic}` },
    })
    expectError(res, 401, 'BadAdminPassword')
    expectError(await probe(await tokenOf(target, AVAILABILITY)), 403, 'AppNotRegistered')
  })

  it('the right password → 200 and the app is registered', async () => {
    const target = await newIdentityClient(world)
    const res = await xrpc(world.service.url, REGISTER_APP, { body: { did: target.did, name: 'Proper' }, basic: world.service.adminPassword! })
    expectOk(res)
    expect(res.body.app).toMatchObject({ did: target.did, name: 'Proper', ticketsEnabled: true })
    expectOk(await bindEvent(target))
  })

  it('a Bearer token (even a valid one from a registered app) → 401, and nothing is registered', async () => {
    const target = await newIdentityClient(world)
    const token = await tokenOf(world.app, REGISTER_APP)
    const res = await xrpc(world.service.url, REGISTER_APP, { body: { did: target.did, name: 'sneaky' }, token })
    expectError(res, 401, 'AuthMissing', /Basic/)
    expectError(await probe(await tokenOf(target, AVAILABILITY)), 403, 'AppNotRegistered')
  })
})

// ---------------------------------------------------------------------------------------------
describe('buyer and organizer assertions', () => {
  // A paid tier of the world's app and organizer; the buyer is a real did:plc.
  let event: { eventId: string; tierId: string }
  let buyer: AppClient
  let other: AppClient
  let before: number
  const items = () => [{ tierId: event.tierId, quantity: 1 }]
  const hold = async (input: Record<string, unknown>) => send(HOLD, await tokenOf(world.app, HOLD), { items: items(), ...input })

  beforeAll(async () => {
    const created = await createEventWithTier(world, { quantityTotal: 20, unitAmount: 1500 })
    event = { eventId: created.eventId, tierId: created.tierId }
    buyer = await newIdentityClient(world)
    other = await newIdentityClient(world)
    before = await remainingOf(event.eventId, event.tierId)
    expect(before).toBe(20)
  })

  describe('refusals (each changes nothing)', () => {
    it('an assertion from another DID than buyerDid → 400 UserDidMismatch', async () => {
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(other, HOLD) })
      expectError(res, 400, 'UserDidMismatch')
      expect(res.body.message).toContain(buyer.did)
    })

    it('an assertion for another method (lxm) → 400 InvalidAssertion, saying why', async () => {
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(buyer, CLAIM) })
      expectError(res, 400, 'InvalidAssertion', /lxm|lexicon method/i)
    })

    it('an expired assertion → 400 InvalidAssertion, saying why', async () => {
      const now = nowSeconds()
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(buyer, HOLD, { iat: now - 120, exp: now - 60 }) })
      expectError(res, 400, 'InvalidAssertion', /expired/i)
    })

    it('an assertion for another audience → 400 InvalidAssertion', async () => {
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(buyer, HOLD, { aud: 'did:web:api.example.com' }) })
      expectError(res, 400, 'InvalidAssertion', /aud/i)
    })

    it('an assertion that lives more than 300 s → 400 InvalidAssertion', async () => {
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(buyer, HOLD, { exp: nowSeconds() + 3600 }) })
      expectError(res, 400, 'InvalidAssertion', /300/)
    })

    it('an assertion whose iat is a year ahead → 400 InvalidAssertion, saying why', async () => {
      const now = nowSeconds()
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(buyer, HOLD, { iat: now + 365 * 86_400, exp: now + 60 }) })
      expectError(res, 400, 'InvalidAssertion', /BadJwtLifetime.*iat/)
    })

    it('an assertion not valid for another day (nbf) → 400 InvalidAssertion, saying why', async () => {
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(buyer, HOLD, { payload: { nbf: nowSeconds() + 86_400 } }) })
      expectError(res, 400, 'InvalidAssertion', /BadJwtLifetime.*nbf/)
    })

    it('an assertion with no jti → 400 InvalidAssertion', async () => {
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(buyer, HOLD, { jti: null }) })
      expectError(res, 400, 'InvalidAssertion', /jti/)
    })

    it('an assertion with a bad signature → 400 InvalidAssertion', async () => {
      const bad = corruptSignature(await tokenOf(buyer, HOLD))
      sentTokens.add(bad)
      expectError(await hold({ buyerDid: buyer.did, buyerAssertionJwt: bad }), 400, 'InvalidAssertion')
    })

    it('an assertion signed by a key that is not the buyer’s → 400 InvalidAssertion', async () => {
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(buyer, HOLD, { keypair: await createKeypair('k256') }) })
      expectError(res, 400, 'InvalidAssertion')
    })

    it('an assertion that is not a JWT → 400 InvalidAssertion', async () => {
      expectError(await hold({ buyerDid: buyer.did, buyerAssertionJwt: 'not-a-jwt' }), 400, 'InvalidAssertion')
    })

    it('buyerDid alone → 400 BuyerAssertionRequired', async () => {
      expectError(await hold({ buyerDid: buyer.did }), 400, 'BuyerAssertionRequired')
    })

    it('an assertion alone → 400 InvalidRequest naming buyerDid', async () => {
      const res = await hold({ buyerAssertionJwt: await tokenOf(buyer, HOLD) })
      expectError(res, 400, 'InvalidRequest', /buyerDid/)
    })

    it('after all of the above, availability is unchanged', async () => {
      expect(await remainingOf(event.eventId, event.tierId)).toBe(before)
    })
  })

  describe('acceptance and single use', () => {
    it('a valid assertion → 200, and the hold takes capacity', async () => {
      const res = await hold({ buyerDid: buyer.did, buyerAssertionJwt: await tokenOf(buyer, HOLD) })
      expectOk(res)
      expect(res.body.holdId).toMatch(/^hold_/)
      expect(await remainingOf(event.eventId, event.tierId)).toBe(before - 1)
    })

    it('the same assertion twice, with different idempotency keys → second is 400 InvalidAssertion', async () => {
      const start = await remainingOf(event.eventId, event.tierId)
      const assertion = await tokenOf(buyer, HOLD)
      expectOk(await hold({ buyerDid: buyer.did, buyerAssertionJwt: assertion, idempotencyKey: `a-${randomJti()}` }))
      const again = await hold({ buyerDid: buyer.did, buyerAssertionJwt: assertion, idempotencyKey: `b-${randomJti()}` })
      expectError(again, 400, 'InvalidAssertion', /used/i)
      expect(await remainingOf(event.eventId, event.tierId)).toBe(start - 1)
    })

    it('the same assertion twice, with no idempotency key → second is 400 InvalidAssertion', async () => {
      const start = await remainingOf(event.eventId, event.tierId)
      const assertion = await tokenOf(buyer, HOLD)
      expectOk(await hold({ buyerDid: buyer.did, buyerAssertionJwt: assertion }))
      expectError(await hold({ buyerDid: buyer.did, buyerAssertionJwt: assertion }), 400, 'InvalidAssertion', /used/i)
      expect(await remainingOf(event.eventId, event.tierId)).toBe(start - 1)
    })

    it('the high-S variant of a used assertion → 400 InvalidAssertion (single use is per (iss, jti))', async () => {
      const start = await remainingOf(event.eventId, event.tierId)
      const assertion = await tokenOf(buyer, HOLD)
      expectOk(await hold({ buyerDid: buyer.did, buyerAssertionJwt: assertion }))
      const variant = highSVariant(assertion)
      sentTokens.add(variant)
      expectError(await hold({ buyerDid: buyer.did, buyerAssertionJwt: variant }), 400, 'InvalidAssertion')
      expect(await remainingOf(event.eventId, event.tierId)).toBe(start - 1)
    })
  })

  describe('organizerAssertionJwt', () => {
    it('from another DID than organizerDid on createTicketEvent → 400 UserDidMismatch, nothing bound', async () => {
      const uri = eventUri(world.organizer.did)
      const res = await send(CREATE_EVENT, await tokenOf(world.app, CREATE_EVENT), {
        organizerDid: world.organizer.did,
        organizerAssertionJwt: await tokenOf(other, CREATE_EVENT),
        event: { uri, title: 'Not consented' },
      })
      expectError(res, 400, 'UserDidMismatch')
      const lookup = await send(AVAILABILITY, await tokenOf(world.app, AVAILABILITY), { eventUri: uri })
      expectError(lookup, 400, 'EventNotFound')
    })

    it('for another method (lxm) → 400 InvalidAssertion, nothing bound', async () => {
      const uri = eventUri(world.organizer.did)
      const res = await send(CREATE_EVENT, await tokenOf(world.app, CREATE_EVENT), {
        organizerDid: world.organizer.did,
        organizerAssertionJwt: await tokenOf(world.organizer, nsid('createTicketTier')),
        event: { uri, title: 'Wrong lxm' },
      })
      expectError(res, 400, 'InvalidAssertion')
      expectError(await send(AVAILABILITY, await tokenOf(world.app, AVAILABILITY), { eventUri: uri }), 400, 'EventNotFound')
    })
  })
})

// ---------------------------------------------------------------------------------------------
describe('the idempotent-retry exception to single use', () => {
  // An exact retry (same idempotencyKey, same input) may resend the very same token and gets
  // the stored answer; anything else with a spent token is JwtReplayed.
  let event: { eventId: string; tierId: string }
  beforeAll(async () => {
    const created = await createEventWithTier(world, { quantityTotal: 10 })
    event = { eventId: created.eventId, tierId: created.tierId }
  })

  it('the very same token and body → 200 reused with the same hold; a different body → JwtReplayed', async () => {
    const key = `idem-${randomJti()}`
    const body = { items: [{ tierId: event.tierId, quantity: 2 }], idempotencyKey: key }
    const token = await tokenOf(world.app, HOLD)

    const first = await send(HOLD, token, body)
    expectOk(first)
    expect(first.body.reused).toBeFalsy()

    const retry = await send(HOLD, token, body)
    expectOk(retry)
    expect(retry.body.reused).toBe(true)
    expect(retry.body.holdId).toBe(first.body.holdId)

    // Same token, same key, different items: not an exact retry.
    expectError(await send(HOLD, token, { ...body, items: [{ tierId: event.tierId, quantity: 1 }] }), 401, 'JwtReplayed')
    // Same token, same items, another key or none: not a retry either.
    expectError(await send(HOLD, token, { ...body, idempotencyKey: `${key}-2` }), 401, 'JwtReplayed')
    expectError(await send(HOLD, token, { items: body.items }), 401, 'JwtReplayed')

    // Capacity was taken once.
    expect(await remainingOf(event.eventId, event.tierId)).toBe(8)
  })

  it('an exact retry that carries a (now spent) buyer assertion gets the stored answer too', async () => {
    const start = await remainingOf(event.eventId, event.tierId)
    const buyer = await newIdentityClient(world)
    const body = {
      items: [{ tierId: event.tierId, quantity: 1 }],
      buyerDid: buyer.did,
      buyerAssertionJwt: await tokenOf(buyer, HOLD),
      idempotencyKey: `idem-${randomJti()}`,
    }
    const token = await tokenOf(world.app, HOLD)
    const first = await send(HOLD, token, body)
    expectOk(first)
    const retry = await send(HOLD, token, body)
    expectOk(retry)
    expect(retry.body).toMatchObject({ reused: true, holdId: first.body.holdId })
    expect(await remainingOf(event.eventId, event.tierId)).toBe(start - 1)
  })
})

// ---------------------------------------------------------------------------------------------
describe('secrets never reach the logs', () => {
  // Runs last: by now the service has seen every kind of token this file sends.
  it('the service wrote structured logs at debug level (so the checks below are not vacuous)', () => {
    expect(world.service.jsonLogs().length).toBeGreaterThan(0)
  })

  it('the admin password does not appear in the logs', () => {
    expect(world.service.adminPassword).toBeTruthy()
    expect(world.service.logs()).not.toContain(world.service.adminPassword!)
    // Nor its Basic encoding.
    expect(world.service.logs()).not.toContain(Buffer.from(`admin:${world.service.adminPassword}`).toString('base64'))
  })

  it('no bearer token or assertion that was sent appears in the logs, nor any JWT-shaped text', () => {
    const logs = world.service.logs()
    expect(sentTokens.size).toBeGreaterThan(50)
    const leaked = [...sentTokens].filter((t) => t.length > 8 && logs.includes(t))
    expect(leaked).toEqual([])
    // Any header.payload pair of a JWT (tokens minted by AppClient.call are not recorded above).
    expect(logs.match(/eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/g) ?? []).toEqual([])
  })
})
