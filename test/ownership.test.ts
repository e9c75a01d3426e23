// CONTRACT §3: who owns what. An app sees only its own events, groups, tiers, holds and
// tickets; anything else is "not found" (400 with the not-found name), never 403. Everything
// is partitioned by environment: what exists in test is not found in live. An environment
// other than test / live is 400 InvalidRequest.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expectOk, expectError, type Body } from './helpers/expect.js'
import type { AppClient, XrpcResponse } from './helpers/index.js'
import { eventUri, newApp, newIdentityClient, nsid, startWorld, type World } from './helpers/world.js'



/** Not found, and explicitly not forbidden. */
function expectNotFound(res: XrpcResponse, error: string): void {
  expect(res.status, JSON.stringify(res.body)).not.toBe(403)
  expectError(res, 400, error)
}

let world: World
let other: AppClient
let buyer: AppClient

/** What the first app owns in test. */
const owned = {} as {
  eventId: string
  eventUri: string
  groupId: string
  paidTierId: string
  freeTierId: string
  holdId: string
  ticketIds: string[]
}

beforeAll(async () => {
  world = await startWorld()
  other = await newApp(world)
  buyer = await newIdentityClient(world)
  const { app, organizer } = world
  const uri = eventUri(organizer.did)
  const group = expectOk(
    await app.call(nsid('createCapacityGroup'), {
      organizerDid: organizer.did,
      organizerAssertionJwt: await organizer.token(nsid('createCapacityGroup')),
      event: { uri, title: 'Owned event' },
      name: 'Hall',
      totalCapacity: 50,
    }),
  )
  const eventId = group.event.id as string
  const paid = expectOk(
    await app.call(nsid('createTicketTier'), {
      organizerDid: organizer.did,
      event: { eventId },
      capacityGroupId: group.capacityGroup.id,
      title: 'Paid',
      currency: 'usd',
      unitAmount: 1500,
      quantityTotal: 20,
    }),
  )
  const free = expectOk(
    await app.call(nsid('createTicketTier'), {
      organizerDid: organizer.did,
      event: { eventId },
      title: 'Free',
      currency: 'usd',
      unitAmount: 0,
      quantityTotal: 20,
    }),
  )
  const hold = expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId: paid.tier.id, quantity: 2 }] }))
  const claim = expectOk(
    await app.call(nsid('claimFreeTicket'), {
      tierId: free.tier.id,
      quantity: 2,
      buyerDid: buyer.did,
      buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')),
    }),
  )
  Object.assign(owned, {
    eventId,
    eventUri: uri,
    groupId: group.capacityGroup.id,
    paidTierId: paid.tier.id,
    freeTierId: free.tier.id,
    holdId: hold.holdId,
    ticketIds: (claim.tickets as Body[]).map((t) => t.id),
  })
})

afterAll(async () => {
  await world?.close()
})

/** The first app's view of its own objects, to show that nothing changed. */
async function ownerSnapshot() {
  const avail = expectOk(await world.app.call(nsid('getTicketAvailability'), { eventId: owned.eventId }))
  const hold = expectOk(await world.app.call(nsid('getTicketHold'), { holdId: owned.holdId })).hold
  const event = expectOk(await world.app.call(nsid('updateTicketEvent'), { eventId: owned.eventId })).event
  return {
    event: { title: event.title, status: event.status, organizerDid: event.organizerDid },
    tiers: (avail.tiers as Body[])
      .map((t) => ({ id: t.id, title: t.title, status: t.status, quantityTotal: t.quantityTotal, held: t.held, sold: t.sold, unitAmount: t.unitAmount }))
      .sort((a, b) => a.id.localeCompare(b.id)),
    groups: (avail.capacityGroups as Body[]).map((g) => ({ id: g.id, name: g.name, totalCapacity: g.totalCapacity, status: g.status, held: g.held, sold: g.sold })),
    hold: { status: hold.status, amountCents: hold.amountCents },
  }
}

