// Every tickets.atmosphere.* method over real HTTP against the real service process
// (CONTRACT §3–§5): happy paths, answer shapes, and each lexicon error name that a caller
// can reach, checking the status, the error name, and that a refused request changed nothing.
//
// Error names listed in a lexicon but not reachable through HTTP today:
// - createCapacityGroup InvalidCapacity: the seed's schema (integer, minimum 1) answers
//   InvalidRequest first (CONTRACT §5.5).
// - createTicketHold / claimFreeTicket OrganizerNotRegistered: an organizer must have signed
//   in before any tier of theirs can exist, and nothing signs an organizer out.
// - claimFreeTicket PaymentSetupIncomplete: free claims in test do not need payment setup, and
//   nothing can exist in live (completePaymentSetup live is LivePaymentsUnavailable).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { payHold, paymentIdOf } from './helpers/checkout.js'
import { expectOk, expectError, type Body } from './helpers/expect.js'
import {
  AppClient,
  buildDocument,
  createKeypair,
  xrpc,
  type DidWebIdentity,
} from './helpers/index.js'
import {
  createEventWithTier,
  eventUri,
  newApp,
  newIdentityClient,
  newOrganizer,
  nsid,
  registerApp,
  startWorld,
  type World,
} from './helpers/world.js'

// ---------------------------------------------------------------------------------------
// helpers



const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** What registerApp answers as webhookSecret: `whsec_` and 32 random bytes, base64url. */
const WEBHOOK_SECRET = /^whsec_[A-Za-z0-9_-]{43}$/

function uniq<T>(values: T[]): T[] {
  return [...new Set(values)]
}

let world: World

beforeAll(async () => {
  world = await startWorld()
})

afterAll(async () => {
  await world?.close()
})

const app = () => world.app
const organizer = () => world.organizer

/** Binds a new event (createTicketEvent with the organizer's assertion); answers the eventSummary. */
async function makeEvent(
  opts: { app?: AppClient; organizer?: AppClient; uri?: string; title?: string; environment?: string } = {},
): Promise<Body> {
  const a = opts.app ?? app()
  const o = opts.organizer ?? organizer()
  const res = await a.call(nsid('createTicketEvent'), {
    environment: opts.environment,
    organizerDid: o.did,
    organizerAssertionJwt: o.did === a.did ? undefined : await o.token(nsid('createTicketEvent')),
    event: { uri: opts.uri ?? eventUri(o.did), title: opts.title ?? 'Concert' },
  })
  return expectOk(res).event
}

/** A tier on an existing event of the app (the organizer stays the same: no assertion needed). */
async function makeTier(
  eventId: string,
  tier: Body = {},
  opts: { app?: AppClient; organizer?: AppClient } = {},
): Promise<Body> {
  const a = opts.app ?? app()
  const o = opts.organizer ?? organizer()
  const res = await a.call(nsid('createTicketTier'), {
    organizerDid: o.did,
    event: { eventId },
    title: 'General admission',
    currency: 'usd',
    unitAmount: 2500,
    quantityTotal: 10,
    ...tier,
  })
  return expectOk(res).tier
}

async function makeGroup(eventId: string, totalCapacity: number, opts: { app?: AppClient; organizer?: AppClient } = {}) {
  const a = opts.app ?? app()
  const o = opts.organizer ?? organizer()
  const res = await a.call(nsid('createCapacityGroup'), {
    organizerDid: o.did,
    event: { eventId },
    name: 'Venue',
    totalCapacity,
  })
  return expectOk(res).capacityGroup as Body
}

async function availability(eventId: string, a: AppClient = app()): Promise<Body> {
  return expectOk(await a.call(nsid('getTicketAvailability'), { eventId }))
}

async function tierState(eventId: string, tierId: string, a: AppClient = app()): Promise<Body> {
  const tier = (await availability(eventId, a)).tiers.find((t: Body) => t.id === tierId)
  expect(tier, `tier ${tierId} in availability of ${eventId}`).toBeDefined()
  return tier
}

async function hold(items: Array<{ tierId: string; quantity: number }>, extra: Body = {}, a: AppClient = app()) {
  return a.call(nsid('createTicketHold'), { items, ...extra })
}

async function claim(tierId: string, buyer: AppClient, extra: Body = {}, a: AppClient = app()) {
  return a.call(nsid('claimFreeTicket'), {
    tierId,
    buyerDid: buyer.did,
    buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')),
    ...extra,
  })
}

const nowSeconds = () => Math.floor(Date.now() / 1000)
const isoIn = (ms: number) => new Date(Date.now() + ms).toISOString()

// ---------------------------------------------------------------------------------------
// A did:web identity whose document answer can be held back, so a request is provably
// still verifying its buyer assertion while a second one arrives (IdempotencyKeyInUse).

interface DelayedDidWeb {
  client: AppClient
  /** Resolves when the service asks for the document while it is being held. */
  requested: Promise<void>
  /** Answer the held request (and every later one at once). */
  release(): void
  fetches: number
  close(): Promise<void>
}

