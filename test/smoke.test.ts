import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEventWithTier, nsid, startWorld, type World } from './helpers/world.js'

describe('smoke', () => {
  let world: World
  beforeAll(async () => {
    world = await startWorld()
  })
  afterAll(async () => {
    await world?.close()
  })
  it('holds and releases', async () => {
    const { tierId, eventId } = await createEventWithTier(world, { quantityTotal: 5 })
    const hold = await world.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity: 2 }] })
    expect(hold.status, JSON.stringify(hold.body)).toBe(200)
    const avail = await world.app.call(nsid('getTicketAvailability'), { eventId })
    expect(avail.body.tiers[0].remaining).toBe(3)
    const rel = await world.app.call(nsid('releaseTicketHold'), { holdId: hold.body.holdId })
    expect(rel.status, JSON.stringify(rel.body)).toBe(200)
    expect(rel.body.availability[0].remaining).toBe(5)
  })
  it('a method this server does not serve answers 501 MethodNotImplemented, not 500', async () => {
    const res = await world.app.call(nsid('getTicketQuote'), { ticketToken: 'atmt_unknown' })
    expect(res.status).toBe(501)
    expect(res.body.error).toBe('MethodNotImplemented')
    expect(world.service.logs()).not.toContain('"level":50')
  })
})
