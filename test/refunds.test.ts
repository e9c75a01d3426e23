// voidTickets and refundTickets over real HTTP against the real service process: free tickets
// from claims, paid tickets from the hosted checkout (the 4242 test card), capacity given back
// (as getTicketAvailability counts it), the refund recorded and sent to the test provider
// once, the events the app hears, every named refusal changing nothing, and isolation between
// apps.
//
// IdempotencyKeyInUse is not provoked here: neither method has a slow step between taking a
// key and doing the work that a test could hold open. The concurrent same-key refund accepts
// it as one of the allowed answers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expectError, expectOk, settle, type Body } from './helpers/expect.js'
import {
  buyMore,
  buyPaid,
  claimFree,
  newAppWithEvents,
  recordedEvents,
  rowsWhere,
  setEventStart,
  startSink,
  tierUsage,
} from './helpers/lifecycle.js'
import { mintServiceJwt, xrpc, type AppClient } from './helpers/index.js'
import { newApp, nsid, startWorld, type World } from './helpers/world.js'

let world: World
let otherApp: AppClient
let sink: Awaited<ReturnType<typeof startSink>>

beforeAll(async () => {
  sink = await startSink()
  world = await startWorld()
  otherApp = await newApp(world)
})
afterAll(async () => {
  await world?.close()
  await sink?.close()
})

const voidTickets = (input: Body, app: AppClient = world.app) => app.call(nsid('voidTickets'), input)
const refundTickets = (input: Body, app: AppClient = world.app) => app.call(nsid('refundTickets'), input)
const ids = (tickets: Body[]) => tickets.map((t) => t.id as string)

async function statuses(tickets: Body[], app: AppClient = world.app): Promise<string[]> {
  return Promise.all(
    tickets.map(async (t) => {
      const answer = expectOk(await app.call(nsid('verifyTicket'), { ticketToken: t.ticketToken }))
      return answer.ticket.status as string
    }),
  )
}

/** An ISO 8601 UTC timestamp (as toISOString writes it) taken while the request was under way. */
function expectTimestampWithin(value: unknown, fromMs: number, toMs: number): void {
  expect(value).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)
  const ms = Date.parse(value as string)
  expect(ms, `${value as string} within the request`).toBeGreaterThanOrEqual(fromMs)
  expect(ms, `${value as string} within the request`).toBeLessThanOrEqual(toMs)
}

const pastIso = () => new Date(Date.now() - 60 * 60 * 1000).toISOString()
const futureIso = () => new Date(Date.now() + 24 * 60 * 60 * 1000).toISOString()