async function startDelayedDidWeb(): Promise<DelayedDidWeb> {
  let identity: DidWebIdentity | undefined
  let releaseGate!: () => void
  const gate = new Promise<void>((resolve) => (releaseGate = resolve))
  let signalRequested!: () => void
  const requested = new Promise<void>((resolve) => (signalRequested = resolve))
  const state = { fetches: 0 }
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    if (path !== '/.well-known/did.json' || !identity) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"NotFound"}')
      return
    }
    state.fetches++
    signalRequested()
    void gate.then(() => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(buildDocument(identity!)))
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address() as AddressInfo
  const keypair = await createKeypair('k256')
  identity = { method: 'web', did: `did:web:localhost%3A${port}`, keypair, curve: 'k256', path: [], services: [] }
  return {
    client: new AppClient(world.service, identity),
    requested,
    release: () => releaseGate(),
    get fetches() {
      return state.fetches
    },
    close: () =>
      new Promise<void>((resolve) => {
        releaseGate()
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

// ---------------------------------------------------------------------------------------

describe('registerOrganizer and completePaymentSetup', () => {
  it('registerOrganizer can be called with no body at all (POST, no content-type)', async () => {
    const person = await newIdentityClient(world)
    const res = await xrpc(world.service.url, nsid('registerOrganizer'), {
      method: 'POST',
      token: await person.token(nsid('registerOrganizer')),
    })
    const body = expectOk(res)
    expect(body.organizer.did).toBe(person.did)
    expect(body.organizer.paymentSetup).toEqual({ test: false, live: false })
    expect(typeof body.organizer.createdAt).toBe('string')
    // signing in again keeps the first sign-in
    const again = expectOk(await person.call(nsid('registerOrganizer'), { displayName: 'Ada' }))
    expect(again.organizer.createdAt).toBe(body.organizer.createdAt)
    expect(again.organizer.displayName).toBe('Ada')
  })

  it('completePaymentSetup: OrganizerNotRegistered before sign-in, and nothing is set up', async () => {
    const person = await newIdentityClient(world)
    expectError(await person.call(nsid('completePaymentSetup'), { environment: 'test' }), 400, 'OrganizerNotRegistered')
    const signIn = expectOk(await person.call(nsid('registerOrganizer'), {}))
    expect(signIn.organizer.paymentSetup).toEqual({ test: false, live: false })
  })

  it('completePaymentSetup live: LivePaymentsUnavailable, and live stays not set up', async () => {
    const person = await newOrganizer(world, { paymentSetup: false })
    expectError(await person.call(nsid('completePaymentSetup'), { environment: 'live' }), 400, 'LivePaymentsUnavailable')
    const view = expectOk(await person.call(nsid('registerOrganizer'), {}))
    expect(view.organizer.paymentSetup).toEqual({ test: false, live: false })
  })

  it('completePaymentSetup test: 200 and paymentSetup.test true; no body defaults to test', async () => {
    const person = await newOrganizer(world, { paymentSetup: false })
    const body = expectOk(await person.call(nsid('completePaymentSetup'), { environment: 'test' }))
    expect(body.environment).toBe('test')
    expect(body.paymentSetupComplete).toBe(true)
    expect(body.organizer.did).toBe(person.did)
    expect(body.organizer.paymentSetup.test).toBe(true)
    expect(body.organizer.paymentSetup.live).toBe(false)

    const other = await newOrganizer(world, { paymentSetup: false })
    const res = await xrpc(world.service.url, nsid('completePaymentSetup'), {
      method: 'POST',
      token: await other.token(nsid('completePaymentSetup')),
    })
    const noBody = expectOk(res)
    expect(noBody.environment).toBe('test')
    expect(noBody.organizer.paymentSetup.test).toBe(true)
  })
})

describe('admin.registerApp', () => {
  it('AppNameRequired for a new DID without a name; the DID stays unregistered', async () => {
    const candidate = await newIdentityClient(world)
    expectError(await registerApp(world.service, { did: candidate.did }), 400, 'AppNameRequired')
    const res = await candidate.call(nsid('getTicketAvailability'), { eventId: 'evt_nothing' })
    expectError(res, 403, 'AppNotRegistered')
  })

  it('InvalidWebhookUrl, and a refused update changes nothing', async () => {
    const candidate = await newIdentityClient(world)
    // a scheme that is not http(s)
    expectError(
      await registerApp(world.service, { did: candidate.did, name: 'Hooky', webhookUrl: 'ftp://example.com/hook' }),
      400,
      'InvalidWebhookUrl',
    )
    // nothing was registered
    expectError(await registerApp(world.service, { did: candidate.did }), 400, 'AppNameRequired')

    const created = expectOk(
      await registerApp(world.service, { did: candidate.did, name: 'Hooky', webhookUrl: 'https://example.com/hook' }),
    )
    expect(created.app.webhookUrl).toBe('https://example.com/hook')
    // credentials in the URL
    expectError(
      await registerApp(world.service, { did: candidate.did, webhookUrl: 'https://user:pw@example.com/hook', name: 'Changed' }),
      400,
      'InvalidWebhookUrl',
    )
    // webhook delivery without any URL
    expectError(
      await registerApp(world.service, { did: candidate.did, webhookUrl: null, eventDelivery: 'webhook' }),
      400,
      'InvalidWebhookUrl',
    )
    const after = expectOk(await registerApp(world.service, { did: candidate.did }))
    expect(after.app.name).toBe('Hooky')
    expect(after.app.webhookUrl).toBe('https://example.com/hook')
    expect(after.webhookSecret).toBeUndefined()
  })

  it('is an upsert: fields left out keep their values; webhookSecret answered only when created or rotated', async () => {
    const candidate = await newIdentityClient(world)
    const created = expectOk(
      await registerApp(world.service, { did: candidate.did, name: 'First', webhookUrl: 'https://example.com/a' }),
    )
    expect(created.app.did).toBe(candidate.did)
    expect(created.app.name).toBe('First')
    expect(created.app.ticketsEnabled).toBe(true)
    expect(created.app.webhookUrl).toBe('https://example.com/a')
    expect(created.webhookSecret).toMatch(WEBHOOK_SECRET)

    const disabled = expectOk(await registerApp(world.service, { did: candidate.did, ticketsEnabled: false }))
    expect(disabled.app.name).toBe('First')
    expect(disabled.app.webhookUrl).toBe('https://example.com/a')
    expect(disabled.app.ticketsEnabled).toBe(false)
    expect(disabled.webhookSecret).toBeUndefined()
    expectError(await candidate.call(nsid('getTicketAvailability'), { eventId: 'evt_x' }), 403, 'TicketsModuleDisabled')

    const renamed = expectOk(await registerApp(world.service, { did: candidate.did, name: 'Second' }))
    expect(renamed.app.name).toBe('Second')
    expect(renamed.app.ticketsEnabled).toBe(false)
    expect(renamed.app.webhookUrl).toBe('https://example.com/a')
    expect(renamed.webhookSecret).toBeUndefined()

    const rotated = expectOk(await registerApp(world.service, { did: candidate.did, rotateWebhookSecret: true }))
    expect(rotated.webhookSecret).toMatch(WEBHOOK_SECRET)
    expect(rotated.webhookSecret).not.toBe(created.webhookSecret)
    expect(rotated.app.name).toBe('Second')

    const enabled = expectOk(await registerApp(world.service, { did: candidate.did, ticketsEnabled: true }))
    expect(enabled.webhookSecret).toBeUndefined()
    expect(enabled.app.ticketsEnabled).toBe(true)
    expect(enabled.app.name).toBe('Second')
    expectError(await candidate.call(nsid('getTicketAvailability'), { eventId: 'evt_x' }), 400, 'EventNotFound')
  })
})

describe('AppNotRegistered and TicketsModuleDisabled on every app method', () => {
  const inputs = (organizerDid: string): Array<[string, Body]> => [
    ['createTicketEvent', { organizerDid, event: { uri: eventUri(organizerDid), title: 'x' } }],
    ['updateTicketEvent', { eventId: 'evt_x' }],
    ['createCapacityGroup', { organizerDid, event: { uri: eventUri(organizerDid), title: 'x' }, name: 'x', totalCapacity: 1 }],
    ['updateCapacityGroup', { capacityGroupId: 'cg_x' }],
    [
      'createTicketTier',
      { organizerDid, event: { uri: eventUri(organizerDid), title: 'x' }, title: 'x', currency: 'usd', unitAmount: 0, quantityTotal: 1 },
    ],
    ['updateTicketTier', { tierId: 'tier_x' }],
    ['archiveTicketTier', { tierId: 'tier_x' }],
    ['getTicketAvailability', { eventId: 'evt_x' }],
    ['createTicketHold', { items: [{ tierId: 'tier_x', quantity: 1 }] }],
    ['releaseTicketHold', { holdId: 'hold_x' }],
    ['getTicketHold', { holdId: 'hold_x' }],
    ['claimFreeTicket', { tierId: 'tier_x' }],
    ['listBuyerTickets', { buyerDid: organizerDid }],
    ['listOrganizerTickets', { organizerDid }],
  ]

  it('an unregistered caller is 403 AppNotRegistered', async () => {
    const stranger = await newIdentityClient(world)
    for (const [method, input] of inputs(organizer().did)) {
      const res = await stranger.call(nsid(method), input)
      expect(res.status, `${method}: ${JSON.stringify(res.body)}`).toBe(403)
      expect(res.body?.error, method).toBe('AppNotRegistered')
    }
  })

  it('an app with tickets disabled is 403 TicketsModuleDisabled', async () => {
    const off = await newApp(world)
    expectOk(await registerApp(world.service, { did: off.did, ticketsEnabled: false }))
    for (const [method, input] of inputs(organizer().did)) {
      const res = await off.call(nsid(method), input)
      expect(res.status, `${method}: ${JSON.stringify(res.body)}`).toBe(403)
      expect(res.body?.error, method).toBe('TicketsModuleDisabled')
    }
  })
})

describe('createTicketEvent', () => {
  it('binds an event with the organizer assertion: eventSummary shape', async () => {
    const uri = eventUri(organizer().did)
    const res = await app().call(nsid('createTicketEvent'), {
      organizerDid: organizer().did,
      organizerAssertionJwt: await organizer().token(nsid('createTicketEvent')),
      event: { uri, title: 'Jazz night', startsAt: '2031-05-01T19:00:00.000Z' },
    })
    const event = expectOk(res).event
    expect(event.id).toMatch(/^evt_/)
    expect(event.eventId).toBe(event.id)
    expect(event.uri).toBe(uri)
    expect(event.title).toBe('Jazz night')
    expect(event.organizerDid).toBe(organizer().did)
    expect(event.appDid).toBe(app().did)
    expect(event.environment).toBe('test')
    expect(event.status).toBe('active')
    expect(event.startsAt).toBe('2031-05-01T19:00:00.000Z')
    expect(event.checkInListId).toMatch(/^cil_/)
    // binding the same uri again answers the same event
    const again = expectOk(
      await app().call(nsid('createTicketEvent'), { organizerDid: organizer().did, event: { uri, title: 'Jazz night II' } }),
    ).event
    expect(again.id).toBe(event.id)
    expect(again.title).toBe('Jazz night II')
  })

  it('OrganizerNotRegistered for an organizer who never signed in; no event is created', async () => {
    const stranger = await newIdentityClient(world)
    const uri = eventUri(stranger.did)
    const res = await app().call(nsid('createTicketEvent'), {
      organizerDid: stranger.did,
      organizerAssertionJwt: await stranger.token(nsid('createTicketEvent')),
      event: { uri, title: 'Nope' },
    })
    expectError(res, 400, 'OrganizerNotRegistered')
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri }), 400, 'EventNotFound')
  })

  it('OrganizerConsentRequired (403) for another organizer without an assertion; no event is created', async () => {
    const uri = eventUri(organizer().did)
    const res = await app().call(nsid('createTicketEvent'), {
      organizerDid: organizer().did,
      event: { uri, title: 'No consent' },
    })
    expectError(res, 403, 'OrganizerConsentRequired')
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri }), 400, 'EventNotFound')
  })

  it('UserDidMismatch and InvalidAssertion for a wrong organizer assertion; no event is created', async () => {
    const other = await newOrganizer(world)
    const uri = eventUri(organizer().did)
    const base = { organizerDid: organizer().did, event: { uri, title: 'Bad consent' } }
    // issued by someone else
    expectError(
      await app().call(nsid('createTicketEvent'), { ...base, organizerAssertionJwt: await other.token(nsid('createTicketEvent')) }),
      400,
      'UserDidMismatch',
    )
    // scoped to another method
    expectError(
      await app().call(nsid('createTicketEvent'), { ...base, organizerAssertionJwt: await organizer().token(nsid('createTicketTier')) }),
      400,
      'InvalidAssertion',
    )
    // expired
    const expired = await organizer().token(nsid('createTicketEvent'), { iat: nowSeconds() - 120, exp: nowSeconds() - 60 })
    expectError(await app().call(nsid('createTicketEvent'), { ...base, organizerAssertionJwt: expired }), 400, 'InvalidAssertion')
    // for another audience
    const wrongAud = await organizer().token(nsid('createTicketEvent'), { aud: 'did:web:elsewhere.example' })
    expectError(await app().call(nsid('createTicketEvent'), { ...base, organizerAssertionJwt: wrongAud }), 400, 'InvalidAssertion')
    // not a JWT at all
    expectError(await app().call(nsid('createTicketEvent'), { ...base, organizerAssertionJwt: 'not-a-jwt' }), 400, 'InvalidAssertion')
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri }), 400, 'EventNotFound')

    // single-use: the same assertion a second time is InvalidAssertion
    const once = await organizer().token(nsid('createTicketEvent'))
    expectOk(await app().call(nsid('createTicketEvent'), { ...base, organizerAssertionJwt: once }))
    const uri2 = eventUri(organizer().did)
    expectError(
      await app().call(nsid('createTicketEvent'), { ...base, event: { uri: uri2, title: 'x' }, organizerAssertionJwt: once }),
      400,
      'InvalidAssertion',
    )
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri2 }), 400, 'EventNotFound')
  })

  it('an app may be its own organizer once it signed in, without an assertion', async () => {
    const selfApp = await newApp(world)
    const uri = eventUri(selfApp.did)
    expectError(
      await selfApp.call(nsid('createTicketEvent'), { organizerDid: selfApp.did, event: { uri, title: 'Mine' } }),
      400,
      'OrganizerNotRegistered',
    )
    expectOk(await selfApp.call(nsid('registerOrganizer'), {}))
    const event = expectOk(
      await selfApp.call(nsid('createTicketEvent'), { organizerDid: selfApp.did, event: { uri, title: 'Mine' } }),
    ).event
    expect(event.organizerDid).toBe(selfApp.did)
    expect(event.appDid).toBe(selfApp.did)

    // re-binding another organizer's event to the app itself also needs consent (the app's own)
    const theirs = await makeEvent({ app: selfApp })
    expect(theirs.organizerDid).toBe(organizer().did)
    expectError(
      await selfApp.call(nsid('createTicketEvent'), { organizerDid: selfApp.did, event: { uri: theirs.uri, title: 'x' } }),
      403,
      'OrganizerReassignmentNotAllowed',
    )
    const unchanged = expectOk(await selfApp.call(nsid('updateTicketEvent'), { eventId: theirs.id })).event
    expect(unchanged.organizerDid).toBe(organizer().did)
  })

  it('re-binding to another organizer: 403 without, 200 with the new organizer assertion', async () => {
    const second = await newOrganizer(world)
    const event = await makeEvent()
    const without = await app().call(nsid('createTicketEvent'), {
      organizerDid: second.did,
      event: { uri: event.uri, title: event.title },
    })
    expectError(without, 403, 'OrganizerReassignmentNotAllowed')
    expect(expectOk(await app().call(nsid('updateTicketEvent'), { eventId: event.id })).event.organizerDid).toBe(organizer().did)

    const withConsent = await app().call(nsid('createTicketEvent'), {
      organizerDid: second.did,
      organizerAssertionJwt: await second.token(nsid('createTicketEvent')),
      event: { uri: event.uri, title: event.title },
    })
    const moved = expectOk(withConsent).event
    expect(moved.id).toBe(event.id)
    expect(moved.organizerDid).toBe(second.did)
  })

  it('re-binding is refused once the event has an active hold, and allowed again after release', async () => {
    const second = await newOrganizer(world)
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 5 })
    const h = expectOk(await hold([{ tierId: tier.id, quantity: 1 }]))
    const rebind = async () =>
      app().call(nsid('createTicketEvent'), {
        organizerDid: second.did,
        organizerAssertionJwt: await second.token(nsid('createTicketEvent')),
        event: { uri: event.uri },
      })
    expectError(await rebind(), 403, 'OrganizerReassignmentNotAllowed')
    expect(expectOk(await app().call(nsid('updateTicketEvent'), { eventId: event.id })).event.organizerDid).toBe(organizer().did)
    expectOk(await app().call(nsid('releaseTicketHold'), { holdId: h.holdId }))
    expect(expectOk(await rebind()).event.organizerDid).toBe(second.did)
  })

  it('re-binding is refused once the event has issued tickets', async () => {
    const second = await newOrganizer(world)
    const buyer = await newIdentityClient(world)
    const event = await makeEvent()
    const tier = await makeTier(event.id, { unitAmount: 0, quantityTotal: 5 })
    expectOk(await claim(tier.id, buyer))
    const res = await app().call(nsid('createTicketEvent'), {
      organizerDid: second.did,
      organizerAssertionJwt: await second.token(nsid('createTicketEvent')),
      event: { uri: event.uri },
    })
    expectError(res, 403, 'OrganizerReassignmentNotAllowed')
    expect(expectOk(await app().call(nsid('updateTicketEvent'), { eventId: event.id })).event.organizerDid).toBe(organizer().did)
  })

  it('InvalidEvent: no title for a new event, a uri that is not a record, neither uri nor eventId', async () => {
    const uri = eventUri(organizer().did)
    const call = async (event: Body) =>
      app().call(nsid('createTicketEvent'), {
        organizerDid: organizer().did,
        organizerAssertionJwt: await organizer().token(nsid('createTicketEvent')),
        event,
      })
    expectError(await call({ uri }), 400, 'InvalidEvent')
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri }), 400, 'EventNotFound')
    expectError(await call({ uri: `at://${organizer().did}`, title: 'No record' }), 400, 'InvalidEvent')
    expectError(await call({ title: 'Nowhere' }), 400, 'InvalidEvent')
  })

  it('PaymentSetupIncomplete in live; nothing is created there', async () => {
    const uri = eventUri(organizer().did)
    const res = await app().call(nsid('createTicketEvent'), {
      environment: 'live',
      organizerDid: organizer().did,
      organizerAssertionJwt: await organizer().token(nsid('createTicketEvent')),
      event: { uri, title: 'Live show' },
    })
    expectError(res, 400, 'PaymentSetupIncomplete')
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri, environment: 'live' }), 400, 'EventNotFound')
  })

  it('two apps binding the same uri get two different events', async () => {
    const other = await newApp(world)
    const uri = eventUri(organizer().did)
    const a = await makeEvent({ uri })
    const b = await makeEvent({ uri, app: other })
    expect(a.id).not.toBe(b.id)
    expect(a.appDid).toBe(app().did)
    expect(b.appDid).toBe(other.did)
    expect(b.uri).toBe(uri)
  })
})

