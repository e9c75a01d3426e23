// Hostile input to the JSON procedures: every kind is refused with InvalidRequest and a message
// naming the field or the problem, the same in both lanes (a Content-Length body goes to the
// direct node:http lane, a chunked one to xrpc-server), and a refused create leaves nothing
// behind. What is stored is what was answered. A client that leaves in the middle of its body
// is no failure of the service: logged at info, without a stack.
import net from 'node:net'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { postFramed, type FramedAnswer } from './helpers/index.js'
import { createEventWithTier, newIdentityClient, nsid, registerApp, startWorld, type World } from './helpers/world.js'

let world: World
let eventId: string
let tierId: string

beforeAll(async () => {
  world = await startWorld()
  ;({ eventId, tierId } = await createEventWithTier(world, { quantityTotal: 10 }))
})
afterAll(async () => {
  await world?.close()
})

type Answer = FramedAnswer

function post(method: string, headers: Record<string, string>, body: string | Buffer, framing: 'length' | 'chunked'): Promise<Answer> {
  return postFramed(new URL(`/xrpc/${nsid(method)}`, world.service.url), headers, body, framing)
}

async function appHeaders(method: string, contentType = 'application/json'): Promise<Record<string, string>> {
  return { 'content-type': contentType, authorization: `Bearer ${await world.app.token(nsid(method))}` }
}

/** A createTicketTier input for the shared event, as JSON text, with `title` as given. */
function tierInput(title: string): string {
  return JSON.stringify({ organizerDid: world.organizer.did, event: { eventId }, title, currency: 'usd', unitAmount: 1000, quantityTotal: 5 })
}

async function eventState(): Promise<{ tiers: Array<{ id: string; title: string }>; capacityGroups: unknown[] }> {
  const res = await world.app.call(nsid('getTicketAvailability'), { eventId })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return res.body
}

interface Case {
  name: string
  method: string
  body: () => string | Buffer
  contentType?: string
  headers?: Record<string, string>
  message: RegExp
  /** Default 400 InvalidRequest. */
  status?: number
  error?: string
}

const deep = (levels: number) => `{"items":${'['.repeat(levels)}${']'.repeat(levels)}}`

const refusals: Case[] = [
  { name: 'NUL in a tier title', method: 'createTicketTier', body: () => tierInput('VIP\u0000 backstage'), message: /^Input\/title must not contain NUL \(U\+0000\)/ },
  {
    name: 'an unpaired surrogate (\\ud800 escape) in a tier title',
    method: 'createTicketTier',
    body: () => tierInput('VIP \ud800'),
    message: /^Input\/title must not contain an unpaired UTF-16 surrogate/,
  },
  {
    name: 'an encoded surrogate (invalid UTF-8 bytes) in a tier title',
    method: 'createTicketTier',
    body: () => {
      const [head, tail] = tierInput('VIP @').split('@') as [string, string]
      return Buffer.concat([Buffer.from(head), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(tail)])
    },
    message: /^request body is not valid UTF-8/,
  },
  {
    name: 'NUL in a nested event title',
    method: 'createTicketEvent',
    body: () => JSON.stringify({ organizerDid: world.organizer.did, event: { uri: `at://${world.organizer.did}/community.lexicon.calendar.event/nul`, title: 'Gig\u0000' } }),
    message: /^Input\/event\/title must not contain NUL/,
  },
  {
    name: 'NUL in a property name',
    method: 'createTicketHold',
    body: () => JSON.stringify({ items: [{ tierId, quantity: 1, 'x\u0000': 1 }] }),
    message: /^Input\/items\/0 has a property name with NUL/,
  },
  { name: 'an array where an object is required', method: 'createTicketHold', body: () => '[]', message: /^Input must be a JSON object, not an array$/ },
  { name: 'a JSON string where an object is required', method: 'createTicketHold', body: () => '"items"', message: /^Input must be a JSON object, not a string$/ },
  { name: '10,000 levels of nesting', method: 'createTicketHold', body: () => deep(10_000), message: /^Input is nested too deeply at Input\/items\/0\/0/ },
  { name: '33 levels of nesting', method: 'createTicketHold', body: () => deep(32), message: /^Input is nested too deeply at Input\/items(\/0){31}: at most 32 levels of objects and arrays$/ },
  { name: '32 levels of nesting are read (and refused by the lexicon)', method: 'createTicketHold', body: () => deep(31), message: /^Input\/items\/0 must have the property "tierId"$/ },
  {
    name: 'charset=latin1',
    method: 'createTicketTier',
    body: () => Buffer.from(tierInput('Caf\u00e9'), 'latin1'),
    contentType: 'application/json; charset=latin1',
    message: /^request body must be UTF-8 JSON: charset=latin1 is not accepted/,
  },
  {
    name: 'charset=utf-16le',
    method: 'createTicketTier',
    body: () => Buffer.from(tierInput('Caf\u00e9'), 'utf16le'),
    contentType: 'application/json; charset=utf-16le',
    message: /^request body must be UTF-8 JSON: charset=utf-16le is not accepted/,
  },
  {
    name: 'a broken gzip body',
    method: 'createTicketTier',
    body: () => Buffer.from('this is not gzip at all'),
    headers: { 'content-encoding': 'gzip' },
    message: /^request body is not valid gzip data/,
  },
  {
    name: 'a gzip body cut short',
    method: 'createTicketTier',
    body: () => gzipSync(tierInput('Cut short')).subarray(0, 20),
    headers: { 'content-encoding': 'gzip' },
    message: /^request body is not valid gzip data/,
  },
  {
    name: 'an unknown Content-Encoding',
    method: 'createTicketTier',
    body: () => tierInput('Brotli'),
    headers: { 'content-encoding': 'br' },
    message: /^Content-Encoding must be gzip, deflate or none/,
  },
  {
    name: 'a body over 256 KiB',
    method: 'createTicketTier',
    body: () => tierInput('x'.repeat(300 * 1024)),
    message: /^request body is larger than 262144 bytes \(decompressed\): send a smaller input$/,
    status: 413,
    error: 'PayloadTooLarge',
  },
  {
    name: 'a small gzip body over 256 KiB once decompressed',
    method: 'createTicketTier',
    body: () => gzipSync(tierInput(' '.repeat(4 * 1024 * 1024))),
    headers: { 'content-encoding': 'gzip' },
    message: /^request body is larger than 262144 bytes \(decompressed\)/,
    status: 413,
    error: 'PayloadTooLarge',
  },
]

