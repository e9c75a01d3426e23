// Plain-fetch XRPC calls, and an app that signs a fresh token per call.
import { readdirSync, readFileSync } from 'node:fs'
import http from 'node:http'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Identity } from './identity.js'
import { mintServiceJwt, type MintOptions } from './jwt.js'

export interface XrpcOptions {
  /** Default: POST when there is a body, GET otherwise. */
  method?: 'GET' | 'POST'
  /** JSON body (procedures). */
  body?: unknown
  /** A body sent as is (malformed JSON, other content types). */
  rawBody?: string | Uint8Array
  contentType?: string
  /** Query parameters (queries); arrays become repeated keys. */
  params?: Record<string, string | number | boolean | Array<string | number> | undefined>
  /** Authorization: Bearer <token> */
  token?: string
  /** Authorization: Basic base64('admin:' + basic) */
  basic?: string
  headers?: Record<string, string>
}

export interface XrpcResponse<T = any> {
  status: number
  /** Parsed JSON, or the text when the answer is not JSON (undefined when empty). */
  body: T
  headers: Headers
}

export async function xrpc<T = any>(url: string, nsid: string, o: XrpcOptions = {}): Promise<XrpcResponse<T>> {
  const target = new URL(`/xrpc/${nsid}`, url)
  for (const [k, v] of Object.entries(o.params ?? {})) {
    if (v === undefined) continue
    for (const item of Array.isArray(v) ? v : [v]) target.searchParams.append(k, String(item))
  }
  const headers: Record<string, string> = { ...o.headers }
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`
  if (o.basic !== undefined) headers.authorization = `Basic ${Buffer.from(`admin:${o.basic}`).toString('base64')}`
  let payload: string | Uint8Array<ArrayBuffer> | undefined
  if (o.rawBody !== undefined) {
    payload = typeof o.rawBody === 'string' ? o.rawBody : new Uint8Array(o.rawBody) // copy: fetch wants an ArrayBuffer-backed view
    if (o.contentType) headers['content-type'] = o.contentType
  } else if (o.body !== undefined) {
    payload = JSON.stringify(o.body)
    headers['content-type'] = o.contentType ?? 'application/json'
  }
  const method = o.method ?? (payload !== undefined ? 'POST' : 'GET')
  const res = await fetch(target, { method, headers, body: payload })
  const text = await res.text()
  let body: unknown = text === '' ? undefined : text
  if (text !== '' && (res.headers.get('content-type') ?? '').includes('json')) {
    try {
      body = JSON.parse(text)
    } catch {
      // keep the text: a test may be checking exactly that
    }
  }
  return { status: res.status, body: body as T, headers: res.headers }
}

export interface ServiceTarget {
  url: string
  serviceDid: string
}

/**
 * An app (or organizer, or buyer) calling the service: every call carries a
 * freshly minted token (new jti) with aud = the service DID and lxm = the NSID,
 * signed with the identity's *current* key.
 */
export class AppClient {
  constructor(
    public service: ServiceTarget,
    public identity: Identity,
  ) {}

  get did(): string {
    return this.identity.did
  }

  /** A token for `nsid` (also for assertions: buyerAssertionJwt, organizerAssertionJwt). */
  token(nsid: string, overrides: Partial<MintOptions> = {}): Promise<string> {
    return mintServiceJwt({
      keypair: this.identity.keypair,
      iss: this.identity.did,
      aud: this.service.serviceDid,
      lxm: nsid,
      ...overrides,
    })
  }

  /**
   * Query (GET, input as params) or procedure (POST, input as JSON body),
   * decided by the lexicon in ./lexicons when it exists, else by the name
   * (getX and listX are queries). `opts.method` forces it.
   */
  async call<T = any>(
    nsid: string,
    input?: Record<string, any>,
    opts: { method?: 'GET' | 'POST'; token?: Partial<MintOptions> | string } = {},
  ): Promise<XrpcResponse<T>> {
    const token = typeof opts.token === 'string' ? opts.token : await this.token(nsid, opts.token)
    const method = opts.method ?? (methodType(nsid) === 'query' ? 'GET' : 'POST')
    return method === 'GET'
      ? xrpc<T>(this.service.url, nsid, { method, params: input, token })
      : xrpc<T>(this.service.url, nsid, { method, body: input, token })
  }
}

// NSID -> 'query' | 'procedure', from the project's lexicon JSON files.
let lexiconTypes: Map<string, string> | undefined
const LEXICON_DIR = fileURLToPath(new URL('../../lexicons', import.meta.url))

export function methodType(nsid: string): 'query' | 'procedure' {
  lexiconTypes ??= readLexiconTypes(LEXICON_DIR)
  const t = lexiconTypes.get(nsid)
  if (t === 'query' || t === 'procedure') return t
  return /^(get|list)[A-Z]/.test(nsid.split('.').pop() ?? '') ? 'query' : 'procedure'
}

function readLexiconTypes(dir: string, into = new Map<string, string>()): Map<string, string> {
  let entries: import('node:fs').Dirent[]
  try {
    entries = readdirSync(dir, { withFileTypes: true })
  } catch {
    return into
  }
  for (const e of entries) {
    const p = join(dir, e.name)
    if (e.isDirectory()) readLexiconTypes(p, into)
    else if (e.name.endsWith('.json')) {
      try {
        const doc = JSON.parse(readFileSync(p, 'utf8')) as { id?: string; defs?: { main?: { type?: string } } }
        if (doc.id && doc.defs?.main?.type) into.set(doc.id, doc.defs.main.type)
      } catch {
        // not a lexicon
      }
    }
  }
  return into
}

export interface FramedAnswer {
  status: number
  contentType: string | undefined
  body: any
}

/**
 * POSTs `body` byte for byte, framed with a Content-Length (the service's direct lane) or
 * chunked (xrpc-server), so a test can send the same request down either path.
 */
export function postFramed(url: URL, headers: Record<string, string>, body: string | Buffer, framing: 'length' | 'chunked'): Promise<FramedAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { ...headers, connection: 'close' } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        resolve({ status: res.statusCode!, contentType: res.headers['content-type'], body: text ? JSON.parse(text) : undefined })
      })
    })
    req.on('error', reject)
    const bytes = typeof body === 'string' ? Buffer.from(body) : body
    if (framing === 'length') {
      req.setHeader('content-length', bytes.length)
      req.end(bytes)
    } else {
      // Two chunks and no Content-Length: Node sends Transfer-Encoding: chunked.
      req.write(bytes.subarray(0, 1))
      req.end(bytes.subarray(1))
    }
  })
}
