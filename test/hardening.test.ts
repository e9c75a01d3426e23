// Edges found in review: moving a tier between capacity groups, webhook URL checks with the
// SSRF protection on, consent checked before anything about an organizer is revealed, empty
// bodies, bounded DID re-fetches on bad signatures, and idempotent retries with a fresh
// assertion. All through HTTP against the real service.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AppClient, corruptSignature, startDidWebHost, startService, xrpc, type DidWebHost, type ServiceHandle } from './helpers/index.js'
import {
  createEventWithTier,
  eventUri,
  newIdentityClient,
  newOrganizer,
  nsid,
  registerApp,
  startWorld,
  type World,
} from './helpers/world.js'

let world: World
const hosts: DidWebHost[] = []

beforeAll(async () => {
  world = await startWorld()
})
afterAll(async () => {
  for (const host of hosts) await host.close()
  await world?.close()
})

async function availability(eventId: string) {
  const res = await world.app.call(nsid('getTicketAvailability'), { eventId })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return res.body as { tiers: any[]; capacityGroups: any[] }
}

async function newGroup(eventId: string, totalCapacity: number) {
  const res = await world.app.call(nsid('createCapacityGroup'), {
    organizerDid: world.organizer.did,
    event: { eventId },
    name: `group ${totalCapacity}`,
    totalCapacity,
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return res.body.capacityGroup.id as string
}

describe('updateTicketTier moves a tier between capacity groups', () => {
  it('moves sold and held units with the tier, and refuses a group without room', async () => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 50, unitAmount: 1000 })
    const hold = await world.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 4 }] })
    expect(hold.status).toBe(200)

    const small = await newGroup(eventId, 3)
    const refused = await world.app.call(nsid('updateTicketTier'), { tierId, capacityGroupId: small })
    expect(refused.status).toBe(400)
    expect(refused.body.error).toBe('CapacityBelowCommitted')
    let state = await availability(eventId)
    expect(state.tiers[0].capacityGroupId).toBeUndefined()
    expect(state.capacityGroups.find((g) => g.id === small).held).toBe(0)

    const big = await newGroup(eventId, 10)
    const moved = await world.app.call(nsid('updateTicketTier'), { tierId, capacityGroupId: big })
    expect(moved.status, JSON.stringify(moved.body)).toBe(200)
    expect(moved.body.tier.capacityGroupId).toBe(big)
    expect(moved.body.tier.remaining).toBe(6)
    state = await availability(eventId)
    expect(state.capacityGroups.find((g) => g.id === big)).toMatchObject({ held: 4, remaining: 6 })

    // The group now caps the tier: 6 more fit, the 7th does not.
    const fits = await world.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 6 }] })
    expect(fits.status).toBe(200)
    const over = await world.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 1 }] })
    expect(over.body.error).toBe('InsufficientTicketCapacity')

    // Releasing a hold made before the move gives the capacity back to the new group.
    const released = await world.app.call(nsid('releaseTicketHold'), { holdId: hold.body.holdId })
    expect(released.status).toBe(200)
    state = await availability(eventId)
    expect(state.capacityGroups.find((g) => g.id === big)).toMatchObject({ held: 6, remaining: 4 })

    // Out of any group: the group's counters drop the tier's units.
    const out = await world.app.call(nsid('updateTicketTier'), { tierId, capacityGroupId: null })
    expect(out.status).toBe(200)
    expect(out.body.tier.capacityGroupId).toBeUndefined()
    state = await availability(eventId)
    expect(state.capacityGroups.find((g) => g.id === big)).toMatchObject({ held: 0, remaining: 10 })
    expect(state.tiers[0]).toMatchObject({ held: 6, remaining: 44 })
  })

  it('names an unknown or foreign group CapacityGroupNotFound and an archived one CapacityGroupArchived', async () => {
    const first = await createEventWithTier(world, { quantityTotal: 5 })
    const second = await createEventWithTier(world, { quantityTotal: 5 }, { groupCapacity: 5 })
    const foreign = await world.app.call(nsid('updateTicketTier'), { tierId: first.tierId, capacityGroupId: second.capacityGroupId })
    expect(foreign.body.error).toBe('CapacityGroupNotFound')
    const unknown = await world.app.call(nsid('updateTicketTier'), { tierId: first.tierId, capacityGroupId: 'cg_nope' })
    expect(unknown.body.error).toBe('CapacityGroupNotFound')
    const archivedId = await newGroup(first.eventId, 5)
    await world.app.call(nsid('updateCapacityGroup'), { capacityGroupId: archivedId, status: 'archived' })
    const archived = await world.app.call(nsid('updateTicketTier'), { tierId: first.tierId, capacityGroupId: archivedId })
    expect(archived.body.error).toBe('CapacityGroupArchived')
  })
})

