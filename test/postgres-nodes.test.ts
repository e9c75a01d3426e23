// CONTRACT §5 and §7 across machines: two service nodes (each its own process group, port and
// workers) on one PostgreSQL database, as an operator runs them behind a load balancer. Every
// request here goes over real HTTP to one node or the other; the checks that read the
// database read PostgreSQL itself.
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { payHold, paymentIdOf } from './helpers/checkout.js'
import { expectError, expectOk } from './helpers/expect.js'
import { createPlcIdentity } from './helpers/identity.js'
import { startPlc, type PlcHandle } from './helpers/plc.js'
import { freePort } from './helpers/port.js'
import { migrations } from '../src/storage/postgres/migrations/index.js'
import { createTestDatabase } from './helpers/postgres.js'
import { startEventReceiver, verifyWebhook, waitUntil, type EventReceiver } from './helpers/receiver.js'
import { startService, type ServiceHandle } from './helpers/service.js'
import { createEventWithTier, nsid } from './helpers/world.js'
import { AppClient, xrpc, type XrpcResponse } from './helpers/xrpc.js'

const HOLD = nsid('createTicketHold')
const AVAILABILITY = nsid('getTicketAvailability')
/** A new connection per request: the primary of a node hands each to its workers in turn. */
const NEW_CONNECTION = { connection: 'close' }

interface Cluster {
  plc: PlcHandle
  databaseUrl: string
  /** The DID every node answers to (the `aud` of every token), the first node's did:web. */
  serviceDid: string
  nodes: ServiceHandle[]
  adminPassword: string
  /** A registered app (its events go to `receiver`) and a signed-in organizer. */
  app: AppClient
  organizer: AppClient
  webhookSecret: string
  receiver: EventReceiver
  close(): Promise<void>
}

/** `identity` calling `node`: the same client, aimed at another node of the same service. */
function via(client: AppClient, node: ServiceHandle, serviceDid: string): AppClient {
  return new AppClient({ url: node.url, serviceDid }, client.identity)
}

async function startCluster(nodeCount: number, env: Record<string, string> = {}): Promise<Cluster> {
  const plc = await startPlc()
  const databaseUrl = await createTestDatabase('nodes')
  const ports = await Promise.all(Array.from({ length: nodeCount }, () => freePort()))
  const serviceDid = `did:web:localhost%3A${ports[0]}`
  const adminPassword = 'cluster-admin-password'
  // Started together, as a deployment starts them: they race to migrate the empty database.
  const nodes = await Promise.all(
    ports.map((port) =>
      startService({
        plcUrl: plc.url,
        port,
        workers: 2,
        adminPassword,
        databaseUrl,
        env: { ATM_SERVICE_DID: serviceDid, ATM_PUBLIC_URL: `http://localhost:${ports[0]}`, ATM_HOLD_SWEEP_MS: '200', ...env },
      }),
    ),
  )
  const first = { url: nodes[0]!.url, serviceDid }
  const receiver = await startEventReceiver()
  const app = new AppClient(first, await createPlcIdentity(plc.url))
  const registered = await xrpc(nodes[0]!.url, nsid('admin.registerApp'), {
    body: { did: app.did, name: 'cluster app', webhookUrl: `${receiver.origin}/hook` },
    basic: adminPassword,
  })
  expectOk(registered)
  const organizer = new AppClient(first, await createPlcIdentity(plc.url))
  expectOk(await organizer.call(nsid('registerOrganizer'), {}))
  expectOk(await organizer.call(nsid('completePaymentSetup'), { environment: 'test' }))
  return {
    plc,
    databaseUrl,
    serviceDid,
    nodes,
    adminPassword,
    app,
    organizer,
    webhookSecret: registered.body.webhookSecret as string,
    receiver,
    async close() {
      await Promise.all(nodes.map((node) => node.close()))
      await receiver.close()
      await plc.close()
    },
  }
}

