// Events to the app (CONTRACT §6, §5.6): the real service delivers its outbox to real HTTP
// receivers started here. Webhooks are checked exactly as the official client checks them
// (HMAC over `t.deliveryId.rawBody`, constant-time compare, id and headers matching the body);
// the XRPC receiver checks the service's token against the service's own did:web document
// with @atproto/xrpc-server's verifyJwt. Retries, restarts and two workers sharing the
// outbox, all through the public interface; the outbox is read from the service's database to
// see attempts and errors.
//
// No timing is asserted: every wait is for something to happen, with a generous bound.
import { hostname } from 'node:os'
import { IdResolver } from '@atproto/identity'
import { verifyJwt } from '@atproto/xrpc-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expectOk, type Body } from './helpers/expect.js'
import {
  AppClient,
  createPlcIdentity,
  freePort,
  mintServiceJwt,
  startDidWebHost,
  startService,
  xrpc,
  type DidWebHost,
  type ServiceHandle,
} from './helpers/index.js'
import {
  checkEventHeaders,
  readOutbox,
  startEventReceiver,
  verifyWebhook,
  waitUntil,
  type Delivery,
  type EventReceiver,
} from './helpers/receiver.js'
import { createEventWithTier, newApp, nsid, registerApp, startWorld, type World } from './helpers/world.js'
import { sameDatabase } from './helpers/db.js'

const FAST_RETRIES = {
  ATM_DELIVERY_RETRY_BASE_MS: '200',
  ATM_DELIVERY_RETRY_MAX_MS: '1000',
  ATM_DELIVERY_POLL_MS: '100',
  ATM_DELIVERY_TIMEOUT_MS: '2000',
}

/** A new app that takes its events by webhook at `url`; answers the client and its secret. */
async function webhookApp(world: Pick<World, 'plc' | 'service'>, url: string): Promise<{ app: AppClient; secret: string }> {
  const app = await newApp(world)
  const res = expectOk(await registerApp(world.service, { did: app.did, webhookUrl: url }))
  expect(res.webhookSecret, 'a webhook secret is answered when delivery is first configured').toMatch(/^whsec_/)
  return { app, secret: res.webhookSecret }
}

async function makeHold(app: AppClient, tierId: string, quantity = 1): Promise<Body> {
  return expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId, quantity }] }))
}

async function claimFree(world: World, app: AppClient, tierId: string, quantity: number): Promise<Body> {
  const buyer = await createPlcIdentity(world.plc.url)
  const CLAIM = nsid('claimFreeTicket')
  return expectOk(
    await xrpc(world.service.url, CLAIM, {
      token: await app.token(CLAIM),
      body: {
        tierId,
        quantity,
        buyerDid: buyer.did,
        buyerAssertionJwt: await mintServiceJwt({ keypair: buyer.keypair, iss: buyer.did, aud: world.service.serviceDid, lxm: CLAIM }),
      },
    }),
  )
}

function bodyOf(delivery: Delivery): Body {
  return JSON.parse(delivery.rawBody) as Body
}

function deliveriesOf(receiver: EventReceiver, type: string, match: (data: Body) => boolean): Delivery[] {
  return receiver.deliveries.filter((d) => {
    const body = bodyOf(d)
    return body.type === type && match(body.data)
  })
}

async function waitForEvent(receiver: EventReceiver, type: string, match: (data: Body) => boolean, timeoutMs = 30_000): Promise<Delivery> {
  await waitUntil(`a ${type} event`, () => deliveriesOf(receiver, type, match).some((d) => d.status === 200), timeoutMs)
  return deliveriesOf(receiver, type, match).find((d) => d.status === 200)!
}

async function outboxRow(service: ServiceHandle, deliveryId: string) {
  const [row] = await readOutbox(service, 'id = ?', [deliveryId])
  return row
}

async function waitDelivered(service: ServiceHandle, deliveryId: string) {
  await waitUntil(`outbox row ${deliveryId} marked delivered`, async () => (await outboxRow(service, deliveryId))?.deliveredAt != null)
  return (await outboxRow(service, deliveryId))!
}

