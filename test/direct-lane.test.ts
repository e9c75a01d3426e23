// JSON procedures are served by a direct node:http lane when the request is plain (a
// Content-Length, UTF-8 JSON), and by express + xrpc-server otherwise (a chunked body, say).
// Both lanes must answer alike: the same request sent both ways gets the same status, error
// name and message, and the same answer shape; auth is still decided before the body. The
// service logs which lane served each request (at debug), so these tests also check that each
// request really went the way it was meant to.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { corruptSignature, postFramed, type AppClient, type FramedAnswer } from './helpers/index.js'
import { createEventWithTier, newApp, newIdentityClient, nsid, registerApp, startWorld, type World } from './helpers/world.js'

let world: World
let tierId: string
let eventId: string
let freeTierId: string
/** An identity the operator never registered. */
let stranger: AppClient | undefined
let buyer: AppClient | undefined
/** A registered app whose tickets module the operator turned off. */
let disabledApp: AppClient

beforeAll(async () => {
  world = await startWorld({ logLevel: 'debug' })
  ;({ tierId, eventId } = await createEventWithTier(world, { quantityTotal: 1000, unitAmount: 1500 }))
  ;({ tierId: freeTierId } = await createEventWithTier(world, { quantityTotal: 1000, unitAmount: 0 }))
  disabledApp = await newApp(world)
  const disabled = await registerApp(world.service, { did: disabledApp.did, ticketsEnabled: false })
  expect(disabled.status).toBe(200)
})
afterAll(async () => {
  await world?.close()
})

type Answer = FramedAnswer

/**
 * The lane named by the service's log line of the one request to `path` logged after line
 * `linesBefore` (a line may reach the test's pipe a moment after its answer).
 */
async function laneOf(path: string, linesBefore: number): Promise<unknown> {
  const bare = path.split('?', 1)[0]
  const lines = () =>
    world.service
      .jsonLogs()
      .slice(linesBefore)
      .filter((line) => line.msg === 'request' && line.path === bare)
  for (let attempt = 0; attempt < 250 && lines().length === 0; attempt++) await new Promise((resolve) => setTimeout(resolve, 20))
  expect(lines()).toHaveLength(1)
  return lines()[0]!.lane
}

/**
 * The number of log lines once no more have arrived for a while: the lines of requests sent
 * before (a burst of them, say) may still be on their way through the pipe, and must not be
 * counted as this request's.
 */
async function settledLogLength(): Promise<number> {
  let length = world.service.jsonLogs().length
  for (let attempt = 0; attempt < 50; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    const now = world.service.jsonLogs().length
    if (now === length) return now
    length = now
  }
  return length
}

/** `post`, and checks that the lane that served it is the one that should have. */
async function postVia(lane: 'direct' | 'express', path: string, headers: Record<string, string>, body: string, framing: 'length' | 'chunked'): Promise<Answer> {
  const linesBefore = await settledLogLength()
  const answer = await post(path, headers, body, framing)
  expect(await laneOf(path, linesBefore), `${framing} ${path}`).toBe(lane)
  return answer
}

function post(path: string, headers: Record<string, string>, body: string, framing: 'length' | 'chunked'): Promise<Answer> {
  return postFramed(new URL(path, world.service.url), headers, body, framing)
}

interface Case {
  name: string
  method: string
  /** Called once per lane, as `headers`. */
  body: () => string | Promise<string>
  /** Headers for one send; called once per lane, so each gets a fresh token. */
  headers: () => Promise<Record<string, string>>
  expect: { status: number; error?: string }
}

const json = { 'content-type': 'application/json' }
const bearer = async (method: string) => ({ ...json, authorization: `Bearer ${await world.app.token(nsid(method))}` })