async function query<Row extends Record<string, unknown>>(databaseUrl: string, text: string, params: unknown[] = []): Promise<Row[]> {
  // Counts come back as bigint; these are small enough to be numbers, as the service reads them.
  const types = { getTypeParser: (oid: number, format?: string) => (oid === 20 || oid === 1700 ? Number : pg.types.getTypeParser(oid, format as 'text')) }
  const client = new pg.Client({ connectionString: databaseUrl, types: types as pg.CustomTypesConfig })
  await client.connect()
  try {
    return (await client.query<Row>(text, params)).rows
  } finally {
    await client.end()
  }
}

/** `n` holds of one unit each at once, alternating between the nodes, each on a new connection. */
async function holdsAtOnce(cluster: Cluster, n: number, tierIds: string[]): Promise<XrpcResponse[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, index) => {
      const node = cluster.nodes[index % cluster.nodes.length]!
      const token = await cluster.app.token(HOLD)
      return xrpc(node.url, HOLD, { body: { items: [{ tierId: tierIds[index % tierIds.length], quantity: 1 }] }, token, headers: NEW_CONNECTION })
    }),
  )
}

/** Each tier's and group's counters against the hold items and tickets that make them up. */
async function countersMatchRows(databaseUrl: string): Promise<void> {
  const tiers = await query<{ id: string; held: number; sold: number; total: number; items: number; tickets: number }>(
    databaseUrl,
    `SELECT t.id, t.held, t.sold, t."quantityTotal" AS total,
            (SELECT COALESCE(SUM(quantity), 0) FROM "holdItem" i WHERE i."tierId" = t.id AND i.counted = 1) AS items,
            (SELECT COUNT(*) FROM ticket k WHERE k."tierId" = t.id AND k.status IN ('issued', 'checked_in')) AS tickets
       FROM tier t`,
  )
  for (const tier of tiers) {
    expect(tier.held, `tier ${tier.id} held`).toBe(tier.items)
    expect(tier.sold, `tier ${tier.id} sold`).toBe(tier.tickets)
    expect(tier.held + tier.sold, `tier ${tier.id} within its total`).toBeLessThanOrEqual(tier.total)
  }
  const groups = await query<{ id: string; held: number; sold: number; total: number }>(
    databaseUrl,
    'SELECT id, held, sold, "totalCapacity" AS total FROM "capacityGroup"',
  )
  for (const group of groups) expect(group.held + group.sold, `group ${group.id} within its total`).toBeLessThanOrEqual(group.total)
}

let cluster: Cluster

beforeAll(async () => {
  cluster = await startCluster(2)
})

afterAll(async () => {
  await cluster?.close()
})

