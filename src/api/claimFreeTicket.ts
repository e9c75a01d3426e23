import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { checkClaimQuantity, claimFreeTickets } from '../tickets/claims.js'
import { fail } from '../tickets/errors.js'
import { verifyBuyer } from './consent.js'
import { appAuth, idempotentProcedure, json } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereClaimFreeTicket
  server.tickets.atmosphere.claimFreeTicket({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      const body = input.body
      const quantity = body.quantity ?? 1

      const result = await idempotentProcedure(ctx, auth.credentials, nsid, body, (scope) => ({
        // Named refusals of the input are stored under the key like any other answer.
        before: async () => {
          // Both buyer fields are optional in the schema so that this answer can name the problem.
          if (!body.buyerDid) {
            if (body.buyerAssertionJwt) fail('InvalidRequest', 'buyerDid is required when buyerAssertionJwt is sent')
            fail('BuyerAssertionRequired', 'free claims issue tickets to a buyer: send buyerDid and buyerAssertionJwt')
          }
          if (!body.buyerAssertionJwt) {
            fail('BuyerAssertionRequired', 'buyerDid needs buyerAssertionJwt, a service-auth token from the buyer')
          }
          checkClaimQuantity(quantity)
          await verifyBuyer(ctx, nsid, body)
        },
        work: (tx) =>
          claimFreeTickets(
            tx,
            {
              scope,
              app: auth.credentials.app,
              eventId: body.eventId,
              eventUri: body.eventUri,
              tierId: body.tierId,
              quantity,
              buyerDid: body.buyerDid!,
              customerEmail: body.customerEmail,
              metadata: body.metadata,
            },
            Date.now(),
          ),
      }))
      return json(result)
    },
  })
}
