import { afterCommit, type DbConn } from '../db/index.js'
import type { AppTable } from '../db/schema.js'
import { newId } from '../util/ids.js'

export const EVENT_API_VERSION = '2026-07'

const outboxListeners = new Set<() => void>()

/** Calls `listener` after every commit of this process that wrote outbox rows; answers the unsubscribe. */
export function onOutboxWrite(listener: () => void): () => void {
  outboxListeners.add(listener)
  return () => outboxListeners.delete(listener)
}

function notifyOutboxWrite(): void {
  for (const listener of outboxListeners) listener()
}

export function appWantsEvents(app: Pick<AppTable, 'webhookUrl' | 'eventDelivery'>): boolean {
  return app.eventDelivery === 'xrpc' || !!app.webhookUrl
}

/**
 * Records an event owed to an app, inside the caller's transaction, so the event exists
 * exactly when the change it reports does. Delivery reads the outbox later.
 */
export async function enqueueAppEvent(
  tx: DbConn,
  app: Pick<AppTable, 'did' | 'webhookUrl' | 'eventDelivery'>,
  environment: string,
  type: string,
  data: Record<string, unknown>,
  nowMs = Date.now(),
): Promise<void> {
  if (!appWantsEvents(app)) return
  const id = newId('dlv')
  const envelope = {
    id,
    type,
    createdAt: new Date(nowMs).toISOString(),
    apiVersion: EVENT_API_VERSION,
    environment,
    data,
  }
  await tx
    .insertInto('outbox')
    .values({
      id,
      appDid: app.did,
      environment,
      type,
      payload: JSON.stringify(envelope),
      createdAt: nowMs,
      attempts: 0,
      nextAttemptAt: nowMs,
      deliveredAt: null,
      lastError: null,
    })
    .execute()
  afterCommit(tx, notifyOutboxWrite)
}
