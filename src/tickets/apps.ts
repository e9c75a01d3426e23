import { BlockList, isIP } from 'node:net'
import type { DbConn, Storage } from '../storage/types.js'
import type { AppTable } from '../db/schema.js'
import { newSecret } from '../util/ids.js'
import { fail } from './errors.js'

export interface RegisterAppInput {
  did: string
  name?: string
  ticketsEnabled?: boolean
  webhookUrl?: string | null
  eventDelivery?: string
  rotateWebhookSecret?: boolean
}

export const APP_SQL = { byDid: 'SELECT * FROM app WHERE did = ?' } as const

/** The caller's app, read on every request: a prepared statement, without kysely's query building. */
export async function findApp(database: Storage, did: string): Promise<AppTable | undefined> {
  return database.readRow<AppTable>(APP_SQL.byDid, did)
}

export async function getApp(db: DbConn, did: string): Promise<AppTable | undefined> {
  return db.selectFrom('app').selectAll().where('did', '=', did).executeTakeFirst()
}

/**
 * Registers or updates an app (an upsert: fields left out keep their values). A webhook
 * secret is created the first time delivery is configured, or when rotation is asked for,
 * and is answered only then.
 */
export async function registerApp(
  tx: DbConn,
  input: RegisterAppInput,
  opts: { devMode: boolean; nowMs: number },
): Promise<{ app: AppTable; webhookSecret?: string }> {
  if (input.webhookUrl) checkWebhookUrl(input.webhookUrl, opts.devMode)
  if (input.eventDelivery !== undefined && input.eventDelivery !== 'webhook' && input.eventDelivery !== 'xrpc') {
    fail('InvalidRequest', `eventDelivery must be "webhook" or "xrpc", got "${input.eventDelivery}"`)
  }
  const existing = await getApp(tx, input.did)
  if (!existing && !input.name) fail('AppNameRequired', `app ${input.did} is new: give it a name`)
  const merged: AppTable = {
    did: input.did,
    name: input.name ?? existing!.name,
    ticketsEnabled: input.ticketsEnabled === undefined ? (existing?.ticketsEnabled ?? 1) : input.ticketsEnabled ? 1 : 0,
    webhookUrl: input.webhookUrl === undefined ? (existing?.webhookUrl ?? null) : input.webhookUrl,
    eventDelivery: input.eventDelivery ?? existing?.eventDelivery ?? null,
    webhookSecret: existing?.webhookSecret ?? null,
    createdAt: existing?.createdAt ?? opts.nowMs,
    updatedAt: opts.nowMs,
  }
  if (merged.eventDelivery === null && merged.webhookUrl) merged.eventDelivery = 'webhook'
  // Clearing the URL (webhookUrl: null) turns webhook delivery off, unless XRPC is asked for.
  if (input.webhookUrl === null && input.eventDelivery === undefined && merged.eventDelivery === 'webhook') {
    merged.eventDelivery = null
  }
  if (merged.eventDelivery === 'webhook' && !merged.webhookUrl) {
    fail('InvalidWebhookUrl', 'eventDelivery "webhook" needs a webhookUrl')
  }
  let webhookSecret: string | undefined
  const wantsSecret = merged.eventDelivery === 'webhook' || merged.webhookUrl !== null
  if ((wantsSecret && merged.webhookSecret === null) || input.rotateWebhookSecret) {
    webhookSecret = newSecret('whsec')
    merged.webhookSecret = webhookSecret
  }
  if (existing) {
    await tx.updateTable('app').set(merged).where('did', '=', input.did).execute()
  } else {
    await tx.insertInto('app').values(merged).execute()
  }
  return { app: merged, webhookSecret }
}

// Addresses a webhook must never point at outside development: loopback, private, link-local,
// carrier-grade NAT, unspecified, multicast and the IPv6 equivalents (IPv4-mapped included).
const nonPublic = new BlockList()
for (const [network, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16],
  ['172.16.0.0', 12], ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 3],
] as const) {
  nonPublic.addSubnet(network, prefix, 'ipv4')
}
for (const [network, prefix] of [['::', 127], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8]] as const) {
  nonPublic.addSubnet(network, prefix, 'ipv6')
}

function isNonPublicAddress(address: string): boolean {
  const family = isIP(address)
  if (family === 0) return false
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped) return nonPublic.check(mapped[1]!, 'ipv4')
  return nonPublic.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

/**
 * A first check of the URL an app gives. Names that resolve to private addresses can only be
 * caught when delivering (resolve, check every address, connect to the checked one).
 */
function checkWebhookUrl(raw: string, devMode: boolean): void {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return fail('InvalidWebhookUrl', 'webhookUrl must be an absolute https URL')
  }
  if (url.username || url.password) fail('InvalidWebhookUrl', 'webhookUrl must not carry credentials')
  if (devMode) {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') fail('InvalidWebhookUrl', 'webhookUrl must be http(s)')
    return
  }
  if (url.protocol !== 'https:') fail('InvalidWebhookUrl', 'webhookUrl must use https (plain http is allowed only with ATM_DEV_MODE=true)')
  const host = url.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase()
  if (host === 'localhost' || host.endsWith('.localhost') || isNonPublicAddress(host)) {
    fail('InvalidWebhookUrl', 'webhookUrl must be a public host (loopback and private addresses are refused)')
  }
}