describe('voidTickets', () => {
  it('voids free tickets, gives their capacity back to tier and group, and the app hears ticket.voided for each', async () => {
    const app = await newAppWithEvents(world, sink.url)
    const { eventId, tierId, tickets } = await claimFree(world, 3, { app, quantityTotal: 5, groupCapacity: 4 })
    expect(await tierUsage(app, eventId, tierId)).toMatchObject({ sold: 3, remaining: 1, groupSold: 3 })

    const sentAt = Date.now()
    const voided = expectOk(await voidTickets({ ticketIds: ids(tickets.slice(0, 2)), reason: 'duplicate signup' }, app))
    const answeredAt = Date.now()
    expect(voided.tickets).toHaveLength(2)
    for (const [index, ticket] of voided.tickets.entries()) {
      expect(ticket).toMatchObject({ id: tickets[index]!.id, status: 'voided', statusReason: 'duplicate signup' })
      expectTimestampWithin(ticket.voidedAt, sentAt, answeredAt)
      expect(ticket.ticketToken).toBeUndefined()
    }
    expect(voided.availability).toStrictEqual([{ tierId, remaining: 3 }])
    expect(await tierUsage(app, eventId, tierId)).toMatchObject({ sold: 1, remaining: 3, groupSold: 1 })

    const verified = expectOk(await app.call(nsid('verifyTicket'), { ticketToken: tickets[0]!.ticketToken }))
    expect(verified).toMatchObject({ valid: false, reason: 'voided' })
    expect(expectOk(await app.call(nsid('checkInTicket'), { ticketToken: tickets[0]!.ticketToken }))).toMatchObject({
      ok: false,
      status: 'invalid',
      reason: 'voided',
    })
    expect(await statuses(tickets, app)).toStrictEqual(['voided', 'voided', 'issued'])

    const heard = await recordedEvents(world, app.did, 'ticket.voided')
    expect(heard.map((e) => e.data.ticket.id)).toStrictEqual(ids(tickets.slice(0, 2)))
    for (const event of heard) {
      expect(event.data).toMatchObject({ eventId, reason: 'duplicate signup', ticket: { status: 'voided' } })
      expect(event.data.tickets).toStrictEqual([event.data.ticket])
    }
  })

  it('is all or nothing: one ticket it cannot void leaves every ticket and the capacity as they were', async () => {
    const { eventId, tierId, tickets } = await claimFree(world, 3)
    const checkedIn = tickets[2]!
    expectOk(await world.app.call(nsid('checkInTicket'), { ticketToken: checkedIn.ticketToken }))
    const foreign = await claimFree(world, 1, { app: otherApp })
    const before = await tierUsage(world.app, eventId, tierId)

    expectError(await voidTickets({ ticketIds: [...ids(tickets.slice(0, 2)), 'tkt_unknown'] }), 400, 'TicketNotFound', /tkt_unknown/)
    expectError(await voidTickets({ ticketIds: [tickets[0]!.id, foreign.tickets[0]!.id] }), 400, 'TicketNotFound')
    expectError(await voidTickets({ ticketIds: ids(tickets) }), 400, 'TicketAlreadyCheckedIn', new RegExp(checkedIn.id))
    expectError(await voidTickets({ ticketIds: [tickets[0]!.id, tickets[0]!.id] }), 400, 'InvalidRequest', /more than once/)
    expectError(await voidTickets({ ticketIds: [] }), 400, 'InvalidRequest', /ticketIds/)
    expectError(await voidTickets({ ticketIds: [tickets[0]!.id] }, otherApp), 400, 'TicketNotFound')

    expect(await statuses(tickets)).toStrictEqual(['issued', 'issued', 'checked_in'])
    expect(await statuses(foreign.tickets, otherApp)).toStrictEqual(['issued'])
    expect(await tierUsage(world.app, eventId, tierId)).toStrictEqual(before)
  })

  it('answers TicketAlreadyVoided for a voided ticket, TicketAlreadyRefunded for a refunded one', async () => {
    const free = await claimFree(world, 2)
    expectOk(await voidTickets({ ticketIds: [free.tickets[0]!.id] }))
    expectError(await voidTickets({ ticketIds: ids(free.tickets) }), 400, 'TicketAlreadyVoided', new RegExp(free.tickets[0]!.id))
    expect(await statuses(free.tickets)).toStrictEqual(['voided', 'issued'])

    const paid = await buyPaid(world, 1)
    expectOk(await refundTickets({ paymentId: paid.paymentId }))
    expectError(await voidTickets({ ticketIds: ids(paid.tickets) }), 400, 'TicketAlreadyRefunded')
  })

  it('refuses after the event started (EventAlreadyStarted) unless forced', async () => {
    const { eventId, tierId, tickets } = await claimFree(world, 1)
    await setEventStart(world, eventId, pastIso())
    expectError(await voidTickets({ ticketIds: ids(tickets) }), 400, 'EventAlreadyStarted', /force/)
    expect(await statuses(tickets)).toStrictEqual(['issued'])
    expect((await tierUsage(world.app, eventId, tierId)).sold).toBe(1)

    expectOk(await voidTickets({ ticketIds: ids(tickets), force: true }))
    expect(await statuses(tickets)).toStrictEqual(['voided'])
    expect((await tierUsage(world.app, eventId, tierId)).sold).toBe(0)
  })

  it('with an idempotencyKey answers a retry with the first result (reused: true) and a different input with IdempotencyKeyMismatch', async () => {
    const { eventId, tierId, tickets } = await claimFree(world, 2)
    const key = `void-${tickets[0]!.id}`
    const first = expectOk(await voidTickets({ ticketIds: [tickets[0]!.id], idempotencyKey: key }))
    const retry = expectOk(await voidTickets({ ticketIds: [tickets[0]!.id], idempotencyKey: key }))
    expect(retry).toStrictEqual({ ...first, reused: true })
    expectError(await voidTickets({ ticketIds: [tickets[1]!.id], idempotencyKey: key }), 409, 'IdempotencyKeyMismatch')
    expect(await statuses(tickets)).toStrictEqual(['voided', 'issued'])
    expect((await tierUsage(world.app, eventId, tierId)).sold).toBe(1)
  })
})

