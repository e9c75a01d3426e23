// What the benchmark runs against: a local PLC directory with the apps' and the organizer's
// did:plc identities, the service started by its CLI on a temporary database (an SQLite file,
// or a PostgreSQL database that several nodes share), and an event with paid tiers whose
// capacity does not run out during the run.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Secp256k1Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import { Database as PlcDatabase, PlcServer } from '@did-plc/server'
import { freePort } from './port.js'
import { createBenchKey, mintTokens, type Alg, type BenchKey } from './tokens.js'

export { freePort }

export const NS = 'tickets.atmosphere'
export const HOLD = `${NS}.createTicketHold`
/** The most one tier may hold (the lexicon's maximum). */
export const TIER_CAPACITY = 250_000

export interface Plc {
  url: string
  close(): Promise<void>
}

/** An in-memory PLC directory (@did-plc/server with its mock database) on a loopback port. */
export async function startPlc(): Promise<Plc> {
  const server = PlcServer.create({ db: PlcDatabase.mock(), port: 0 })
  const http: Server = await server.start()
  const { port } = http.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}`, close: () => server.destroy() }
}

export interface BenchIdentity {
  did: string
  key: BenchKey
}

/** A new did:plc whose #atproto key is a fresh key for `alg`. */
export async function createIdentity(plcUrl: string, alg: Alg): Promise<BenchIdentity> {
  const key = await createBenchKey(alg)
  const rotationKey = await Secp256k1Keypair.create()
  const { op, did } = await plc.createOp({
    signingKey: key.didKey,
    handle: `bench-${Math.random().toString(36).slice(2, 10)}.test`,
    pds: 'https://pds.invalid',
    rotationKeys: [rotationKey.did()],
    signer: rotationKey,
  })
  await new plc.Client(plcUrl).sendOperation(did, op)
  return { did, key }
}

export interface Service {
  url: string
  serviceDid: string
  process: ChildProcess
  /** The last lines the service printed (for error reports). */
  output(): string
  stop(): Promise<void>
}

/**
 * `node dist/src/bin.js`, as users start it, configured only by ATM_* variables (the caller's
 * own ATM_* stay out); `workers` unset leaves ATM_WORKERS at its default, the number of CPUs.
 * `env` adds ATM_* settings (a PostgreSQL node's database URL, the service DID it shares).
 */
export async function startService(opts: {
  root: string
  dir: string
  plcUrl: string
  adminPassword: string
  workers?: number
  /** Writes a CPU profile of every service process into this directory. */
  profileDir?: string
  port?: number
  env?: Record<string, string>
}): Promise<Service> {
  const port = opts.port ?? (await freePort())
  const url = `http://127.0.0.1:${port}`
  const env: Record<string, string> = Object.fromEntries(
    Object.entries(process.env).filter((entry): entry is [string, string] => !entry[0].startsWith('ATM_') && entry[1] !== undefined),
  )
  Object.assign(env, {
    ATM_PORT: String(port),
    ATM_DB: join(opts.dir, 'atm.sqlite'),
    ATM_PLC_URL: opts.plcUrl,
    ATM_DEV_MODE: 'true',
    ATM_ADMIN_PASSWORD: opts.adminPassword,
    ...opts.env,
  })
  if (opts.workers !== undefined) env.ATM_WORKERS = String(opts.workers)
  if (opts.profileDir) env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${opts.profileDir}`.trim()
  const child = spawn(process.execPath, [join(opts.root, 'dist', 'src', 'bin.js')], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so that stopping it takes every worker along.
    detached: true,
  })
  let output = ''
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-8000)
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const exited = once(child, 'exit')
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null) throw new Error(`the service exited at start:\n${output}`)
    const ok = await fetch(`${url}/xrpc/_health`).then((res) => res.ok, () => false)
    if (ok) break
    if (attempt > 300) throw new Error(`the service did not become healthy:\n${output}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return {
    url,
    serviceDid: env.ATM_SERVICE_DID ?? `did:web:localhost%3A${port}`,
    process: child,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL')
        } catch {
          // already gone
        }
      }, 15_000)
      await exited
      clearTimeout(timer)
    },
  }
}

export type Backend = 'sqlite' | 'postgres'

/** One service as its clients see it: one node, or several nodes sharing one PostgreSQL database. */
export interface Deployment {
  backend: Backend
  nodes: Service[]
  /** The DID every node answers to: the `aud` of every token. */
  serviceDid: string
  output(): string
  stop(): Promise<void>
}

/**
 * SQLite: one service on a new file in `dir`. PostgreSQL: `nodes` services on `databaseUrl`
 * (a new, empty database), each on a port of its own, all with the first one's service DID and
 * public URL, as nodes behind one load balancer would be. The first starts alone (it migrates
 * the database and creates the signing key there), the others then together.
 */
