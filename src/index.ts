import { once } from 'node:events'
import type http from 'node:http'
import {
  ForbiddenError,
  InternalServerError,
  InvalidRequestError,
  MethodNotImplementedError,
  type ResponseType,
  XRPCError,
} from '@atproto/xrpc-server'
import express from 'express'
import { registerMethods } from './api/index.js'
import { checkoutRouter } from './checkout/routes.js'
import { createContext, type AppContext } from './context.js'
import type { ServerConfig } from './config.js'
import { createServer } from './lexicon/index.js'
import { schemas } from './lexicon/lexicons.js'
import type { Logger } from './logger.js'
import { DomainError } from './tickets/errors.js'
import { purgeExpiredKeys } from './tickets/idempotency.js'
import { didDocument, didWebHost } from './well-known.js'

export type { ServerConfig }

const STATUS_OF_KIND = { invalid: 400, forbidden: 403, conflict: 409 } as const

/**
 * Procedures with a JSON input. A POST to one without a body is read as `{}`: a procedure
 * whose fields are all optional may be called so (CONTRACT §1), and for the others the
 * lexicon validator then names the missing field instead of asking for a Content-Type.
 */
function jsonProcedurePaths(): Set<string> {
  const paths = new Set<string>()
  for (const doc of schemas) {
    const main = (doc.defs as Record<string, unknown>).main as { type?: string; input?: { encoding?: string } } | undefined
    if (main?.type === 'procedure' && main.input?.encoding === 'application/json') paths.add(`/xrpc/${doc.id}`)
  }
  return paths
}

export class AtmService {
  private httpServer?: http.Server
  private maintenance?: NodeJS.Timeout
  private inFlight = 0
  private draining = false

  private constructor(
    readonly ctx: AppContext,
    readonly app: express.Express,
  ) {}

  static async create(cfg: ServerConfig, logger: Logger, adminPassword: string): Promise<AtmService> {
    const ctx = await createContext(cfg, logger, adminPassword)
    const xrpc = createServer({
      validateResponse: false,
      payload: { jsonLimit: 256 * 1024, textLimit: 100 * 1024, blobLimit: 1024 * 1024 },
      errorParser: (err) => toXrpcError(err, logger),
      // Methods with a lexicon but no handler yet answer 501, as unknown methods do.
      catchall: (req, _res, next) => next(new MethodNotImplementedError(`${req.path.slice(6)} is not served by this server yet`)),
    })
    registerMethods(xrpc, ctx)

    const app = express()
    app.disable('x-powered-by')
    app.set('trust proxy', false)
    const service = new AtmService(ctx, app)
    app.use((req, res, next) => {
      const started = process.hrtime.bigint()
      service.inFlight++
      // While draining, tell keep-alive clients not to send another request on this socket.
      if (service.draining) res.setHeader('connection', 'close')
      res.once('close', () => {
        service.inFlight--
        const ms = Number(process.hrtime.bigint() - started) / 1e6
        const level = res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'info' : 'debug'
        logger[level]({ method: req.method, path: req.path, status: res.statusCode, ms: Math.round(ms * 10) / 10 }, 'request')
      })
      next()
    })
    const emptyBodyPaths = jsonProcedurePaths()
    app.use((req, _res, next) => {
      const noBody = req.headers['content-length'] === undefined || req.headers['content-length'] === '0'
      if (req.method === 'POST' && noBody && !req.headers['transfer-encoding'] && emptyBodyPaths.has(req.path)) {
        req.headers['content-type'] = 'application/json'
        req.headers['content-length'] = '2'
        ;(req as unknown as { body: unknown; _body: boolean }).body = {}
        ;(req as unknown as { _body: boolean })._body = true
        req.resume()
        if (req.readableEnded) return next()
        req.once('end', () => next())
        return
      }
      next()
    })
    app.get('/xrpc/_health', (_req, res) => {
      res.json({ version: cfg.version })
    })
    const host = didWebHost(cfg.serviceDid)
    if (host !== null && host === new URL(cfg.publicUrl).host) {
      const doc = didDocument(ctx)
      app.get('/.well-known/did.json', (_req, res) => {
        res.json(doc)
      })
    }
    app.use(checkoutRouter(ctx))
    app.use(xrpc.xrpc.router)
    app.use((_req, res) => {
      res.status(404).json({ error: 'NotFound', message: 'no such route' })
    })
    return service
  }

  async start(): Promise<http.Server> {
    const server = this.app.listen(this.ctx.cfg.port)
    await once(server, 'listening')
    server.keepAliveTimeout = 65_000
    this.httpServer = server
    this.maintenance = setInterval(() => this.runMaintenance(), 60_000)
    this.maintenance.unref()
    return server
  }

  /** Forgets spent tokens past their expiry and idempotency keys past 24 h. */
  async runMaintenance(): Promise<void> {
    try {
      await this.ctx.replayStore.purgeExpired()
      await this.ctx.db.retryBusy(() => purgeExpiredKeys(this.ctx.db.db))
    } catch (err) {
      this.ctx.logger.warn({ err }, 'maintenance failed')
    }
  }

  /** Stops accepting, lets in-flight requests finish (bounded), closes the database. */
  async destroy(graceMs = 10_000): Promise<void> {
    if (this.maintenance) clearInterval(this.maintenance)
    this.draining = true
    const server = this.httpServer
    if (server) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      const deadline = Date.now() + graceMs
      while (this.inFlight > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20))
        server.closeIdleConnections()
      }
      server.closeAllConnections()
      await closed
    }
    await this.ctx.db.close()
  }
}

/** Named domain failures keep their name; anything unexpected is logged and answered without detail. */
export function toXrpcError(err: unknown, logger: Logger): XRPCError {
  if (err instanceof DomainError) {
    if (err.errorName === 'InvalidRequest') return new InvalidRequestError(err.message)
    if (err.kind === 'forbidden') return new ForbiddenError(err.message, err.errorName)
    // 409 is not in ResponseType's list, but XRPCError renders any 4xx status as given.
    return new XRPCError(STATUS_OF_KIND[err.kind] as ResponseType, err.message, err.errorName)
  }
  if (err instanceof XRPCError) {
    // 501 (a method not served) says nothing internal; other 5xx may carry internals.
    if (err.statusCode < 500 || err instanceof MethodNotImplementedError) return err
    logger.error({ err }, 'request failed')
    return new InternalServerError('internal error: the request may be retried')
  }
  logger.error({ err }, 'unexpected error')
  return new InternalServerError('internal error: the request may be retried')
}
