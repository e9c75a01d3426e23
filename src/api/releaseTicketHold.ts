import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { releaseHold } from '../tickets/holds.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.releaseTicketHold({
    auth: appAuth(ctx, ids.TicketsAtmosphereReleaseTicketHold),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      const result = await ctx.db.transaction((tx) => releaseHold(tx, scope, body.holdId, body.reason, Date.now()))
      return json(result)
    },
  })
}
