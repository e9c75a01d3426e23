// verifyTicket, checkInTicket and check-in lists over real HTTP against the real service
// process (two workers sharing the database): what a door scanner sees, admission once per
// list under concurrent scans, idempotent retries, and isolation between apps.
//
// IdempotencyKeyInUse (checkInTicket) is not provoked here: the method has no slow step
// between taking a key and doing the work that a test could hold open. The concurrent
// same-key test accepts it as one of the allowed answers.
import Sqlite from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expectError, expectOk, settle, type Body } from './helpers/expect.js'
import { claimFree, newAppWithEvents, recordedEvents, rowsWhere, startSink } from './helpers/lifecycle.js'
import { mintServiceJwt, onPostgres, xrpc, type AppClient } from './helpers/index.js'
import { compiled, compileOnly, explain, type Statement } from './helpers/plans.js'
import { createEventWithTier, newApp, nsid, startWorld, type World } from './helpers/world.js'
import { CHECKIN_QUERIES } from '../src/tickets/checkins.js'

let world: World
let otherApp: AppClient
let sink: Awaited<ReturnType<typeof startSink>>

beforeAll(async () => {
  sink = await startSink()
  world = await startWorld({ workers: 2 })
  otherApp = await newApp(world)
})
afterAll(async () => {
  await world?.close()
  await sink?.close()
})

const verify = (input: Body, app: AppClient = world.app) => app.call(nsid('verifyTicket'), input)
const checkIn = (input: Body, app: AppClient = world.app) => app.call(nsid('checkInTicket'), input)

/** The event's own check-in list, as verifyTicket's event summary names it. */
async function ownListOf(ticketToken: string, app: AppClient = world.app): Promise<string> {
  return expectOk(await verify({ ticketToken }, app)).event.checkInListId
}

describe('verifyTicket', () => {
  it('answers a valid ticket with the ticket, its event and tier, and no scan token', async () => {
    const { eventId, tierId, tickets } = await claimFree(world)
    const ticket = tickets[0]!
    const answer = expectOk(await verify({ ticketToken: ticket.ticketToken, eventId }))
    expect(answer.valid).toBe(true)
    expect(answer.reason).toBeUndefined()
    expect(answer.ticket).toMatchObject({ id: ticket.id, ticketId: ticket.id, eventId, tierId, status: 'issued' })
    expect(answer.ticket.ticketToken).toBeUndefined()
    expect(answer.event).toMatchObject({ id: eventId, eventId, appDid: world.app.did, environment: 'test' })
    expect(answer.event.checkInListId).toMatch(/^cil_/)
    expect(answer.tier).toMatchObject({ id: tierId, tierId, unitAmount: 0, sold: 1 })
  })

  it('answers not_found, never an error, for an unknown token, another app\'s token, and the other environment', async () => {
    const { tickets } = await claimFree(world)
    const token = tickets[0]!.ticketToken
    for (const [input, app] of [
      [{ ticketToken: 'atmt_unknown' }, world.app],
      [{ ticketToken: token }, otherApp],
      [{ ticketToken: token, environment: 'live' }, world.app],
    ] as Array<[Body, AppClient]>) {
      const answer = expectOk(await verify(input, app))
      expect(answer).toStrictEqual({ valid: false, reason: 'not_found' })
    }
    // Nothing the other app did changed the ticket.
    expect(expectOk(await verify({ ticketToken: token })).valid).toBe(true)
  })

  it('answers wrong_event for another event of the app, checked_in once admitted at the event\'s own list only', async () => {
    const { eventId, tickets } = await claimFree(world, 2)
    const [first, second] = tickets as [Body, Body]
    const other = await createEventWithTier(world, { unitAmount: 0, quantityTotal: 1 })

    const wrong = expectOk(await verify({ ticketToken: first.ticketToken, eventId: other.eventId }))
    expect(wrong).toMatchObject({ valid: false, reason: 'wrong_event', ticket: { id: first.id, eventId } })

    // Admitted at a side list: still valid at the main entrance.
    const side = expectOk(await world.app.call(nsid('createCheckInList'), { eventId, name: 'Side door' })).checkInList
    expectOk(await checkIn({ ticketToken: second.ticketToken, checkInListId: side.id }))
    expect(expectOk(await verify({ ticketToken: second.ticketToken, eventId })).valid).toBe(true)

    expectOk(await checkIn({ ticketToken: first.ticketToken }))
    const admitted = expectOk(await verify({ ticketToken: first.ticketToken, eventId }))
    expect(admitted).toMatchObject({ valid: false, reason: 'checked_in', ticket: { id: first.id, status: 'checked_in' } })
  })
})

