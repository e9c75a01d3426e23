import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { paymentSetupStatus, registerOrganizer } from '../tickets/organizers.js'
import { organizerView } from '../tickets/views.js'
import { json, refuseReplay, userAuth } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.registerOrganizer({
    auth: userAuth(ctx, ids.TicketsAtmosphereRegisterOrganizer),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const did = auth.credentials.did
      const organizer = await ctx.db.transaction(async (tx) => registerOrganizer(tx, did, input.body?.displayName, Date.now()))
      return json({ organizer: organizerView(organizer, await paymentSetupStatus(ctx.db.db, did)) })
    },
  })
}
