import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { createCheckInList } from '../tickets/checkins.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.createCheckInList({
    auth: appAuth(ctx, ids.TicketsAtmosphereCreateCheckInList),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      return json(await ctx.db.transaction((tx) => createCheckInList(tx, scope, body, Date.now())))
    },
  })
}
