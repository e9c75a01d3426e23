import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { updateEvent } from '../tickets/events.js'
import { eventSummary } from '../tickets/views.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.updateTicketEvent({
    auth: appAuth(ctx, ids.TicketsAtmosphereUpdateTicketEvent),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      const event = await ctx.db.transaction((tx) => updateEvent(tx, { ...body, scope, nowMs: Date.now() }))
      return json({ event: eventSummary(event) })
    },
  })
}
