import { randomBytes } from 'node:crypto'
import express from 'express'
import QRCode from 'qrcode'
import type { Environment } from '../config.js'
import type { AppContext } from '../context.js'
import type { HoldTable, PaymentTable } from '../db/schema.js'
import { paymentProviderFor } from '../payments/test-provider.js'
import {
  afterPaymentUrl,
  completeHold,
  openCheckout,
  openTicketPage,
  unpayableReason,
  type CheckoutState,
} from '../tickets/checkout.js'
import { isDatabaseUnavailable } from '../storage/unavailable.js'
import { DomainError } from '../tickets/errors.js'
import { redirectUrlProblem, releaseHold } from '../tickets/holds.js'
import { holdStatus } from '../tickets/views.js'
import { checkoutPage, messagePage, notFoundPage, ticketsPage, type Notice } from './pages.js'

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/

/**
 * Every answer of the pages, redirects and error pages too: its own nonce; nothing is cached,
 * the secret links are never sent on, and no other site may frame it (X-Frame-Options for
 * browsers that predate frame-ancestors).
 */
function pageHeaders(res: express.Response): string {
  const nonce = randomBytes(16).toString('base64')
  res.setHeader(
    'content-security-policy',
    `default-src 'none'; style-src 'nonce-${nonce}'; script-src 'nonce-${nonce}'; img-src data:; base-uri 'none'; frame-ancestors 'none'`,
  )
  res.setHeader('referrer-policy', 'no-referrer')
  res.setHeader('cache-control', 'no-store')
  res.setHeader('x-content-type-options', 'nosniff')
  res.setHeader('x-frame-options', 'DENY')
  res.type('html')
  return nonce
}

function redirect(res: express.Response, url: string): void {
  pageHeaders(res)
  res.redirect(303, url)
}

/** What the pages answer for a request they cannot read; the parsers' own messages are not shown. */
function refusalPage(err: ClientError): { title: string; text: string } {
  switch (err.type) {
    case 'entity.too.large':
      return { title: 'Request too large', text: 'The form sent was too large. Go back to the checkout page and try again.' }
    case 'parameters.too.many':
      return { title: 'Request too large', text: 'The form sent has too many fields. Go back to the checkout page and try again.' }
    case 'charset.unsupported':
      return { title: 'Unsupported form', text: 'The form was sent in a charset this page does not read; send it as UTF-8.' }
    case 'encoding.unsupported':
      return { title: 'Unsupported form', text: 'The form was sent with a content encoding this page does not read; send it as is, gzip or deflate.' }
  }
  // The router's refusal of a path parameter it cannot percent-decode.
  if (err.addressUnreadable) {
    return { title: 'Bad request', text: 'This address is not valid. Check the link you were given.' }
  }
  return { title: 'Bad request', text: 'The form could not be read. Go back to the checkout page and try again.' }
}

interface ClientError {
  status: number
  /** body-parser's name of the refusal, e.g. 'entity.too.large' */
  type?: unknown
  addressUnreadable: boolean
}

/** A client's mistake as the router and body parser report it: a 4xx status on the error. */
function clientErrorOf(err: unknown): ClientError | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const { status, type } = err as { status?: unknown; type?: unknown }
  if (typeof status !== 'number' || status < 400 || status >= 500) return undefined
  return { status, type, addressUnreadable: err instanceof URIError }
}

function field(body: unknown, name: string): string {
  const value = (body as Record<string, unknown> | undefined)?.[name]
  return typeof value === 'string' ? value : ''
}