describe('updateTicketEvent', () => {
  it('EventNotFound for an unknown eventId', async () => {
    expectError(await app().call(nsid('updateTicketEvent'), { eventId: 'evt_doesnotexist', title: 'x' }), 400, 'EventNotFound')
  })

  it('updates the fields given and keeps the others', async () => {
    const event = await makeEvent({ title: 'Before' })
    const tier = await makeTier(event.id, { quantityTotal: 3 })
    const updated = expectOk(
      await app().call(nsid('updateTicketEvent'), {
        eventId: event.id,
        title: 'After',
        startsAt: '2032-01-02T03:04:05.000Z',
        imageUrl: 'https://example.com/poster.png',
        status: 'paused',
      }),
    ).event
    expect(updated.id).toBe(event.id)
    expect(updated.title).toBe('After')
    expect(updated.startsAt).toBe('2032-01-02T03:04:05.000Z')
    expect(updated.imageUrl).toBe('https://example.com/poster.png')
    expect(updated.status).toBe('paused')
    expect(updated.uri).toBe(event.uri)
    expect(updated.organizerDid).toBe(event.organizerDid)
    expect(updated.checkInListId).toBe(event.checkInListId)
    // a paused event sells nothing
    const avail = await availability(event.id)
    expect(avail.available).toBe(false)
    expect(avail.tiers[0].onSale).toBe(false)
    expectError(await hold([{ tierId: tier.id, quantity: 1 }]), 400, 'TicketsUnavailable')

    const kept = expectOk(await app().call(nsid('updateTicketEvent'), { eventId: event.id, status: 'active' })).event
    expect(kept.title).toBe('After')
    expect(kept.startsAt).toBe('2032-01-02T03:04:05.000Z')
    expect(kept.status).toBe('active')
    expect((await availability(event.id)).available).toBe(true)
  })

  it('null clears startsAt and imageUrl', async () => {
    const event = await makeEvent()
    const updatedEvent = expectOk(
      await app().call(nsid('updateTicketEvent'), { eventId: event.id, startsAt: '2031-07-01T00:00:00.000Z', imageUrl: 'https://example.com/i.png' }),
    ).event
    expect(updatedEvent.startsAt).toBe('2031-07-01T00:00:00.000Z')
    const clearedEvent = expectOk(
      await app().call(nsid('updateTicketEvent'), { eventId: event.id, startsAt: null, imageUrl: null }),
    ).event
    expect(clearedEvent.startsAt).toBeUndefined()
    expect(clearedEvent.imageUrl).toBeUndefined()
    expect(clearedEvent.title).toBe(event.title)
  })
})

describe('createCapacityGroup (seed 001)', () => {
  it('creates a group and the event binding: shapes', async () => {
    const uri = eventUri(organizer().did)
    const res = await app().call(nsid('createCapacityGroup'), {
      organizerDid: organizer().did,
      organizerAssertionJwt: await organizer().token(nsid('createCapacityGroup')),
      event: { uri, title: 'Festival' },
      name: 'Main hall',
      totalCapacity: 120,
    })
    const body = expectOk(res)
    expect(body.event.id).toMatch(/^evt_/)
    expect(body.event.uri).toBe(uri)
    expect(body.event.organizerDid).toBe(organizer().did)
    const g = body.capacityGroup
    expect(g.id).toMatch(/^cg_/)
    expect(g.capacityGroupId).toBe(g.id)
    expect(g.eventId).toBe(body.event.id)
    expect(g).toMatchObject({ name: 'Main hall', totalCapacity: 120, held: 0, sold: 0, remaining: 120, status: 'active' })
    const avail = await availability(body.event.id)
    expect(avail.capacityGroups).toHaveLength(1)
    expect(avail.capacityGroups[0].id).toBe(g.id)
  })

  it('totalCapacity 0 or 1.5 is preempted by the schema: 400 InvalidRequest naming totalCapacity (InvalidCapacity unreachable)', async () => {
    const event = await makeEvent()
    for (const totalCapacity of [0, 1.5, -3]) {
      const res = await app().call(nsid('createCapacityGroup'), {
        organizerDid: organizer().did,
        event: { eventId: event.id },
        name: 'Zero',
        totalCapacity,
      })
      expectError(res, 400, 'InvalidRequest')
      expect(res.body.message).toMatch(/totalCapacity/)
    }
    expect((await availability(event.id)).capacityGroups).toHaveLength(0)
  })

  it('OrganizerNotRegistered, OrganizerConsentRequired, UserDidMismatch, InvalidAssertion; no event or group is created', async () => {
    const stranger = await newIdentityClient(world)
    const other = await newOrganizer(world)
    const uri = eventUri(organizer().did)
    const base = { event: { uri, title: 'Hall' }, name: 'Hall', totalCapacity: 10 }
    expectError(
      await app().call(nsid('createCapacityGroup'), {
        ...base,
        organizerDid: stranger.did,
        organizerAssertionJwt: await stranger.token(nsid('createCapacityGroup')),
      }),
      400,
      'OrganizerNotRegistered',
    )
    expectError(await app().call(nsid('createCapacityGroup'), { ...base, organizerDid: organizer().did }), 403, 'OrganizerConsentRequired')
    expectError(
      await app().call(nsid('createCapacityGroup'), {
        ...base,
        organizerDid: organizer().did,
        organizerAssertionJwt: await other.token(nsid('createCapacityGroup')),
      }),
      400,
      'UserDidMismatch',
    )
    expectError(
      await app().call(nsid('createCapacityGroup'), {
        ...base,
        organizerDid: organizer().did,
        organizerAssertionJwt: await organizer().token(nsid('createTicketEvent')),
      }),
      400,
      'InvalidAssertion',
    )
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri }), 400, 'EventNotFound')
  })

  it('InvalidEvent, EventNotFound, PaymentSetupIncomplete (live), OrganizerReassignmentNotAllowed', async () => {
    const base = { organizerDid: organizer().did, name: 'Hall', totalCapacity: 10 }
    const assertion = () => organizer().token(nsid('createCapacityGroup'))
    const uri = eventUri(organizer().did)
    expectError(
      await app().call(nsid('createCapacityGroup'), { ...base, organizerAssertionJwt: await assertion(), event: { uri } }),
      400,
      'InvalidEvent',
    )
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri }), 400, 'EventNotFound')
    expectError(
      await app().call(nsid('createCapacityGroup'), { ...base, event: { eventId: 'evt_doesnotexist' } }),
      400,
      'EventNotFound',
    )
    expectError(
      await app().call(nsid('createCapacityGroup'), {
        ...base,
        environment: 'live',
        organizerAssertionJwt: await assertion(),
        event: { uri, title: 'Live' },
      }),
      400,
      'PaymentSetupIncomplete',
    )
    const event = await makeEvent()
    const second = await newOrganizer(world)
    expectError(
      await app().call(nsid('createCapacityGroup'), { ...base, organizerDid: second.did, event: { eventId: event.id } }),
      403,
      'OrganizerReassignmentNotAllowed',
    )
    const avail = await availability(event.id)
    expect(avail.capacityGroups).toHaveLength(0)
  })
})

describe('updateCapacityGroup', () => {
  it('CapacityGroupNotFound for an unknown id', async () => {
    expectError(await app().call(nsid('updateCapacityGroup'), { capacityGroupId: 'cg_doesnotexist', name: 'x' }), 400, 'CapacityGroupNotFound')
  })

  it('CapacityBelowCommitted below sold + held; the capacity is unchanged; exactly committed is allowed', async () => {
    const buyer = await newIdentityClient(world)
    const event = await makeEvent()
    const group = await makeGroup(event.id, 10)
    const paid = await makeTier(event.id, { capacityGroupId: group.id, quantityTotal: 10 })
    const free = await makeTier(event.id, { capacityGroupId: group.id, quantityTotal: 10, unitAmount: 0, title: 'Free' })
    expectOk(await hold([{ tierId: paid.id, quantity: 3 }]))
    expectOk(await claim(free.id, buyer, { quantity: 2 }))
    const res = await app().call(nsid('updateCapacityGroup'), { capacityGroupId: group.id, totalCapacity: 4 })
    expectError(res, 400, 'CapacityBelowCommitted')
    let g = (await availability(event.id)).capacityGroups[0]
    expect(g).toMatchObject({ totalCapacity: 10, held: 3, sold: 2, remaining: 5 })

    const ok = expectOk(await app().call(nsid('updateCapacityGroup'), { capacityGroupId: group.id, totalCapacity: 5, name: 'Small hall' }))
    expect(ok.capacityGroup).toMatchObject({ id: group.id, totalCapacity: 5, held: 3, sold: 2, remaining: 0, name: 'Small hall' })
    g = (await availability(event.id)).capacityGroups[0]
    expect(g.totalCapacity).toBe(5)
    expect(g.remaining).toBe(0)
    expectError(await hold([{ tierId: paid.id, quantity: 1 }]), 400, 'InsufficientTicketCapacity')
  })

  it('archive: status archived, its tiers are off sale, holds answer TicketsUnavailable, new tiers CapacityGroupArchived', async () => {
    const event = await makeEvent()
    const group = await makeGroup(event.id, 10)
    const tier = await makeTier(event.id, { capacityGroupId: group.id, quantityTotal: 10 })
    const archived = expectOk(await app().call(nsid('updateCapacityGroup'), { capacityGroupId: group.id, status: 'archived' }))
    expect(archived.capacityGroup.status).toBe('archived')
    expect(archived.capacityGroup.name).toBe('Venue')
    expect(archived.capacityGroup.totalCapacity).toBe(10)
    const t = await tierState(event.id, tier.id)
    expect(t.onSale).toBe(false)
    expectError(await hold([{ tierId: tier.id, quantity: 1 }]), 400, 'TicketsUnavailable')
    expect((await tierState(event.id, tier.id)).held).toBe(0)
    const res = await app().call(nsid('createTicketTier'), {
      organizerDid: organizer().did,
      event: { eventId: event.id },
      capacityGroupId: group.id,
      title: 'Late',
      currency: 'usd',
      unitAmount: 100,
      quantityTotal: 5,
    })
    expectError(res, 400, 'CapacityGroupArchived')
    expect((await availability(event.id)).tiers).toHaveLength(1)
  })
})