function cases(): Case[] {
  const hold = () => JSON.stringify({ items: [{ tierId, quantity: 1 }] })
  return [
    { name: 'a valid hold', method: 'createTicketHold', body: hold, headers: () => bearer('createTicketHold'), expect: { status: 200 } },
    {
      name: 'a valid free claim',
      method: 'claimFreeTicket',
      body: async () => {
        buyer ??= await newIdentityClient(world)
        const buyerAssertionJwt = await buyer.token(nsid('claimFreeTicket'))
        return JSON.stringify({ tierId: freeTierId, quantity: 1, buyerDid: buyer.did, buyerAssertionJwt })
      },
      headers: () => bearer('claimFreeTicket'),
      expect: { status: 200 },
    },
    { name: 'no Authorization', method: 'createTicketHold', body: hold, headers: async () => json, expect: { status: 401, error: 'AuthMissing' } },
    {
      name: 'a corrupted signature',
      method: 'createTicketHold',
      body: hold,
      headers: async () => ({ ...json, authorization: `Bearer ${corruptSignature(await world.app.token(nsid('createTicketHold')))}` }),
      expect: { status: 401, error: 'BadJwtSignature' },
    },
    {
      name: 'a token for another method',
      method: 'createTicketHold',
      body: hold,
      headers: () => bearer('claimFreeTicket'),
      expect: { status: 401, error: 'BadJwtLexiconMethod' },
    },
    {
      name: 'an unregistered app (403 before the body is looked at)',
      method: 'createTicketHold',
      body: () => '{"items":',
      headers: async () => {
        stranger ??= await newIdentityClient(world)
        return { ...json, authorization: `Bearer ${await stranger.token(nsid('createTicketHold'))}` }
      },
      expect: { status: 403, error: 'AppNotRegistered' },
    },
    {
      name: 'an unregistered app with a valid body',
      method: 'createTicketHold',
      body: hold,
      headers: async () => {
        stranger ??= await newIdentityClient(world)
        return { ...json, authorization: `Bearer ${await stranger.token(nsid('createTicketHold'))}` }
      },
      expect: { status: 403, error: 'AppNotRegistered' },
    },
    {
      name: 'an app with tickets turned off, valid body',
      method: 'createTicketHold',
      body: hold,
      headers: async () => ({ ...json, authorization: `Bearer ${await disabledApp.token(nsid('createTicketHold'))}` }),
      expect: { status: 403, error: 'TicketsModuleDisabled' },
    },
    {
      name: 'an app with tickets turned off, invalid body: 403 first',
      method: 'createTicketHold',
      body: () => '{}',
      headers: async () => ({ ...json, authorization: `Bearer ${await disabledApp.token(nsid('createTicketHold'))}` }),
      expect: { status: 403, error: 'TicketsModuleDisabled' },
    },
    {
      name: 'a bad token and a malformed body: 401 first',
      method: 'createTicketHold',
      body: () => 'not json',
      headers: async () => ({ ...json, authorization: 'Bearer abc.def' }),
      expect: { status: 401, error: 'BadJwt' },
    },
    { name: 'malformed JSON', method: 'createTicketHold', body: () => '{"items": [', headers: () => bearer('createTicketHold'), expect: { status: 400, error: 'InvalidRequest' } },
    { name: 'a missing field', method: 'createTicketHold', body: () => '{}', headers: () => bearer('createTicketHold'), expect: { status: 400, error: 'InvalidRequest' } },
    {
      name: 'a field of the wrong type',
      method: 'createTicketHold',
      body: () => JSON.stringify({ items: [{ tierId, quantity: 'two' }] }),
      headers: () => bearer('createTicketHold'),
      expect: { status: 400, error: 'InvalidRequest' },
    },
    {
      name: 'an unknown tier (a domain error)',
      method: 'createTicketHold',
      body: () => JSON.stringify({ items: [{ tierId: 'tier_unknown', quantity: 1 }] }),
      headers: () => bearer('createTicketHold'),
      expect: { status: 400, error: 'TicketTierNotFound' },
    },
    {
      name: 'an admin procedure with a wrong password',
      method: 'admin.registerApp',
      body: () => JSON.stringify({ did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', name: 'x' }),
      headers: async () => ({ ...json, authorization: `Basic ${Buffer.from('admin:wrong').toString('base64')}` }),
      expect: { status: 401, error: 'BadAdminPassword' },
    },
  ]
}

/** The answer with what differs per request (new ids, tokens, times) replaced by its type. */
function shape(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(shape)
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shape(v)]))
  return typeof value
}

