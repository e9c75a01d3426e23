// Tickets to verify, admit, void and refund: free ones from claims, paid ones through the
// hosted checkout as a browser posts it; and the events the service recorded for an app.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { payHold, paymentIdOf } from './checkout.js'
import { dbAll } from './db.js'
import { expectOk, type Body } from './expect.js'
import type { AppClient } from './xrpc.js'
import { createEventWithTier, newIdentityClient, nsid, registerApp, type World } from './world.js'

export interface Tickets {
  eventId: string
  tierId: string
  /** The tickets as the buyer's app sees them, with their scan tokens. */
  tickets: Body[]
  paymentId?: string
}

/** Free tickets claimed by a new buyer on a new event (of `app`, default the world's app). */
export async function claimFree(
  world: World,
  quantity = 1,
  opts: { app?: AppClient; quantityTotal?: number; groupCapacity?: number } = {},
): Promise<Tickets> {
  const app = opts.app ?? world.app
  const { eventId, tierId } = await createEventWithTier(
    world,
    { unitAmount: 0, quantityTotal: opts.quantityTotal ?? 20 },
    { app, groupCapacity: opts.groupCapacity },
  )
  const buyer = await newIdentityClient(world)
  const claim = expectOk(
    await app.call(nsid('claimFreeTicket'), {
      tierId,
      quantity,
      buyerDid: buyer.did,
      buyerAssertionJwt: await buyer.token(nsid('claimFreeTicket')),
    }),
  )
  return { eventId, tierId, tickets: claim.tickets }
}

/** Paid tickets: a hold on a new paid tier, paid on the checkout page with the 4242 test card. */
export async function buyPaid(
  world: World,
  quantity = 2,
  opts: { app?: AppClient; unitAmount?: number; quantityTotal?: number; groupCapacity?: number } = {},
): Promise<Tickets & { paymentId: string }> {
  const app = opts.app ?? world.app
  const { eventId, tierId } = await createEventWithTier(
    world,
    { unitAmount: opts.unitAmount ?? 2500, quantityTotal: opts.quantityTotal ?? 20 },
    { app, groupCapacity: opts.groupCapacity },
  )
  return { eventId, tierId, ...(await buyMore(world, tierId, quantity, app)) }
}

/** Another paid purchase of an existing tier. */
export async function buyMore(world: World, tierId: string, quantity: number, app: AppClient = world.app) {
  const hold = expectOk(await app.call(nsid('createTicketHold'), { items: [{ tierId, quantity }] }))
  const paymentId = paymentIdOf(await payHold(hold.url))
  const listed = expectOk(await app.call(nsid('listBuyerTickets'), { paymentId, limit: 100 }))
  return { paymentId, tickets: listed.tickets as Body[] }
}

export async function setEventStart(world: World, eventId: string, startsAt: string, app: AppClient = world.app) {
  expectOk(await app.call(nsid('updateTicketEvent'), { eventId, startsAt }))
}

export async function tierUsage(app: AppClient, eventId: string, tierId: string) {
  const availability = expectOk(await app.call(nsid('getTicketAvailability'), { eventId }))
  const tier = availability.tiers.find((t: Body) => t.id === tierId)
  const group = tier.capacityGroupId ? availability.capacityGroups.find((g: Body) => g.id === tier.capacityGroupId) : undefined
  return {
    sold: tier.sold as number,
    held: tier.held as number,
    remaining: tier.remaining as number,
    groupSold: group?.sold as number | undefined,
  }
}

/** A receiver that answers 200 to anything: a webhook URL for an app that wants its events. */
export async function startSink(): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    req.resume()
    req.on('end', () => res.writeHead(200).end())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://localhost:${port}/hook`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  }
}

/** A registered app with a webhook URL: the service records the events it is owed. */
export async function newAppWithEvents(world: World, webhookUrl: string): Promise<AppClient> {
  const app = await newIdentityClient(world)
  const res = await registerApp(world.service, { did: app.did, name: 'app with events', webhookUrl })
  if (res.status !== 200) throw new Error(`registerApp failed: ${res.status} ${JSON.stringify(res.body)}`)
  return app
}

/**
 * The events recorded for an app, oldest first, as their envelopes: read from the service's
 * outbox, where each is written in the same transaction as the change it reports.
 */
export async function recordedEvents(world: World, appDid: string, type?: string): Promise<Array<{ type: string; data: Body }>> {
  const rows = await dbAll<{ type: string; payload: string }>(world.service, 'SELECT type, payload FROM outbox WHERE appDid = ? ORDER BY seq', [appDid])
  return rows
    .filter((row) => type === undefined || row.type === type)
    .map((row) => ({ type: row.type, data: (JSON.parse(row.payload) as { data: Body }).data }))
}

/** A table's rows matching a column, read from the service's database (refund and checkIn rows have no reading method). */
export function rowsWhere(world: World, table: 'refund' | 'checkIn' | 'payment', column: string, value: string): Promise<Body[]> {
  return dbAll<Body>(world.service, `SELECT * FROM "${table}" WHERE "${column}" = ?`, [value])
}
