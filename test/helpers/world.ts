// A ready world for method tests: a local PLC directory, a running service, a registered
// app, and an organizer who signed in and finished test payment setup. Everything goes
// through the public interface (admin Basic auth, service-auth tokens over HTTP).
import { createPlcIdentity, type Curve, type PlcIdentity } from './identity.js'
import { startPlc, type PlcHandle } from './plc.js'
import { startService, type ServiceHandle, type StartServiceOptions } from './service.js'
import { AppClient, xrpc } from './xrpc.js'

export const NS = 'tickets.atmosphere'
export const nsid = (method: string) => `${NS}.${method}`

export interface World {
  plc: PlcHandle
  service: ServiceHandle
  /** A registered app with tickets enabled. */
  app: AppClient
  /** A signed-in organizer with test payment setup, distinct from the app. */
  organizer: AppClient
  close(): Promise<void>
}

export async function registerApp(service: ServiceHandle, body: Record<string, unknown>) {
  return xrpc(service.url, nsid('admin.registerApp'), { body, basic: service.adminPassword })
}

export async function newIdentityClient(world: Pick<World, 'plc' | 'service'>, curve: Curve = 'k256'): Promise<AppClient> {
  const identity: PlcIdentity = await createPlcIdentity(world.plc.url, { curve })
  return new AppClient(world.service, identity)
}

/** A new app DID, registered with the operator (tickets enabled). */
export async function newApp(world: Pick<World, 'plc' | 'service'>, curve: Curve = 'k256'): Promise<AppClient> {
  const app = await newIdentityClient(world, curve)
  const res = await registerApp(world.service, { did: app.did, name: `app ${app.did.slice(-6)}` })
  if (res.status !== 200) throw new Error(`registerApp failed: ${res.status} ${JSON.stringify(res.body)}`)
  return app
}

/** A new organizer that signed in and finished payment setup in test. */
export async function newOrganizer(world: Pick<World, 'plc' | 'service'>, opts: { paymentSetup?: boolean } = {}) {
  const organizer = await newIdentityClient(world)
  const signIn = await organizer.call(nsid('registerOrganizer'), {})
  if (signIn.status !== 200) throw new Error(`registerOrganizer failed: ${signIn.status} ${JSON.stringify(signIn.body)}`)
  if (opts.paymentSetup !== false) {
    const setup = await organizer.call(nsid('completePaymentSetup'), { environment: 'test' })
    if (setup.status !== 200) throw new Error(`completePaymentSetup failed: ${setup.status} ${JSON.stringify(setup.body)}`)
  }
  return organizer
}

export async function startWorld(opts: Partial<StartServiceOptions> = {}): Promise<World> {
  const plc = await startPlc()
  const service = await startService({ ...opts, plcUrl: plc.url })
  const partial = { plc, service }
  const app = await newApp(partial)
  const organizer = await newOrganizer(partial)
  return {
    plc,
    service,
    app,
    organizer,
    async close() {
      await service.close()
      await plc.close()
    },
  }
}

let uriCounter = 0
export function eventUri(organizerDid: string): string {
  uriCounter++
  return `at://${organizerDid}/community.lexicon.calendar.event/ev${Date.now().toString(36)}${uriCounter}`
}

/**
 * Binds a new event for `organizer` through `app` (with the organizer's assertion) and
 * creates a tier on it; a capacity group first when `groupCapacity` is given.
 */
export async function createEventWithTier(
  world: Pick<World, 'app' | 'organizer'>,
  tier: { unitAmount?: number; quantityTotal: number; maxPerOrder?: number; currency?: string; title?: string } ,
  opts: { groupCapacity?: number; app?: AppClient; organizer?: AppClient; event?: { title?: string; startsAt?: string } } = {},
) {
  const app = opts.app ?? world.app
  const organizer = opts.organizer ?? world.organizer
  const uri = eventUri(organizer.did)
  const newEvent = { uri, title: 'Test event', ...opts.event }
  let capacityGroupId: string | undefined
  let eventId: string | undefined
  if (opts.groupCapacity !== undefined) {
    const group = await app.call(nsid('createCapacityGroup'), {
      organizerDid: organizer.did,
      organizerAssertionJwt: await organizer.token(nsid('createCapacityGroup')),
      event: newEvent,
      name: 'Venue',
      totalCapacity: opts.groupCapacity,
    })
    if (group.status !== 200) throw new Error(`createCapacityGroup failed: ${JSON.stringify(group.body)}`)
    capacityGroupId = group.body.capacityGroup.id
    eventId = group.body.event.id
  }
  const created = await app.call(nsid('createTicketTier'), {
    organizerDid: organizer.did,
    organizerAssertionJwt: await organizer.token(nsid('createTicketTier')),
    event: eventId ? { eventId } : newEvent,
    capacityGroupId,
    title: tier.title ?? 'General admission',
    currency: tier.currency ?? 'usd',
    unitAmount: tier.unitAmount ?? 2500,
    quantityTotal: tier.quantityTotal,
    maxPerOrder: tier.maxPerOrder ?? 10,
  })
  if (created.status !== 200) throw new Error(`createTicketTier failed: ${created.status} ${JSON.stringify(created.body)}`)
  return { uri, eventId: created.body.event.id as string, tierId: created.body.tier.id as string, capacityGroupId }
}