export async function startDeployment(opts: {
  backend: Backend
  nodes: number
  root: string
  dir: string
  plcUrl: string
  adminPassword: string
  workers?: number
  profileDir?: string
  databaseUrl?: string
  /** ATM_PG_POOL_SIZE of every node; unset leaves the service's default. */
  poolSize?: number
}): Promise<Deployment> {
  const base = { root: opts.root, dir: opts.dir, plcUrl: opts.plcUrl, adminPassword: opts.adminPassword, workers: opts.workers, profileDir: opts.profileDir }
  const nodes: Service[] = []
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.stop().catch(() => undefined)))
  }
  try {
    if (opts.backend === 'sqlite') {
      nodes.push(await startService(base))
    } else {
      const port = await freePort()
      const env: Record<string, string> = {
        ATM_DATABASE_URL: opts.databaseUrl!,
        ATM_SERVICE_DID: `did:web:localhost%3A${port}`,
        ATM_PUBLIC_URL: `http://localhost:${port}`,
      }
      if (opts.poolSize !== undefined) env.ATM_PG_POOL_SIZE = String(opts.poolSize)
      nodes.push(await startService({ ...base, port, env }))
      const others = await Promise.allSettled(Array.from({ length: opts.nodes - 1 }, () => startService({ ...base, env })))
      for (const started of others) if (started.status === 'fulfilled') nodes.push(started.value)
      const failed = others.find((started) => started.status === 'rejected')
      if (failed) throw failed.reason
    }
  } catch (err) {
    await stop()
    throw err
  }
  return {
    backend: opts.backend,
    nodes,
    serviceDid: nodes[0]!.serviceDid,
    output: () => nodes.map((node, index) => `node ${index + 1}:\n${node.output()}`).join('\n'),
    stop,
  }
}

async function call(service: Service, nsid: string, body: unknown, authorization: string): Promise<any> {
  const res = await fetch(`${service.url}/xrpc/${nsid}`, {
    method: 'POST',
    headers: { authorization, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  const answer = (await res.json()) as Record<string, unknown>
  if (!res.ok) throw new Error(`${nsid} answered ${res.status}: ${JSON.stringify(answer)}`)
  return answer
}

export interface BenchApp {
  alg: Alg
  identity: BenchIdentity
  eventId: string
  tierIds: string[]
}

/**
 * Registers one app per token algorithm, signs the organizer in (test payments), and gives
 * each app an event with `tiers` paid tiers of TIER_CAPACITY seats each.
 */
export async function prepareApps(
  service: Service,
  plcUrl: string,
  adminPassword: string,
  algs: Alg[],
  tiers: number,
): Promise<BenchApp[]> {
  const bearer = (who: BenchIdentity, nsid: string) => `Bearer ${mintTokens(who.key, who.did, service.serviceDid, nsid, 1)[0]}`
  const basic = `Basic ${Buffer.from(`admin:${adminPassword}`).toString('base64')}`
  const organizer = await createIdentity(plcUrl, 'ES256K')
  await call(service, `${NS}.registerOrganizer`, { displayName: 'Benchmark organizer' }, bearer(organizer, `${NS}.registerOrganizer`))
  await call(service, `${NS}.completePaymentSetup`, { environment: 'test' }, bearer(organizer, `${NS}.completePaymentSetup`))
  const apps: BenchApp[] = []
  for (const alg of algs) {
    const identity = await createIdentity(plcUrl, alg)
    await call(service, `${NS}.admin.registerApp`, { did: identity.did, name: `Benchmark app (${alg})` }, basic)
    const event = await call(service, `${NS}.createTicketEvent`, {
      organizerDid: organizer.did,
      organizerAssertionJwt: mintTokens(organizer.key, organizer.did, service.serviceDid, `${NS}.createTicketEvent`, 1)[0],
      event: { uri: `at://${organizer.did}/community.lexicon.calendar.event/bench${alg}`, title: `Benchmark on-sale (${alg})` },
    }, bearer(identity, `${NS}.createTicketEvent`))
    const eventId = event.event.id as string
    const tierIds: string[] = []
    for (let index = 0; index < tiers; index++) {
      const tier = await call(service, `${NS}.createTicketTier`, {
        organizerDid: organizer.did,
        event: { eventId },
        title: `General admission ${index + 1}`,
        currency: 'usd',
        unitAmount: 2500,
        quantityTotal: TIER_CAPACITY,
        maxPerOrder: 10,
      }, bearer(identity, `${NS}.createTicketTier`))
      tierIds.push(tier.tier.id as string)
    }
    apps.push({ alg, identity, eventId, tierIds })
  }
  return apps
}
