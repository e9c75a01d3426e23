// A new event named only by the at-uri of its record takes its title, times and CID from the
// record, read over XRPC (com.atproto.repo.getRecord) from the PDS that the organizer's DID
// document names. The PDS here is a small HTTP server speaking that one method.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AppClient, expectError, expectOk, startDidWebHost, type DidWebHost } from './helpers/index.js'
import { nsid, startWorld, type World } from './helpers/world.js'

const COLLECTION = 'community.lexicon.calendar.event'
const RECORD_CID = 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm'

let world: World
let pds: Server
let host: DidWebHost
let organizer: AppClient
const records = new Map<string, Record<string, unknown>>()
const pdsRequests: string[] = []

beforeAll(async () => {
  world = await startWorld()
  pds = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://pds')
    pdsRequests.push(url.pathname + url.search)
    if (url.pathname !== '/xrpc/com.atproto.repo.getRecord') return void res.writeHead(404).end()
    const key = `${url.searchParams.get('repo')}/${url.searchParams.get('collection')}/${url.searchParams.get('rkey')}`
    const value = records.get(key)
    res.setHeader('content-type', 'application/json')
    if (!value) return void res.writeHead(400).end(JSON.stringify({ error: 'RecordNotFound', message: `Could not locate record: ${key}` }))
    res.writeHead(200).end(JSON.stringify({ uri: `at://${key}`, cid: RECORD_CID, value }))
  })
  await new Promise<void>((resolve) => pds.listen(0, '127.0.0.1', resolve))
  const pdsUrl = `http://localhost:${(pds.address() as AddressInfo).port}`
  host = await startDidWebHost({ service: { id: '#atproto_pds', type: 'AtprotoPersonalDataServer', endpoint: pdsUrl } })
  organizer = new AppClient(world.service, host.identity)
  expectOk(await organizer.call(nsid('registerOrganizer'), {}))
  expectOk(await organizer.call(nsid('completePaymentSetup'), { environment: 'test' }))
})

afterAll(async () => {
  await host?.close()
  await new Promise((resolve) => pds?.close(resolve))
  await world?.close()
})

describe('binding an event by the at-uri of its record', () => {
  it('takes the title, times and CID from the record on the organizer PDS', async () => {
    records.set(`${organizer.did}/${COLLECTION}/launch`, {
      $type: COLLECTION,
      name: 'Launch party',
      startsAt: '2027-03-01T19:00:00.000Z',
      endsAt: '2027-03-01T23:00:00.000Z',
      createdAt: '2026-11-01T00:00:00.000Z',
    })
    const uri = `at://${organizer.did}/${COLLECTION}/launch`
    const res = await world.app.call(nsid('createTicketEvent'), {
      organizerDid: organizer.did,
      organizerAssertionJwt: await organizer.token(nsid('createTicketEvent')),
      event: { uri },
    })
    const body = expectOk(res)
    expect(body.event).toMatchObject({
      uri,
      title: 'Launch party',
      startsAt: '2027-03-01T19:00:00.000Z',
      endsAt: '2027-03-01T23:00:00.000Z',
      cid: RECORD_CID,
      organizerDid: organizer.did,
    })
    expect(pdsRequests.some((path) => path.includes('rkey=launch'))).toBe(true)
  })

  it('a title given by the app wins, and the PDS is not asked', async () => {
    const before = pdsRequests.length
    const uri = `at://${organizer.did}/${COLLECTION}/named`
    const body = expectOk(
      await world.app.call(nsid('createTicketTier'), {
        organizerDid: organizer.did,
        organizerAssertionJwt: await organizer.token(nsid('createTicketTier')),
        event: { uri, title: 'Named by the app' },
        title: 'GA',
        currency: 'usd',
        unitAmount: 0,
        quantityTotal: 10,
      }),
    )
    expect(body.event.title).toBe('Named by the app')
    expect(pdsRequests.length).toBe(before)
  })

  it('a record that cannot be read leaves a new event without title: InvalidEvent, nothing bound', async () => {
    const uri = `at://${organizer.did}/${COLLECTION}/missing`
    expectError(
      await world.app.call(nsid('createCapacityGroup'), {
        organizerDid: organizer.did,
        organizerAssertionJwt: await organizer.token(nsid('createCapacityGroup')),
        event: { uri },
        name: 'Hall',
        totalCapacity: 10,
      }),
      400,
      'InvalidEvent',
      /title is required.*could not be read/,
    )
    expectError(await world.app.call(nsid('getTicketAvailability'), { eventUri: uri }), 400, 'EventNotFound')
  })
})
