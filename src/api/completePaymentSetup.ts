import type { AppContext } from '../context.js'
import type { Server } from '../lexicon/index.js'
import { ids } from '../lexicon/lexicons.js'
import { parseEnvironment } from '../tickets/environment.js'
import { completePaymentSetup, paymentSetupStatus } from '../tickets/organizers.js'
import { organizerView } from '../tickets/views.js'
import { json, refuseReplay, userAuth } from './util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.completePaymentSetup({
    auth: userAuth(ctx, ids.TicketsAtmosphereCompletePaymentSetup),
    handler: async ({ auth, input }) => {
      refuseReplay(auth.credentials)
      const did = auth.credentials.did
      const environment = parseEnvironment(input.body?.environment)
      const organizer = await ctx.db.transaction((tx) => completePaymentSetup(tx, did, environment, Date.now()))
      return json({
        organizer: organizerView(organizer, await paymentSetupStatus(ctx.db.db, did)),
        environment,
        paymentSetupComplete: true,
      })
    },
  })
}