describe('createTicketTier', () => {
  it('creates a tier: ticketTierSummary shape, currency answered lower case, integer money', async () => {
    const uri = eventUri(organizer().did)
    const res = await app().call(nsid('createTicketTier'), {
      organizerDid: organizer().did,
      organizerAssertionJwt: await organizer().token(nsid('createTicketTier')),
      event: { uri, title: 'Gala' },
      title: 'VIP',
      description: 'Front row',
      currency: 'USD',
      unitAmount: 12345,
      quantityTotal: 40,
    })
    const body = expectOk(res)
    expect(body.event.id).toMatch(/^evt_/)
    expect(body.event.uri).toBe(uri)
    expect(body.capacityGroup).toBeUndefined()
    const tier = body.tier
    expect(tier.id).toMatch(/^tier_/)
    expect(tier.tierId).toBe(tier.id)
    expect(tier.eventId).toBe(body.event.id)
    expect(tier).toMatchObject({
      title: 'VIP',
      description: 'Front row',
      currency: 'usd',
      unitAmount: 12345,
      quantityTotal: 40,
      maxPerOrder: 10,
      status: 'active',
      onSale: true,
      held: 0,
      sold: 0,
      remaining: 40,
    })
    expect(Number.isInteger(tier.unitAmount)).toBe(true)
    expect(tier.capacityGroupId).toBeUndefined()
  })

  it('tier.remaining is the lesser of the tier and its group', async () => {
    const event = await makeEvent()
    const group = await makeGroup(event.id, 3)
    const res = await app().call(nsid('createTicketTier'), {
      organizerDid: organizer().did,
      event: { eventId: event.id },
      capacityGroupId: group.id,
      title: 'Grouped',
      currency: 'eur',
      unitAmount: 500,
      quantityTotal: 10,
      maxPerOrder: 4,
    })
    const body = expectOk(res)
    expect(body.tier.capacityGroupId).toBe(group.id)
    expect(body.tier.quantityTotal).toBe(10)
    expect(body.tier.remaining).toBe(3)
    expect(body.tier.maxPerOrder).toBe(4)
    expect(body.capacityGroup).toMatchObject({ id: group.id, totalCapacity: 3, remaining: 3 })
    // and the other way round: a small tier in a big group
    const group2 = await makeGroup(event.id, 50)
    const small = await makeTier(event.id, { capacityGroupId: group2.id, quantityTotal: 2, currency: 'eur' })
    expect(small.remaining).toBe(2)
  })

  it('CapacityGroupNotFound: unknown id, or a group of another event', async () => {
    const event = await makeEvent()
    const otherEvent = await makeEvent()
    const otherGroup = await makeGroup(otherEvent.id, 5)
    for (const capacityGroupId of ['cg_doesnotexist', otherGroup.id]) {
      const res = await app().call(nsid('createTicketTier'), {
        organizerDid: organizer().did,
        event: { eventId: event.id },
        capacityGroupId,
        title: 'x',
        currency: 'usd',
        unitAmount: 100,
        quantityTotal: 5,
      })
      expectError(res, 400, 'CapacityGroupNotFound')
    }
    expect((await availability(event.id)).tiers).toHaveLength(0)
  })

  it('InvalidCurrency ("xyz"); nothing is created', async () => {
    const event = await makeEvent()
    const res = await app().call(nsid('createTicketTier'), {
      organizerDid: organizer().did,
      event: { eventId: event.id },
      title: 'x',
      currency: 'xyz',
      unitAmount: 100,
      quantityTotal: 5,
    })
    expectError(res, 400, 'InvalidCurrency')
    expect((await availability(event.id)).tiers).toHaveLength(0)
  })

  it('CurrencyMismatch: a eur tier in a group that already has a usd tier', async () => {
    const event = await makeEvent()
    const group = await makeGroup(event.id, 20)
    await makeTier(event.id, { capacityGroupId: group.id, currency: 'usd' })
    const res = await app().call(nsid('createTicketTier'), {
      organizerDid: organizer().did,
      event: { eventId: event.id },
      capacityGroupId: group.id,
      title: 'Euro',
      currency: 'eur',
      unitAmount: 100,
      quantityTotal: 5,
    })
    expectError(res, 400, 'CurrencyMismatch')
    expect((await availability(event.id)).tiers).toHaveLength(1)
    // the same currency written in capitals is the same currency
    expect((await makeTier(event.id, { capacityGroupId: group.id, currency: 'USD' })).currency).toBe('usd')
  })

  it('InvalidSaleWindow: saleEndsAt not after saleStartsAt', async () => {
    const event = await makeEvent()
    for (const [saleStartsAt, saleEndsAt] of [
      ['2031-02-01T00:00:00.000Z', '2031-01-01T00:00:00.000Z'],
      ['2031-02-01T00:00:00.000Z', '2031-02-01T00:00:00.000Z'],
    ]) {
      const res = await app().call(nsid('createTicketTier'), {
        organizerDid: organizer().did,
        event: { eventId: event.id },
        title: 'Window',
        currency: 'usd',
        unitAmount: 100,
        quantityTotal: 5,
        saleStartsAt,
        saleEndsAt,
      })
      expectError(res, 400, 'InvalidSaleWindow')
    }
    expect((await availability(event.id)).tiers).toHaveLength(0)
    const ok = await makeTier(event.id, { saleStartsAt: '2031-01-01T00:00:00.000Z', saleEndsAt: '2031-02-01T00:00:00.000Z' })
    expect(ok.saleStartsAt).toBe('2031-01-01T00:00:00.000Z')
    expect(ok.saleEndsAt).toBe('2031-02-01T00:00:00.000Z')
    expect(ok.onSale).toBe(false)
  })

  it('PaymentSetupIncomplete for a paid tier of an organizer without payment setup; a free tier is fine', async () => {
    const unpaid = await newOrganizer(world, { paymentSetup: false })
    const uri = eventUri(unpaid.did)
    const input = async (unitAmount: number) => ({
      organizerDid: unpaid.did,
      organizerAssertionJwt: await unpaid.token(nsid('createTicketTier')),
      event: { uri, title: 'Community night' },
      title: unitAmount ? 'Paid' : 'Free',
      currency: 'usd',
      unitAmount,
      quantityTotal: 5,
    })
    expectError(await app().call(nsid('createTicketTier'), await input(1000)), 400, 'PaymentSetupIncomplete')
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri }), 400, 'EventNotFound')
    const free = expectOk(await app().call(nsid('createTicketTier'), await input(0)))
    expect(free.tier.unitAmount).toBe(0)
    expect(free.event.organizerDid).toBe(unpaid.did)
    // a paid tier on the now existing event is still refused
    const res = await app().call(nsid('createTicketTier'), {
      organizerDid: unpaid.did,
      event: { eventId: free.event.id },
      title: 'Paid',
      currency: 'usd',
      unitAmount: 1000,
      quantityTotal: 5,
    })
    expectError(res, 400, 'PaymentSetupIncomplete')
    expect((await availability(free.event.id)).tiers).toHaveLength(1)
  })

  it('the event errors: OrganizerNotRegistered, OrganizerConsentRequired, UserDidMismatch, InvalidAssertion, InvalidEvent, EventNotFound, OrganizerReassignmentNotAllowed', async () => {
    const stranger = await newIdentityClient(world)
    const other = await newOrganizer(world)
    const tier = { title: 't', currency: 'usd', unitAmount: 100, quantityTotal: 5 }
    const uri = eventUri(organizer().did)
    const create = (input: Body) => app().call(nsid('createTicketTier'), { ...tier, ...input })
    expectError(
      await create({
        organizerDid: stranger.did,
        organizerAssertionJwt: await stranger.token(nsid('createTicketTier')),
        event: { uri: eventUri(stranger.did), title: 'x' },
      }),
      400,
      'OrganizerNotRegistered',
    )
    expectError(await create({ organizerDid: organizer().did, event: { uri, title: 'x' } }), 403, 'OrganizerConsentRequired')
    expectError(
      await create({ organizerDid: organizer().did, organizerAssertionJwt: await other.token(nsid('createTicketTier')), event: { uri, title: 'x' } }),
      400,
      'UserDidMismatch',
    )
    expectError(
      await create({
        organizerDid: organizer().did,
        organizerAssertionJwt: await organizer().token(nsid('createCapacityGroup')),
        event: { uri, title: 'x' },
      }),
      400,
      'InvalidAssertion',
    )
    expectError(
      await create({ organizerDid: organizer().did, organizerAssertionJwt: await organizer().token(nsid('createTicketTier')), event: { uri } }),
      400,
      'InvalidEvent',
    )
    expectError(await app().call(nsid('getTicketAvailability'), { eventUri: uri }), 400, 'EventNotFound')
    expectError(await create({ organizerDid: organizer().did, event: { eventId: 'evt_doesnotexist' } }), 400, 'EventNotFound')
    const event = await makeEvent()
    expectError(await create({ organizerDid: other.did, event: { eventId: event.id } }), 403, 'OrganizerReassignmentNotAllowed')
    expect((await availability(event.id)).tiers).toHaveLength(0)
  })
})

describe('updateTicketTier', () => {
  it('TicketTierNotFound for an unknown id', async () => {
    expectError(await app().call(nsid('updateTicketTier'), { tierId: 'tier_doesnotexist', title: 'x' }), 400, 'TicketTierNotFound')
  })

  it('updates the fields given and keeps the others', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { title: 'Early', quantityTotal: 10, description: 'cheap' })
    const updated = expectOk(
      await app().call(nsid('updateTicketTier'), { tierId: tier.id, title: 'Regular', unitAmount: 3000, maxPerOrder: 4, quantityTotal: 12 }),
    ).tier
    expect(updated).toMatchObject({
      id: tier.id,
      title: 'Regular',
      unitAmount: 3000,
      maxPerOrder: 4,
      quantityTotal: 12,
      remaining: 12,
      description: 'cheap',
      currency: 'usd',
    })
    expect(await tierState(event.id, tier.id)).toMatchObject({ title: 'Regular', unitAmount: 3000, quantityTotal: 12 })
  })

  it('CapacityBelowCommitted below sold + held; quantityTotal unchanged', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 5 })
    expectOk(await hold([{ tierId: tier.id, quantity: 3 }]))
    expectError(await app().call(nsid('updateTicketTier'), { tierId: tier.id, quantityTotal: 2 }), 400, 'CapacityBelowCommitted')
    expect(await tierState(event.id, tier.id)).toMatchObject({ quantityTotal: 5, held: 3, remaining: 2 })
    const ok = expectOk(await app().call(nsid('updateTicketTier'), { tierId: tier.id, quantityTotal: 3 })).tier
    expect(ok).toMatchObject({ quantityTotal: 3, held: 3, remaining: 0 })
  })

  it('CurrencyMismatch: the currency cannot change', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { currency: 'usd' })
    expectError(await app().call(nsid('updateTicketTier'), { tierId: tier.id, currency: 'eur', title: 'Euro now' }), 400, 'CurrencyMismatch')
    expect(await tierState(event.id, tier.id)).toMatchObject({ currency: 'usd', title: 'General admission' })
  })

  it('InvalidSaleWindow: a window that ends before it starts; nothing changes', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { saleEndsAt: '2031-01-01T00:00:00.000Z' })
    expectError(
      await app().call(nsid('updateTicketTier'), { tierId: tier.id, saleStartsAt: '2031-06-01T00:00:00.000Z' }),
      400,
      'InvalidSaleWindow',
    )
    const t = await tierState(event.id, tier.id)
    expect(t.saleStartsAt).toBeUndefined()
    expect(t.saleEndsAt).toBe('2031-01-01T00:00:00.000Z')
    expect(t.onSale).toBe(true)
  })

  it('null clears saleStartsAt / saleEndsAt / description, and the sale window is checked against the cleared value', async () => {
    const event = await makeEvent()
    const later = await makeTier(event.id, { saleStartsAt: '2031-06-01T00:00:00.000Z', description: 'soon' })
    expect(later.onSale).toBe(false)
    // clearing the start and setting an end before the old start is a valid window (no start at all)
    const cleared = expectOk(
      await app().call(nsid('updateTicketTier'), { tierId: later.id, saleStartsAt: null, saleEndsAt: '2031-01-01T00:00:00.000Z', description: null }),
    ).tier
    expect(cleared.saleStartsAt).toBeUndefined()
    expect(cleared.saleEndsAt).toBe('2031-01-01T00:00:00.000Z')
    expect(cleared.description).toBeUndefined()
    expect(cleared.onSale).toBe(true)

    const ending = await makeTier(event.id, { saleEndsAt: '2031-01-01T00:00:00.000Z' })
    // clearing the end and setting a start after the old end is a valid window (no end at all)
    const open = expectOk(
      await app().call(nsid('updateTicketTier'), { tierId: ending.id, saleEndsAt: null, saleStartsAt: '2031-06-01T00:00:00.000Z' }),
    ).tier
    expect(open.saleEndsAt).toBeUndefined()
    expect(open.saleStartsAt).toBe('2031-06-01T00:00:00.000Z')
    expect(open.onSale).toBe(false)

  })

  it('PaymentSetupIncomplete: making a free tier paid for an organizer without payment setup', async () => {
    const unpaid = await newOrganizer(world, { paymentSetup: false })
    const event = await makeEvent({ organizer: unpaid })
    const tier = await makeTier(event.id, { unitAmount: 0 }, { organizer: unpaid })
    expectError(await app().call(nsid('updateTicketTier'), { tierId: tier.id, unitAmount: 500 }), 400, 'PaymentSetupIncomplete')
    expect((await tierState(event.id, tier.id)).unitAmount).toBe(0)
  })

  it('status paused: onSale false and holds answer TicketsUnavailable with availability unchanged; active again sells', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 5 })
    const paused = expectOk(await app().call(nsid('updateTicketTier'), { tierId: tier.id, status: 'paused' })).tier
    expect(paused.status).toBe('paused')
    expect(paused.onSale).toBe(false)
    const avail = await availability(event.id)
    expect(avail.available).toBe(false)
    expectError(await hold([{ tierId: tier.id, quantity: 1 }]), 400, 'TicketsUnavailable')
    expect(await tierState(event.id, tier.id)).toMatchObject({ held: 0, remaining: 5, onSale: false })
    const active = expectOk(await app().call(nsid('updateTicketTier'), { tierId: tier.id, status: 'active' })).tier
    expect(active.onSale).toBe(true)
    expectOk(await hold([{ tierId: tier.id, quantity: 1 }]))
  })
})