describe('refundTickets', () => {
  it('refunds a whole payment: one refund, sent to the provider, tickets refunded, capacity back, ticket.refunded for each', async () => {
    const app = await newAppWithEvents(world, sink.url)
    const { eventId, tierId, paymentId, tickets } = await buyPaid(world, 3, { app, unitAmount: 1500, quantityTotal: 5, groupCapacity: 4 })
    expect(await tierUsage(app, eventId, tierId)).toMatchObject({ sold: 3, remaining: 1, groupSold: 3 })

    const sentAt = Date.now()
    const answer = expectOk(await refundTickets({ paymentId, reason: 'event moved' }, app))
    const answeredAt = Date.now()
    expect(answer.refunds).toHaveLength(1)
    const refund = answer.refunds[0]
    expect(refund).toMatchObject({
      refundId: refund.id,
      paymentId,
      amount: 4500,
      currency: 'usd',
      reason: 'event moved',
      forced: false,
      payment: { id: paymentId, paymentId, amount: 4500, refundedAmount: 4500, currency: 'usd', status: 'refunded' },
    })
    expect(refund.id).toMatch(/^ref_/)
    expect([...refund.ticketIds].sort()).toStrictEqual(ids(tickets).sort())
    for (const ticket of answer.tickets) {
      expect(ticket).toMatchObject({ status: 'refunded', refundId: refund.id, paymentId, statusReason: 'event moved' })
      expectTimestampWithin(ticket.refundedAt, sentAt, answeredAt)
    }
    expect(answer.availability).toStrictEqual([{ tierId, remaining: 4 }])
    expect(await tierUsage(app, eventId, tierId)).toMatchObject({ sold: 0, remaining: 4, groupSold: 0 })
    expect(await statuses(tickets, app)).toStrictEqual(['refunded', 'refunded', 'refunded'])
    expect(expectOk(await app.call(nsid('verifyTicket'), { ticketToken: tickets[0]!.ticketToken }))).toMatchObject({
      valid: false,
      reason: 'refunded',
    })

    const [row] = await rowsWhere(world, 'refund', 'paymentId', paymentId)
    expect(row).toMatchObject({ id: refund.id, amount: 4500, currency: 'usd', forced: 0 })
    expect(row!.providerRef).toMatch(/^test_refund_/)
    expect((await rowsWhere(world, 'payment', 'id', paymentId))[0]).toMatchObject({ refundedAmount: 4500, status: 'refunded' })

    const heard = await recordedEvents(world, app.did, 'ticket.refunded')
    expect(heard.map((e) => e.data.ticket.id).sort()).toStrictEqual(ids(tickets).sort())
    for (const event of heard) {
      expect(event.data).toMatchObject({ eventId, paymentId, refundId: refund.id, amount: 1500, currency: 'usd', ticket: { status: 'refunded' } })
      expect(event.data.tickets).toStrictEqual([event.data.ticket])
    }
  })

  it('refunds some tickets (partially_refunded), then the rest of the payment; a third time is TicketAlreadyRefunded', async () => {
    const { eventId, tierId, paymentId, tickets } = await buyPaid(world, 3)
    const part = expectOk(await refundTickets({ ticketIds: [tickets[0]!.id] }))
    expect(part.refunds[0]).toMatchObject({ amount: 2500, ticketIds: [tickets[0]!.id], payment: { refundedAmount: 2500, status: 'partially_refunded' } })
    expect((await tierUsage(world.app, eventId, tierId)).sold).toBe(2)

    const rest = expectOk(await refundTickets({ paymentId }))
    expect(rest.refunds[0]).toMatchObject({ amount: 5000, payment: { amount: 7500, refundedAmount: 7500, status: 'refunded' } })
    expect([...rest.refunds[0].ticketIds].sort()).toStrictEqual(ids(tickets.slice(1)).sort())
    expect((await tierUsage(world.app, eventId, tierId)).sold).toBe(0)

    expectError(await refundTickets({ paymentId }), 400, 'TicketAlreadyRefunded', new RegExp(paymentId))
    expectError(await refundTickets({ ticketIds: [tickets[1]!.id] }), 400, 'TicketAlreadyRefunded', new RegExp(tickets[1]!.id))
    expect(await rowsWhere(world, 'refund', 'paymentId', paymentId)).toHaveLength(2)
  })

  it('refunds tickets of several payments in one call, one refund per payment', async () => {
    const first = await buyPaid(world, 1)
    const second = await buyMore(world, first.tierId, 2)
    const answer = expectOk(await refundTickets({ ticketIds: [first.tickets[0]!.id, second.tickets[0]!.id] }))
    expect(answer.refunds.map((r: Body) => [r.paymentId, r.amount, r.payment.status])).toStrictEqual([
      [first.paymentId, 2500, 'refunded'],
      [second.paymentId, 2500, 'partially_refunded'],
    ])
    expect((await tierUsage(world.app, first.eventId, first.tierId)).sold).toBe(1)
  })

  it('refuses a checked-in ticket (TicketAlreadyCheckedIn); by paymentId it refunds the others only', async () => {
    const { paymentId, tickets, eventId, tierId } = await buyPaid(world, 2)
    expectOk(await world.app.call(nsid('checkInTicket'), { ticketToken: tickets[0]!.ticketToken }))
    expectError(await refundTickets({ ticketIds: ids(tickets) }), 400, 'TicketAlreadyCheckedIn', new RegExp(tickets[0]!.id))
    expect(await statuses(tickets)).toStrictEqual(['checked_in', 'issued'])

    const answer = expectOk(await refundTickets({ paymentId }))
    expect(answer.refunds[0]).toMatchObject({ ticketIds: [tickets[1]!.id], amount: 2500, payment: { status: 'partially_refunded' } })
    expect(await statuses(tickets)).toStrictEqual(['checked_in', 'refunded'])
    expect((await tierUsage(world.app, eventId, tierId)).sold).toBe(1)
    // Nothing left that may be refunded: the one left was admitted.
    expectError(await refundTickets({ paymentId }), 400, 'TicketAlreadyCheckedIn')
  })

  it('refunds a voided paid ticket without giving its capacity back twice', async () => {
    const { paymentId, tickets, eventId, tierId } = await buyPaid(world, 2)
    expectOk(await voidTickets({ ticketIds: [tickets[0]!.id], reason: 'no-show policy' }))
    expect((await tierUsage(world.app, eventId, tierId)).sold).toBe(1)
    const answer = expectOk(await refundTickets({ paymentId }))
    expect(answer.refunds[0]).toMatchObject({ amount: 5000, payment: { status: 'refunded' } })
    expect(answer.tickets.find((t: Body) => t.id === tickets[0]!.id)).toMatchObject({ status: 'refunded', statusReason: 'no-show policy' })
    expect((await tierUsage(world.app, eventId, tierId)).sold).toBe(0)
  })

  it('answers TicketNotRefundable for a free ticket, PaymentNotFound and TicketNotFound for what is not the app\'s, changing nothing', async () => {
    const free = await claimFree(world, 1)
    expectError(await refundTickets({ ticketIds: ids(free.tickets) }), 400, 'TicketNotRefundable', /void/)
    expect(await statuses(free.tickets)).toStrictEqual(['issued'])

    const foreign = await buyPaid(world, 1, { app: otherApp })
    expectError(await refundTickets({ paymentId: foreign.paymentId }), 400, 'PaymentNotFound', new RegExp(foreign.paymentId))
    expectError(await refundTickets({ paymentId: 'pay_unknown' }), 400, 'PaymentNotFound')
    expectError(await refundTickets({ ticketIds: ids(foreign.tickets) }), 400, 'TicketNotFound')
    expectError(await refundTickets({ paymentId: foreign.paymentId, environment: 'live' }, otherApp), 400, 'LivePaymentsNotConfigured')
    expect(await statuses(foreign.tickets, otherApp)).toStrictEqual(['issued'])
    expect(await rowsWhere(world, 'refund', 'paymentId', foreign.paymentId)).toHaveLength(0)
  })

  it('answers LivePaymentsNotConfigured in live, and InvalidRequest for both or neither of paymentId and ticketIds', async () => {
    const { paymentId, tickets } = await buyPaid(world, 1)
    expectError(await refundTickets({ paymentId, environment: 'live' }), 400, 'LivePaymentsNotConfigured', /live payments are not configured/)
    expectError(await refundTickets({ paymentId, ticketIds: ids(tickets) }), 400, 'InvalidRequest', /paymentId/)
    expectError(await refundTickets({}), 400, 'InvalidRequest', /paymentId/)
    expect(await statuses(tickets)).toStrictEqual(['issued'])
  })

  it('refuses after the event started (EventAlreadyStarted), then refunds with force: true (forced)', async () => {
    const { eventId, tierId, paymentId, tickets } = await buyPaid(world, 1)
    await setEventStart(world, eventId, futureIso())
    await setEventStart(world, eventId, pastIso())
    expectError(await refundTickets({ paymentId }), 400, 'EventAlreadyStarted', new RegExp(eventId))
    expect(await statuses(tickets)).toStrictEqual(['issued'])
    expect(await rowsWhere(world, 'refund', 'paymentId', paymentId)).toHaveLength(0)

    const answer = expectOk(await refundTickets({ paymentId, force: true }))
    expect(answer.refunds[0]).toMatchObject({ forced: true, payment: { status: 'refunded' } })
    expect((await rowsWhere(world, 'refund', 'paymentId', paymentId))[0]).toMatchObject({ forced: 1 })
    expect((await tierUsage(world.app, eventId, tierId)).sold).toBe(0)
  })

  it('with an idempotencyKey answers a retry with the first result (reused: true) and refunds once', async () => {
    const { paymentId, tickets } = await buyPaid(world, 2)
    const key = `refund-${paymentId}`
    const first = expectOk(await refundTickets({ paymentId, idempotencyKey: key }))
    const retry = expectOk(await refundTickets({ paymentId, idempotencyKey: key }))
    expect(retry).toStrictEqual({ ...first, reused: true })
    expectError(await refundTickets({ ticketIds: [tickets[0]!.id], idempotencyKey: key }), 409, 'IdempotencyKeyMismatch')
    const rows = await rowsWhere(world, 'refund', 'paymentId', paymentId)
    expect(rows).toHaveLength(1)
    expect(rows[0]!.providerRef).toMatch(/^test_refund_/)
  })

  it('10 concurrent refunds of one payment: one refunds, the others answer TicketAlreadyRefunded; the money goes back once', async () => {
    const { paymentId } = await buyPaid(world, 2)
    const jwts = await Promise.all(
      Array.from({ length: 10 }, () =>
        mintServiceJwt({ keypair: world.app.identity.keypair, iss: world.app.did, aud: world.service.serviceDid, lxm: nsid('refundTickets') }),
      ),
    )
    const answers = await Promise.all(
      jwts.map((jwt) => settle(xrpc(world.service.url, nsid('refundTickets'), { body: { paymentId }, token: jwt }))),
    )
    const tally = answers.map((a) => (a.status === 200 ? 'ok' : `${a.status} ${a.body?.error ?? a.error}`))
    expect(tally.filter((t) => t === 'ok'), JSON.stringify(tally)).toHaveLength(1)
    expect(tally.filter((t) => t === '400 TicketAlreadyRefunded'), JSON.stringify(tally)).toHaveLength(9)
    expect(await rowsWhere(world, 'refund', 'paymentId', paymentId)).toHaveLength(1)
    expect((await rowsWhere(world, 'payment', 'id', paymentId))[0]).toMatchObject({ refundedAmount: 5000, status: 'refunded' })
  })

  it('10 concurrent retries under one idempotencyKey refund once; each answers that refund or IdempotencyKeyInUse', async () => {
    const { paymentId } = await buyPaid(world, 1)
    const jwts = await Promise.all(
      Array.from({ length: 10 }, () =>
        mintServiceJwt({ keypair: world.app.identity.keypair, iss: world.app.did, aud: world.service.serviceDid, lxm: nsid('refundTickets') }),
      ),
    )
    const body = { paymentId, idempotencyKey: `burst-${paymentId}` }
    const answers = await Promise.all(jwts.map((jwt) => settle(xrpc(world.service.url, nsid('refundTickets'), { body, token: jwt }))))
    const fresh = answers.filter((a) => a.status === 200 && a.body.reused === undefined)
    expect(fresh).toHaveLength(1)
    for (const answer of answers) {
      if (answer === fresh[0]) continue
      if (answer.status === 200) expect(answer.body).toStrictEqual({ ...fresh[0]!.body, reused: true })
      else expectError(answer, 409, 'IdempotencyKeyInUse')
    }
    expect(await rowsWhere(world, 'refund', 'paymentId', paymentId)).toHaveLength(1)
  })
})
