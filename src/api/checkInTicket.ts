import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { checkInTicket } from '../tickets/checkins.js'
import { appAuth, idempotentProcedure, json } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereCheckInTicket
  server.tickets.atmosphere.checkInTicket({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      const body = input.body
      const result = await idempotentProcedure(ctx, auth.credentials, nsid, body, (scope) => ({
        work: (tx) =>
          checkInTicket(
            tx,
            {
              scope,
              app: auth.credentials.app,
              ticketToken: body.ticketToken,
              checkInListId: body.checkInListId,
              metadata: body.metadata as Record<string, unknown> | undefined,
            },
            Date.now(),
          ),
      }))
      return json(result)
    },
  })
}