describe('another app sees none of the first app’s objects (not found, never 403)', () => {
  it('the owner sees its objects', async () => {
    const snap = await ownerSnapshot()
    expect(snap.tiers).toHaveLength(2)
    expect(snap.groups).toHaveLength(1)
    expect(snap.hold.status).toBe('active')
    const tickets = expectOk(await world.app.call(nsid('listBuyerTickets'), { buyerDid: buyer.did })).tickets as Body[]
    expect(tickets.map((t) => t.id).sort()).toEqual([...owned.ticketIds].sort())
  })

  it('event: EventNotFound for reads, updates and binding by eventId; a same-uri binding is its own event', async () => {
    const before = await ownerSnapshot()
    expectNotFound(await other.call(nsid('getTicketAvailability'), { eventId: owned.eventId }), 'EventNotFound')
    expectNotFound(await other.call(nsid('getTicketAvailability'), { eventUri: owned.eventUri }), 'EventNotFound')
    expectNotFound(
      await other.call(nsid('updateTicketEvent'), { eventId: owned.eventId, title: 'Hijacked', status: 'archived' }),
      'EventNotFound',
    )
    expectNotFound(await other.call(nsid('listOrganizerTickets'), { eventId: owned.eventId }), 'EventNotFound')
    expectNotFound(
      await other.call(nsid('createTicketTier'), {
        organizerDid: world.organizer.did,
        organizerAssertionJwt: await world.organizer.token(nsid('createTicketTier')),
        event: { eventId: owned.eventId },
        title: 'Sneaky',
        currency: 'usd',
        unitAmount: 100,
        quantityTotal: 5,
      }),
      'EventNotFound',
    )
    expectNotFound(
      await other.call(nsid('createCapacityGroup'), {
        organizerDid: world.organizer.did,
        organizerAssertionJwt: await world.organizer.token(nsid('createCapacityGroup')),
        event: { eventId: owned.eventId },
        name: 'Sneaky',
        totalCapacity: 5,
      }),
      'EventNotFound',
    )
    // binding the same record uri creates the other app's own event; the owner's is untouched
    const theirs = expectOk(
      await other.call(nsid('createTicketEvent'), {
        organizerDid: world.organizer.did,
        organizerAssertionJwt: await world.organizer.token(nsid('createTicketEvent')),
        event: { uri: owned.eventUri, title: 'Their copy' },
      }),
    ).event
    expect(theirs.id).not.toBe(owned.eventId)
    expect(theirs.appDid).toBe(other.did)
    const theirAvail = expectOk(await other.call(nsid('getTicketAvailability'), { eventUri: owned.eventUri }))
    expect(theirAvail.eventId).toBe(theirs.id)
    expect(theirAvail.tiers).toEqual([])
    expect(await ownerSnapshot()).toEqual(before)
  })

  it('capacity group: CapacityGroupNotFound for update, and for a tier on the other app’s own event', async () => {
    const before = await ownerSnapshot()
    expectNotFound(
      await other.call(nsid('updateCapacityGroup'), { capacityGroupId: owned.groupId, totalCapacity: 1, status: 'archived' }),
      'CapacityGroupNotFound',
    )
    const theirs = expectOk(
      await other.call(nsid('createTicketEvent'), {
        organizerDid: world.organizer.did,
        organizerAssertionJwt: await world.organizer.token(nsid('createTicketEvent')),
        event: { uri: eventUri(world.organizer.did), title: 'Other app event' },
      }),
    ).event
    expectNotFound(
      await other.call(nsid('createTicketTier'), {
        organizerDid: world.organizer.did,
        event: { eventId: theirs.id },
        capacityGroupId: owned.groupId,
        title: 'In their group',
        currency: 'usd',
        unitAmount: 100,
        quantityTotal: 5,
      }),
      'CapacityGroupNotFound',
    )
    expect(expectOk(await other.call(nsid('getTicketAvailability'), { eventId: theirs.id })).tiers).toEqual([])
    expect(await ownerSnapshot()).toEqual(before)
  })

  it('tier: TicketTierNotFound for update, archive, hold and claim', async () => {
    const before = await ownerSnapshot()
    expectNotFound(
      await other.call(nsid('updateTicketTier'), { tierId: owned.paidTierId, quantityTotal: 1000, title: 'Mine now' }),
      'TicketTierNotFound',
    )
    expectNotFound(await other.call(nsid('archiveTicketTier'), { tierId: owned.paidTierId }), 'TicketTierNotFound')
    expectNotFound(
      await other.call(nsid('createTicketHold'), { items: [{ tierId: owned.paidTierId, quantity: 1 }] }),
      'TicketTierNotFound',
    )
    expectNotFound(
      await other.call(nsid('claimFreeTicket'), {
        tierId: owned.freeTierId,
        buyerDid: buyer.did,
        buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')),
      }),
      'TicketTierNotFound',
    )
    expect(await ownerSnapshot()).toEqual(before)
  })

  it('hold: HoldNotFound for get and release; the hold stays active', async () => {
    const before = await ownerSnapshot()
    expectNotFound(await other.call(nsid('getTicketHold'), { holdId: owned.holdId }), 'HoldNotFound')
    expectNotFound(await other.call(nsid('releaseTicketHold'), { holdId: owned.holdId }), 'HoldNotFound')
    const after = await ownerSnapshot()
    expect(after).toEqual(before)
    expect(after.hold.status).toBe('active')
  })

  it('tickets: listBuyerTickets returns none of them; listOrganizerTickets by organizer none either', async () => {
    const byBuyer = expectOk(await other.call(nsid('listBuyerTickets'), { buyerDid: buyer.did }))
    expect(byBuyer.tickets).toEqual([])
    expect(byBuyer.cursor).toBeUndefined()
    const byOrganizer = expectOk(await other.call(nsid('listOrganizerTickets'), { organizerDid: world.organizer.did }))
    expect(byOrganizer.tickets).toEqual([])
    // while the owner sees them
    const mine = expectOk(await world.app.call(nsid('listOrganizerTickets'), { organizerDid: world.organizer.did }))
    expect((mine.tickets as Body[]).map((t) => t.id).sort()).toEqual([...owned.ticketIds].sort())
  })

  it('idempotency keys belong to one app: the same key in another app is a separate request', async () => {
    const key = `shared-${Date.now()}`
    const firstApp = expectOk(
      await world.app.call(nsid('createTicketHold'), { items: [{ tierId: owned.paidTierId, quantity: 1 }], idempotencyKey: key }),
    )
    const theirs = expectOk(
      await other.call(nsid('createTicketEvent'), {
        organizerDid: world.organizer.did,
        organizerAssertionJwt: await world.organizer.token(nsid('createTicketEvent')),
        event: { uri: eventUri(world.organizer.did), title: 'Keyed' },
      }),
    ).event
    const tier = expectOk(
      await other.call(nsid('createTicketTier'), {
        organizerDid: world.organizer.did,
        event: { eventId: theirs.id },
        title: 'Theirs',
        currency: 'usd',
        unitAmount: 100,
        quantityTotal: 5,
      }),
    ).tier
    const secondApp = expectOk(
      await other.call(nsid('createTicketHold'), { items: [{ tierId: tier.id, quantity: 1 }], idempotencyKey: key }),
    )
    expect(secondApp.reused).toBeUndefined()
    expect(secondApp.holdId).not.toBe(firstApp.holdId)
    expect(secondApp.items[0].tierId).toBe(tier.id)
    expectOk(await world.app.call(nsid('releaseTicketHold'), { holdId: firstApp.holdId }))
  })
})

