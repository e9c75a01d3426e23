import type { AppContext } from '../../context.js'
import type { Server } from '../../lexicon/index.js'
import { registerApp } from '../../tickets/apps.js'
import { appView } from '../../tickets/views.js'
import { adminAuth, json } from '../util.js'

export default function (server: Server, ctx: AppContext) {
  server.tickets.atmosphere.admin.registerApp({
    auth: adminAuth(ctx),
    handler: async ({ input }) => {
      const body = input.body
      const { app, webhookSecret } = await ctx.db.transaction((tx) =>
        registerApp(tx, body, { devMode: ctx.cfg.devMode, nowMs: Date.now() }),
      )
      ctx.logger.info({ appDid: app.did, ticketsEnabled: app.ticketsEnabled === 1 }, 'app registered')
      return json({ app: appView(app), ...(webhookSecret ? { webhookSecret } : {}) })
    },
  })
}