export function checkoutRouter(ctx: AppContext): express.Router {
  const router = express.Router()
  const { db, logger } = ctx
  const publicUrl = ctx.cfg.publicUrl
  const devMode = ctx.cfg.devMode

  /**
   * A stored returnUrl or cancelUrl when it is one a buyer can be sent to. Holds written before
   * such URLs were refused may carry anything; the pages then fall back to their own page.
   */
  function followable(hold: Pick<HoldTable, 'id'>, column: 'returnUrl' | 'cancelUrl', raw: string | null): string | null {
    if (!raw) return null
    const problem = redirectUrlProblem(raw, devMode)
    if (!problem) return raw
    logger.info({ holdId: hold.id, column, problem }, 'stored redirect URL not followed')
    return null
  }

  /** Where a paid buyer goes: the app's returnUrl when it can be followed, else their tickets. */
  function afterPayment(hold: Pick<HoldTable, 'id' | 'returnUrl'>, payment: PaymentTable): string {
    return afterPaymentUrl(publicUrl, { id: hold.id, returnUrl: followable(hold, 'returnUrl', hold.returnUrl) }, payment)
  }

  function showCheckout(res: express.Response, state: CheckoutState, token: string, status = 200, notice?: Notice, email?: string) {
    const nonce = pageHeaders(res)
    const nowMs = Date.now()
    const paymentsUnavailable = paymentProviderFor(state.hold.environment) === null
    const reason = unpayableReason(state.hold, nowMs)
    res.status(status).send(
      checkoutPage(
        state,
        { nowMs, token, email, notice: notice ?? (reason ? { kind: 'warn', text: reason } : undefined), paymentsUnavailable },
        nonce,
      ),
    )
  }

  function notFound(res: express.Response) {
    res.status(404).send(notFoundPage(pageHeaders(res)))
  }

  router.get('/checkout/:holdId', async (req, res, next) => {
    try {
      const token = typeof req.query.token === 'string' ? req.query.token : ''
      const state = token ? await openCheckout(db.db, req.params.holdId, token) : undefined
      if (!state) return notFound(res)
      if (state.hold.status === 'completed' && state.payment) {
        return redirect(res, afterPayment(state.hold, state.payment))
      }
      showCheckout(res, state, token)
    } catch (err) {
      next(err)
    }
  })

  router.post('/checkout/:holdId', express.urlencoded({ extended: false, limit: '8kb', parameterLimit: 20 }), async (req, res, next) => {
    try {
      const token = field(req.body, 'token')
      const state = token ? await openCheckout(db.db, req.params.holdId, token) : undefined
      if (!state) return notFound(res)
      const { hold } = state
      const action = field(req.body, 'action')

      if (action === 'cancel') {
        if (hold.status === 'completed') return showCheckout(res, state, token, 409)
        await db.transaction((tx) =>
          releaseHold(tx, { appDid: hold.appDid, environment: hold.environment as Environment }, hold.id, 'buyer_cancelled', Date.now()),
        )
        const cancelUrl = followable(hold, 'cancelUrl', hold.cancelUrl)
        if (cancelUrl) return redirect(res, cancelUrl)
        const nonce = pageHeaders(res)
        return res.send(messagePage('Order cancelled', 'Your reservation was cancelled and the tickets were released. Nothing was charged.', nonce))
      }
      if (action !== 'pay') return showCheckout(res, state, token, 400, { kind: 'error', text: 'Choose Pay or Cancel.' })

      if (hold.status === 'completed' && state.payment) {
        return redirect(res, afterPayment(hold, state.payment))
      }
      if (holdStatus(hold, Date.now()) !== 'active') return showCheckout(res, state, token, 409)
      const provider = paymentProviderFor(hold.environment)
      if (!provider) return showCheckout(res, state, token, 409)

      const email = field(req.body, 'email').trim()
      if (!EMAIL.test(email) || email.length > 254) {
        return showCheckout(res, state, token, 400, { kind: 'error', text: 'Enter a valid email address for your receipt.' }, email)
      }
      const cardNumber = field(req.body, 'cardNumber')
      const authorization = await provider.authorize({
        amount: hold.amountCents,
        currency: hold.currency,
        cardNumber,
        description: `${state.event.title} (${hold.id})`,
      })
      if (!authorization.ok) {
        logger.info({ holdId: hold.id, decline: authorization.code }, 'card declined')
        return showCheckout(res, state, token, 402, { kind: 'error', text: authorization.message }, email)
      }

      let completed
      try {
        completed = await db.transaction((tx) =>
          completeHold(
            tx,
            {
              holdId: hold.id,
              token,
              customerEmail: email,
              publicUrl,
              authorization: { provider: provider.name, ref: authorization.ref, cardBrand: authorization.cardBrand, cardLast4: authorization.cardLast4 },
            },
            Date.now(),
          ),
        )
      } catch (err) {
        // Not completed: the buyer must not be charged for tickets they did not get.
        await provider.cancel(authorization.ref)
        if (!(err instanceof DomainError)) throw err
        const fresh = await openCheckout(db.db, hold.id, token)
        if (!fresh) return notFound(res)
        // A concurrent submit paid first: send this one where that one went.
        if (fresh.hold.status === 'completed' && fresh.payment) {
          return redirect(res, afterPayment(fresh.hold, fresh.payment))
        }
        return showCheckout(res, fresh, token, 409, undefined, email)
      }
      await provider.capture(authorization.ref)
      logger.info({ holdId: hold.id, paymentId: completed.payment.id, tickets: completed.tickets.length }, 'hold completed')
      redirect(res, afterPayment(completed.hold, completed.payment))
    } catch (err) {
      next(err)
    }
  })

  router.get('/tickets/:paymentId', async (req, res, next) => {
    try {
      const key = typeof req.query.key === 'string' ? req.query.key : ''
      const page = key ? await openTicketPage(db.db, req.params.paymentId, key) : undefined
      if (!page) return notFound(res)
      const svgs = new Map<string, string>()
      for (const ticket of page.tickets) {
        svgs.set(
          ticket.id,
          await QRCode.toString(ticket.ticketToken, { type: 'svg', errorCorrectionLevel: 'M', margin: 2 }),
        )
      }
      const nonce = pageHeaders(res)
      res.send(ticketsPage(page, svgs, nonce))
    } catch (err) {
      next(err)
    }
  })

  // An address or form the pages cannot read (broken percent-encoding, a body the parser
  // refuses, an upload cut short) is the client's mistake: its 4xx, noted at info. Anything
  // else is the pages' own failure. Either way a plain page, never a stack or an internal detail.
  router.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    if (res.headersSent) return void res.end()
    const clientError = clientErrorOf(err)
    if (clientError) {
      const reason = clientError.addressUnreadable ? 'path not percent-decodable' : clientError.type
      logger.info({ status: clientError.status, reason }, 'checkout request refused')
      const { title, text } = refusalPage(clientError)
      return void res.status(clientError.status).send(messagePage(title, text, pageHeaders(res)))
    }
    if (isDatabaseUnavailable(err)) {
      logger.warn({ err: { message: (err as Error).message } }, 'checkout page: database unavailable')
      return void res
        .status(503)
        .send(messagePage('Please try again in a moment', 'The service cannot reach its database just now.', pageHeaders(res)))
    }
    logger.error({ err }, 'checkout page failed')
    const nonce = pageHeaders(res)
    res.status(500).send(messagePage('Something went wrong', 'Please try again in a moment.', nonce))
  })
  return router
}