describe('two nodes on one PostgreSQL database', () => {
  it('migrated it once although they started together, and sign with one key', async () => {
    // Both started (a node that lost a race to create a table would have stopped), and the
    // database holds each migration once.
    const applied = await query<{ name: string }>(cluster.databaseUrl, 'SELECT name FROM schema_migrations ORDER BY name')
    expect(applied.map((row) => row.name)).toEqual(migrations.map((migration) => migration.name))
    const documents = await Promise.all(cluster.nodes.map(async (node) => (await fetch(`${node.url}/.well-known/did.json`)).json()))
    expect(documents[0].id).toBe(cluster.serviceDid)
    expect(documents[1]).toEqual(documents[0])
    const keys = await query(cluster.databaseUrl, 'SELECT name FROM "serviceKey"')
    expect(keys).toHaveLength(1)
  })

  it('never oversells a tier, whichever node each of 60 holds at once reaches', async () => {
    const { eventId, tierId } = await createEventWithTier(cluster, { quantityTotal: 17 })
    const answers = await holdsAtOnce(cluster, 60, [tierId])
    const won = answers.filter((res) => res.status === 200)
    for (const res of answers) if (res.status !== 200) expectError(res, 400, 'InsufficientTicketCapacity')
    expect(won).toHaveLength(17)
    // Both nodes took part in it.
    for (const node of cluster.nodes) {
      const availability = expectOk(await via(cluster.app, node, cluster.serviceDid).call(AVAILABILITY, { eventId }))
      expect(availability.tiers[0]).toMatchObject({ held: 17, remaining: 0 })
    }
    await countersMatchRows(cluster.databaseUrl)
  })

  it('never oversells a capacity group across its tiers and the nodes', async () => {
    const first = await createEventWithTier(cluster, { quantityTotal: 20 }, { groupCapacity: 25 })
    const second = expectOk(
      await cluster.app.call(nsid('createTicketTier'), {
        organizerDid: cluster.organizer.did,
        organizerAssertionJwt: await cluster.organizer.token(nsid('createTicketTier')),
        event: { eventId: first.eventId },
        capacityGroupId: first.capacityGroupId,
        title: 'Balcony',
        currency: 'usd',
        unitAmount: 3000,
        quantityTotal: 20,
        maxPerOrder: 10,
      }),
    )
    const answers = await holdsAtOnce(cluster, 70, [first.tierId, second.tier.id])
    expect(answers.filter((res) => res.status === 200)).toHaveLength(25)
    for (const res of answers) if (res.status !== 200) expectError(res, 400, 'InsufficientTicketCapacity')
    await countersMatchRows(cluster.databaseUrl)
  })

  it('answers JwtReplayed on one node for a token spent on the other, and spends a token sent to both at once once', async () => {
    const { eventId } = await createEventWithTier(cluster, { quantityTotal: 5 })
    const [a, b] = cluster.nodes as [ServiceHandle, ServiceHandle]
    const token = await cluster.app.token(AVAILABILITY)
    expectOk(await xrpc(a.url, AVAILABILITY, { method: 'GET', params: { eventId }, token }))
    expectError(await xrpc(b.url, AVAILABILITY, { method: 'GET', params: { eventId }, token }), 401, 'JwtReplayed')
    for (let round = 0; round < 5; round++) {
      const racing = await cluster.app.token(AVAILABILITY)
      const answers = await Promise.all(
        [a, b, a, b].map((node) => xrpc(node.url, AVAILABILITY, { method: 'GET', params: { eventId }, token: racing, headers: NEW_CONNECTION })),
      )
      expect(answers.filter((res) => res.status === 200)).toHaveLength(1)
      for (const res of answers) if (res.status !== 200) expectError(res, 401, 'JwtReplayed')
    }
  })

  it('treats one idempotencyKey as one key on every node: one hold, whichever node answers', async () => {
    const { eventId, tierId } = await createEventWithTier(cluster, { quantityTotal: 50 })
    for (let round = 0; round < 4; round++) {
      const body = { items: [{ tierId, quantity: 2 }], idempotencyKey: `cluster-key-${round}` }
      const answers = await Promise.all(
        Array.from({ length: 6 }, async (_, index) =>
          xrpc(cluster.nodes[index % 2]!.url, HOLD, { body, token: await cluster.app.token(HOLD), headers: NEW_CONNECTION }),
        ),
      )
      const holdIds = new Set<string>()
      for (const res of answers) {
        if (res.status === 200) holdIds.add(res.body.holdId)
        else expectError(res, 409, 'IdempotencyKeyInUse')
      }
      expect(holdIds.size).toBe(1)
      // A later retry on either node answers the same hold.
      for (const node of cluster.nodes) {
        const retry = expectOk(await xrpc(node.url, HOLD, { body, token: await cluster.app.token(HOLD) }))
        expect(retry.holdId).toBe([...holdIds][0])
        expect(retry.reused).toBe(true)
      }
    }
    const availability = expectOk(await cluster.app.call(AVAILABILITY, { eventId }))
    expect(availability.tiers[0].held).toBe(8)
  })

  it('pays on one node a hold made on the other, and shows its tickets on either', async () => {
    const { tierId } = await createEventWithTier(cluster, { quantityTotal: 10 })
    const [a, b] = cluster.nodes as [ServiceHandle, ServiceHandle]
    const hold = expectOk(await via(cluster.app, a, cluster.serviceDid).call(HOLD, { items: [{ tierId, quantity: 2 }] }))
    const onB = new URL(hold.url)
    onB.port = String(b.port)
    const ticketsAt = await payHold(onB.href)
    const paymentId = paymentIdOf(ticketsAt)
    for (const node of cluster.nodes) {
      const page = new URL(ticketsAt)
      page.port = String(node.port)
      const res = await fetch(page)
      expect(res.status).toBe(200)
      expect(await res.text()).toContain('General admission')
    }
    const listed = expectOk(await via(cluster.app, b, cluster.serviceDid).call(nsid('listBuyerTickets'), { paymentId, limit: 10 }))
    expect(listed.tickets).toHaveLength(2)
  })

  it('delivers each event to the app, and expires each hold once, with every node sweeping and delivering', async () => {
    const short = await startCluster(2, { ATM_HOLD_TTL_SECONDS: '1' })
    try {
      const { tierId } = await createEventWithTier(short, { quantityTotal: 100 })
      const answers = await holdsAtOnce(short, 20, [tierId])
      const holdIds = answers.map((res) => expectOk(res).holdId as string)
      const eventsOf = (type: string) =>
        short.receiver.deliveries.map((delivery) => verifyWebhook(delivery, short.webhookSecret)).filter((event) => event.type === type)
      await waitUntil('every hold reported created and expired', () => eventsOf('ticket.hold.expired').length >= holdIds.length)
      // A moment more, for a second copy of any of them to arrive.
      await new Promise((resolve) => setTimeout(resolve, 1000))
      for (const type of ['ticket.hold.created', 'ticket.hold.expired']) {
        const reported = eventsOf(type).map((event) => event.data.holdId as string)
        expect(reported.sort(), type).toEqual([...holdIds].sort())
      }
      const ids = short.receiver.deliveries.map((delivery) => delivery.headers['atm-delivery-id'])
      expect(new Set(ids).size).toBe(ids.length)
      await countersMatchRows(short.databaseUrl)
    } finally {
      await short.close()
    }
  })

  it('loses nothing a node acknowledged when it is killed (kill -9) mid-burst; the other node goes on', async () => {
    const { tierId } = await createEventWithTier(cluster, { quantityTotal: 100_000 })
    const [a, b] = cluster.nodes as [ServiceHandle, ServiceHandle]
    const acknowledged: string[] = []
    let failedOnA = 0
    let stop = false
    const sender = async (node: ServiceHandle) => {
      while (!stop) {
        const res = await xrpc(node.url, HOLD, { body: { items: [{ tierId, quantity: 1 }] }, token: await cluster.app.token(HOLD) }).catch(() => null)
        if (res?.status === 200) acknowledged.push(res.body.holdId)
        else if (node === a) failedOnA++
        else if (res) throw new Error(`node b answered ${res.status}: ${JSON.stringify(res.body)}`)
      }
    }
    const senders = [sender(a), sender(a), sender(b), sender(b)]
    await waitUntil('a burst under way', () => acknowledged.length >= 40)
    await a.kill9()
    const atKill = acknowledged.length
    await waitUntil('node b serving after the kill', () => acknowledged.length >= atKill + 20)
    stop = true
    await Promise.all(senders)
    expect(failedOnA).toBeGreaterThan(0)
    const stored = await query<{ id: string }>(cluster.databaseUrl, 'SELECT id FROM hold WHERE id = ANY($1)', [acknowledged])
    expect(stored.length).toBe(acknowledged.length)
    await countersMatchRows(cluster.databaseUrl)
    await a.restart()
    const { eventId } = await createEventWithTier(cluster, { quantityTotal: 3 })
    expectOk(await via(cluster.app, a, cluster.serviceDid).call(AVAILABILITY, { eventId }))
  })

  it('answers 503 DatabaseUnavailable while its connections are cut, then recovers by itself with nothing half written', async () => {
    const { eventId, tierId } = await createEventWithTier(cluster, { quantityTotal: 100_000 })
    const answers: XrpcResponse[] = []
    let stop = false
    const sender = async (node: ServiceHandle) => {
      while (!stop) answers.push(await xrpc(node.url, HOLD, { body: { items: [{ tierId, quantity: 1 }] }, token: await cluster.app.token(HOLD) }))
    }
    const senders = cluster.nodes.flatMap((node) => [sender(node), sender(node)])
    await waitUntil('a burst under way', () => answers.length >= 20)
    // What a server restart does to every open session of this database, the nodes' included.
    for (let cut = 0; cut < 3; cut++) {
      await query(cluster.databaseUrl, 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const afterCuts = answers.length
    await waitUntil('requests answered again after the cuts', () => answers.slice(afterCuts).filter((res) => res.status === 200).length >= 20)
    stop = true
    await Promise.all(senders)
    const failures = answers.filter((res) => res.status !== 200)
    expect(failures.length).toBeGreaterThan(0)
    for (const res of failures) {
      expect(res.status).toBe(503)
      expect(res.body.error).toBe('DatabaseUnavailable')
      expect(res.body.message).not.toMatch(/password|postgres:\/\//i)
    }
    const acknowledged = answers.filter((res) => res.status === 200).map((res) => res.body.holdId as string)
    const stored = await query<{ id: string }>(cluster.databaseUrl, 'SELECT id FROM hold WHERE "eventId" = $1', [eventId])
    // Every acknowledged hold is there; a hold whose answer was lost with its connection may be too.
    expect(stored.map((row) => row.id)).toEqual(expect.arrayContaining(acknowledged))
    await countersMatchRows(cluster.databaseUrl)
    for (const node of cluster.nodes) expectOk(await via(cluster.app, node, cluster.serviceDid).call(AVAILABILITY, { eventId }))
    // Each worker took back the session lock that tells the other nodes it is alive.
    const aliveLocks = async () =>
      (await query<{ n: number }>(cluster.databaseUrl, "SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"))[0]!.n
    const deadline = Date.now() + 10_000
    while ((await aliveLocks()) < 4 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200))
    expect(await aliveLocks()).toBe(4)
  })
})

describe('starting on a PostgreSQL that cannot be used', () => {
  it('stops with one plain line for a malformed URL, a refused password and a server that is down', async () => {
    const plc = await startPlc()
    try {
      const good = new URL(await createTestDatabase('start'))
      const wrongPassword = new URL(good.href)
      wrongPassword.password = 'not-the-password'
      const down = new URL(good.href)
      down.port = String(await freePort())
      const cases = [
        { url: 'postgres://user:secret-pw@host:notaport/db', exit: 2, says: /ATM_DATABASE_URL/ },
        { url: wrongPassword.href, exit: 1, says: /password/i },
        { url: down.href, exit: 1, says: /reach|running|refused|answer/i },
      ]
      for (const { url, exit, says } of cases) {
        const service = await startService({ plcUrl: plc.url, databaseUrl: url, workers: 2, readyTimeoutMs: 15_000 }).catch((err: Error) => err)
        expect(service).toBeInstanceOf(Error)
        const output = (service as Error).message.split('--- output ---\n')[1] ?? ''
        const lines = output.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('ATM admin password'))
        expect(lines, output).toHaveLength(1)
        expect(lines[0]).toMatch(says)
        expect(lines[0]).not.toContain('secret-pw')
        expect(lines[0]).not.toContain('not-the-password')
        expect((service as Error).message).toContain(`code ${exit}`)
      }
    } finally {
      await plc.close()
    }
  })
})
