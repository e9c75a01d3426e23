import { txOf } from '../storage/types.js'
import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { fail } from '../tickets/errors.js'
import { checkHoldItems, checkRedirectUrl, createHold } from '../tickets/holds.js'
import { verifyBuyer } from './consent.js'
import { appAuth, idempotentProcedure, json } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereCreateTicketHold
  server.tickets.atmosphere.createTicketHold({
    // The hot path of an on-sale: the token is spent and the app read in the hold's own transaction.
    auth: appAuth(ctx, nsid, { settleInHandler: true }),
    handler: async ({ auth, input }) => {
      const body = input.body
      const result = await idempotentProcedure(ctx, auth.credentials, nsid, body, (scope) => ({
        // Named refusals of the input are stored under the key like any other answer.
        checks: () => {
          if (body.buyerDid && !body.buyerAssertionJwt) {
            fail('BuyerAssertionRequired', 'buyerDid needs buyerAssertionJwt, a service-auth token from the buyer; or send neither for guest checkout')
          }
          if (!body.buyerDid && body.buyerAssertionJwt) {
            fail('InvalidRequest', 'buyerDid is required when buyerAssertionJwt is sent')
          }
          checkHoldItems(body.items)
          checkRedirectUrl('returnUrl', body.returnUrl, ctx.cfg.devMode)
          checkRedirectUrl('cancelUrl', body.cancelUrl, ctx.cfg.devMode)
        },
        before: body.buyerDid ? () => verifyBuyer(ctx, nsid, body) : undefined,
        work: (tx) =>
          createHold(
            txOf(tx),
            {
              scope,
              app: auth.credentials.app,
              eventId: body.eventId,
              eventUri: body.eventUri,
              buyerDid: body.buyerDid,
              customerEmail: body.customerEmail,
              items: body.items,
              returnUrl: body.returnUrl,
              cancelUrl: body.cancelUrl,
              metadata: body.metadata,
              ttlSeconds: ctx.cfg.holdTtlSeconds,
              publicUrl: ctx.cfg.publicUrl,
            },
            Date.now(),
          ),
      }))
      return json(result)
    },
  })
}
