import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { listOrganizerTickets } from '../tickets/ticket-queries.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.listOrganizerTickets({
    auth: appAuth(ctx, ids.TicketsAtmosphereListOrganizerTickets),
    handler: async ({ auth, params }) => {
      refuseReplay(auth.credentials)
      const scope = scopeOf(auth.credentials, params.environment)
      return json(await listOrganizerTickets(ctx.db.db, scope, { ...params, limit: params.limit ?? 50 }))
    },
  })
}
