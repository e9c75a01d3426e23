import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { requireEvent } from '../tickets/events.js'
import { eventAvailability } from '../tickets/tiers.js'
import { capacityGroupSummary, tierSummary } from '../tickets/views.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.getTicketAvailability({
    auth: appAuth(ctx, ids.TicketsAtmosphereGetTicketAvailability),
    handler: async ({ auth, params }) => {
      refuseReplay(auth.credentials)
      const scope = scopeOf(auth.credentials, params.environment)
      const nowMs = Date.now()
      const event = await requireEvent(ctx.db.db, scope, params)
      const availability = await eventAvailability(ctx.db.db, event, nowMs)
      return json({
        eventId: event.id,
        ...(event.uri ? { eventUri: event.uri } : {}),
        environment: scope.environment,
        available: availability.available,
        remaining: availability.remaining,
        tiers: availability.tiers.map((entry) => tierSummary(entry, event.status, nowMs)),
        capacityGroups: availability.groups.map(capacityGroupSummary),
        scarcity: availability.scarcity,
      })
    },
  })
}
