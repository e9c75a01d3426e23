import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { createCheckInList } from '../tickets/checkins.js'
import { appAuth, idempotentProcedure, json } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereCreateCheckInList
  server.tickets.atmosphere.createCheckInList({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      const body = input.body
      const result = await idempotentProcedure(ctx, auth.credentials, nsid, body, (scope) => ({
        work: (tx) => createCheckInList(tx, scope, { eventId: body.eventId, name: body.name }, Date.now()),
      }))
      return json(result)
    },
  })
}
