import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { listCheckInLists } from '../tickets/checkins.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.listCheckInLists({
    auth: appAuth(ctx, ids.TicketsAtmosphereListCheckInLists),
    handler: async ({ auth, params }) => {
      refuseReplay(auth.credentials)
      const scope = scopeOf(auth.credentials, params.environment)
      return json(await listCheckInLists(ctx.db.db, scope, { ...params, limit: params.limit ?? 50 }))
    },
  })
}