describe('archiveTicketTier', () => {
  it('TicketTierNotFound for an unknown id', async () => {
    expectError(await app().call(nsid('archiveTicketTier'), { tierId: 'tier_doesnotexist' }), 400, 'TicketTierNotFound')
  })

  it('archives: status archived, holds and claims TicketsUnavailable, issued tickets still listed and issued', async () => {
    const buyer = await newIdentityClient(world)
    const event = await makeEvent()
    const paid = await makeTier(event.id, { quantityTotal: 5 })
    const free = await makeTier(event.id, { quantityTotal: 5, unitAmount: 0, title: 'Free' })
    const claimed = expectOk(await claim(free.id, buyer, { quantity: 2 }))

    const archivedPaid = expectOk(await app().call(nsid('archiveTicketTier'), { tierId: paid.id })).tier
    expect(archivedPaid.status).toBe('archived')
    expect(archivedPaid.onSale).toBe(false)
    expectError(await hold([{ tierId: paid.id, quantity: 1 }]), 400, 'TicketsUnavailable')
    expect((await tierState(event.id, paid.id)).held).toBe(0)

    const archivedFree = expectOk(await app().call(nsid('archiveTicketTier'), { tierId: free.id })).tier
    expect(archivedFree.status).toBe('archived')
    expect(archivedFree.sold).toBe(2)
    expectError(await claim(free.id, buyer), 400, 'TicketsUnavailable')
    expect((await tierState(event.id, free.id)).sold).toBe(2)
    // archiving again is a no-op
    expect(expectOk(await app().call(nsid('archiveTicketTier'), { tierId: free.id })).tier.status).toBe('archived')

    const listed = expectOk(await app().call(nsid('listOrganizerTickets'), { eventId: event.id })).tickets as Body[]
    expect(listed.map((t) => t.id).sort()).toEqual(claimed.tickets.map((t: Body) => t.id).sort())
    for (const t of listed) expect(t.status).toBe('issued')
    const mine = expectOk(await app().call(nsid('listBuyerTickets'), { buyerDid: buyer.did })).tickets as Body[]
    expect(mine).toHaveLength(2)
    for (const t of mine) expect(t.status).toBe('issued')
  })
})

describe('getTicketAvailability', () => {
  it('EventNotFound for an unknown eventId or eventUri', async () => {
    expectError(await app().call(nsid('getTicketAvailability'), { eventId: 'evt_doesnotexist' }), 400, 'EventNotFound')
    expectError(
      await app().call(nsid('getTicketAvailability'), { eventUri: eventUri(organizer().did) }),
      400,
      'EventNotFound',
    )
  })

  it('answers the same by eventId and by eventUri: tiers, capacityGroups, available, scarcity', async () => {
    const event = await makeEvent()
    const group = await makeGroup(event.id, 8)
    const grouped = await makeTier(event.id, { capacityGroupId: group.id, quantityTotal: 6, title: 'Grouped' })
    const single = await makeTier(event.id, { quantityTotal: 4, title: 'Single' })
    const byId = await availability(event.id)
    const byUri = expectOk(await app().call(nsid('getTicketAvailability'), { eventUri: event.uri }))
    expect(byId.eventId).toBe(event.id)
    expect(byId.eventUri).toBe(event.uri)
    expect(byId.environment).toBe('test')
    expect(byId.available).toBe(true)
    expect(byId.scarcity).toBe(false)
    expect(byId.tiers.map((t: Body) => t.id).sort()).toEqual([grouped.id, single.id].sort())
    expect(byId.capacityGroups).toHaveLength(1)
    expect(byId.capacityGroups[0]).toMatchObject({ id: group.id, capacityGroupId: group.id, totalCapacity: 8, remaining: 8 })
    expect(byUri.eventId).toBe(event.id)
    expect(byUri.tiers.map((t: Body) => t.id).sort()).toEqual(byId.tiers.map((t: Body) => t.id).sort())
    expect(byUri.capacityGroups).toEqual(byId.capacityGroups)
    for (const t of byId.tiers) {
      expect(Object.keys(t)).toEqual(expect.arrayContaining(['id', 'tierId', 'eventId', 'currency', 'unitAmount', 'quantityTotal', 'held', 'sold', 'remaining', 'onSale', 'status']))
    }
    // eventId and an eventUri of another event do not name one event
    const other = await makeEvent()
    expectError(
      await app().call(nsid('getTicketAvailability'), { eventId: event.id, eventUri: other.uri }),
      400,
      'EventNotFound',
    )
  })

  it('scarcity: true at ≤10% remaining, not above; false for an event with no capacity', async () => {
    const empty = await makeEvent()
    const none = await availability(empty.id)
    expect(none.tiers).toEqual([])
    expect(none.capacityGroups).toEqual([])
    expect(none.available).toBe(false)
    expect(none.scarcity).toBe(false)

    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 10 })
    expectOk(await hold([{ tierId: tier.id, quantity: 8 }]))
    let avail = await availability(event.id)
    expect(avail.tiers[0].remaining).toBe(2)
    expect(avail.scarcity).toBe(false)
    expect(avail.available).toBe(true)
    expectOk(await hold([{ tierId: tier.id, quantity: 1 }]))
    avail = await availability(event.id)
    expect(avail.tiers[0].remaining).toBe(1)
    expect(avail.scarcity).toBe(true)
    expectOk(await hold([{ tierId: tier.id, quantity: 1 }]))
    avail = await availability(event.id)
    expect(avail.tiers[0].remaining).toBe(0)
    expect(avail.available).toBe(false)
    expect(avail.scarcity).toBe(true)
  })
})