describe('webhooks', () => {
  let world: World
  let receiver: EventReceiver
  let app: AppClient
  let secret: string
  let paidTierId: string
  let freeTierId: string

  beforeAll(async () => {
    world = await startWorld({ workers: 1, env: FAST_RETRIES })
    receiver = await startEventReceiver()
    ;({ app, secret } = await webhookApp(world, `${receiver.origin}/hooks/atm?source=test`))
    paidTierId = (await createEventWithTier(world, { quantityTotal: 20, unitAmount: 1500 }, { app })).tierId
    freeTierId = (await createEventWithTier(world, { quantityTotal: 20, unitAmount: 0 }, { app })).tierId
  })
  afterAll(async () => {
    await receiver?.close()
    await world?.close()
  })

  it('ticket.hold.created arrives signed, with the headers and envelope of the official client', async () => {
    const hold = await makeHold(app, paidTierId, 2)
    const delivery = await waitForEvent(receiver, 'ticket.hold.created', (data) => data.holdId === hold.holdId)

    expect(delivery.method).toBe('POST')
    expect(delivery.path).toBe('/hooks/atm?source=test')
    expect(delivery.headers['content-type']).toBe('application/json')
    const event = verifyWebhook(delivery, secret)
    expect(event.type).toBe('ticket.hold.created')
    expect(event.apiVersion).toBe('2026-07')
    expect(event.environment).toBe('test')
    expect(event.id).toMatch(/^dlv_/)
    expect(Number.isNaN(Date.parse(event.createdAt))).toBe(false)
    expect(event.data.hold).toMatchObject({
      id: hold.holdId,
      amount: 3000,
      currency: 'usd',
      quantityTotal: 2,
      expiresAt: hold.expiresAt,
    })
    expect(event.data.hold.items).toEqual(hold.items)

    // A wrong secret, a changed body or a replayed old timestamp would be refused.
    expect(() => verifyWebhook(delivery, `${secret}x`)).toThrow(/does not match/)
    expect(() => verifyWebhook({ ...delivery, rawBody: delivery.rawBody.replace('"quantityTotal":2', '"quantityTotal":3') }, secret)).toThrow(/does not match/)
    expect(() => verifyWebhook(delivery, secret, Math.floor(Date.now() / 1000) + 600)).toThrow(/5 minutes/)

    const row = await waitDelivered(world.service, event.id)
    expect(row.attempts).toBe(1)
    expect(row.lastError).toBeNull()
    expect(row.payload, 'the body sent is the stored envelope, byte for byte').toBe(delivery.rawBody)
  })

  it('tickets.issued for a free claim carries the claimId and every ticket with its ticketToken', async () => {
    const claim = await claimFree(world, app, freeTierId, 3)
    const delivery = await waitForEvent(receiver, 'tickets.issued', (data) => data.claimId === claim.claimId)
    const event = verifyWebhook(delivery, secret)
    expect(event.data.claimId).toBe(claim.claimId)
    expect(event.data.issuedCount).toBe(3)
    expect(event.data.tickets).toHaveLength(3)
    for (const ticket of event.data.tickets as Body[]) {
      expect(ticket.ticketToken, 'the app learns each scan token from the event').toEqual(expect.any(String))
      expect(ticket.claimId).toBe(claim.claimId)
    }
    expect((event.data.tickets as Body[]).map((t) => [t.id, t.ticketToken])).toEqual(
      (claim.tickets as Body[]).map((t) => [t.id, t.ticketToken]),
    )
  })

  it('a receiver that fails twice gets the event on the third attempt: same delivery id and body, attempts recorded', async () => {
    const failing = await startEventReceiver({ respond: (_d, index) => (index < 2 ? 500 : 200) })
    try {
      const hooked = await webhookApp(world, `${failing.origin}/flaky`)
      const { tierId } = await createEventWithTier(world, { quantityTotal: 5 }, { app: hooked.app })
      const hold = await makeHold(hooked.app, tierId)
      await waitUntil('three attempts', () => failing.deliveries.length >= 3)

      const [first, second, third] = failing.deliveries
      expect([first!.status, second!.status, third!.status]).toEqual([500, 500, 200])
      const events = [first!, second!, third!].map((d) => verifyWebhook(d, hooked.secret))
      expect(new Set(events.map((e) => e.id)).size, 'one delivery id across the retries').toBe(1)
      expect(first!.rawBody).toBe(third!.rawBody)
      expect(events[0]!.data.holdId).toBe(hold.holdId)

      const row = await waitDelivered(world.service, events[0]!.id)
      expect(row.attempts).toBe(3)
      expect(row.lastError, 'the last failure is kept').toMatch(/HTTP 500/)
      expect(row.lastError).not.toContain(failing.origin)
      expect(row.lastError).not.toContain(hooked.secret)
    } finally {
      await failing.close()
    }
  })

  it('an app without delivery configured is owed nothing: no outbox rows', async () => {
    const { tierId } = await createEventWithTier(world, { quantityTotal: 5 })
    await makeHold(world.app, tierId)
    expect(await readOutbox(world.service, 'appDid = ?', [world.app.did])).toEqual([])
    expect((await readOutbox(world.service, 'appDid = ?', [app.did])).length).toBeGreaterThan(0)
  })

  it('logs name no webhook secret or URL query', () => {
    const logs = world.service.logs()
    expect(logs).not.toContain(secret)
    expect(logs).not.toContain('source=test')
  })
})

