import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { checkoutUrl, getHold } from '../tickets/holds.js'
import { ticketHoldView } from '../tickets/views.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.getTicketHold({
    auth: appAuth(ctx, ids.TicketsAtmosphereGetTicketHold),
    handler: async ({ auth, params }) => {
      refuseReplay(auth.credentials)
      const scope = scopeOf(auth.credentials, params.environment)
      const { hold, items, event } = await getHold(ctx.db.db, scope, params.holdId)
      return json({ hold: ticketHoldView(hold, items, event.uri, checkoutUrl(ctx.cfg.publicUrl, hold), Date.now()) })
    },
  })
}
