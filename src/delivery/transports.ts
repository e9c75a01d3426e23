import { createHmac } from 'node:crypto'
import { getServiceEndpoint } from '@atproto/common-web'
import type { IdResolver } from '@atproto/identity'
import type { Keypair } from '@atproto/crypto'
import { createServiceJwt } from '@atproto/xrpc-server'
import { safeFetchWrap } from '@atproto-labs/fetch-node'
import type { AppTable, OutboxTable } from '../db/schema.js'

/** The method an app's event receiver serves (the official client's name; not one of ours). */
export const EVENT_RECEIVE_NSID = 'money.atmosphere.event.receive'
/** The service id, in the app's DID document, of its event receiver. */
export const EVENT_RECEIVER_SERVICE_ID = '#AtmEventReceiver'

/** A delivery that did not get a 2xx; the message is stored and logged, so it names no URL or secret. */
export class DeliveryFailure extends Error {
  override name = 'DeliveryFailure'
}

export type OutboxEvent = Pick<OutboxTable, 'id' | 'type' | 'environment' | 'payload'>

/** `t=<unix>,v1=<hex>`: HMAC-SHA256 with the app's webhook secret over `<t>.<deliveryId>.<rawBody>`. */
export function webhookSignature(secret: string, deliveryId: string, rawBody: string, unixSeconds: number): string {
  const digest = createHmac('sha256', secret).update(`${unixSeconds}.${deliveryId}.${rawBody}`).digest('hex')
  return `t=${unixSeconds},v1=${digest}`
}

type Fetch = (input: string, init: RequestInit) => Promise<Response>

export interface TransportOptions {
  devMode: boolean
  timeoutMs: number
  serviceDid: string
  signingKey: Keypair
  idResolver: IdResolver
  userAgent: string
}

/**
 * Sends one stored event to an app, by the transport the app chose: a signed webhook, or its
 * XRPC event receiver with a service-auth token of this service. Resolves on a 2xx, throws a
 * `DeliveryFailure` otherwise.
 */
export class EventTransports {
  private readonly fetch: Fetch

  constructor(private readonly opts: TransportOptions) {
    if (opts.devMode) {
      this.fetch = (input, init) =>
        globalThis.fetch(input, { ...init, signal: anySignal(init.signal, AbortSignal.timeout(opts.timeoutMs)) })
    } else {
      // Checked when connecting, so a name that resolves to a private, loopback or link-local
      // address is refused even if it did not when the app registered it. Any port is allowed:
      // the address, not the port, is what SSRF protection is about.
      const safe = safeFetchWrap({
        allowHttp: false,
        allowCustomPort: true,
        allowPrivateIps: false,
        forbiddenDomainNames: [],
        timeout: opts.timeoutMs,
        responseMaxSize: 64 * 1024,
      })
      this.fetch = (input, init) => safe(input, init)
    }
  }

  async send(app: Pick<AppTable, 'did' | 'webhookUrl' | 'eventDelivery' | 'webhookSecret'>, event: OutboxEvent, attempt: number, signal: AbortSignal): Promise<void> {
    if (app.eventDelivery === 'xrpc') return this.sendToReceiver(app.did, event, attempt, signal)
    if (app.webhookUrl && app.webhookSecret) return this.sendWebhook(app.webhookUrl, app.webhookSecret, event, signal)
    throw new DeliveryFailure('the app has no event delivery configured (webhookUrl or eventDelivery "xrpc")')
  }

  private async sendWebhook(url: string, secret: string, event: OutboxEvent, signal: AbortSignal): Promise<void> {
    const signature = webhookSignature(secret, event.id, event.payload, Math.floor(Date.now() / 1000))
    await this.post(url, { ...this.eventHeaders(event), 'atm-signature': signature }, event.payload, 'webhook', signal)
  }

  private async sendToReceiver(appDid: string, event: OutboxEvent, attempt: number, signal: AbortSignal): Promise<void> {
    // After a failed attempt the document is fetched again: the app may have moved its receiver.
    const doc = await this.opts.idResolver.did.resolve(appDid, attempt > 1).catch(() => null)
    if (!doc) throw new DeliveryFailure(`the DID document of ${appDid} could not be resolved`)
    const endpoint = getServiceEndpoint(doc, { id: EVENT_RECEIVER_SERVICE_ID })
    if (!endpoint) {
      throw new DeliveryFailure(`the DID document of ${appDid} has no ${EVENT_RECEIVER_SERVICE_ID} service with an http(s) endpoint`)
    }
    const jwt = await createServiceJwt({
      iss: this.opts.serviceDid,
      aud: `${appDid}${EVENT_RECEIVER_SERVICE_ID}`,
      lxm: EVENT_RECEIVE_NSID,
      exp: Math.floor(Date.now() / 1000) + 120,
      keypair: this.opts.signingKey,
    })
    const url = `${endpoint.replace(/\/+$/, '')}/xrpc/${EVENT_RECEIVE_NSID}`
    await this.post(url, { ...this.eventHeaders(event), authorization: `Bearer ${jwt}` }, event.payload, 'event receiver', signal)
  }

  private eventHeaders(event: OutboxEvent): Record<string, string> {
    const apiVersion = (JSON.parse(event.payload) as { apiVersion: string }).apiVersion
    return {
      'content-type': 'application/json',
      'user-agent': this.opts.userAgent,
      'atm-delivery-id': event.id,
      'atm-event': event.type,
      'atm-api-version': apiVersion,
      'atm-environment': event.environment,
    }
  }

  private async post(url: string, headers: Record<string, string>, body: string, target: string, signal: AbortSignal): Promise<void> {
    let res: Response
    try {
      // Redirects are not followed: a webhook answers where it was registered.
      res = await this.fetch(url, { method: 'POST', headers, body, redirect: 'manual', signal })
    } catch (err) {
      throw new DeliveryFailure(`${target}: ${describeFetchError(err, this.opts.timeoutMs, signal)}`)
    }
    await res.body?.cancel().catch(() => undefined)
    if (res.status < 200 || res.status > 299) throw new DeliveryFailure(`${target} answered HTTP ${res.status}`)
  }
}

function anySignal(a: AbortSignal | null | undefined, b: AbortSignal): AbortSignal {
  return a ? AbortSignal.any([a, b]) : b
}

/** A fetch failure in a few words: never the URL, which may carry the app's own secrets. */
function describeFetchError(err: unknown, timeoutMs: number, stop: AbortSignal): string {
  if (stop.aborted) return 'interrupted: the service was stopping'
  const error = err as { name?: string; message?: string; cause?: { code?: string; message?: string } }
  if (error?.name === 'TimeoutError' || error?.name === 'AbortError') return `no response within ${timeoutMs} ms`
  const cause = error?.cause
  if (cause?.code) return `could not connect (${cause.code})`
  const detail = cause?.message ?? error?.message ?? String(err)
  return (detail.length > 200 ? `${detail.slice(0, 200)}…` : detail).replace(/https?:\/\/\S+/g, '<url>')
}
