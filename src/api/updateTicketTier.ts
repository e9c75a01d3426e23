import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { updateTier } from '../tickets/tiers.js'
import { tierSummary } from '../tickets/views.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.updateTicketTier({
    auth: appAuth(ctx, ids.TicketsAtmosphereUpdateTicketTier),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      const nowMs = Date.now()
      const { tier, event } = await ctx.db.transaction((tx) => updateTier(tx, scope, body, nowMs))
      return json({ tier: tierSummary(tier, event.status, nowMs) })
    },
  })
}
