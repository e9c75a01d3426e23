import { once } from 'node:events'
import http from 'node:http'
import {
  ForbiddenError,
  InternalServerError,
  InvalidRequestError,
  MethodNotImplementedError,
  ResponseType,
  XRPCError,
} from '@atproto/xrpc-server'
import express from 'express'
import { registerMethods } from './api/index.js'
import { checkoutRouter } from './checkout/routes.js'
import { createContext, type AppContext } from './context.js'
import type { ServerConfig } from './config.js'
import { OutboxDeliverer } from './delivery/deliverer.js'
import { EventTransports } from './delivery/transports.js'
import { createServer } from './lexicon/index.js'
import { lexicons, schemas } from './lexicon/lexicons.js'
import type { Logger } from './logger.js'
import { isDatabaseUnavailable } from './storage/unavailable.js'
import { DomainError } from './tickets/errors.js'
import { sweepExpiredHolds } from './tickets/expiry.js'
import { purgeExpiredKeys } from './tickets/idempotency.js'
import { didDocument, didWebHost } from './well-known.js'
import { DirectLane } from './xrpc/direct-lane.js'
import { ClientGoneError } from './xrpc/json-input.js'

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
  private holdSweeper?: NodeJS.Timeout
  private sweeping?: Promise<void>
  private readonly stopSweeping = new AbortController()
  private deliverer?: OutboxDeliverer
  private inFlight = 0
  private draining = false

  private constructor(
    readonly ctx: AppContext,
    readonly app: express.Express,
    private readonly lane: DirectLane,
  ) {}

  static async create(cfg: ServerConfig, logger: Logger, adminPassword: string): Promise<AtmService> {
    const ctx = await createContext(cfg, logger, adminPassword)
    const errorParser = (err: unknown) => toXrpcError(err, logger)
    const jsonLimit = 256 * 1024
    const xrpc = createServer({
      validateResponse: false,
      payload: { jsonLimit, textLimit: 100 * 1024, blobLimit: 1024 * 1024 },
      errorParser,
      // Methods with a lexicon but no handler yet answer 501, as unknown methods do.
      catchall: (req, _res, next) => next(new MethodNotImplementedError(`${req.path.slice(6)} is not served by this server yet`)),
    })
    const lane = new DirectLane(lexicons, { jsonLimit, errorParser })
    lane.follow(xrpc.xrpc)
    registerMethods(xrpc, ctx)

    const app = express()
    app.disable('x-powered-by')
    app.set('trust proxy', false)
    const service = new AtmService(ctx, app, lane)
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

  /**
   * Every request: counted (a graceful stop waits for it), logged with the lane that served
   * it, then served by the direct lane when it is a plain JSON procedure call, else by express
   * (pages, queries, the rest).
   */
  private readonly handleRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const started = process.hrtime.bigint()
    this.inFlight++
    // While draining, tell keep-alive clients not to send another request on this socket.
    if (this.draining) res.setHeader('connection', 'close')
    let lane: 'direct' | 'express' = 'direct'
    res.once('close', () => {
      this.inFlight--
      const ms = Math.round((Number(process.hrtime.bigint() - started) / 1e6) * 10) / 10
      const path = (req.url ?? '').split('?', 1)[0]
      // A client that left before its answer was sent is not a failure of the service.
      if (!res.writableFinished) {
        this.ctx.logger.info({ method: req.method, path, lane, ms }, 'request abandoned by the client')
        return
      }
      const level = res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'info' : 'debug'
      if (!this.ctx.logger.isLevelEnabled(level)) return
      this.ctx.logger[level]({ method: req.method, path, status: res.statusCode, lane, ms }, 'request')
    })
    if (this.lane.take(req, res)) return
    lane = 'express'
    this.app(req, res)
  }

  async start(): Promise<http.Server> {
    const server = http.createServer(this.handleRequest).listen(this.ctx.cfg.port)
    await once(server, 'listening')
    server.keepAliveTimeout = 65_000
    this.httpServer = server
    this.maintenance = setInterval(() => this.runMaintenance(), 60_000)
    this.maintenance.unref()
    this.startBackgroundWork()
    return server
  }

  /** Event delivery and the hold-expiry sweeper, in every worker (they share the work through the database). */
  private startBackgroundWork(): void {
    const { cfg, logger } = this.ctx
    const transports = new EventTransports({
      devMode: cfg.devMode,
      timeoutMs: cfg.deliveryTimeoutMs,
      serviceDid: cfg.serviceDid,
      signingKey: this.ctx.signingKey,
      idResolver: this.ctx.idResolver,
      userAgent: `atm-tickets/${cfg.version}`,
    })
    this.deliverer = new OutboxDeliverer(this.ctx.db, transports, logger, {
      retryBaseMs: cfg.deliveryRetryBaseMs,
      retryMaxMs: cfg.deliveryRetryMaxMs,
      timeoutMs: cfg.deliveryTimeoutMs,
      pollMs: cfg.deliveryPollMs,
    })
    this.deliverer.start()
    this.holdSweeper = setInterval(() => void this.sweepHolds(), cfg.holdSweepMs)
    this.holdSweeper.unref()
    void this.sweepHolds()
  }

  /** Marks holds past their expiry `expired` and reports them to their apps (one sweep at a time). */
  async sweepHolds(): Promise<void> {
    if (this.sweeping || this.draining) return this.sweeping
    this.sweeping = sweepExpiredHolds(this.ctx.db, this.ctx.cfg.publicUrl, this.stopSweeping.signal)
      .then(() => undefined)
      .catch((err: unknown) => this.ctx.logger.warn({ err }, 'hold expiry sweep failed; the next one retries'))
      .finally(() => {
        this.sweeping = undefined
      })
    return this.sweeping
  }

  /** Forgets spent tokens past their expiry, idempotency keys past 24 h, and clients long quiet after wrong admin passwords. */
  async runMaintenance(): Promise<void> {
    try {
      await this.ctx.replayStore.purgeExpired()
      await this.ctx.db.retryBusy(() => purgeExpiredKeys(this.ctx.db.db))
      await this.ctx.adminGuesses?.forgetQuiet(Date.now())
    } catch (err) {
      this.ctx.logger.warn({ err }, 'maintenance failed')
    }
  }

  /**
   * Stops accepting, lets in-flight requests and event sends finish (bounded; an interrupted
   * send is retried at the next start), closes the database.
   */
  async destroy(graceMs = 10_000): Promise<void> {
    if (this.maintenance) clearInterval(this.maintenance)
    if (this.holdSweeper) clearInterval(this.holdSweeper)
    this.stopSweeping.abort()
    const deliveryStopped = this.deliverer?.stop()
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
    await deliveryStopped
    await this.sweeping
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
  if (isDatabaseUnavailable(err)) {
    logger.warn({ err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'database unavailable')
    return new XRPCError(
      ResponseType.NotEnoughResources,
      'the database is unavailable (the connection to it failed): retry in a moment, with the same idempotencyKey if the request has one',
      'DatabaseUnavailable',
    )
  }
  // Nobody is left to read the answer; the request line says the client left.
  if (err instanceof ClientGoneError) return new InvalidRequestError(err.message)
  if (err instanceof XRPCError) {
    // 501 (a method not served) says nothing internal; other 5xx may carry internals.
    if (err.statusCode < 500 || err instanceof MethodNotImplementedError) return err
    logger.error({ err }, 'request failed')
    return new InternalServerError('internal error: the request may be retried')
  }
  logger.error({ err }, 'unexpected error')
  return new InternalServerError('internal error: the request may be retried')
}
