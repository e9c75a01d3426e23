import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { runIdempotent } from '../tickets/idempotency.js'
import { voidTickets } from '../tickets/voids.js'
import { answerReplayedRetry, appAuth, idempotencyOf, json, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereVoidTickets
  server.tickets.atmosphere.voidTickets({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      const { scope: idempotency, requestHash } = idempotencyOf(scope, nsid, body)
      const retried = await answerReplayedRetry(ctx, auth.credentials, idempotency, requestHash)
      if (retried) return json(retried as never)

      const result = await runIdempotent(ctx.db, idempotency, requestHash, {
        work: (tx) =>
          voidTickets(
            tx,
            { scope, app: auth.credentials.app, ticketIds: body.ticketIds, reason: body.reason, force: body.force ?? false },
            Date.now(),
          ),
      })
      return json(result)
    },
  })
}