describe('delivery across restarts', () => {
  it('undelivered events survive kill -9 while the receiver is down, and arrive once it is up', async () => {
    const world = await startWorld({ workers: 1, env: { ...FAST_RETRIES, ATM_DELIVERY_RETRY_BASE_MS: '1000', ATM_DELIVERY_RETRY_MAX_MS: '1000' } })
    const port = await freePort()
    let receiver: EventReceiver | undefined
    try {
      const { app, secret } = await webhookApp(world, `http://localhost:${port}/hook`)
      const { tierId } = await createEventWithTier(world, { quantityTotal: 10 }, { app })
      const holds = [await makeHold(app, tierId), await makeHold(app, tierId), await makeHold(app, tierId)]
      const rowsOfApp = () => readOutbox(world.service, 'appDid = ?', [app.did])
      await waitUntil('a failed attempt at every row', async () => {
        const rows = await rowsOfApp()
        return rows.length === 3 && rows.every((row) => row.attempts >= 1 && row.lastError !== null)
      })
      expect((await rowsOfApp()).every((row) => row.deliveredAt === null)).toBe(true)
      expect((await rowsOfApp())[0]!.lastError).toMatch(/could not connect/)

      await world.service.kill9()
      receiver = await startEventReceiver({ port })
      await world.service.restart()

      const holdIds = holds.map((hold) => hold.holdId as string).sort()
      await waitUntil('every hold reported after the restart', () =>
        holdIds.every((id) => deliveriesOf(receiver!, 'ticket.hold.created', (data) => data.holdId === id).length > 0),
      )
      const received = receiver.deliveries.map((d) => verifyWebhook(d, secret))
      expect(received.map((e) => e.data.holdId).sort()).toEqual(holdIds)
      for (const row of await rowsOfApp()) expect((await waitDelivered(world.service, row.id)).attempts).toBeGreaterThanOrEqual(2)
    } finally {
      await receiver?.close()
      await world.close()
    }
  })

  it('SIGTERM while a send hangs: the service still exits 0, and the event is sent again after the restart', async () => {
    const world = await startWorld({ workers: 1, env: { ...FAST_RETRIES, ATM_DELIVERY_TIMEOUT_MS: '60000' } })
    let answer: 'hang' | 200 = 'hang'
    const receiver = await startEventReceiver({ respond: () => answer })
    try {
      const { app, secret } = await webhookApp(world, `${receiver.origin}/slow`)
      const { tierId } = await createEventWithTier(world, { quantityTotal: 10 }, { app })
      const hold = await makeHold(app, tierId)
      await waitUntil('the send to reach the receiver', () => receiver.deliveries.length === 1)

      expect(await world.service.stop()).toBe(0)
      expect(world.service.orphansAfterStop()).toBe(false)
      const [row] = await readOutbox(world.service, 'appDid = ?', [app.did])
      expect(row!.deliveredAt).toBeNull()
      expect(row!.lastError).toMatch(/interrupted/)

      answer = 200
      await world.service.restart()
      const delivery = await waitForEvent(receiver, 'ticket.hold.created', (data) => data.holdId === hold.holdId)
      const event = verifyWebhook(delivery, secret)
      expect(event.id, 'the same delivery id: the app dedupes on it').toBe(row!.id)
      expect(receiver.deliveries.map((d) => d.headers['atm-delivery-id'])).toEqual([row!.id, row!.id])
      await waitDelivered(world.service, row!.id)
    } finally {
      await receiver.close()
      await world.close()
    }
  })
})