describe('createTicketHold (seed 000)', () => {
  it('holds: output shape, integer money, prefixed id, lower-case currency, amountCents = sum of items', async () => {
    const event = await makeEvent()
    const a = await makeTier(event.id, { title: 'A', unitAmount: 2500, quantityTotal: 10, currency: 'EUR' })
    const b = await makeTier(event.id, { title: 'B', unitAmount: 999, quantityTotal: 10, currency: 'eur' })
    const before = Date.now()
    const body = expectOk(
      await hold([
        { tierId: a.id, quantity: 2 },
        { tierId: b.id, quantity: 3 },
      ], { customerEmail: 'buyer@example.com', returnUrl: 'https://app.example/done', cancelUrl: 'https://app.example/cancel' }),
    )
    const after = Date.now()
    expect(body.holdId).toMatch(/^hold_[1-9A-HJ-NP-Za-km-z]{22}$/)
    // 32 random bytes: the hold's bearer secret for its checkout page.
    expect(body.token).toMatch(/^hold_tok_[A-Za-z0-9_-]{43}$/)
    expect(() => new URL(body.url)).not.toThrow()
    expect(body.url).toContain(body.holdId)
    expect(body.environment).toBe('test')
    // Made during the request, for the default ATM_HOLD_TTL_SECONDS (600).
    const expires = Date.parse(body.expiresAt)
    expect(body.expiresAt).toBe(new Date(expires).toISOString())
    expect(expires).toBeGreaterThanOrEqual(before + 600_000)
    expect(expires).toBeLessThanOrEqual(after + 600_000)
    expect(body.currency).toBe('eur')
    expect(body.amountCents).toBe(2 * 2500 + 3 * 999)
    expect(Number.isInteger(body.amountCents)).toBe(true)
    expect(body.reused).toBeUndefined()
    expect(body.items).toHaveLength(2)
    const itemA = body.items.find((i: Body) => i.tierId === a.id)
    expect(itemA).toMatchObject({ tierId: a.id, title: 'A', quantity: 2, unitAmount: 2500, amountCents: 5000, currency: 'eur' })
    const itemB = body.items.find((i: Body) => i.tierId === b.id)
    expect(itemB).toMatchObject({ tierId: b.id, title: 'B', quantity: 3, unitAmount: 999, amountCents: 2997, currency: 'eur' })
    expect(body.items.reduce((s: number, i: Body) => s + i.amountCents, 0)).toBe(body.amountCents)
    expect(await tierState(event.id, a.id)).toMatchObject({ held: 2, remaining: 8 })
    expect(await tierState(event.id, b.id)).toMatchObject({ held: 3, remaining: 7 })
  })

  it('a signed-in buyer: buyerDid with assertion; BuyerAssertionRequired, InvalidRequest, UserDidMismatch, InvalidAssertion', async () => {
    const buyer = await newIdentityClient(world)
    const someoneElse = await newIdentityClient(world)
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 10 })
    const items = [{ tierId: tier.id, quantity: 1 }]
    expectError(await hold(items, { buyerDid: buyer.did }), 400, 'BuyerAssertionRequired')
    const alone = await hold(items, { buyerAssertionJwt: await buyer.token(nsid('createTicketHold')) })
    expectError(alone, 400, 'InvalidRequest')
    expect(alone.body.message).toMatch(/buyerDid/)
    expectError(
      await hold(items, { buyerDid: buyer.did, buyerAssertionJwt: await someoneElse.token(nsid('createTicketHold')) }),
      400,
      'UserDidMismatch',
    )
    expectError(
      await hold(items, { buyerDid: buyer.did, buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')) }),
      400,
      'InvalidAssertion',
    )
    const expired = await buyer.token(nsid('createTicketHold'), { iat: nowSeconds() - 120, exp: nowSeconds() - 60 })
    expectError(await hold(items, { buyerDid: buyer.did, buyerAssertionJwt: expired }), 400, 'InvalidAssertion')
    expect(await tierState(event.id, tier.id)).toMatchObject({ held: 0, remaining: 10 })

    const assertion = await buyer.token(nsid('createTicketHold'))
    expectOk(await hold(items, { buyerDid: buyer.did, buyerAssertionJwt: assertion }))
    // single use
    expectError(await hold(items, { buyerDid: buyer.did, buyerAssertionJwt: assertion }), 400, 'InvalidAssertion')
    expect(await tierState(event.id, tier.id)).toMatchObject({ held: 1, remaining: 9 })
  })

  it('InvalidItems (same tier twice), InvalidQuantity (0, -1), empty items (schema: InvalidRequest naming items); nothing held', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 10 })
    expectError(
      await hold([
        { tierId: tier.id, quantity: 1 },
        { tierId: tier.id, quantity: 1 },
      ]),
      400,
      'InvalidItems',
    )
    expectError(await hold([{ tierId: tier.id, quantity: 0 }]), 400, 'InvalidQuantity')
    expectError(await hold([{ tierId: tier.id, quantity: -1 }]), 400, 'InvalidQuantity')
    const empty = await hold([])
    expectError(empty, 400, 'InvalidRequest')
    expect(empty.body.message).toMatch(/items/)
    expect(await tierState(event.id, tier.id)).toMatchObject({ held: 0, remaining: 10 })
  })

  it('TicketTierNotFound; and one unknown tier among known ones holds nothing', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 10 })
    expectError(await hold([{ tierId: 'tier_doesnotexist', quantity: 1 }]), 400, 'TicketTierNotFound')
    expectError(
      await hold([
        { tierId: tier.id, quantity: 2 },
        { tierId: 'tier_doesnotexist', quantity: 1 },
      ]),
      400,
      'TicketTierNotFound',
    )
    expect(await tierState(event.id, tier.id)).toMatchObject({ held: 0, remaining: 10 })
  })

  it('MixedEvents: tiers of two events, or an eventId/eventUri of another event', async () => {
    const e1 = await makeEvent()
    const e2 = await makeEvent()
    const t1 = await makeTier(e1.id, { quantityTotal: 10 })
    const t2 = await makeTier(e2.id, { quantityTotal: 10 })
    expectError(
      await hold([
        { tierId: t1.id, quantity: 1 },
        { tierId: t2.id, quantity: 1 },
      ]),
      400,
      'MixedEvents',
    )
    expectError(await hold([{ tierId: t1.id, quantity: 1 }], { eventId: e2.id }), 400, 'MixedEvents')
    expectError(await hold([{ tierId: t1.id, quantity: 1 }], { eventUri: e2.uri }), 400, 'MixedEvents')
    // an eventId that names no event of this app at all is not found, not "mixed"
    expectError(await hold([{ tierId: t1.id, quantity: 1 }], { eventId: 'evt_doesnotexist' }), 400, 'EventNotFound')
    expect(await tierState(e1.id, t1.id)).toMatchObject({ held: 0 })
    expect(await tierState(e2.id, t2.id)).toMatchObject({ held: 0 })
    // naming the right event is fine
    expectOk(await hold([{ tierId: t1.id, quantity: 1 }], { eventId: e1.id, eventUri: e1.uri }))
  })

  it('MixedCurrency: two tiers of one event in usd and eur', async () => {
    const event = await makeEvent()
    const usd = await makeTier(event.id, { currency: 'usd' })
    const eur = await makeTier(event.id, { currency: 'eur' })
    expectError(
      await hold([
        { tierId: usd.id, quantity: 1 },
        { tierId: eur.id, quantity: 1 },
      ]),
      400,
      'MixedCurrency',
    )
    expect((await availability(event.id)).tiers.every((t: Body) => t.held === 0)).toBe(true)
  })

  it('TicketsUnavailable (sale not started, sale ended), FreeTicketRequiresClaim, QuantityTooHigh', async () => {
    const event = await makeEvent()
    const later = await makeTier(event.id, { saleStartsAt: isoIn(24 * 3600_000) })
    expect(later.onSale).toBe(false)
    expectError(await hold([{ tierId: later.id, quantity: 1 }]), 400, 'TicketsUnavailable')
    const ended = await makeTier(event.id, { saleEndsAt: isoIn(-3600_000) })
    expectError(await hold([{ tierId: ended.id, quantity: 1 }]), 400, 'TicketsUnavailable')
    const free = await makeTier(event.id, { unitAmount: 0 })
    expectError(await hold([{ tierId: free.id, quantity: 1 }]), 400, 'FreeTicketRequiresClaim')
    const limited = await makeTier(event.id, { maxPerOrder: 2 })
    expectError(await hold([{ tierId: limited.id, quantity: 3 }]), 400, 'QuantityTooHigh')
    expect((await availability(event.id)).tiers.every((t: Body) => t.held === 0)).toBe(true)
    expectOk(await hold([{ tierId: limited.id, quantity: 2 }]))
  })

  it('InsufficientTicketCapacity: over the tier, and over the group shared by two tiers', async () => {
    const event = await makeEvent()
    const small = await makeTier(event.id, { quantityTotal: 3 })
    expectError(await hold([{ tierId: small.id, quantity: 4 }]), 400, 'InsufficientTicketCapacity')
    expectOk(await hold([{ tierId: small.id, quantity: 3 }]))
    expectError(await hold([{ tierId: small.id, quantity: 1 }]), 400, 'InsufficientTicketCapacity')

    const group = await makeGroup(event.id, 4)
    const ga = await makeTier(event.id, { capacityGroupId: group.id, quantityTotal: 5, title: 'GA' })
    const vip = await makeTier(event.id, { capacityGroupId: group.id, quantityTotal: 5, title: 'VIP' })
    expectError(
      await hold([
        { tierId: ga.id, quantity: 3 },
        { tierId: vip.id, quantity: 2 },
      ]),
      400,
      'InsufficientTicketCapacity',
    )
    let avail = await availability(event.id)
    expect(avail.capacityGroups[0]).toMatchObject({ held: 0, remaining: 4 })
    expectOk(await hold([{ tierId: ga.id, quantity: 3 }]))
    expectError(await hold([{ tierId: vip.id, quantity: 2 }]), 400, 'InsufficientTicketCapacity')
    avail = await availability(event.id)
    expect(avail.capacityGroups[0]).toMatchObject({ held: 3, remaining: 1 })
    expect(avail.tiers.find((t: Body) => t.id === vip.id)).toMatchObject({ held: 0, remaining: 1 })
  })

  it('PaymentSetupIncomplete when the event moved to an organizer without payment setup', async () => {
    const unpaid = await newOrganizer(world, { paymentSetup: false })
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 5 })
    expectOk(
      await app().call(nsid('createTicketEvent'), {
        organizerDid: unpaid.did,
        organizerAssertionJwt: await unpaid.token(nsid('createTicketEvent')),
        event: { uri: event.uri },
      }),
    )
    expectError(await hold([{ tierId: tier.id, quantity: 1 }]), 400, 'PaymentSetupIncomplete')
    expect(await tierState(event.id, tier.id)).toMatchObject({ held: 0, remaining: 5 })
  })

  it('live: a test tier is not found there (nothing can exist in live)', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 5 })
    expectError(await hold([{ tierId: tier.id, quantity: 1 }], { environment: 'live' }), 400, 'TicketTierNotFound')
    expect(await tierState(event.id, tier.id)).toMatchObject({ held: 0 })
  })

  it('idempotent: an exact retry answers the first hold (reused: true), capacity taken once; another body is IdempotencyKeyMismatch (409)', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 10 })
    const key = `key-${Date.now()}-${Math.random()}`
    const first = expectOk(await hold([{ tierId: tier.id, quantity: 2 }], { idempotencyKey: key }))
    expect(first.reused).toBeUndefined()
    const retry = expectOk(await hold([{ tierId: tier.id, quantity: 2 }], { idempotencyKey: key }))
    expect(retry.reused).toBe(true)
    expect(retry.holdId).toBe(first.holdId)
    expect(retry.amountCents).toBe(first.amountCents)
    expect(retry.url).toBe(first.url)
    expectError(await hold([{ tierId: tier.id, quantity: 3 }], { idempotencyKey: key }), 409, 'IdempotencyKeyMismatch')
    expect(await tierState(event.id, tier.id)).toMatchObject({ held: 2, remaining: 8 })
    // another key is another request
    const other = expectOk(await hold([{ tierId: tier.id, quantity: 1 }], { idempotencyKey: `${key}-b` }))
    expect(other.holdId).not.toBe(first.holdId)
  })

  it('idempotent: a named error is stored too, even after capacity is freed', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 2 })
    const blocker = expectOk(await hold([{ tierId: tier.id, quantity: 2 }]))
    const key = `err-${Date.now()}-${Math.random()}`
    expectError(await hold([{ tierId: tier.id, quantity: 1 }], { idempotencyKey: key }), 400, 'InsufficientTicketCapacity')
    expectOk(await app().call(nsid('releaseTicketHold'), { holdId: blocker.holdId }))
    expect((await tierState(event.id, tier.id)).remaining).toBe(2)
    expectError(await hold([{ tierId: tier.id, quantity: 1 }], { idempotencyKey: key }), 400, 'InsufficientTicketCapacity')
    expect((await tierState(event.id, tier.id)).remaining).toBe(2)
    expectError(await hold([{ tierId: tier.id, quantity: 2 }], { idempotencyKey: key }), 409, 'IdempotencyKeyMismatch')
    expectOk(await hold([{ tierId: tier.id, quantity: 1 }], { idempotencyKey: `${key}-new` }))
  })

  it('idempotent: a request refused by schema validation stores nothing under its key', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 10 })
    const key = `schema-${Date.now()}-${Math.random()}`
    expectError(await hold([], { idempotencyKey: key }), 400, 'InvalidRequest')
    const ok = expectOk(await hold([{ tierId: tier.id, quantity: 1 }], { idempotencyKey: key }))
    expect(ok.reused).toBeUndefined()
    expect((await tierState(event.id, tier.id)).held).toBe(1)
  })

  it('idempotent: a named error found before any capacity check (InvalidItems) is stored too: the key then names that request', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 10 })
    const key = `named-${Date.now()}-${Math.random()}`
    const twice = [
      { tierId: tier.id, quantity: 1 },
      { tierId: tier.id, quantity: 1 },
    ]
    expectError(await hold(twice, { idempotencyKey: key }), 400, 'InvalidItems')
    expectError(await hold(twice, { idempotencyKey: key }), 400, 'InvalidItems')
    // CONTRACT §5.4: a key seen with a named domain error, then used with another input
    expectError(await hold([{ tierId: tier.id, quantity: 1 }], { idempotencyKey: key }), 409, 'IdempotencyKeyMismatch')
    expect((await tierState(event.id, tier.id)).held).toBe(0)
  })

  it('IdempotencyKeyInUse (409) while the first request with the key is still verifying its buyer; then reused', async () => {
    const delayed = await startDelayedDidWeb()
    try {
      const event = await makeEvent()
      const tier = await makeTier(event.id, { quantityTotal: 10 })
      const key = `inuse-${Date.now()}-${Math.random()}`
      const input = {
        items: [{ tierId: tier.id, quantity: 3 }],
        buyerDid: delayed.client.did,
        buyerAssertionJwt: await delayed.client.token(nsid('createTicketHold')),
        idempotencyKey: key,
      }
      const firstPromise = app().call(nsid('createTicketHold'), input)
      // The service fetches the buyer's DID document after taking the key: it is now mid-request.
      await delayed.requested
      const second = await app().call(nsid('createTicketHold'), input)
      expectError(second, 409, 'IdempotencyKeyInUse')
      expect(await tierState(event.id, tier.id)).toMatchObject({ held: 0, remaining: 10 })
      delayed.release()
      const first = expectOk(await firstPromise)
      expect(first.holdId).toMatch(/^hold_/)
      expect(first.reused).toBeUndefined()
      const third = expectOk(await app().call(nsid('createTicketHold'), input))
      expect(third.reused).toBe(true)
      expect(third.holdId).toBe(first.holdId)
      expect(await tierState(event.id, tier.id)).toMatchObject({ held: 3, remaining: 7 })
    } finally {
      await delayed.close()
    }
  })
})