describe('webhook URLs with the SSRF protection on (ATM_DEV_MODE=false)', () => {
  let service: ServiceHandle
  beforeAll(async () => {
    // registerApp resolves no DID, so this service needs no PLC directory it can reach.
    service = await startService({ plcUrl: 'https://plc.invalid', devMode: false, workers: 1 })
  })
  afterAll(async () => {
    await service?.close()
  })

  const refusedUrls = [
    'http://hooks.example.com/atm',
    'https://localhost/hook',
    'https://localhost./hook',
    'https://127.0.0.1/hook',
    'https://10.1.2.3/hook',
    'https://100.64.0.1/hook',
    'https://169.254.169.254/latest/meta-data',
    'https://[::1]/hook',
    'https://[::]/hook',
    'https://[::ffff:127.0.0.1]/hook',
    'https://[fd00::1]/hook',
    'https://user:secret@hooks.example.com/hook',
  ]
  it.each(refusedUrls)('refuses %s with InvalidWebhookUrl, registering nothing', async (webhookUrl) => {
    const did = `did:plc:${'r'.repeat(20)}${refusedUrls.indexOf(webhookUrl).toString().padStart(4, '0')}`
    const res = await registerApp(service, { did, name: 'hooked', webhookUrl })
    expect(res.status).toBe(400)
    expect(res.body.error).toBe('InvalidWebhookUrl')
    expect(JSON.stringify(res.body)).not.toContain('secret')
    const again = await registerApp(service, { did })
    expect(again.body.error).toBe('AppNameRequired')
  })

  it.each(['https://hooks.example.com/atm', 'https://fdroid.org/hook', 'https://fcc.gov/hook', 'https://8.8.8.8/hook'])(
    'accepts the public %s',
    async (webhookUrl) => {
      const did = `did:plc:${'a'.repeat(18)}${Math.random().toString(36).slice(2, 8)}`
      const res = await registerApp(service, { did, name: 'hooked', webhookUrl })
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      expect(res.body.app.eventDelivery).toBe('webhook')
      expect(res.body.webhookSecret).toMatch(/^whsec_/)
    },
  )

  it('clearing webhookUrl turns webhook delivery off; the secret is not answered again', async () => {
    const did = 'did:plc:clearingwebhookurl0001'
    const created = await registerApp(service, { did, name: 'hooked', webhookUrl: 'https://hooks.example.com/a' })
    expect(created.body.webhookSecret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/)
    const cleared = await registerApp(service, { did, webhookUrl: null })
    expect(cleared.status, JSON.stringify(cleared.body)).toBe(200)
    expect(cleared.body.app.webhookUrl).toBeUndefined()
    expect(cleared.body.app.eventDelivery).toBeUndefined()
    expect(cleared.body.app.name).toBe('hooked')
    expect(cleared.body.webhookSecret).toBeUndefined()
  })
})

describe('consent comes before anything about the organizer', () => {
  it('an app without consent learns nothing about whether a DID signed in or set up payments', async () => {
    const stranger = await newIdentityClient(world) // never signed in
    const noSetup = await newOrganizer(world, { paymentSetup: false })
    for (const organizer of [stranger, noSetup, world.organizer]) {
      const res = await world.app.call(nsid('createTicketEvent'), {
        organizerDid: organizer.did,
        event: { uri: eventUri(organizer.did), title: 'Probe' },
        environment: 'live',
      })
      expect(res.status).toBe(403)
      expect(res.body.error).toBe('OrganizerConsentRequired')
    }
  })

  it('re-binding to the app itself without an assertion is a reassignment refusal (403)', async () => {
    await world.app.call(nsid('registerOrganizer'), {})
    const { uri } = await createEventWithTier(world, { quantityTotal: 5 })
    const res = await world.app.call(nsid('createTicketEvent'), { organizerDid: world.app.did, event: { uri, title: 'Mine now' } })
    expect(res.status).toBe(403)
    expect(res.body.error).toBe('OrganizerReassignmentNotAllowed')
  })
})

describe('requests without a body', () => {
  it('a procedure with required fields names the missing field', async () => {
    const token = await world.app.token(nsid('createTicketHold'))
    const res = await xrpc(world.service.url, nsid('createTicketHold'), { method: 'POST', token })
    expect(res.status).toBe(400)
    expect(res.body.error).toBe('InvalidRequest')
    expect(res.body.message).toContain('items')
  })
})

describe('bad signatures do not make the service fetch DID documents at will', () => {
  it('re-fetches a document at most once per DID in a burst of bad signatures', async () => {
    const host = await startDidWebHost()
    hosts.push(host)
    const app = new AppClient(world.service, host.identity)
    expect((await registerApp(world.service, { did: app.did, name: 'web' })).status).toBe(200)
    const first = await app.call(nsid('getTicketAvailability'), { eventId: 'evt_none' })
    expect(first.body.error).toBe('EventNotFound')
    const fetchesBefore = host.requests.length
    const bad = await Promise.all(
      Array.from({ length: 20 }, async () =>
        xrpc(world.service.url, nsid('getTicketAvailability'), {
          params: { eventId: 'evt_none' },
          token: corruptSignature(await app.token(nsid('getTicketAvailability'))),
        }),
      ),
    )
    for (const res of bad) expect(res.body.error).toBe('BadJwtSignature')
    // Per worker process (two by default): at most its first fetch and one re-fetch, never
    // one fetch per request.
    expect(host.requests.length - fetchesBefore).toBeLessThanOrEqual(4)
  })
})

describe('idempotent retries', () => {
  it('a retry with the same key and input but a freshly minted buyer assertion gets the first answer', async () => {
    const { tierId } = await createEventWithTier(world, { quantityTotal: 5 })
    const buyer = await newIdentityClient(world)
    const body = async () => ({
      items: [{ tierId, quantity: 2 }],
      buyerDid: buyer.did,
      buyerAssertionJwt: await buyer.token(nsid('createTicketHold')),
      idempotencyKey: `retry-${tierId}`,
    })
    const first = await world.app.call(nsid('createTicketHold'), await body())
    expect(first.status, JSON.stringify(first.body)).toBe(200)
    const retry = await world.app.call(nsid('createTicketHold'), await body())
    expect(retry.status, JSON.stringify(retry.body)).toBe(200)
    expect(retry.body).toMatchObject({ holdId: first.body.holdId, reused: true })
  })
})
