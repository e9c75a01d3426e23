import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { createCheckInList } from '../tickets/checkins.js'
import { runIdempotent } from '../tickets/idempotency.js'
import { answerReplayedRetry, appAuth, idempotencyOf, json, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereCreateCheckInList
  server.tickets.atmosphere.createCheckInList({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      const { scope: idempotency, requestHash } = idempotencyOf(scope, nsid, body)
      const retried = await answerReplayedRetry(ctx, auth.credentials, idempotency, requestHash)
      if (retried) return json(retried as never)

      const result = await runIdempotent(ctx.db, idempotency, requestHash, {
        work: (tx) => createCheckInList(tx, scope, { eventId: body.eventId, name: body.name }, Date.now()),
      })
      return json(result)
    },
  })
}
