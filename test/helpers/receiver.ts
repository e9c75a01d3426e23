// An app's side of event delivery: a real HTTP server that records every request the service
// sends it, answers with the status a test chooses, and checks webhooks exactly as the
// official client's constructAtmWebhookEvent does, written out by hand.
import { createHmac, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { dbAll, type ServiceDatabase } from './db.js'

export interface Delivery {
  method: string
  path: string
  headers: IncomingHttpHeaders
  rawBody: string
  /** What the receiver answered (0 while a 'hang' is pending). */
  status: number
}

/** The status to answer a request with, or 'hang' to never answer it. */
export type Respond = (delivery: Delivery, index: number) => number | 'hang'

export interface EventReceiver {
  /** http://localhost:<port> */
  origin: string
  port: number
  /** Every request so far, in arrival order. */
  deliveries: Delivery[]
  /** TCP connections accepted so far (requests or not). */
  connections(): number
  respond: Respond
  close(): Promise<void>
}

export async function startEventReceiver(opts: { port?: number; respond?: Respond } = {}): Promise<EventReceiver> {
  const deliveries: Delivery[] = []
  const sockets = new Set<Socket>()
  const hanging = new Set<ServerResponse>()
  let connections = 0
  const receiver: EventReceiver = {
    origin: '',
    port: 0,
    deliveries,
    connections: () => connections,
    respond: opts.respond ?? (() => 200),
    close: async () => {
      for (const res of hanging) res.destroy()
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const delivery: Delivery = {
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        rawBody: Buffer.concat(chunks).toString('utf8'),
        status: 0,
      }
      const index = deliveries.push(delivery) - 1
      const answer = receiver.respond(delivery, index)
      if (answer === 'hang') {
        hanging.add(res)
        return
      }
      delivery.status = answer
      res.writeHead(answer, { 'content-type': 'application/json' })
      res.end(JSON.stringify(answer < 300 ? { ok: true } : { error: 'TestFailure' }))
    })
  })
  server.on('connection', (socket: Socket) => {
    connections++
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, '127.0.0.1', resolve)
  })
  receiver.port = (server.address() as AddressInfo).port
  receiver.origin = `http://localhost:${receiver.port}`
  return receiver
}

export interface Envelope {
  id: string
  type: string
  createdAt: string
  apiVersion: string
  environment: string
  data: Record<string, any>
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

/**
 * The webhook check of the official client: `Atm-Signature: t=<unix>,v1=<hex>` within five
 * minutes of now, v1 = HMAC-SHA256(secret, `${t}.${deliveryId}.${rawBody}`) compared in
 * constant time, and the body's id, type, apiVersion and environment equal to the headers.
 * Answers the envelope; throws saying what failed.
 */
export function verifyWebhook(delivery: Delivery, secret: string, nowSeconds = Math.floor(Date.now() / 1000)): Envelope {
  const signature = header(delivery.headers, 'atm-signature')
  const deliveryId = header(delivery.headers, 'atm-delivery-id')
  if (!signature) throw new Error('missing Atm-Signature')
  if (!deliveryId) throw new Error('missing Atm-Delivery-Id')
  const fields = new Map<string, string[]>()
  for (const piece of signature.split(',')) {
    const eq = piece.indexOf('=')
    if (eq < 0) throw new Error(`malformed Atm-Signature: ${signature}`)
    const key = piece.slice(0, eq).trim()
    fields.set(key, [...(fields.get(key) ?? []), piece.slice(eq + 1).trim()])
  }
  const t = Number.parseInt(fields.get('t')?.[0] ?? '', 10)
  const candidates = fields.get('v1') ?? []
  if (!Number.isFinite(t) || candidates.length === 0) throw new Error(`malformed Atm-Signature: ${signature}`)
  if (Math.abs(nowSeconds - t) > 300) throw new Error(`Atm-Signature timestamp ${t} is more than 5 minutes from now`)
  const expected = createHmac('sha256', secret).update(`${t}.${deliveryId}.${delivery.rawBody}`).digest()
  const matches = candidates.some((candidate) => {
    if (!/^[0-9a-f]{64}$/i.test(candidate)) return false
    return timingSafeEqual(expected, Buffer.from(candidate, 'hex'))
  })
  if (!matches) throw new Error('Atm-Signature does not match the body')
  const event = JSON.parse(delivery.rawBody) as Envelope
  checkEventHeaders(delivery, event)
  return event
}

/** The body's id, type, apiVersion and environment must be those the headers name. */
export function checkEventHeaders(delivery: Delivery, event: Envelope): void {
  const pairs: Array<[string, unknown]> = [
    ['atm-delivery-id', event.id],
    ['atm-event', event.type],
    ['atm-api-version', event.apiVersion],
    ['atm-environment', event.environment],
  ]
  for (const [name, value] of pairs) {
    const sent = header(delivery.headers, name)
    if (sent !== value) throw new Error(`${name} header ${sent} does not match the body's ${String(value)}`)
  }
}

export interface OutboxRow {
  seq: number
  id: string
  appDid: string
  environment: string
  type: string
  payload: string
  attempts: number
  nextAttemptAt: number
  deliveredAt: number | null
  lastError: string | null
}

/** Reads the service's outbox from its database (fine while the service runs). */
export function readOutbox(service: ServiceDatabase, where = '1 = 1', params: unknown[] = []): Promise<OutboxRow[]> {
  return dbAll<OutboxRow>(service, `SELECT * FROM outbox WHERE ${where} ORDER BY seq`, params)
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits until `done()` is true, polling; throws after `timeoutMs` saying what it waited for. */
export async function waitUntil(what: string, done: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting after ${timeoutMs} ms for ${what}`)
    await sleep(25)
  }
}
