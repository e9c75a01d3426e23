import { randomBytes } from 'node:crypto'
import express from 'express'
import QRCode from 'qrcode'
import type { Environment } from '../config.js'
import type { AppContext } from '../context.js'
import { paymentProviderFor } from '../payments/test-provider.js'
import {
  afterPaymentUrl,
  completeHold,
  openCheckout,
  openTicketPage,
  unpayableReason,
  type CheckoutState,
} from '../tickets/checkout.js'
import { DomainError } from '../tickets/errors.js'
import { releaseHold } from '../tickets/holds.js'
import { holdStatus } from '../tickets/views.js'
import { checkoutPage, messagePage, notFoundPage, ticketsPage, type Notice } from './pages.js'

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/

/** Every page carries its own nonce; nothing is cached, and the secret links are never sent on. */
function pageHeaders(res: express.Response): string {
  const nonce = randomBytes(16).toString('base64')
  res.setHeader(
    'content-security-policy',
    `default-src 'none'; style-src 'nonce-${nonce}'; script-src 'nonce-${nonce}'; img-src data:; base-uri 'none'; frame-ancestors 'none'`,
  )
  res.setHeader('referrer-policy', 'no-referrer')
  res.setHeader('cache-control', 'no-store')
  res.setHeader('x-content-type-options', 'nosniff')
  res.type('html')
  return nonce
}

function field(body: unknown, name: string): string {
  const value = (body as Record<string, unknown> | undefined)?.[name]
  return typeof value === 'string' ? value : ''
}

export function checkoutRouter(ctx: AppContext): express.Router {
  const router = express.Router()
  const { db, logger } = ctx
  const publicUrl = ctx.cfg.publicUrl

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
        return res.redirect(303, afterPaymentUrl(publicUrl, state.hold, state.payment))
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
        if (hold.cancelUrl) return res.redirect(303, hold.cancelUrl)
        const nonce = pageHeaders(res)
        return res.send(messagePage('Order cancelled', 'Your reservation was cancelled and the tickets were released. Nothing was charged.', nonce))
      }
      if (action !== 'pay') return showCheckout(res, state, token, 400, { kind: 'error', text: 'Choose Pay or Cancel.' })

      if (hold.status === 'completed' && state.payment) {
        return res.redirect(303, afterPaymentUrl(publicUrl, hold, state.payment))
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
          return res.redirect(303, afterPaymentUrl(publicUrl, fresh.hold, fresh.payment))
        }
        return showCheckout(res, fresh, token, 409, undefined, email)
      }
      await provider.capture(authorization.ref)
      logger.info({ holdId: hold.id, paymentId: completed.payment.id, tickets: completed.tickets.length }, 'hold completed')
      res.redirect(303, afterPaymentUrl(publicUrl, completed.hold, completed.payment))
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

  // The pages' own failures: a plain page, never a stack or an internal detail.
  router.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    logger.error({ err }, 'checkout page failed')
    const nonce = pageHeaders(res)
    res.status(500).send(messagePage('Something went wrong', 'Please try again in a moment.', nonce))
  })
  return router
}
