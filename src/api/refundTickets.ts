import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { paymentProviderFor } from '../payments/test-provider.js'
import { fail } from '../tickets/errors.js'
import { runIdempotent } from '../tickets/idempotency.js'
import { refundTickets, sendRefunds } from '../tickets/refunds.js'
import { answerReplayedRetry, appAuth, idempotencyOf, json, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereRefundTickets
  server.tickets.atmosphere.refundTickets({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      const { scope: idempotency, requestHash } = idempotencyOf(scope, nsid, body)
      const retried = await answerReplayedRetry(ctx, auth.credentials, idempotency, requestHash)
      if (retried) return json(retried as never)

      const provider = paymentProviderFor(scope.environment)
      const result = await runIdempotent(ctx.db, idempotency, requestHash, {
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
      })
      // A stored answer was sent to the provider by the request that recorded it.
      if (!result.reused) {
        const refused = await sendRefunds(ctx.db, provider!, result.refunds)
        if (refused.length > 0) ctx.logger.error({ refundIds: refused }, 'payment provider refused recorded refunds: settle them by hand')
      }
      return json(result)
    },
  })
}
