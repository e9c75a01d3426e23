// A did:web host on 127.0.0.1 serving real DID documents for test apps.
//
// One host = one port = one *root* identity, did:web:localhost%3A<port>,
// served at /.well-known/did.json. Path identities (did:web:localhost%3A<port>:apps:foo,
// served at /apps/foo/did.json) are valid did:web, but @atproto/identity 0.5
// refuses them (UnsupportedDidWebPathError), so the atproto stack cannot
// resolve them: use them to test that refusal, and start one host per did:web
// app that must actually authenticate (hosts are cheap).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { ExportableKeypair } from '@atproto/crypto'
import { createKeypair, curveOf, type Curve, type Identity } from './identity.js'

export interface ServiceEntry {
  /** Fragment, e.g. '#atproto_pds' */
  id: string
  type: string
  endpoint: string
}

export interface DidWebIdentity extends Identity {
  method: 'web'
  curve: Curve
  /** [] for the root identity, ['apps', 'foo'] for did:web:…:apps:foo */
  path: string[]
  handle?: string
  services: ServiceEntry[]
}

export interface DidWebHost {
  port: number
  /** http://localhost:<port> */
  origin: string
  /** The root identity (did:web:localhost%3A<port>). */
  identity: DidWebIdentity
  /** did:web:localhost%3A<port> or, with a name ('apps:foo' or 'apps/foo'), a path DID. */
  did(name?: string): string
  /** Adds (or replaces) the identity at `name` (root when omitted). */
  addIdentity(opts?: {
    name?: string
    curve?: Curve
    keypair?: ExportableKeypair
    handle?: string
    service?: ServiceEntry
  }): Promise<DidWebIdentity>
  /** Key rotation: swaps the #atproto key; returns the old keypair. */
  rotateKey(identity: DidWebIdentity, newKeypair?: ExportableKeypair): Promise<ExportableKeypair>
  /** The document currently served for an identity. */
  document(identity: DidWebIdentity): Record<string, unknown>
  /**
   * Overrides what is served at an identity's path: a status and JSON (or raw
   * string) body, e.g. { status: 404 } or { status: 200, body: '{not json' }.
   * Pass null to go back to the real document.
   */
  override(identity: DidWebIdentity, response: { status: number; body?: unknown } | null): void
  /** Paths requested so far, in order (to count document fetches). */
  requests: string[]
  close(): Promise<void>
}

export async function startDidWebHost(
  opts: { curve?: Curve; handle?: string; service?: ServiceEntry } = {},
): Promise<DidWebHost> {
  const identities = new Map<string, DidWebIdentity>() // key: document path
  const overrides = new Map<string, { status: number; body?: unknown }>()
  const requests: string[] = []

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    requests.push(path)
    const o = overrides.get(path)
    if (o) return send(res, o.status, o.body)
    const id = identities.get(path)
    if (!id || req.method !== 'GET') return send(res, 404, { error: 'NotFound' })
    send(res, 200, buildDocument(id))
  })
  // 127.0.0.1 only: localhost resolves to it here, and nothing outside needs it.
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address() as AddressInfo
  const root = `did:web:localhost%3A${port}`

  const did = (name?: string): string => {
    const parts = splitName(name)
    return parts.length ? `${root}:${parts.map(encodeURIComponent).join(':')}` : root
  }
  const docPath = (parts: string[]): string =>
    parts.length ? `/${parts.join('/')}/did.json` : '/.well-known/did.json'

  const host: DidWebHost = {
    port,
    origin: `http://localhost:${port}`,
    identity: undefined as unknown as DidWebIdentity, // set just below
    did,
    async addIdentity(o = {}) {
      const keypair = o.keypair ?? (await createKeypair(o.curve ?? 'k256'))
      const path = splitName(o.name)
      const identity: DidWebIdentity = {
        method: 'web',
        did: did(o.name),
        keypair,
        curve: curveOf(keypair),
        path,
        handle: o.handle,
        services: o.service ? [o.service] : [],
      }
      identities.set(docPath(path), identity)
      if (path.length === 0) host.identity = identity
      return identity
    },
    async rotateKey(identity, newKeypair) {
      const old = identity.keypair
      identity.keypair = newKeypair ?? (await createKeypair(identity.curve))
      identity.curve = curveOf(identity.keypair)
      return old
    },
    document: (identity) => buildDocument(identity),
    override(identity, response) {
      const p = docPath(identity.path)
      if (response) overrides.set(p, response)
      else overrides.delete(p)
    },
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
  await host.addIdentity({ curve: opts.curve, handle: opts.handle, service: opts.service })
  return host
}

/** The DID document atproto expects: #atproto as a Multikey (compressed key). */
export function buildDocument(id: DidWebIdentity): Record<string, unknown> {
  return {
    '@context': ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/multikey/v1'],
    id: id.did,
    alsoKnownAs: id.handle ? [`at://${id.handle}`] : [],
    verificationMethod: [
      {
        id: `${id.did}#atproto`,
        type: 'Multikey',
        controller: id.did,
        publicKeyMultibase: id.keypair.did().slice('did:key:'.length),
      },
    ],
    service: id.services.map((s) => ({ id: s.id, type: s.type, serviceEndpoint: s.endpoint })),
  }
}

function splitName(name?: string): string[] {
  return name ? name.split(/[:/]/).filter(Boolean) : []
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(text)
}
