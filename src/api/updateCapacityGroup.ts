import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { updateCapacityGroup } from '../tickets/tiers.js'
import { capacityGroupSummary } from '../tickets/views.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.updateCapacityGroup({
    auth: appAuth(ctx, ids.TicketsAtmosphereUpdateCapacityGroup),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      const group = await ctx.db.transaction((tx) => updateCapacityGroup(tx, scope, body, Date.now()))
      return json({ capacityGroup: capacityGroupSummary(group) })
    },
  })
}
