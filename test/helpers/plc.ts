// A real did:plc directory (@did-plc/server, in-memory) for tests.
//
// @did-plc/server 0.0.1 is an old CommonJS bundle (express 4, kysely 0.23,
// its own @atproto/crypto 0.1.0); it runs unchanged on Node 24. Things to know:
// - Database.mock() keeps everything in memory: no Postgres, no migrations.
// - Documents come in the *legacy* form: `EcdsaSecp256k1VerificationKey2019` /
//   `EcdsaSecp256r1VerificationKey2019` with an *uncompressed* key in
//   publicKeyMultibase, not the `Multikey` form plc.directory serves today.
//   @atproto/identity converts both to the same compressed did:key; a
//   hand-written document parser in the service must handle both too.
// - `GET /:did/data` answers the raw document data ({ verificationMethods: { atproto: 'did:key:…' }, … }).
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Database, PlcServer } from '@did-plc/server'

export interface PlcHandle {
  /** Base URL, e.g. http://127.0.0.1:41234 (what ATM_PLC_URL gets). */
  url: string
  port: number
  close(): Promise<void>
}

export async function startPlc(): Promise<PlcHandle> {
  // Port 0: the kernel picks a free port at bind time, so there is no window in
  // which another process could take it (PlcServer passes the port straight to
  // app.listen). It listens on all interfaces ('::', dual stack).
  const server = PlcServer.create({ db: Database.mock(), port: 0 })
  const http: Server = await server.start()
  const { port } = http.address() as AddressInfo
  let closed = false
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    async close() {
      if (closed) return
      closed = true
      await server.destroy()
    },
  }
}