describe('the direct lane and xrpc-server answer alike', () => {
  for (const testCase of cases()) {
    it(testCase.name, async () => {
      const path = `/xrpc/${nsid(testCase.method)}`
      const direct = await postVia('direct', path, await testCase.headers(), await testCase.body(), 'length')
      const chunked = await postVia('express', path, await testCase.headers(), await testCase.body(), 'chunked')
      expect(direct.status, JSON.stringify(direct.body)).toBe(testCase.expect.status)
      expect(chunked.status, JSON.stringify(chunked.body)).toBe(testCase.expect.status)
      expect(direct.contentType).toMatch(/^application\/json/)
      if (testCase.expect.error) {
        expect(direct.body.error).toBe(testCase.expect.error)
        expect(chunked.body.error).toBe(testCase.expect.error)
        expect(direct.body.message).toBe(chunked.body.message)
        if (testCase.name === 'malformed JSON') expect(direct.body.message).toMatch(/^request body is not valid JSON: /)
      } else {
        expect(shape(direct.body)).toEqual(shape(chunked.body))
      }
    })
  }

  it('a refused input changes nothing in either lane, and a token spent on it cannot be used again', async () => {
    const headers = await bearer('createTicketHold')
    const refused = await postVia('direct', `/xrpc/${nsid('createTicketHold')}`, headers, '{}', 'length')
    expect(refused.status).toBe(400)
    const again = await postVia('direct', `/xrpc/${nsid('createTicketHold')}`, headers, JSON.stringify({ items: [{ tierId, quantity: 1 }] }), 'length')
    expect(again.status).toBe(401)
    expect(again.body.error).toBe('JwtReplayed')
  })

  it('a query string, another content type or an empty body is left to xrpc-server, which still answers', async () => {
    const path = `/xrpc/${nsid('createTicketHold')}`
    const body = JSON.stringify({ items: [{ tierId, quantity: 1 }] })
    const withQuery = await postVia('express', `${path}?x=1`, await bearer('createTicketHold'), body, 'length')
    expect(withQuery.status).toBe(200)
    const text = await postVia('express', path, { ...(await bearer('createTicketHold')), 'content-type': 'text/plain' }, body, 'length')
    expect(text.status).toBe(400)
    expect(text.body.message).toMatch(/Content-Type/)
    const empty = await postVia('express', path, await bearer('createTicketHold'), '', 'length')
    expect(empty.status).toBe(400)
    expect(empty.body.error).toBe('InvalidRequest')
  })
})

describe('createTicketHold spends the token in the hold\'s own transaction', () => {
  const path = () => `/xrpc/${nsid('createTicketHold')}`
  const holdBody = (quantity = 1) => JSON.stringify({ items: [{ tierId, quantity }] })

  async function held(): Promise<number> {
    const res = await world.app.call(nsid('getTicketAvailability'), { eventId })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body.tiers.find((tier: { id: string }) => tier.id === tierId).held as number
  }

  it('a token refused for its input (a domain error) is spent all the same, and nothing is held', async () => {
    const before = await held()
    const headers = await bearer('createTicketHold')
    const refused = await post(path(), headers, JSON.stringify({ items: [{ tierId, quantity: 0 }] }), 'length')
    expect(refused.status).toBe(400)
    expect(refused.body.error).toBe('InvalidQuantity')
    const unknownTier = await post(path(), headers, JSON.stringify({ items: [{ tierId: 'tier_unknown', quantity: 1 }] }), 'length')
    expect(unknownTier.body.error).toBe('JwtReplayed')
    const again = await post(path(), headers, holdBody(), 'length')
    expect(again.status).toBe(401)
    expect(again.body.error).toBe('JwtReplayed')
    expect(await held()).toBe(before)
  })

  it('one token sent 24 times at once, on fresh connections to both workers: one hold, 23 JwtReplayed', async () => {
    const before = await held()
    const headers = await bearer('createTicketHold')
    const answers = await Promise.all(Array.from({ length: 24 }, () => post(path(), headers, holdBody(2), 'length')))
    const statuses = answers.map((answer) => (answer.status === 200 ? 'ok' : answer.body.error))
    expect(statuses.filter((status) => status === 'ok')).toHaveLength(1)
    expect(statuses.filter((status) => status === 'JwtReplayed')).toHaveLength(23)
    expect(await held()).toBe(before + 2)
  })

  it('a disabled app hears 403 even for a replayed token, and holds nothing', async () => {
    const before = await held()
    const headers = { ...json, authorization: `Bearer ${await disabledApp.token(nsid('createTicketHold'))}` }
    for (let attempt = 0; attempt < 2; attempt++) {
      const refused = await postVia('direct', path(), headers, holdBody(), 'length')
      expect(refused.status).toBe(403)
      expect(refused.body.error).toBe('TicketsModuleDisabled')
    }
    expect(await held()).toBe(before)
  })

  it('a replayed token is refused as replayed before its input is looked at, in both lanes', async () => {
    const headers = await bearer('createTicketHold')
    expect((await postVia('direct', path(), headers, holdBody(), 'length')).status).toBe(200)
    for (const framing of ['length', 'chunked'] as const) {
      const replay = await postVia(framing === 'length' ? 'direct' : 'express', path(), headers, JSON.stringify({ items: [{ tierId, quantity: 0 }] }), framing)
      expect(replay.status).toBe(401)
      expect(replay.body.error).toBe('JwtReplayed')
    }
  })
})