describe('hostile input is refused with a named error, alike in both lanes, and changes nothing', () => {
  let before: Awaited<ReturnType<typeof eventState>>
  beforeAll(async () => {
    before = await eventState()
  })

  for (const refusal of refusals) {
    it(refusal.name, async () => {
      const answers: Answer[] = []
      for (const framing of ['length', 'chunked'] as const) {
        const headers = { ...(await appHeaders(refusal.method, refusal.contentType)), ...refusal.headers }
        answers.push(await post(refusal.method, headers, refusal.body(), framing))
      }
      for (const answer of answers) {
        expect(answer.status, JSON.stringify(answer.body)).toBe(refusal.status ?? 400)
        expect(answer.body.error).toBe(refusal.error ?? 'InvalidRequest')
        expect(answer.body.message).toMatch(refusal.message)
      }
      expect(answers[0]!.body.message).toBe(answers[1]!.body.message)
    })
  }

  it('left the event as it was: no tier, no group, nothing held', async () => {
    expect(await eventState()).toEqual(before)
  })

  it('an app name with NUL registers nothing', async () => {
    const app = await newIdentityClient(world)
    const refused = await registerApp(world.service, { did: app.did, name: 'Evil\u0000App' })
    expect(refused.status).toBe(400)
    expect(refused.body).toMatchObject({ error: 'InvalidRequest', message: 'Input/name must not contain NUL (U+0000)' })
    const probe = await app.call(nsid('getTicketAvailability'), { eventId })
    expect(probe.body.error).toBe('AppNotRegistered')
  })
})

describe('what is stored is what was answered', () => {
  it('a title with accents, emoji and a combining mark reads back exactly as sent and answered, in both lanes', async () => {
    const title = 'Premi\u00e8re \u{1F39F}\uFE0F Zoe\u0301 \u6771\u4eac'
    for (const framing of ['length', 'chunked'] as const) {
      const created = await post('createTicketTier', await appHeaders('createTicketTier'), tierInput(title), framing)
      expect(created.status, JSON.stringify(created.body)).toBe(200)
      expect(created.body.tier.title).toBe(title)
      const stored = (await eventState()).tiers.find((tier) => tier.id === created.body.tier.id)
      expect(stored?.title).toBe(title)
    }
  })

  it('a gzip body is read like a plain one', async () => {
    const headers = { ...(await appHeaders('createTicketTier')), 'content-encoding': 'gzip' }
    const created = await post('createTicketTier', headers, gzipSync(tierInput('Zipped')), 'chunked')
    expect(created.status, JSON.stringify(created.body)).toBe(200)
    expect(created.body.tier.title).toBe('Zipped')
  })
})

describe('a client that leaves in the middle of its body', () => {
  /** Sends the head and part of a valid hold, waits a moment, and leaves without the rest. */
  async function leaveMidBody(framing: 'length' | 'chunked'): Promise<void> {
    const token = await world.app.token(nsid('createTicketHold'))
    const body = JSON.stringify({ items: [{ tierId, quantity: 1 }] })
    const framingHeader = framing === 'length' ? `content-length: ${body.length}` : 'transfer-encoding: chunked'
    const partial = framing === 'length' ? body.slice(0, 10) : `a\r\n${body.slice(0, 10)}\r\n`
    const socket = net.connect(world.service.port, '127.0.0.1')
    await new Promise((resolve) => socket.once('connect', resolve))
    socket.write(
      `POST /xrpc/${nsid('createTicketHold')} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n` +
        `authorization: Bearer ${token}\r\n${framingHeader}\r\n\r\n${partial}`,
    )
    // Long enough for the service to be reading the body when the connection goes.
    await new Promise((resolve) => setTimeout(resolve, 300))
    socket.destroy()
  }

  for (const [framing, lane] of [
    ['length', 'direct'],
    ['chunked', 'express'],
  ] as const) {
    it(`is logged at info, without a stack or an error line (${lane} lane)`, async () => {
      const linesBefore = world.service.jsonLogs().length
      const heldBefore = (await eventState()).tiers.find((tier) => tier.id === tierId)
      await leaveMidBody(framing)
      const abandoned = () =>
        world.service
          .jsonLogs()
          .slice(linesBefore)
          .filter((line) => line.path === `/xrpc/${nsid('createTicketHold')}`)
      for (let attempt = 0; attempt < 250 && abandoned().length === 0; attempt++) await new Promise((resolve) => setTimeout(resolve, 20))
      const newLines = world.service.jsonLogs().slice(linesBefore)
      expect(newLines.filter((line) => (line.level as number) >= 50), JSON.stringify(newLines)).toEqual([])
      expect(JSON.stringify(newLines)).not.toMatch(/unexpected error|"stack"/)
      expect(abandoned()).toEqual([expect.objectContaining({ level: 30, msg: 'request abandoned by the client', lane })])
      expect((await eventState()).tiers.find((tier) => tier.id === tierId)).toEqual(heldBefore)
    })
  }
})
