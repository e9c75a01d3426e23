import type http from 'node:http'
import { jsonToLex, lexToJson, type LexiconDoc, type Lexicons } from '@atproto/lexicon'
import { InvalidRequestError, XRPCError, type Server as XrpcServer } from '@atproto/xrpc-server'
import { readJsonInput } from './json-input.js'

/**
 * What the lane passes to a method's auth function. `deferrable`: the auth function may leave
 * part of its work (spending the token, say) to the handler's own transaction, as a
 * `DeferredAuth` in its credentials; the lane settles it before answering if nothing else did.
 */
export interface DirectAuthContext {
  req: http.IncomingMessage
  res: http.ServerResponse
  params: Record<string, never>
  deferrable: true
}

/** Auth left to finish: `settle` does it on its own and throws the auth error, if any. */
export interface DeferredAuth {
  readonly pending: boolean
  settle(): Promise<void>
}

function deferredAuthOf(auth: unknown): DeferredAuth | undefined {
  const deferred = (auth as { credentials?: { deferred?: DeferredAuth } } | undefined)?.credentials?.deferred
  return deferred && typeof deferred.settle === 'function' ? deferred : undefined
}

/** A method registration as the generated server passes it to xrpc-server. */
interface MethodConfig {
  auth?: (ctx: DirectAuthContext) => Promise<unknown>
  handler: (ctx: {
    params: Record<string, never>
    input: { encoding: 'application/json'; body: unknown }
    auth: unknown
    req: http.IncomingMessage
    res: http.ServerResponse
    signal: AbortSignal
    resetRouteRateLimits: () => Promise<void>
  }) => Promise<unknown>
  opts?: unknown
  rateLimit?: unknown
}

/** `application/json`, with at most a UTF-8 charset: what body-parser reads without converting. */
const PLAIN_JSON = /^application\/json\s*(?:;\s*charset="?utf-8"?\s*)?$/i
/** What xrpc-server takes for the `application/json` encoding, whatever the parameters. */
const JSON_TYPE = /^\s*application\/json\s*(?:;|$)/i
const CONTENT_LENGTH = /^[1-9][0-9]{0,8}$/
const NEVER_ABORTED = new AbortController().signal

/**
 * The JSON procedures served straight from node:http, before express and xrpc-server: the hot
 * path of an on-sale (a hold per request, each with a fresh token) spent a third of its time in
 * their routing, body parsing and re-validation of the auth result.
 *
 * It does what xrpc-server does, in the same order: authenticate (a 401 or 403 before the body
 * is read), parse the JSON body, validate it against the method's lexicon (400 InvalidRequest),
 * run the same handler, and answer errors through the same `errorParser`. It takes only the
 * plain case: a POST to the exact path, no query, a UTF-8 JSON body with a Content-Length up to
 * the limit, not compressed. Anything else (chunked bodies, other encodings, a wrong method, an
 * empty body) goes on to xrpc-server, where the same method is registered too.
 */
export class DirectLane {
  private readonly procedures = new Map<string, { nsid: string; config: MethodConfig }>()
  /**
   * No lexicon of the set has bytes, CID links or blobs, so every answer is plain JSON already
   * and converting it (`lexToJson`, a deep copy) would change nothing.
   */
  private readonly answersArePlainJson: boolean

  constructor(
    private readonly lexicons: Lexicons,
    private readonly opts: { jsonLimit: number; errorParser: (err: unknown) => XRPCError },
  ) {
    this.answersArePlainJson = !/"type":"(bytes|cid-link|blob)"/.test(JSON.stringify([...lexicons]))
  }

  /**
   * Registers every JSON procedure the generated server registers with `xrpc` from now on (and
   * still registers it there, for the requests this lane leaves alone). There, its input is
   * read by the same reader as here, right after the auth as xrpc-server would read it: both
   * lanes refuse the same inputs with the same words.
   */
  follow(xrpc: XrpcServer): void {
    const register = xrpc.method.bind(xrpc)
    xrpc.method = ((nsid: string, configOrFn: unknown) => {
      this.add(nsid, configOrFn)
      register(nsid, this.readingInputAfterAuth(nsid, configOrFn) as Parameters<XrpcServer['method']>[1])
    }) as XrpcServer['method']
  }