describe('checkInTicket', () => {
  it('admits once at the event\'s own list; a second scan answers the first admission; the app hears ticket.checked-in', async () => {
    const app = await newAppWithEvents(world, sink.url)
    const { eventId, tickets } = await claimFree(world, 1, { app })
    const ticket = tickets[0]!
    const ownList = await ownListOf(ticket.ticketToken, app)

    const first = expectOk(await checkIn({ ticketToken: ticket.ticketToken }, app))
    expect(first).toMatchObject({ ok: true, status: 'checked_in', ticket: { id: ticket.id, status: 'checked_in' } })
    expect(first.checkIn.id).toMatch(/^chk_/)
    expect(first.checkIn.checkInListId).toBe(ownList)
    expect(first.ticket.checkedInAt).toBe(first.checkIn.checkedInAt)
    expect(first.ticket.ticketToken).toBeUndefined()

    const second = expectOk(await checkIn({ ticketToken: ticket.ticketToken }, app))
    expect(second).toMatchObject({ ok: false, status: 'already_checked_in', checkIn: first.checkIn })
    expect(second.reused).toBeUndefined()

    const organizerView = expectOk(await app.call(nsid('listOrganizerTickets'), { eventId })).tickets
    expect(organizerView).toMatchObject([{ id: ticket.id, status: 'checked_in', checkedInAt: first.checkIn.checkedInAt }])

    const heard = await recordedEvents(world, app.did, 'ticket.checked-in')
    expect(heard).toHaveLength(1)
    expect(heard[0]!.data).toMatchObject({ eventId, ticket: { id: ticket.id, status: 'checked_in' }, checkIn: first.checkIn })
    expect(heard[0]!.data.tickets).toStrictEqual([heard[0]!.data.ticket])
  })

  it('admits a ticket once per list: the event\'s own list and a list created for it are separate', async () => {
    const { eventId, tickets } = await claimFree(world)
    const token = tickets[0]!.ticketToken
    const vip = expectOk(await world.app.call(nsid('createCheckInList'), { eventId, name: 'VIP lounge' })).checkInList

    const atDoor = expectOk(await checkIn({ ticketToken: token }))
    const atVip = expectOk(await checkIn({ ticketToken: token, checkInListId: vip.id }))
    expect(atDoor.ok).toBe(true)
    expect(atVip).toMatchObject({ ok: true, status: 'checked_in', checkIn: { checkInListId: vip.id } })
    expect(atVip.checkIn.id).not.toBe(atDoor.checkIn.id)
    // The ticket keeps the time of its first admission.
    expect(atVip.ticket.checkedInAt).toBe(atDoor.checkIn.checkedInAt)
    expect(expectOk(await checkIn({ ticketToken: token, checkInListId: vip.id }))).toMatchObject({
      ok: false,
      status: 'already_checked_in',
      checkIn: atVip.checkIn,
    })
  })

  it('answers invalid with a reason for an unknown token, another app\'s token and a list of another event, and admits nothing', async () => {
    const { tickets } = await claimFree(world)
    const ticket = tickets[0]!
    const otherEvent = await createEventWithTier(world, { unitAmount: 0, quantityTotal: 1 })
    const otherList = expectOk(await world.app.call(nsid('createCheckInList'), { eventId: otherEvent.eventId, name: 'Elsewhere' }))
      .checkInList

    expect(expectOk(await checkIn({ ticketToken: 'atmt_unknown' }))).toStrictEqual({ ok: false, status: 'invalid', reason: 'not_found' })
    expect(expectOk(await checkIn({ ticketToken: ticket.ticketToken }, otherApp))).toStrictEqual({
      ok: false,
      status: 'invalid',
      reason: 'not_found',
    })
    expect(expectOk(await checkIn({ ticketToken: ticket.ticketToken, environment: 'live' }))).toMatchObject({ reason: 'not_found' })
    expect(expectOk(await checkIn({ ticketToken: ticket.ticketToken, checkInListId: otherList.id }))).toMatchObject({
      ok: false,
      status: 'invalid',
      reason: 'wrong_event',
      ticket: { id: ticket.id, status: 'issued' },
    })
    expect(await rowsWhere(world, 'checkIn', 'ticketId', ticket.id)).toHaveLength(0)
    // The ticket is still admissible.
    expect(expectOk(await checkIn({ ticketToken: ticket.ticketToken })).ok).toBe(true)
  })

  it('answers CheckInListNotFound for an unknown list and another app\'s list, and admits nothing', async () => {
    const { tickets } = await claimFree(world)
    const ticket = tickets[0]!
    const foreign = await claimFree(world, 1, { app: otherApp })
    const foreignList = await ownListOf(foreign.tickets[0]!.ticketToken, otherApp)

    expectError(await checkIn({ ticketToken: ticket.ticketToken, checkInListId: 'cil_unknown' }), 400, 'CheckInListNotFound', /cil_unknown/)
    expectError(await checkIn({ ticketToken: ticket.ticketToken, checkInListId: foreignList }), 400, 'CheckInListNotFound')
    expect(await rowsWhere(world, 'checkIn', 'ticketId', ticket.id)).toHaveLength(0)
    expect(expectOk(await verify({ ticketToken: ticket.ticketToken })).valid).toBe(true)
  })

  it('with an idempotencyKey answers a retry with the first result (reused: true), and a different input with IdempotencyKeyMismatch', async () => {
    const { tickets } = await claimFree(world, 2)
    const [a, b] = tickets as [Body, Body]
    const key = `scan-${a.id}`
    const first = expectOk(await checkIn({ ticketToken: a.ticketToken, idempotencyKey: key, metadata: { gate: 3 } }))
    expect(first).toMatchObject({ ok: true, status: 'checked_in' })
    const retry = expectOk(await checkIn({ ticketToken: a.ticketToken, idempotencyKey: key, metadata: { gate: 3 } }))
    expect(retry).toStrictEqual({ ...first, reused: true })
    expect(await rowsWhere(world, 'checkIn', 'ticketId', a.id)).toHaveLength(1)

    expectError(await checkIn({ ticketToken: b.ticketToken, idempotencyKey: key }), 409, 'IdempotencyKeyMismatch')
    expect(await rowsWhere(world, 'checkIn', 'ticketId', b.id)).toHaveLength(0)

    // A token spent once may carry an exact retry, and nothing else.
    const token = await world.app.token(nsid('checkInTicket'))
    const input = { ticketToken: b.ticketToken, idempotencyKey: `scan-${b.id}` }
    const once = expectOk(await xrpc(world.service.url, nsid('checkInTicket'), { body: input, token }))
    expect(once.ok).toBe(true)
    const exact = expectOk(await xrpc(world.service.url, nsid('checkInTicket'), { body: input, token }))
    expect(exact).toStrictEqual({ ...once, reused: true })
    const again = await xrpc(world.service.url, nsid('checkInTicket'), { body: { ...input, idempotencyKey: `scan-${b.id}-y` }, token })
    expectError(again, 401, 'JwtReplayed')
  })

  it('50 concurrent scans of one token: exactly one admits, 49 answer already_checked_in with that first admission', async () => {
    const app = await newAppWithEvents(world, sink.url)
    const { tickets } = await claimFree(world, 1, { app })
    const token = tickets[0]!.ticketToken
    const jwts = await Promise.all(
      Array.from({ length: 50 }, () =>
        mintServiceJwt({ keypair: app.identity.keypair, iss: app.did, aud: world.service.serviceDid, lxm: nsid('checkInTicket') }),
      ),
    )
    const answers = await Promise.all(
      jwts.map((jwt) => settle(xrpc(world.service.url, nsid('checkInTicket'), { body: { ticketToken: token }, token: jwt }))),
    )
    const statuses = answers.map((a) => (a.status === 200 ? a.body.status : `${a.status} ${a.body?.error ?? a.error}`))
    const admitted = answers.filter((a) => a.status === 200 && a.body.ok === true)
    const refused = answers.filter((a) => a.status === 200 && a.body.status === 'already_checked_in')
    expect(admitted, JSON.stringify(statuses)).toHaveLength(1)
    expect(refused, JSON.stringify(statuses)).toHaveLength(49)
    const firstCheckIn = admitted[0]!.body.checkIn
    for (const answer of refused) {
      expect(answer.body.ok).toBe(false)
      expect(answer.body.checkIn).toStrictEqual(firstCheckIn)
    }
    expect(await rowsWhere(world, 'checkIn', 'ticketId', tickets[0]!.id)).toHaveLength(1)
    expect(await recordedEvents(world, app.did, 'ticket.checked-in')).toHaveLength(1)
  })

  it('20 concurrent retries under one idempotencyKey admit once; each answers that admission or IdempotencyKeyInUse', async () => {
    const { tickets } = await claimFree(world)
    const token = tickets[0]!.ticketToken
    const jwts = await Promise.all(
      Array.from({ length: 20 }, () =>
        mintServiceJwt({ keypair: world.app.identity.keypair, iss: world.app.did, aud: world.service.serviceDid, lxm: nsid('checkInTicket') }),
      ),
    )
    const body = { ticketToken: token, idempotencyKey: `burst-${tickets[0]!.id}` }
    const answers = await Promise.all(jwts.map((jwt) => settle(xrpc(world.service.url, nsid('checkInTicket'), { body, token: jwt }))))
    const fresh = answers.filter((a) => a.status === 200 && a.body.reused === undefined)
    expect(fresh).toHaveLength(1)
    expect(fresh[0]!.body.ok).toBe(true)
    for (const answer of answers) {
      if (answer === fresh[0]) continue
      if (answer.status === 200) expect(answer.body).toStrictEqual({ ...fresh[0]!.body, reused: true })
      else expectError(answer, 409, 'IdempotencyKeyInUse')
    }
    expect(await rowsWhere(world, 'checkIn', 'ticketId', tickets[0]!.id)).toHaveLength(1)
  })
})

