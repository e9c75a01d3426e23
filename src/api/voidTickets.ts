import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { voidTickets } from '../tickets/voids.js'
import { appAuth, idempotentProcedure, json } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereVoidTickets
  server.tickets.atmosphere.voidTickets({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      const body = input.body
      const result = await idempotentProcedure(ctx, auth.credentials, nsid, body, (scope) => ({
        work: (tx) =>
          voidTickets(
            tx,
            { scope, app: auth.credentials.app, ticketIds: body.ticketIds, reason: body.reason, force: body.force ?? false },
            Date.now(),
          ),
      }))
      return json(result)
    },
  })
}
