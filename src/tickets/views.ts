import type { AppTable, EventTable, HoldItemTable, HoldTable, OrganizerTable, TicketTable } from '../db/schema.js'
import type * as Defs from '../lexicon/types/tickets/atmosphere/defs.js'
import { isoFromMs } from '../util/time.js'
import { isOnSale, type TierWithUsage, type Usage } from './capacity.js'
import type { CapacityGroupTable } from '../db/schema.js'

// Row → lexicon shape. Optional fields are left out rather than sent as null.

function defined<T extends object>(value: T): T {
  for (const key of Object.keys(value) as Array<keyof T>) {
    if (value[key] === null || value[key] === undefined) delete value[key]
  }
  return value
}

export function parseMetadata(raw: string | null): Record<string, unknown> | undefined {
  return raw ? (JSON.parse(raw) as Record<string, unknown>) : undefined
}

export function appView(app: AppTable): Defs.AppView {
  return defined({
    did: app.did,
    name: app.name,
    ticketsEnabled: app.ticketsEnabled === 1,
    webhookUrl: app.webhookUrl ?? undefined,
    eventDelivery: app.eventDelivery ?? undefined,
    hasWebhookSecret: app.webhookSecret !== null,
    createdAt: isoFromMs(app.createdAt),
    updatedAt: isoFromMs(app.updatedAt),
  })
}

export function organizerView(organizer: OrganizerTable, setup: { test: boolean; live: boolean }): Defs.OrganizerView {
  return defined({
    did: organizer.did,
    displayName: organizer.displayName ?? undefined,
    createdAt: isoFromMs(organizer.createdAt),
    paymentSetup: setup,
  })
}

export function eventSummary(event: EventTable): Defs.EventSummary {
  return defined({
    id: event.id,
    eventId: event.id,
    uri: event.uri ?? undefined,
    cid: event.cid ?? undefined,
    title: event.title,
    organizerDid: event.organizerDid,
    appDid: event.appDid,
    environment: event.environment,
    status: event.status,
    startsAt: event.startsAt ?? undefined,
    endsAt: event.endsAt ?? undefined,
    timezone: event.timezone ?? undefined,
    url: event.url ?? undefined,
    imageUrl: event.imageUrl ?? undefined,
    checkInListId: event.checkInListId,
    createdAt: isoFromMs(event.createdAt),
  })
}

export function capacityGroupSummary(group: CapacityGroupTable & { usage: Usage }): Defs.CapacityGroupSummary {
  return {
    id: group.id,
    capacityGroupId: group.id,
    eventId: group.eventId,
    name: group.name,
    totalCapacity: group.totalCapacity,
    held: group.usage.held,
    sold: group.usage.sold,
    remaining: group.usage.remaining,
    status: group.status,
  }
}

export function tierSummary(entry: TierWithUsage, eventStatus: string, nowMs: number): Defs.TicketTierSummary {
  const { tier } = entry
  return defined({
    id: tier.id,
    tierId: tier.id,
    eventId: tier.eventId,
    capacityGroupId: tier.capacityGroupId ?? undefined,
    title: tier.title,
    description: tier.description ?? undefined,
    currency: tier.currency,
    unitAmount: tier.unitAmount,
    quantityTotal: tier.quantityTotal,
    maxPerOrder: tier.maxPerOrder,
    saleStartsAt: tier.saleStartsAt === null ? undefined : isoFromMs(tier.saleStartsAt),
    saleEndsAt: tier.saleEndsAt === null ? undefined : isoFromMs(tier.saleEndsAt),
    status: tier.status,
    onSale: isOnSale(tier, eventStatus, entry.group?.status ?? null, nowMs),
    held: entry.usage.held,
    sold: entry.usage.sold,
    remaining: entry.remaining,
  })
}

export function holdStatus(hold: Pick<HoldTable, 'status' | 'expiresAt'>, nowMs: number): string {
  return hold.status === 'active' && hold.expiresAt <= nowMs ? 'expired' : hold.status
}

export function holdItemView(item: HoldItemTable): Defs.TicketHoldItem {
  return {
    tierId: item.tierId,
    title: item.title,
    quantity: item.quantity,
    unitAmount: item.unitAmount,
    amountCents: item.unitAmount * item.quantity,
    currency: item.currency,
  }
}

export function ticketHoldView(
  hold: HoldTable,
  items: HoldItemTable[],
  eventUri: string | null,
  url: string,
  nowMs: number,
): Defs.TicketHold {
  return defined({
    id: hold.id,
    holdId: hold.id,
    status: holdStatus(hold, nowMs),
    environment: hold.environment,
    eventId: hold.eventId,
    eventUri: eventUri ?? undefined,
    buyerDid: hold.buyerDid ?? undefined,
    customerEmail: hold.customerEmail ?? undefined,
    url,
    expiresAt: isoFromMs(hold.expiresAt),
    amountCents: hold.amountCents,
    currency: hold.currency,
    items: items.map(holdItemView),
    createdAt: isoFromMs(hold.createdAt),
    releasedAt: hold.releasedAt === null ? undefined : isoFromMs(hold.releasedAt),
    releaseReason: hold.releaseReason ?? undefined,
    completedAt: hold.completedAt === null ? undefined : isoFromMs(hold.completedAt),
    paymentId: hold.paymentId ?? undefined,
  })
}

export function ticketView(
  ticket: TicketTable,
  extra: { eventUri?: string | null; tierTitle?: string; includeToken: boolean },
): Defs.Ticket {
  return defined({
    id: ticket.id,
    ticketId: ticket.id,
    eventId: ticket.eventId,
    eventUri: extra.eventUri ?? undefined,
    tierId: ticket.tierId,
    tierTitle: extra.tierTitle,
    status: ticket.status,
    paymentId: ticket.paymentId ?? undefined,
    claimId: ticket.claimId ?? undefined,
    holdId: ticket.holdId ?? undefined,
    buyerDid: ticket.buyerDid ?? undefined,
    ticketToken: extra.includeToken ? ticket.ticketToken : undefined,
    issuedAt: isoFromMs(ticket.issuedAt),
    checkedInAt: ticket.checkedInAt === null ? undefined : isoFromMs(ticket.checkedInAt),
    voidedAt: ticket.voidedAt === null ? undefined : isoFromMs(ticket.voidedAt),
    refundedAt: ticket.refundedAt === null ? undefined : isoFromMs(ticket.refundedAt),
    refundId: ticket.refundId ?? undefined,
    statusReason: ticket.statusReason ?? undefined,
  })
}
