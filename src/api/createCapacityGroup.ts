import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { bindEvent } from '../tickets/events.js'
import { createCapacityGroup } from '../tickets/tiers.js'
import { capacityGroupSummary, eventSummary } from '../tickets/views.js'
import { verifyOrganizerConsent } from './consent.js'
import { withRecordDetails } from './event-input.js'
import { appAuth, json, refuseReplay, scopeOf } from './util.js'

export default function (server: Server, ctx: AppContext) {
  const nsid = ids.TicketsAtmosphereCreateCapacityGroup
  server.tickets.atmosphere.createCapacityGroup({
    auth: appAuth(ctx, nsid),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const body = input.body
      const scope = scopeOf(auth.credentials, body.environment)
      const organizerConsented = await verifyOrganizerConsent(ctx, nsid, body)
      const eventInput = await withRecordDetails(ctx, scope, body.event)
      const nowMs = Date.now()
      const result = await ctx.db.transaction(async (tx) => {
        const event = await bindEvent(tx, {
          scope,
          organizerDid: body.organizerDid,
          organizerConsented,
          event: eventInput,
          updateDetails: false,
          needsPayments: false,
          nowMs,
        })
        const group = await createCapacityGroup(tx, scope, event, body, nowMs)
        return { event: eventSummary(event), capacityGroup: capacityGroupSummary(group) }
      })
      return json(result)
    },
  })
}
