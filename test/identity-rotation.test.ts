// A rotated-away key is refused by every worker, through real HTTP against the real service
// with two workers on one database. Each worker caches DID documents on its own; once one of
// them has seen an issuer's new document, a token signed with the old key must be refused by
// both, also by the one whose cached document still holds the old key.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { expectError, expectOk } from './helpers/expect.js'
import { createKeypair, rotateAtprotoKey, xrpc, type AppClient, type PlcIdentity, type XrpcResponse } from './helpers/index.js'
import { createEventWithTier, newApp, newIdentityClient, nsid, startWorld, type World } from './helpers/world.js'

const AVAILABILITY = nsid('getTicketAvailability')
const HOLD = nsid('createTicketHold')
/** A new connection per request: the primary hands each to the workers in turn. */
const NEW_CONNECTION = { connection: 'close' }
const SPREAD = 8

let world: World

beforeAll(async () => {
  world = await startWorld({ workers: 2, logLevel: 'debug' })
})

afterAll(async () => {
  await world?.close()
})

function parallel<T>(n: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => fn(i)))
}

async function availability(app: AppClient, eventId: string, keypair = app.identity.keypair): Promise<XrpcResponse> {
  const token = await app.token(AVAILABILITY, { keypair })
  return xrpc(world.service.url, AVAILABILITY, { method: 'GET', params: { eventId }, token, headers: NEW_CONNECTION })
}

async function hold(app: AppClient, tierId: string, keypair = app.identity.keypair): Promise<XrpcResponse> {
  const token = await app.token(HOLD, { keypair })
  return xrpc(world.service.url, HOLD, { body: { items: [{ tierId, quantity: 1 }] }, token, headers: NEW_CONNECTION })
}

/** The worker processes that have cached `did`'s document, from their debug log lines. */
function workersThatCached(did: string): Set<unknown> {
  return new Set(world.service.jsonLogs().filter((line) => line.msg === 'DID document cached' && line.did === did).map((line) => line.pid))
}

it('an app’s old key is refused by both workers once one has seen the new document', async () => {
  const app = await newApp(world)
  const { eventId, tierId } = await createEventWithTier({ app, organizer: world.organizer }, { quantityTotal: 100 })
  const identity = app.identity as PlcIdentity

  // Both workers verify the app's tokens, so both cache its document with the old key.
  for (const res of await parallel(SPREAD, () => availability(app, eventId))) expectOk(res)

  const oldKey = await rotateAtprotoKey(world.plc.url, identity, await createKeypair('k256'))
  // One request signed with the new key: the worker that takes it sees the new document.
  expectOk(await availability(app, eventId))

  const before = await availability(app, eventId)
  expectOk(before)
  const remaining = before.body.tiers[0].remaining as number
  // Queries and holds (the hold spends its token in its own transaction), on both workers.
  const refused = await parallel(2 * SPREAD, (i) => (i % 2 ? availability(app, eventId, oldKey) : hold(app, tierId, oldKey)))
  for (const res of refused) expectError(res, 401, 'BadJwtSignature')
  const after = await availability(app, eventId)
  expectOk(after)
  expect(after.body.tiers[0].remaining).toBe(remaining)
  // The new key keeps working on both workers.
  for (const res of await parallel(SPREAD, () => availability(app, eventId))) expectOk(res)
  // Both workers had cached the old document: the refusals above are not one worker's doing.
  expect(workersThatCached(app.did).size).toBe(2)
})

it('a buyer’s old key is refused in assertions by both workers once one has seen the new document', async () => {
  const { tierId } = await createEventWithTier(world, { quantityTotal: 100 })
  const buyer = await newIdentityClient(world)
  const identity = buyer.identity as PlcIdentity
  const holdFor = async (keypair = buyer.identity.keypair) =>
    xrpc(world.service.url, HOLD, {
      body: { items: [{ tierId, quantity: 1 }], buyerDid: buyer.did, buyerAssertionJwt: await buyer.token(HOLD, { keypair }) },
      token: await world.app.token(HOLD),
      headers: NEW_CONNECTION,
    })

  for (const res of await parallel(SPREAD, () => holdFor())) expectOk(res)

  const oldKey = await rotateAtprotoKey(world.plc.url, identity, await createKeypair('k256'))
  expectOk(await holdFor())

  const refused = await parallel(2 * SPREAD, () => holdFor(oldKey))
  for (const res of refused) expectError(res, 400, 'InvalidAssertion', /BadJwtSignature/)
  for (const res of await parallel(SPREAD, () => holdFor())) expectOk(res)
  expect(workersThatCached(buyer.did).size).toBe(2)
})