describe('check-in lists', () => {
  it('createCheckInList adds a list; listCheckInLists answers the event\'s own first, with admission counts, page by page', async () => {
    const { eventId, tickets } = await claimFree(world, 2)
    const ownList = await ownListOf(tickets[0]!.ticketToken)
    const created = expectOk(await world.app.call(nsid('createCheckInList'), { eventId, name: 'Balcony' })).checkInList
    expect(created).toMatchObject({ checkInListId: created.id, eventId, name: 'Balcony', isEventDefault: false, checkedInCount: 0 })
    expect(created.id).toMatch(/^cil_/)
    const second = expectOk(await world.app.call(nsid('createCheckInList'), { eventId, name: 'Stage door' })).checkInList

    for (const t of tickets) expectOk(await checkIn({ ticketToken: t.ticketToken }))
    expectOk(await checkIn({ ticketToken: tickets[0]!.ticketToken, checkInListId: second.id }))

    const all = expectOk(await world.app.call(nsid('listCheckInLists'), { eventId }))
    expect(all.cursor).toBeUndefined()
    expect(all.checkInLists[0]).toMatchObject({ id: ownList, isEventDefault: true, checkedInCount: 2, name: 'Main entrance' })
    const others = all.checkInLists.slice(1)
    expect(others.map((l: Body) => l.id).sort()).toStrictEqual([created.id, second.id].sort())
    expect(others.find((l: Body) => l.id === second.id).checkedInCount).toBe(1)

    const paged: string[] = []
    let cursor: string | undefined
    do {
      const page = expectOk(await world.app.call(nsid('listCheckInLists'), { eventId, limit: 1, cursor }))
      expect(page.checkInLists.length).toBeLessThanOrEqual(1)
      paged.push(...page.checkInLists.map((l: Body) => l.id))
      cursor = page.cursor
    } while (cursor)
    expect(paged).toStrictEqual(all.checkInLists.map((l: Body) => l.id))
  })

  it('createCheckInList with an idempotencyKey answers a retry with the same list (reused: true)', async () => {
    const { eventId } = await claimFree(world)
    const input = { eventId, name: 'Press', idempotencyKey: `press-${eventId}` }
    const first = expectOk(await world.app.call(nsid('createCheckInList'), input))
    const retry = expectOk(await world.app.call(nsid('createCheckInList'), input))
    expect(retry).toStrictEqual({ ...first, reused: true })
    expectError(await world.app.call(nsid('createCheckInList'), { ...input, name: 'Crew' }), 409, 'IdempotencyKeyMismatch')
    expect(expectOk(await world.app.call(nsid('listCheckInLists'), { eventId })).checkInLists).toHaveLength(2)
  })

  it('answer EventNotFound for another app\'s event and an unknown one, creating nothing', async () => {
    const foreign = await claimFree(world, 1, { app: otherApp })
    for (const eventId of [foreign.eventId, 'evt_unknown']) {
      expectError(await world.app.call(nsid('createCheckInList'), { eventId, name: 'Mine now' }), 400, 'EventNotFound', new RegExp(eventId))
      expectError(await world.app.call(nsid('listCheckInLists'), { eventId }), 400, 'EventNotFound')
    }
    expect(expectOk(await otherApp.call(nsid('listCheckInLists'), { eventId: foreign.eventId })).checkInLists).toHaveLength(1)
  })

  it('refuses a cursor it did not give out, and a name the schema does not allow', async () => {
    const { eventId } = await claimFree(world)
    expectError(await world.app.call(nsid('listCheckInLists'), { eventId, cursor: 'bm90LWEtY3Vyc29y' }), 400, 'InvalidRequest', /cursor/)
    expectError(await world.app.call(nsid('createCheckInList'), { eventId, name: '' }), 400, 'InvalidRequest', /name/)
    expect(expectOk(await world.app.call(nsid('listCheckInLists'), { eventId })).checkInLists).toHaveLength(1)
  })
})

