import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { bindEvent } from '../tickets/events.js'
import { eventSummary } from '../tickets/views.js'
import { verifyOrganizerConsent } from './consent.js'
import { withRecordDetails } from './event-input.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereCreateTicketEvent
  server.tickets.atmosphere.createTicketEvent({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      const organizerConsented = await verifyOrganizerConsent(ctx, nsid, body)
      const eventInput = await withRecordDetails(ctx, scope, body.event)
      const event = await ctx.db.transaction((tx) =>
        bindEvent(tx, {
          scope,
          organizerDid: body.organizerDid,
          organizerConsented,
          event: { ...eventInput, metadata: eventInput.metadata ?? body.metadata },
          status: body.status,
          updateDetails: true,
          needsPayments: false,
          nowMs: Date.now(),
        }),
      )
      return json({ event: eventSummary(event) })
    },
  })
}