describe('the XRPC event receiver', () => {
  let world: World
  let receiver: EventReceiver
  let appHost: DidWebHost

  beforeAll(async () => {
    world = await startWorld({ workers: 1, env: FAST_RETRIES })
    receiver = await startEventReceiver()
    appHost = await startDidWebHost({ service: { id: '#AtmEventReceiver', type: 'AtmEventReceiver', endpoint: receiver.origin } })
  })
  afterAll(async () => {
    await receiver?.close()
    await appHost?.close()
    await world?.close()
  })

  it('gets each event with a service-auth token that verifies against the service did:web document', async () => {
    const app = new AppClient(world.service, appHost.identity)
    const registered = expectOk(await registerApp(world.service, { did: app.did, name: 'Receiver app', eventDelivery: 'xrpc' }))
    expect(registered.app.eventDelivery).toBe('xrpc')
    const { tierId } = await createEventWithTier(world, { quantityTotal: 5 }, { app })
    const hold = await makeHold(app, tierId)

    const delivery = await waitForEvent(receiver, 'ticket.hold.created', (data) => data.holdId === hold.holdId)
    expect(delivery.method).toBe('POST')
    expect(delivery.path).toBe('/xrpc/money.atmosphere.event.receive')
    expect(delivery.headers['content-type']).toBe('application/json')
    expect(delivery.headers['atm-signature'], 'the token, not a signature, proves the sender').toBeUndefined()
    const event = bodyOf(delivery) as Parameters<typeof checkEventHeaders>[1]
    checkEventHeaders(delivery, event)
    expect(event.apiVersion).toBe('2026-07')

    const authorization = delivery.headers.authorization ?? ''
    expect(authorization).toMatch(/^Bearer /)
    const token = authorization.slice('Bearer '.length)
    // A receiver resolves the issuer's DID document (the service's, at /.well-known/did.json).
    const resolver = new IdResolver({ plcUrl: world.plc.url, fetch: globalThis.fetch })
    const getSigningKey = async (iss: string, forceRefresh: boolean) => {
      const key = await resolver.did.resolveAtprotoKey(iss, forceRefresh)
      return key
    }
    const audience = `${app.did}#AtmEventReceiver`
    const claims = await verifyJwt(token, audience, 'money.atmosphere.event.receive', getSigningKey)
    expect(claims.iss).toBe(world.service.serviceDid)
    expect(claims.aud).toBe(audience)
    expect(claims.lxm).toBe('money.atmosphere.event.receive')
    expect(typeof claims.jti).toBe('string')
    expect(claims.exp - Math.floor(Date.now() / 1000)).toBeLessThanOrEqual(300)
    // The token is bound to this receiver and this method.
    await expect(verifyJwt(token, `${app.did}#other`, 'money.atmosphere.event.receive', getSigningKey)).rejects.toThrow(/audience/)
    await expect(verifyJwt(token, audience, 'tickets.atmosphere.createTicketHold', getSigningKey)).rejects.toThrow(/lexicon method/)

    await waitDelivered(world.service, event.id)
  })

  it('an app whose document names no receiver keeps its events, with the reason recorded', async () => {
    const bare = await startDidWebHost()
    try {
      const app = new AppClient(world.service, bare.identity)
      expectOk(await registerApp(world.service, { did: app.did, name: 'No receiver', eventDelivery: 'xrpc' }))
      const { tierId } = await createEventWithTier(world, { quantityTotal: 5 }, { app })
      await makeHold(app, tierId)
      await waitUntil('a failed attempt', async () => (await readOutbox(world.service, 'appDid = ? AND lastError IS NOT NULL', [app.did])).length === 1)
      const [row] = await readOutbox(world.service, 'appDid = ?', [app.did])
      expect(row!.deliveredAt).toBeNull()
      expect(row!.lastError).toMatch(/#AtmEventReceiver/)
    } finally {
      await bare.close()
    }
  })
})

describe('two workers sharing the outbox', () => {
  it('deliver every event exactly once in the normal case', async () => {
    const world = await startWorld({ workers: 2, env: FAST_RETRIES })
    const receiver = await startEventReceiver()
    try {
      const { app, secret } = await webhookApp(world, `${receiver.origin}/hook`)
      const { tierId } = await createEventWithTier(world, { quantityTotal: 100 }, { app })
      const holds = await Promise.all(Array.from({ length: 24 }, () => makeHold(app, tierId)))
      const holdIds = holds.map((hold) => hold.holdId as string).sort()
      await waitUntil('every hold reported', () => receiver.deliveries.filter((d) => d.status === 200).length >= holds.length)
      const rows = await readOutbox(world.service, 'appDid = ?', [app.did])
      expect(rows).toHaveLength(holds.length)
      for (const row of rows) await waitDelivered(world.service, row.id)
      const settled = await readOutbox(world.service, 'appDid = ?', [app.did])
      expect(settled.map((row) => row.attempts), 'each row was taken by one worker, once').toEqual(settled.map(() => 1))
      const events = receiver.deliveries.map((d) => verifyWebhook(d, secret))
      expect(events.map((e) => e.data.holdId).sort()).toEqual(holdIds)
      expect(new Set(events.map((e) => e.id)).size).toBe(holds.length)
    } finally {
      await receiver.close()
      await world.close()
    }
  })
})

describe('SSRF protection at delivery time (ATM_DEV_MODE=false)', () => {
  it('does not connect to a webhook host that resolves to a non-public address', async () => {
    // Made in development mode (a local PLC needs it), delivered by the same database
    // with the protection on.
    const world = await startWorld({ workers: 1, env: FAST_RETRIES })
    const port = await freePort()
    const host = hostname()
    let receiver: EventReceiver | undefined
    let guarded: ServiceHandle | undefined
    try {
      const { app } = await webhookApp(world, `https://${host}:${port}/hook`)
      const { tierId } = await createEventWithTier(world, { quantityTotal: 5 }, { app })
      await makeHold(app, tierId)
      expect(await world.service.stop()).toBe(0)
      const [before] = await readOutbox(world.service, 'appDid = ?', [app.did])

      receiver = await startEventReceiver({ port })
      guarded = await startService({ plcUrl: world.plc.url, ...sameDatabase(world.service), devMode: false, workers: 1, env: FAST_RETRIES })
      // A second attempt is taken only once the first one's failure is recorded.
      await waitUntil('two attempts with the protection on', async () => {
        const [row] = await readOutbox(guarded!, 'appDid = ?', [app.did])
        return row!.attempts >= before!.attempts + 2
      })
      const [row] = await readOutbox(guarded, 'appDid = ?', [app.did])
      expect(row!.deliveredAt).toBeNull()
      expect(row!.lastError).toMatch(/public domain|non-unicast|private|not allowed/i)
      expect(receiver.connections(), 'no connection was made to the address').toBe(0)
    } finally {
      await guarded?.close()
      await receiver?.close()
      await world.close()
    }
  })
})
