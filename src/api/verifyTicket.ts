import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { verifyTicket } from '../tickets/checkins.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.verifyTicket({
    auth: appAuth(ctx, ids.TicketsAtmosphereVerifyTicket),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      return json(await verifyTicket(ctx.db.db, scope, body, Date.now()))
    },
  })
}
