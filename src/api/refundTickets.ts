import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { paymentProviderFor } from '../payments/test-provider.js'
import { fail } from '../tickets/errors.js'
import { refundTickets, sendRefunds } from '../tickets/refunds.js'
import { appAuth, idempotentProcedure, json, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereRefundTickets
  server.tickets.atmosphere.refundTickets({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      const body = input.body
      const provider = paymentProviderFor(scopeOf(auth.credentials, body.environment).environment)
      const result = await idempotentProcedure(ctx, auth.credentials, nsid, body, (scope) => ({
        before: async () => {
          if (!provider) {
            fail('LivePaymentsNotConfigured', `live payments are not configured on this server, so nothing in ${scope.environment} can be refunded: use environment "test"`)
          }
        },
        work: (tx) =>
          refundTickets(
            tx,
            {
              scope,
              app: auth.credentials.app,
              paymentId: body.paymentId,
              ticketIds: body.ticketIds,
              reason: body.reason,
              force: body.force ?? false,
            },
            Date.now(),
          ),
      }))
      // A stored answer was sent to the provider by the request that recorded it.
      if (!result.reused) {
        const refused = await sendRefunds(ctx.db, provider!, result.refunds)
        if (refused.length > 0) ctx.logger.error({ refundIds: refused }, 'payment provider refused recorded refunds: settle them by hand')
      }
      return json(result)
    },
  })
}