  /**
   * The method's registration for xrpc-server, with its JSON input read into `req.body` once
   * the auth passed. body-parser (xrpc-server's reader) then leaves the request alone, as it
   * does any request whose `_body` is set.
   */
  private readingInputAfterAuth(nsid: string, configOrFn: unknown): unknown {
    const def = this.lexicons.getDef(nsid) as LexiconDoc['defs'][string] | undefined
    if (def?.type !== 'procedure' || def.input?.encoding !== 'application/json') return configOrFn
    const config = (typeof configOrFn === 'function' ? { handler: configOrFn } : configOrFn) as MethodConfig
    const limit = (config.opts as { jsonLimit?: number } | undefined)?.jsonLimit ?? this.opts.jsonLimit
    return {
      ...config,
      auth: async (ctx: { req: http.IncomingMessage }) => {
        const result = config.auth ? await config.auth(ctx as DirectAuthContext) : undefined
        const status = (result as { status?: unknown } | null | undefined)?.status
        if (typeof status === 'number' && status >= 400) return result
        const req = ctx.req as http.IncomingMessage & { body?: unknown; _body?: boolean }
        // Without a JSON body, xrpc-server names what is missing or wrong (Content-Type, body).
        const hasBody = req.headers['transfer-encoding'] !== undefined || req.headers['content-length'] !== undefined
        if (!req._body && hasBody && JSON_TYPE.test(req.headers['content-type'] ?? '')) {
          req.body = await readJsonInput(req, limit)
          req._body = true
        }
        return result
      },
    }
  }

  private add(nsid: string, configOrFn: unknown): void {
    const def = this.lexicons.getDef(nsid) as LexiconDoc['defs'][string] | undefined
    if (def?.type !== 'procedure' || def.input?.encoding !== 'application/json') return
    // Per-method body limits and rate limits stay with xrpc-server.
    if (typeof configOrFn !== 'object' || configOrFn === null) return
    const config = configOrFn as MethodConfig
    if (config.opts !== undefined || config.rateLimit !== undefined) return
    this.procedures.set(`/xrpc/${nsid}`, { nsid, config })
  }

  /** Takes the request when it is a plain JSON call of a procedure it serves; false leaves it to the rest. */
  take(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    if (req.method !== 'POST') return false
    const procedure = this.procedures.get(req.url ?? '')
    if (!procedure) return false
    const { headers } = req
    if (headers['transfer-encoding'] !== undefined || headers['content-encoding'] !== undefined) return false
    const length = headers['content-length']
    if (length === undefined || !CONTENT_LENGTH.test(length) || Number(length) > this.opts.jsonLimit) return false
    if (!PLAIN_JSON.test(headers['content-type'] ?? '')) return false
    this.serve(procedure.nsid, procedure.config, req, res).catch((err: unknown) => this.answerError(res, err))
    return true
  }

  private async serve(nsid: string, config: MethodConfig, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const params = {} as Record<string, never>
    const auth = config.auth ? refuseErrorResult(await config.auth({ req, res, params, deferrable: true })) : undefined
    const deferred = deferredAuthOf(auth)
    let output: unknown
    try {
      const body = this.validInput(nsid, await readJsonInput(req, this.opts.jsonLimit))
      output = await config.handler({
        params,
        input: { encoding: 'application/json', body },
        auth,
        req,
        res,
        // Procedures are not cancelled when the client goes away (as in xrpc-server).
        signal: NEVER_ABORTED,
        resetRouteRateLimits: async () => undefined,
      })
    } finally {
      // Whatever the answer (a refused input included), the auth is finished first: a verified
      // token is spent, and an auth refusal (thrown here) is the answer.
      if (deferred?.pending) await deferred.settle()
    }
    if (output === undefined) {
      res.writeHead(200).end()
      return
    }
    const success = output as { encoding?: unknown; body?: unknown; headers?: Record<string, string> }
    if (success.encoding !== 'application/json' || success.headers !== undefined) {
      throw new Error(`${nsid}: the direct lane answers JSON bodies only`)
    }
    sendJson(res, 200, this.answersArePlainJson ? success.body : lexToJson(success.body as never))
  }

  private validInput(nsid: string, json: Record<string, unknown>): unknown {
    try {
      return this.lexicons.assertValidXrpcInput(nsid, jsonToLex(json as never))
    } catch (err) {
      throw new InvalidRequestError(err instanceof Error ? err.message : String(err))
    }
  }

  private answerError(res: http.ServerResponse, err: unknown): void {
    const xrpcError = this.opts.errorParser(err)
    if (res.headersSent || res.destroyed) {
      res.destroy()
      return
    }
    sendJson(res, xrpcError.statusCode, xrpcError.payload)
  }
}

/** An auth function may answer an error result instead of throwing, as xrpc-server allows. */
function refuseErrorResult(result: unknown): unknown {
  const status = (result as { status?: unknown } | null)?.status
  if (typeof status === 'number' && status >= 400) {
    throw XRPCError.fromErrorResult(result as { status: number; error?: string; message?: string })
  }
  return result
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) }).end(text)
}
