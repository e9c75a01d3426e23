import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { updateTier } from '../tickets/tiers.js'
import { tierSummary } from '../tickets/views.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.archiveTicketTier({
    auth: appAuth(ctx, ids.TicketsAtmosphereArchiveTicketTier),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const scope = scopeOf(auth.credentials, input.body.environment)
      const nowMs = Date.now()
      // Archiving stops sales only: issued tickets stay valid, active holds keep their capacity.
      const { tier, event } = await ctx.db.transaction((tx) =>
        updateTier(tx, scope, { tierId: input.body.tierId, status: 'archived' }, nowMs),
      )
      return json({ tier: tierSummary(tier, event.status, nowMs) })
    },
  })
}
