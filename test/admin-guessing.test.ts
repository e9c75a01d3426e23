// Guessing the operator's password costs the guesser: per client address, after five wrong
// passwords every attempt is answered 429 RateLimitExceeded with Retry-After (the right
// password too, or the answer would still tell), for a wait that doubles with each further
// wrong guess up to 60 s. The count is one across the worker processes; another address is
// not held up; X-Forwarded-For counts only from proxies named in ATM_TRUSTED_PROXIES.
import http from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AdminGuessBook } from '../src/xrpc/admin-guesses.js'
import { startService, type ServiceHandle } from './helpers/index.js'
import { nsid } from './helpers/world.js'

interface Answer {
  status: number
  body: any
  retryAfter: string | undefined
}

let didCounter = 0

/** admin.registerApp on a new connection (so that the workers take turns), from `from` (a loopback address). */
function registerAttempt(service: ServiceHandle, password: string, opts: { from?: string; forwardedFor?: string } = {}): Promise<Answer> {
  const body = JSON.stringify({ did: `did:plc:guessing${(++didCounter).toString().padStart(16, '0')}`, name: 'Guessed' })
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: service.port,
        path: `/xrpc/${nsid('admin.registerApp')}`,
        method: 'POST',
        localAddress: opts.from ?? '127.0.0.1',
        agent: false,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`,
          ...(opts.forwardedFor ? { 'x-forwarded-for': opts.forwardedFor } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () =>
          resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString('utf8')), retryAfter: res.headers['retry-after'] }),
        )
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

async function guesses(service: ServiceHandle, count: number, opts: { from?: string; forwardedFor?: (index: number) => string } = {}) {
  const answers: Answer[] = []
  for (let index = 0; index < count; index++) {
    answers.push(await registerAttempt(service, `guess-${index}`, { from: opts.from, forwardedFor: opts.forwardedFor?.(index) }))
  }
  return answers
}

function expectRefusedUnheard(answer: Answer): void {
  expect(answer.status, JSON.stringify(answer.body)).toBe(429)
  expect(answer.body.error).toBe('RateLimitExceeded')
  expect(answer.body.message).toMatch(/^too many wrong admin passwords from this address: try again in \d+ s$/)
  expect(Number(answer.retryAfter)).toBeGreaterThanOrEqual(1)
  expect(Number(answer.retryAfter)).toBeLessThanOrEqual(60)
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('wrong admin passwords across three workers', () => {
  const workers = 3
  let service: ServiceHandle
  beforeAll(async () => {
    // registerApp resolves no DID, so this service needs no PLC directory it can reach.
    service = await startService({ plcUrl: 'https://plc.invalid', workers })
    const listening = () => service.jsonLogs().filter((line) => line.msg === 'ATM Tickets listening').length
    for (let attempt = 0; attempt < 250 && listening() < workers; attempt++) await sleep(20)
    expect(listening()).toBe(workers)
  })
  afterAll(async () => {
    await service?.close()
  })

  it('five are answered BadAdminPassword, then every attempt from that address waits, whichever worker it reaches', async () => {
    const linesBefore = service.jsonLogs().length
    const answers = await guesses(service, 12)
    expect(answers.slice(0, 5).map((answer) => answer.body.error)).toEqual(Array(5).fill('BadAdminPassword'))
    for (const answer of answers.slice(5)) expectRefusedUnheard(answer)
    // The twelve were answered by more than one worker, so one count held across them.
    const answeredBy = () =>
      service
        .jsonLogs()
        .slice(linesBefore)
        .filter((line) => line.msg === 'request' && line.path === `/xrpc/${nsid('admin.registerApp')}`)
    for (let attempt = 0; attempt < 250 && answeredBy().length < 12; attempt++) await sleep(20)
    expect(new Set(answeredBy().map((line) => line.pid)).size).toBeGreaterThan(1)

    // The right password from the waiting address waits too; from another address it works.
    expectRefusedUnheard(await registerAttempt(service, service.adminPassword!))
    const elsewhere = await registerAttempt(service, service.adminPassword!, { from: '127.0.0.2' })
    expect(elsewhere.status, JSON.stringify(elsewhere.body)).toBe(200)

    // The wait is short: once it is over, the operator's right password works again.
    const waiting = await registerAttempt(service, service.adminPassword!)
    if (waiting.status === 429) await sleep(Number(waiting.retryAfter) * 1000)
    const after = await registerAttempt(service, service.adminPassword!)
    expect(after.status, JSON.stringify(after.body)).toBe(200)
  })

  it('X-Forwarded-For is not believed without ATM_TRUSTED_PROXIES: a new one per guess changes nothing', async () => {
    const answers = await guesses(service, 7, { from: '127.0.0.3', forwardedFor: (index) => `198.51.100.${index + 1}` })
    expect(answers.slice(0, 5).map((answer) => answer.body.error)).toEqual(Array(5).fill('BadAdminPassword'))
    for (const answer of answers.slice(5)) expectRefusedUnheard(answer)
  })
})

describe('behind a trusted proxy (ATM_TRUSTED_PROXIES)', () => {
  let service: ServiceHandle
  beforeAll(async () => {
    service = await startService({ plcUrl: 'https://plc.invalid', workers: 2, env: { ATM_TRUSTED_PROXIES: '127.0.0.0/8, ::1' } })
  })
  afterAll(async () => {
    await service?.close()
  })

  it('counts the client the proxy names, so the guesser waits and the operator behind the same proxy does not', async () => {
    const guesser = '203.0.113.9'
    const answers = await guesses(service, 6, { forwardedFor: () => `${guesser}, 127.0.0.1` })
    expect(answers.slice(0, 5).map((answer) => answer.body.error)).toEqual(Array(5).fill('BadAdminPassword'))
    expectRefusedUnheard(answers[5]!)
    const operator = await registerAttempt(service, service.adminPassword!, { forwardedFor: '203.0.113.10' })
    expect(operator.status, JSON.stringify(operator.body)).toBe(200)
    // Forged hops before the trusted ones are not believed either: the guesser is still the one counted.
    expectRefusedUnheard(await registerAttempt(service, 'guess', { forwardedFor: `198.51.100.77, ${guesser}` }))
  })
})

describe('an invalid ATM_TRUSTED_PROXIES', () => {
  it('stops the service at start, naming the variable', async () => {
    await expect(startService({ plcUrl: 'https://plc.invalid', workers: 1, env: { ATM_TRUSTED_PROXIES: '10.0.0.0/8, proxy.local' } })).rejects.toThrow(
      /ATM_TRUSTED_PROXIES must list IP addresses or CIDR ranges .*"proxy\.local" is neither/,
    )
  })
})

describe('the waits (AdminGuessBook, with its clock given)', () => {
  it('double from 2 s after the fifth wrong guess, stop at 60 s, and a quiet 15 minutes or the right password starts over', () => {
    const book = new AdminGuessBook()
    let now = 1_000_000
    for (let guess = 1; guess <= 4; guess++) expect(book.attempt('192.0.2.1', false, now)).toBe(0)
    const waits: number[] = []
    for (let guess = 5; guess <= 11; guess++) {
      expect(book.attempt('192.0.2.1', false, now)).toBe(0)
      // An attempt during the wait is refused unheard and tells how long is left.
      const wait = book.attempt('192.0.2.1', false, now)
      waits.push(wait)
      now += wait
    }
    expect(waits).toEqual([2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000])
    expect(book.attempt('192.0.2.1', false, now)).toBe(0)
    expect(book.attempt('192.0.2.1', true, now + 59_000)).toBe(1_000)
    expect(book.attempt('192.0.2.2', false, now)).toBe(0)
    expect(book.attempt('192.0.2.1', true, now + 60_000)).toBe(0)
    now += 60_000
    // The right password cleared the count: four more wrong ones are free again.
    for (let guess = 1; guess <= 4; guess++) expect(book.attempt('192.0.2.1', false, now)).toBe(0)
    // And after 15 quiet minutes, so is the fifth.
    now += 15 * 60_000
    expect(book.attempt('192.0.2.1', false, now)).toBe(0)
    expect(book.attempt('192.0.2.1', false, now)).toBe(0)
  })
})