describe('releaseTicketHold and getTicketHold', () => {
  it('HoldNotFound for unknown ids', async () => {
    expectError(await app().call(nsid('releaseTicketHold'), { holdId: 'hold_doesnotexist' }), 400, 'HoldNotFound')
    expectError(await app().call(nsid('getTicketHold'), { holdId: 'hold_doesnotexist' }), 400, 'HoldNotFound')
  })

  it('HoldAlreadyCompleted: a paid hold cannot be released, and keeps its capacity sold', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 5, unitAmount: 700 })
    const created = expectOk(await hold([{ tierId: tier.id, quantity: 2 }]))
    const paymentId = paymentIdOf(await payHold(created.url))
    expectError(await app().call(nsid('releaseTicketHold'), { holdId: created.holdId }), 400, 'HoldAlreadyCompleted', /refund/)
    const got = expectOk(await app().call(nsid('getTicketHold'), { holdId: created.holdId })).hold
    expect(got).toMatchObject({ status: 'completed', paymentId })
    expect(await tierState(event.id, tier.id)).toMatchObject({ held: 0, sold: 2, remaining: 3 })
  })

  it('getTicketHold: an active hold and its fields', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 10, unitAmount: 700 })
    const created = expectOk(await hold([{ tierId: tier.id, quantity: 2 }]))
    const got = expectOk(await app().call(nsid('getTicketHold'), { holdId: created.holdId })).hold
    expect(got).toMatchObject({
      id: created.holdId,
      holdId: created.holdId,
      status: 'active',
      environment: 'test',
      eventId: event.id,
      eventUri: event.uri,
      amountCents: 1400,
      currency: 'usd',
      expiresAt: created.expiresAt,
    })
    expect(got.items).toEqual(created.items)
    expect(typeof got.createdAt).toBe('string')
  })

  it('releasing gives the capacity back; answers released, availability per tier, scarcity; twice answers released again', async () => {
    const event = await makeEvent()
    const a = await makeTier(event.id, { quantityTotal: 10, title: 'A' })
    const b = await makeTier(event.id, { quantityTotal: 4, title: 'B' })
    const untouched = await makeTier(event.id, { quantityTotal: 4, title: 'C' })
    const created = expectOk(
      await hold([
        { tierId: a.id, quantity: 9 },
        { tierId: b.id, quantity: 1 },
      ]),
    )
    expect(await tierState(event.id, a.id)).toMatchObject({ held: 9, remaining: 1 })
    const released = expectOk(await app().call(nsid('releaseTicketHold'), { holdId: created.holdId, reason: 'buyer left' }))
    expect(released.hold.id).toBe(created.holdId)
    expect(released.hold.status).toBe('released')
    expect(typeof released.scarcity).toBe('boolean')
    expect(released.scarcity).toBe(false)
    const byTier = Object.fromEntries(released.availability.map((x: Body) => [x.tierId, x.remaining]))
    expect(byTier).toEqual({ [a.id]: 10, [b.id]: 4 })
    expect(byTier[untouched.id]).toBeUndefined()
    expect(await tierState(event.id, a.id)).toMatchObject({ held: 0, remaining: 10 })
    expect(await tierState(event.id, b.id)).toMatchObject({ held: 0, remaining: 4 })
    expect(expectOk(await app().call(nsid('getTicketHold'), { holdId: created.holdId })).hold.status).toBe('released')

    const twice = expectOk(await app().call(nsid('releaseTicketHold'), { holdId: created.holdId }))
    expect(twice.hold.status).toBe('released')
    const twiceByTier = Object.fromEntries(twice.availability.map((x: Body) => [x.tierId, x.remaining]))
    expect(twiceByTier).toEqual({ [a.id]: 10, [b.id]: 4 })
    expect(await tierState(event.id, a.id)).toMatchObject({ held: 0, remaining: 10 })
  })

  it('the release answer says scarcity true when the event is nearly sold out', async () => {
    const event = await makeEvent()
    const tier = await makeTier(event.id, { quantityTotal: 10 })
    expectOk(await hold([{ tierId: tier.id, quantity: 9 }]))
    const small = expectOk(await hold([{ tierId: tier.id, quantity: 1 }]))
    const released = expectOk(await app().call(nsid('releaseTicketHold'), { holdId: small.holdId }))
    expect(released.availability).toEqual([{ tierId: tier.id, remaining: 1 }])
    expect(released.scarcity).toBe(true)
  })
})

describe('hold expiry (ATM_HOLD_TTL_SECONDS=2)', () => {
  let short: World
  beforeAll(async () => {
    short = await startWorld({ holdTtlSeconds: 2 })
  })
  afterAll(async () => {
    await short?.close()
  })

  it('an expired hold frees its capacity without any release', async () => {
    const { tierId, eventId } = await createEventWithTier(short, { quantityTotal: 2 })
    const sentAt = Date.now()
    const first = expectOk(await short.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 2 }] }))
    const answeredAt = Date.now()
    // Two seconds after the moment the hold was made, within the request.
    expect(Date.parse(first.expiresAt)).toBeGreaterThanOrEqual(sentAt + 2_000)
    expect(Date.parse(first.expiresAt)).toBeLessThanOrEqual(answeredAt + 2_000)
    expectError(
      await short.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 1 }] }),
      400,
      'InsufficientTicketCapacity',
    )
    expect(expectOk(await short.app.call(nsid('getTicketHold'), { holdId: first.holdId })).hold.status).toBe('active')
    await sleep(Math.max(0, Date.parse(first.expiresAt) - Date.now()) + 500)
    expect(expectOk(await short.app.call(nsid('getTicketHold'), { holdId: first.holdId })).hold.status).toBe('expired')
    const avail = expectOk(await short.app.call(nsid('getTicketAvailability'), { eventId }))
    expect(avail.tiers[0]).toMatchObject({ held: 0, remaining: 2 })
    expect(avail.available).toBe(true)
    const next = expectOk(await short.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 2 }] }))
    expect(next.holdId).not.toBe(first.holdId)
    // releasing an expired hold answers expired and gives nothing back twice
    const late = expectOk(await short.app.call(nsid('releaseTicketHold'), { holdId: first.holdId }))
    expect(late.hold.status).toBe('expired')
    expect(late.availability).toEqual([{ tierId, remaining: 0 }])
    const after = expectOk(await short.app.call(nsid('getTicketAvailability'), { eventId }))
    expect(after.tiers[0]).toMatchObject({ held: 2, remaining: 0 })
    // the expired hold stays expired
    expect(expectOk(await short.app.call(nsid('getTicketHold'), { holdId: first.holdId })).hold.status).toBe('expired')
  })

  it('an expired hold frees its capacity group too', async () => {
    const { tierId, eventId, capacityGroupId } = await createEventWithTier(short, { quantityTotal: 5 }, { groupCapacity: 2 })
    const first = expectOk(await short.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 2 }] }))
    expectError(
      await short.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 1 }] }),
      400,
      'InsufficientTicketCapacity',
    )
    let avail = expectOk(await short.app.call(nsid('getTicketAvailability'), { eventId }))
    expect(avail.capacityGroups[0]).toMatchObject({ id: capacityGroupId, held: 2, remaining: 0 })
    expect(avail.tiers[0]).toMatchObject({ held: 2, remaining: 0 })
    await sleep(Math.max(0, Date.parse(first.expiresAt) - Date.now()) + 500)
    avail = expectOk(await short.app.call(nsid('getTicketAvailability'), { eventId }))
    expect(avail.capacityGroups[0]).toMatchObject({ held: 0, remaining: 2 })
    expect(avail.tiers[0]).toMatchObject({ held: 0, remaining: 2 })
    // lowering the group to what is committed now (nothing) is allowed: expired holds do not count
    expectOk(await short.app.call(nsid('updateCapacityGroup'), { capacityGroupId, totalCapacity: 1 }))
    expectOk(await short.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 1 }] }))
  })
})

