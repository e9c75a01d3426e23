// Requests shaped as the official client (@atmosphere-money/app-node) sends them: its input
// types' field names, nulls where its types allow them, its extra fields (strong refs,
// metadata), query parameters as strings. And the answer fields it reads. An app moves here
// by changing brokerUrl and serviceAudience, so each of these must be accepted as is.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expectOk } from './helpers/expect.js'
import { eventUri, newIdentityClient, nsid, startWorld, type World } from './helpers/world.js'

let world: World
beforeAll(async () => {
  world = await startWorld()
})
afterAll(async () => {
  await world?.close()
})

const strongRef = (uri: string) => ({
  $type: 'com.atproto.repo.strongRef',
  uri,
  cid: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm',
})

describe('the official client request shapes', () => {
  it('accepts the whole organizer-configuration flow with the client fields', async () => {
    const { app, organizer } = world
    const uri = eventUri(organizer.did)
    const event = expectOk(
      await app.call(nsid('createTicketEvent'), {
        environment: 'test',
        organizerDid: organizer.did,
        organizerAssertionJwt: await organizer.token(nsid('createTicketEvent')),
        event: {
          uri,
          title: 'Client-shaped event',
          startsAt: '2027-05-01T18:00:00.000Z',
          endsAt: '2027-05-01T23:00:00.000Z',
          timezone: 'Europe/Berlin',
          url: 'https://app.example/events/1',
          imageUrl: 'https://app.example/events/1.png',
          image: 'bafkreiexampleimage',
          metadata: { appEventId: 'e1' },
          // The client's event input allows any extra key.
          venueName: 'Main hall',
        },
        status: 'active',
        metadata: { source: 'client' },
      }),
    ).event
    expect(event.id).toMatch(/^evt_/)
    expect(event.eventId).toBe(event.id)

    expectOk(
      await app.call(nsid('updateTicketEvent'), {
        environment: 'test',
        eventId: event.id,
        title: 'Renamed',
        startsAt: null,
        eventCid: null,
        imageUrl: null,
        status: 'active',
        metadata: { changed: true },
      }),
    )

    // The client's createCapacityGroup input has no assertion: the event is already bound.
    const group = expectOk(
      await app.call(nsid('createCapacityGroup'), {
        environment: 'test',
        organizerDid: organizer.did,
        event: { uri },
        name: 'Venue',
        totalCapacity: 100,
        metadata: { zone: 'A' },
      }),
    ).capacityGroup
    expect(group).toMatchObject({ id: group.capacityGroupId, name: 'Venue', status: 'active', totalCapacity: 100 })

    const tier = expectOk(
      await app.call(nsid('createTicketTier'), {
        environment: 'test',
        organizerDid: organizer.did,
        event: { uri },
        capacityGroupId: group.id,
        title: 'Early bird',
        description: null,
        currency: 'EUR',
        unitAmount: 1500,
        quantityTotal: 50,
        maxPerOrder: 4,
        saleStartsAt: null,
        saleEndsAt: null,
        tierRef: strongRef(`at://${organizer.did}/community.lexicon.calendar.ticketTier/early`),
        productRef: null,
        priceRef: null,
        metadata: { sku: 'EB' },
      }),
    ).tier
    expect(tier).toMatchObject({ id: tier.tierId, title: 'Early bird', currency: 'eur', unitAmount: 1500, quantityTotal: 50, status: 'active' })

    expectOk(
      await app.call(nsid('updateTicketTier'), {
        environment: 'test',
        tierId: tier.id,
        title: 'Early bird (last ones)',
        description: 'Cheaper',
        currency: 'eur',
        unitAmount: 1600,
        maxPerOrder: 5,
        saleStartsAt: null,
        saleEndsAt: '2027-04-30T00:00:00.000Z',
        tierRef: null,
        productRef: null,
        priceRef: null,
        metadata: {},
        status: 'active',
      }),
    )
    expectOk(await app.call(nsid('updateCapacityGroup'), { environment: 'test', capacityGroupId: group.id, name: 'Venue A', totalCapacity: 90, status: 'active', metadata: {} }))

    // Queries: the client sends every parameter as a string.
    const availability = expectOk(await app.call(nsid('getTicketAvailability'), { environment: 'test', eventUri: uri }))
    expect(availability).toMatchObject({ eventId: event.id, eventUri: uri, environment: 'test', available: true })
    expect(Array.isArray(availability.tiers)).toBe(true)

    // The hold body as the client builds it: guest checkout (no buyer fields), client URLs.
    const hold = expectOk(
      await app.call(nsid('createTicketHold'), {
        environment: 'test',
        eventUri: uri,
        items: [{ tierId: tier.id, quantity: 2 }],
        returnUrl: 'https://app.example/tickets/return',
        cancelUrl: 'https://app.example/events/demo',
        idempotencyKey: `hold:${tier.id}:1`,
        metadata: { appOrderId: 'ord_1' },
      }),
    )
    for (const field of ['holdId', 'token', 'url', 'expiresAt']) expect(typeof hold[field]).toBe('string')

    const released = expectOk(await app.call(nsid('releaseTicketHold'), { environment: 'test', holdId: hold.holdId, reason: 'buyer left' }))
    expect(released.hold).toMatchObject({ id: hold.holdId, status: 'released' })

    expectOk(await app.call(nsid('archiveTicketTier'), { environment: 'test', tierId: tier.id }))
  })

  it('free claims and ticket lists with the client fields and string parameters', async () => {
    const { app, organizer } = world
    const uri = eventUri(organizer.did)
    const free = expectOk(
      await app.call(nsid('createTicketTier'), {
        organizerDid: organizer.did,
        organizerAssertionJwt: await organizer.token(nsid('createTicketTier')),
        event: { uri, title: 'Meetup' },
        title: 'RSVP',
        currency: 'usd',
        unitAmount: 0,
        quantityTotal: 20,
      }),
    ).tier
    const buyer = await newIdentityClient(world)
    const claim = expectOk(
      await app.call(nsid('claimFreeTicket'), {
        environment: 'test',
        eventUri: uri,
        tierId: free.id,
        buyerDid: buyer.did,
        buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')),
        idempotencyKey: `claim:${uri}:${buyer.did}:${free.id}`,
        metadata: { source: 'rsvp-button' },
      }),
    )
    expect(claim.claimId).toMatch(/^claim_/)
    expect(claim.tickets[0]).toMatchObject({ id: claim.tickets[0].ticketId, tierId: free.id, eventUri: uri, status: 'issued' })

    const listed = expectOk(await app.call(nsid('listBuyerTickets'), { environment: 'test', buyerDid: buyer.did, limit: '10' }))
    expect(listed.tickets.map((t: { id: string }) => t.id)).toEqual(claim.tickets.map((t: { id: string }) => t.id))
    const organizerList = expectOk(
      await app.call(nsid('listOrganizerTickets'), { environment: 'test', organizerDid: organizer.did, eventId: claim.tickets[0].eventId, limit: '10' }),
    )
    expect(organizerList.tickets).toHaveLength(1)
    expect(organizerList.tickets[0].ticketToken).toBeUndefined()
  })
})