describe('test and live are separate', () => {
  it('objects created in test are not found with environment "live"', async () => {
    const before = await ownerSnapshot()
    const app = world.app
    const live = { environment: 'live' }
    expectNotFound(await app.call(nsid('getTicketAvailability'), { ...live, eventId: owned.eventId }), 'EventNotFound')
    expectNotFound(await app.call(nsid('getTicketAvailability'), { ...live, eventUri: owned.eventUri }), 'EventNotFound')
    expectNotFound(await app.call(nsid('updateTicketEvent'), { ...live, eventId: owned.eventId, title: 'Live?' }), 'EventNotFound')
    expectNotFound(await app.call(nsid('listOrganizerTickets'), { ...live, eventId: owned.eventId }), 'EventNotFound')
    expectNotFound(
      await app.call(nsid('updateCapacityGroup'), { ...live, capacityGroupId: owned.groupId, name: 'Live?' }),
      'CapacityGroupNotFound',
    )
    expectNotFound(await app.call(nsid('updateTicketTier'), { ...live, tierId: owned.paidTierId, title: 'Live?' }), 'TicketTierNotFound')
    expectNotFound(await app.call(nsid('archiveTicketTier'), { ...live, tierId: owned.paidTierId }), 'TicketTierNotFound')
    expectNotFound(
      await app.call(nsid('createTicketHold'), { ...live, items: [{ tierId: owned.paidTierId, quantity: 1 }] }),
      'TicketTierNotFound',
    )
    expectNotFound(
      await app.call(nsid('claimFreeTicket'), {
        ...live,
        tierId: owned.freeTierId,
        buyerDid: buyer.did,
        buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')),
      }),
      'TicketTierNotFound',
    )
    expectNotFound(await app.call(nsid('getTicketHold'), { ...live, holdId: owned.holdId }), 'HoldNotFound')
    expectNotFound(await app.call(nsid('releaseTicketHold'), { ...live, holdId: owned.holdId }), 'HoldNotFound')
    expect(expectOk(await app.call(nsid('listBuyerTickets'), { ...live, buyerDid: buyer.did })).tickets).toEqual([])
    expect(expectOk(await app.call(nsid('listOrganizerTickets'), { ...live, organizerDid: world.organizer.did })).tickets).toEqual([])
    // and in test, everything is still there and unchanged
    expect(await ownerSnapshot()).toEqual(before)
    // "test" spelled out is the default environment
    const explicit = expectOk(await app.call(nsid('getTicketAvailability'), { environment: 'test', eventId: owned.eventId }))
    expect(explicit.environment).toBe('test')
    expect(explicit.eventId).toBe(owned.eventId)
  })

  it('an environment other than test or live ("prod") is 400 InvalidRequest, for procedures and queries alike', async () => {
    const before = await ownerSnapshot()
    const app = world.app
    const prod = { environment: 'prod' }
    const cases: Array<[string, Body]> = [
      ['getTicketAvailability', { ...prod, eventId: owned.eventId }],
      ['getTicketHold', { ...prod, holdId: owned.holdId }],
      ['listBuyerTickets', { ...prod, buyerDid: buyer.did }],
      ['listOrganizerTickets', { ...prod, eventId: owned.eventId }],
      ['updateTicketEvent', { ...prod, eventId: owned.eventId, title: 'Prod' }],
      ['updateCapacityGroup', { ...prod, capacityGroupId: owned.groupId, name: 'Prod' }],
      ['updateTicketTier', { ...prod, tierId: owned.paidTierId, title: 'Prod' }],
      ['archiveTicketTier', { ...prod, tierId: owned.paidTierId }],
      ['createTicketHold', { ...prod, items: [{ tierId: owned.paidTierId, quantity: 1 }] }],
      ['releaseTicketHold', { ...prod, holdId: owned.holdId }],
      [
        'createTicketEvent',
        {
          ...prod,
          organizerDid: world.organizer.did,
          organizerAssertionJwt: await world.organizer.token(nsid('createTicketEvent')),
          event: { uri: eventUri(world.organizer.did), title: 'Prod' },
        },
      ],
    ]
    for (const [method, input] of cases) {
      const res = await app.call(nsid(method), input)
      expect(res.status, `${method}: ${JSON.stringify(res.body)}`).toBe(400)
      expect(res.body?.error, method).toBe('InvalidRequest')
      expect(res.body?.message, method).toMatch(/environment/)
    }
    const claim = await app.call(nsid('claimFreeTicket'), {
      ...prod,
      tierId: owned.freeTierId,
      buyerDid: buyer.did,
      buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')),
    })
    expectError(claim, 400, 'InvalidRequest')
    const setup = await world.organizer.call(nsid('completePaymentSetup'), prod)
    expectError(setup, 400, 'InvalidRequest')
    expect(setup.body.message).toMatch(/environment/)
    expect(await ownerSnapshot()).toEqual(before)
  })
})
