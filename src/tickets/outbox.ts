import type { Insertable } from 'kysely'
import { afterCommit, type DbConn, type Tx } from '../storage/types.js'
import type { AppTable, OutboxTable } from '../db/schema.js'
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

/** The outbox row of an event owed to an app, or null when the app takes no events. */
function outboxRow(
  app: Pick<AppTable, 'did' | 'webhookUrl' | 'eventDelivery'>,
  environment: string,
  type: string,
  data: Record<string, unknown>,
  nowMs: number,
): Insertable<OutboxTable> | null {
  if (!appWantsEvents(app)) return null
  const id = newId('dlv')
  const envelope = {
    id,
    type,
    createdAt: new Date(nowMs).toISOString(),
    apiVersion: EVENT_API_VERSION,
    environment,
    data,
  }
  return {
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
  }
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
  const row = outboxRow(app, environment, type, data, nowMs)
  if (!row) return
  await tx.insertInto('outbox').values(row).execute()
  afterCommit(tx, notifyOutboxWrite)
}

const OUTBOX_COLUMNS = ['id', 'appDid', 'environment', 'type', 'payload', 'createdAt', 'attempts', 'nextAttemptAt', 'deliveredAt', 'lastError'] as const

export const OUTBOX_SQL = {
  insert: `INSERT INTO outbox (${OUTBOX_COLUMNS.join(', ')}) VALUES (${OUTBOX_COLUMNS.map(() => '?').join(', ')})`,
} as const

/** `enqueueAppEvent` as one plain statement (the hot paths). */
export async function enqueueAppEventIn(
  tx: Tx,
  app: Pick<AppTable, 'did' | 'webhookUrl' | 'eventDelivery'>,
  environment: string,
  type: string,
  data: Record<string, unknown>,
  nowMs: number,
): Promise<void> {
  const row = outboxRow(app, environment, type, data, nowMs)
  if (!row) return
  await tx.run(OUTBOX_SQL.insert, ...OUTBOX_COLUMNS.map((column) => row[column] ?? null))
  tx.afterCommit(notifyOutboxWrite)
}