describe('claimFreeTicket', () => {
  it('issues tickets at once: tkt_ ids, status issued, claimId, a distinct ticketToken each', async () => {
    const buyer = await newIdentityClient(world)
    const event = await makeEvent()
    const tier = await makeTier(event.id, { unitAmount: 0, quantityTotal: 10, title: 'Free entry' })
    const body = expectOk(await claim(tier.id, buyer, { quantity: 3, customerEmail: 'b@example.com' }))
    expect(body.claimId).toMatch(/^claim_/)
    expect(body.reused).toBeUndefined()
    expect(body.tickets).toHaveLength(3)
    for (const t of body.tickets as Body[]) {
      expect(t.id).toMatch(/^tkt_/)
      expect(t.ticketId).toBe(t.id)
      expect(t.status).toBe('issued')
      expect(t.claimId).toBe(body.claimId)
      expect(t.eventId).toBe(event.id)
      expect(t.eventUri).toBe(event.uri)
      expect(t.tierId).toBe(tier.id)
      expect(t.buyerDid).toBe(buyer.did)
      expect(typeof t.ticketToken).toBe('string')
      expect(t.ticketToken.length).toBeGreaterThan(16)
      expect(Number.isNaN(Date.parse(t.issuedAt))).toBe(false)
    }
    const tickets = body.tickets as Body[]
    expect(uniq(tickets.map((t) => t.id))).toHaveLength(3)
    expect(uniq(tickets.map((t) => t.ticketToken))).toHaveLength(3)
    expect(await tierState(event.id, tier.id)).toMatchObject({ sold: 3, held: 0, remaining: 7 })
    // default quantity is 1
    const one = expectOk(await claim(tier.id, await newIdentityClient(world)))
    expect(one.tickets).toHaveLength(1)
  })

  it('TicketTierNotFound, TicketsUnavailable, PaidTicketRequiresHold, MixedEvents; nothing issued', async () => {
    const buyer = await newIdentityClient(world)
    const event = await makeEvent()
    const otherEvent = await makeEvent()
    const later = await makeTier(event.id, { unitAmount: 0, saleStartsAt: isoIn(24 * 3600_000) })
    const paid = await makeTier(event.id, { unitAmount: 100 })
    const free = await makeTier(event.id, { unitAmount: 0 })
    expectError(await claim('tier_doesnotexist', buyer), 400, 'TicketTierNotFound')
    expectError(await claim(later.id, buyer), 400, 'TicketsUnavailable')
    expectError(await claim(paid.id, buyer), 400, 'PaidTicketRequiresHold')
    expectError(await claim(free.id, buyer, { eventId: otherEvent.id }), 400, 'MixedEvents')
    expectError(await claim(free.id, buyer, { eventUri: otherEvent.uri }), 400, 'MixedEvents')
    expect((await availability(event.id)).tiers.every((t: Body) => t.sold === 0)).toBe(true)
    expect(expectOk(await app().call(nsid('listBuyerTickets'), { buyerDid: buyer.did })).tickets).toEqual([])
    expectOk(await claim(free.id, buyer, { eventId: event.id, eventUri: event.uri }))
  })

  it('InvalidQuantity (0), QuantityTooHigh, InsufficientTicketCapacity; nothing issued', async () => {
    const buyer = await newIdentityClient(world)
    const event = await makeEvent()
    const tier = await makeTier(event.id, { unitAmount: 0, quantityTotal: 2, maxPerOrder: 5 })
    expectError(await claim(tier.id, buyer, { quantity: 0 }), 400, 'InvalidQuantity')
    expectError(await claim(tier.id, buyer, { quantity: -2 }), 400, 'InvalidQuantity')
    expectError(await claim(tier.id, buyer, { quantity: 6 }), 400, 'QuantityTooHigh')
    expectError(await claim(tier.id, buyer, { quantity: 3 }), 400, 'InsufficientTicketCapacity')
    expect(await tierState(event.id, tier.id)).toMatchObject({ sold: 0, remaining: 2 })
    expect(expectOk(await app().call(nsid('listBuyerTickets'), { buyerDid: buyer.did })).tickets).toEqual([])
  })

  it('BuyerAssertionRequired (no buyer, buyerDid alone), InvalidRequest (assertion alone), UserDidMismatch, InvalidAssertion', async () => {
    const buyer = await newIdentityClient(world)
    const other = await newIdentityClient(world)
    const event = await makeEvent()
    const tier = await makeTier(event.id, { unitAmount: 0, quantityTotal: 5 })
    expectError(await app().call(nsid('claimFreeTicket'), { tierId: tier.id }), 400, 'BuyerAssertionRequired')
    expectError(await app().call(nsid('claimFreeTicket'), { tierId: tier.id, buyerDid: buyer.did }), 400, 'BuyerAssertionRequired')
    const alone = await app().call(nsid('claimFreeTicket'), {
      tierId: tier.id,
      buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')),
    })
    expectError(alone, 400, 'InvalidRequest')
    expect(alone.body.message).toMatch(/buyerDid/)
    expectError(
      await claim(tier.id, buyer, { buyerAssertionJwt: await other.token(nsid('claimFreeTicket')) }),
      400,
      'UserDidMismatch',
    )
    expectError(
      await claim(tier.id, buyer, { buyerAssertionJwt: await buyer.token(nsid('createTicketHold')) }),
      400,
      'InvalidAssertion',
    )
    const expired = await buyer.token(nsid('claimFreeTicket'), { iat: nowSeconds() - 120, exp: nowSeconds() - 60 })
    expectError(await claim(tier.id, buyer, { buyerAssertionJwt: expired }), 400, 'InvalidAssertion')
    const tooLong = await buyer.token(nsid('claimFreeTicket'), { exp: nowSeconds() + 3600 })
    expectError(await claim(tier.id, buyer, { buyerAssertionJwt: tooLong }), 400, 'InvalidAssertion')
    expect(await tierState(event.id, tier.id)).toMatchObject({ sold: 0, remaining: 5 })
    const assertion = await buyer.token(nsid('claimFreeTicket'))
    expectOk(await claim(tier.id, buyer, { buyerAssertionJwt: assertion }))
    expectError(await claim(tier.id, buyer, { buyerAssertionJwt: assertion }), 400, 'InvalidAssertion')
    expect(await tierState(event.id, tier.id)).toMatchObject({ sold: 1, remaining: 4 })
  })

  it('ClaimLimitReached: one buyer above maxPerOrder across claims; other buyers unaffected', async () => {
    const buyer = await newIdentityClient(world)
    const friend = await newIdentityClient(world)
    const event = await makeEvent()
    const tier = await makeTier(event.id, { unitAmount: 0, quantityTotal: 20, maxPerOrder: 3 })
    expectOk(await claim(tier.id, buyer, { quantity: 2 }))
    expectError(await claim(tier.id, buyer, { quantity: 2 }), 400, 'ClaimLimitReached')
    expect((await tierState(event.id, tier.id)).sold).toBe(2)
    expectOk(await claim(tier.id, buyer, { quantity: 1 }))
    expectError(await claim(tier.id, buyer, { quantity: 1 }), 400, 'ClaimLimitReached')
    expectOk(await claim(tier.id, friend, { quantity: 3 }))
    expect((await tierState(event.id, tier.id)).sold).toBe(6)
  })

  it('idempotent: a retry answers reused: true with the same claimId and tickets; another body is IdempotencyKeyMismatch', async () => {
    const buyer = await newIdentityClient(world)
    const event = await makeEvent()
    const tier = await makeTier(event.id, { unitAmount: 0, quantityTotal: 10 })
    const input = {
      tierId: tier.id,
      quantity: 2,
      buyerDid: buyer.did,
      buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')),
      idempotencyKey: `claim-${Date.now()}-${Math.random()}`,
    }
    const first = expectOk(await app().call(nsid('claimFreeTicket'), input))
    const retry = expectOk(await app().call(nsid('claimFreeTicket'), input))
    expect(retry.reused).toBe(true)
    expect(retry.claimId).toBe(first.claimId)
    expect(retry.tickets.map((t: Body) => t.id)).toEqual(first.tickets.map((t: Body) => t.id))
    const mismatch = await app().call(nsid('claimFreeTicket'), { ...input, quantity: 1 })
    expectError(mismatch, 409, 'IdempotencyKeyMismatch')
    expect((await tierState(event.id, tier.id)).sold).toBe(2)
    expect(expectOk(await app().call(nsid('listBuyerTickets'), { buyerDid: buyer.did })).tickets).toHaveLength(2)
  })

  it('IdempotencyKeyInUse (409) while the first claim with the key is still verifying its buyer', async () => {
    const delayed = await startDelayedDidWeb()
    try {
      const event = await makeEvent()
      const tier = await makeTier(event.id, { unitAmount: 0, quantityTotal: 10 })
      const input = {
        tierId: tier.id,
        quantity: 2,
        buyerDid: delayed.client.did,
        buyerAssertionJwt: await delayed.client.token(nsid('claimFreeTicket')),
        idempotencyKey: `claim-inuse-${Date.now()}`,
      }
      const firstPromise = app().call(nsid('claimFreeTicket'), input)
      await delayed.requested
      expectError(await app().call(nsid('claimFreeTicket'), input), 409, 'IdempotencyKeyInUse')
      expect((await tierState(event.id, tier.id)).sold).toBe(0)
      delayed.release()
      const first = expectOk(await firstPromise)
      const third = expectOk(await app().call(nsid('claimFreeTicket'), input))
      expect(third.reused).toBe(true)
      expect(third.claimId).toBe(first.claimId)
      expect((await tierState(event.id, tier.id)).sold).toBe(2)
    } finally {
      await delayed.close()
    }
  })
})

describe('listBuyerTickets and listOrganizerTickets', () => {
  async function pages(method: string, params: Body, limit: number): Promise<Body[][]> {
    const out: Body[][] = []
    let cursor: string | undefined
    for (let i = 0; i < 20; i++) {
      const body = expectOk(await app().call(nsid(method), { ...params, limit, cursor }))
      out.push(body.tickets)
      cursor = body.cursor
      if (cursor === undefined) break
      expect(typeof cursor).toBe('string')
    }
    return out
  }

  it('listBuyerTickets: a buyer’s tickets with their ticketToken, paginated 3, 3, 1 without duplicates', async () => {
    const buyer = await newIdentityClient(world)
    const stranger = await newIdentityClient(world)
    const event = await makeEvent()
    const tier = await makeTier(event.id, { unitAmount: 0, quantityTotal: 20, maxPerOrder: 10 })
    const c1 = expectOk(await claim(tier.id, buyer, { quantity: 3 }))
    const c2 = expectOk(await claim(tier.id, buyer, { quantity: 4 }))
    expectOk(await claim(tier.id, stranger, { quantity: 2 }))
    const issued = [...c1.tickets, ...c2.tickets] as Body[]
    const got = await pages('listBuyerTickets', { buyerDid: buyer.did }, 3)
    expect(got.map((p) => p.length)).toEqual([3, 3, 1])
    const all = got.flat()
    expect(uniq(all.map((t) => t.id))).toHaveLength(7)
    expect(all.map((t) => t.id).sort()).toEqual(issued.map((t) => t.id).sort())
    const tokenOf = new Map(issued.map((t) => [t.id, t.ticketToken]))
    for (const t of all) {
      expect(t.buyerDid).toBe(buyer.did)
      expect(t.ticketToken).toBe(tokenOf.get(t.id))
      expect(t.status).toBe('issued')
    }
    // everything at once (default limit)
    const whole = expectOk(await app().call(nsid('listBuyerTickets'), { buyerDid: buyer.did }))
    expect(whole.tickets).toHaveLength(7)
    expect(whole.cursor).toBeUndefined()
    // a buyer with nothing
    const nobody = await newIdentityClient(world)
    expect(expectOk(await app().call(nsid('listBuyerTickets'), { buyerDid: nobody.did })).tickets).toEqual([])
  })

  it('listOrganizerTickets: EventNotFound for an unknown event', async () => {
    expectError(await app().call(nsid('listOrganizerTickets'), { eventId: 'evt_doesnotexist' }), 400, 'EventNotFound')
  })

  it('listOrganizerTickets: by eventId and by organizerDid, never a ticketToken, paginated', async () => {
    const own = await newOrganizer(world)
    const buyers = [await newIdentityClient(world), await newIdentityClient(world)]
    const e1 = await makeEvent({ organizer: own })
    const e2 = await makeEvent({ organizer: own })
    const elsewhere = await makeEvent()
    const t1 = await makeTier(e1.id, { unitAmount: 0, quantityTotal: 20 }, { organizer: own })
    const t2 = await makeTier(e2.id, { unitAmount: 0, quantityTotal: 20 }, { organizer: own })
    const t3 = await makeTier(elsewhere.id, { unitAmount: 0, quantityTotal: 20 })
    const e1Tickets = [
      ...expectOk(await claim(t1.id, buyers[0]!, { quantity: 3 })).tickets,
      ...expectOk(await claim(t1.id, buyers[1]!, { quantity: 2 })).tickets,
    ] as Body[]
    const e2Tickets = expectOk(await claim(t2.id, buyers[0]!, { quantity: 2 })).tickets as Body[]
    expectOk(await claim(t3.id, buyers[0]!, { quantity: 1 }))

    const byEvent = await pages('listOrganizerTickets', { eventId: e1.id }, 2)
    expect(byEvent.map((p) => p.length)).toEqual([2, 2, 1])
    const eventAll = byEvent.flat()
    expect(eventAll.map((t) => t.id).sort()).toEqual(e1Tickets.map((t) => t.id).sort())
    for (const t of eventAll) {
      expect(t.ticketToken).toBeUndefined()
      expect(t.eventId).toBe(e1.id)
      expect(t.id).toMatch(/^tkt_/)
    }

    const byOrganizer = await pages('listOrganizerTickets', { organizerDid: own.did }, 3)
    expect(byOrganizer.map((p) => p.length)).toEqual([3, 3, 1])
    const organizerAll = byOrganizer.flat()
    expect(uniq(organizerAll.map((t) => t.id))).toHaveLength(7)
    expect(organizerAll.map((t) => t.id).sort()).toEqual([...e1Tickets, ...e2Tickets].map((t) => t.id).sort())
    for (const t of organizerAll) expect(t.ticketToken).toBeUndefined()

    // an event of another organizer, asked for with this organizer, is not found
    expectError(
      await app().call(nsid('listOrganizerTickets'), { eventId: elsewhere.id, organizerDid: own.did }),
      400,
      'EventNotFound',
    )
  })
})