// EXPLAIN QUERY PLAN and its wording are SQLite's.
describe.skipIf(onPostgres())('query plans of the door', () => {
  // The statements src/tickets/checkins.ts runs (its exported builders, compiled as the service
  // compiles them), planned on the service's own database.
  const scope = { appDid: 'did:plc:x', environment: 'test' as const }
  const queries: Array<[string, Statement]> = [
    ['ticket by scan token', compiled(CHECKIN_QUERIES.ticketByToken(compileOnly, scope, 'atmt_x'))],
    ['admission of a ticket at a list', compiled(CHECKIN_QUERIES.admission(compileOnly, 'tkt_x', 'cil_x'))],
    ['lists of an event with their counts', compiled(CHECKIN_QUERIES.listsOfEvent(compileOnly, { id: 'evt_x', checkInListId: 'cil_x' }, { limit: 50 }))],
    [
      'lists of an event with their counts, next page',
      compiled(CHECKIN_QUERIES.listsOfEvent(compileOnly, { id: 'evt_x', checkInListId: 'cil_x' }, { after: 'cil_y', limit: 50 })),
    ],
  ]
  for (const [name, statement] of queries) {
    it(`${name}: searched through an index, never a table scan`, () => {
      const db = new Sqlite(world.service.dbPath, { readonly: true, fileMustExist: true })
      try {
        const plan = explain(db, statement).map((row) => row.detail)
        console.log(`${name}:\n  ${statement.sql}\n  ${plan.join('\n  ')}`)
        expect(plan.filter((detail) => /^SCAN /.test(detail)), plan.join('; ')).toStrictEqual([])
        expect(plan.some((detail) => /^SEARCH .* USING /.test(detail)), plan.join('; ')).toBe(true)
      } finally {
        db.close()
      }
    })
  }
})
