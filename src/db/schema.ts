import type { Generated } from 'kysely'

// Times are integer milliseconds since the epoch so that expiry comparisons are index range scans.

export interface AppTable {
  did: string
  name: string
  ticketsEnabled: number
  webhookUrl: string | null
  eventDelivery: string | null
  webhookSecret: string | null
  createdAt: number
  updatedAt: number
}

export interface OrganizerTable {
  did: string
  displayName: string | null
  createdAt: number
}

export interface PaymentSetupTable {
  organizerDid: string
  environment: string
  accountId: string
  completedAt: number
}

export interface EventTable {
  id: string
  appDid: string
  environment: string
  uri: string | null
  cid: string | null
  title: string
  organizerDid: string
  status: string
  startsAt: string | null
  endsAt: string | null
  timezone: string | null
  url: string | null
  imageUrl: string | null
  metadata: string | null
  checkInListId: string
  createdAt: number
  updatedAt: number
}

export interface CapacityGroupTable {
  id: string
  eventId: string
  appDid: string
  environment: string
  name: string
  totalCapacity: number
  /** Units in holds that were active and unexpired when last counted; see tickets/capacity.ts. */
  held: number
  sold: number
  status: string
  metadata: string | null
  createdAt: number
  updatedAt: number
}

export interface TierTable {
  id: string
  eventId: string
  appDid: string
  environment: string
  capacityGroupId: string | null
  title: string
  description: string | null
  currency: string
  unitAmount: number
  quantityTotal: number
  maxPerOrder: number
  saleStartsAt: number | null
  saleEndsAt: number | null
  status: string
  held: number
  sold: number
  metadata: string | null
  createdAt: number
  updatedAt: number
}

export interface HoldTable {
  id: string
  appDid: string
  environment: string
  eventId: string
  token: string
  buyerDid: string | null
  customerEmail: string | null
  /**
   * active | released | completed | expired. An active hold past expiresAt is expired already
   * (readers derive it); the sweeper writes "expired" later, when it reports the expiry.
   */
  status: string
  expiresAt: number
  amountCents: number
  currency: string
  returnUrl: string | null
  cancelUrl: string | null
  metadata: string | null
  createdAt: number
  releasedAt: number | null
  releaseReason: string | null
  completedAt: number | null
  paymentId: string | null
}

export interface HoldItemTable {
  holdId: string
  tierId: string
  capacityGroupId: string | null
  title: string
  quantity: number
  unitAmount: number
  currency: string
  expiresAt: number
  /** 1 while this item's quantity is included in its tier's and group's `held` counters. */
  counted: number
}

export interface ClaimTable {
  id: string
  appDid: string
  environment: string
  eventId: string
  tierId: string
  buyerDid: string
  quantity: number
  customerEmail: string | null
  metadata: string | null
  createdAt: number
}

export interface TicketTable {
  id: string
  appDid: string
  environment: string
  eventId: string
  tierId: string
  capacityGroupId: string | null
  ticketToken: string
  status: string
  buyerDid: string | null
  customerEmail: string | null
  paymentId: string | null
  claimId: string | null
  holdId: string | null
  issuedAt: number
  checkedInAt: number | null
  /** Price paid for this ticket, in the currency's smallest unit (0 for free claims). */
  unitAmount: number
  currency: string | null
  refundId: string | null
  voidedAt: number | null
  refundedAt: number | null
  /** Why the ticket was voided or refunded, as the app said. */
  statusReason: string | null
}

export interface PaymentTable {
  id: string
  appDid: string
  environment: string
  holdId: string
  eventId: string
  amount: number
  currency: string
  /** succeeded | partially_refunded | refunded */
  status: string
  refundedAmount: number
  provider: string
  providerRef: string
  cardBrand: string | null
  cardLast4: string | null
  buyerDid: string | null
  customerEmail: string | null
  pageSecret: string
  createdAt: number
  updatedAt: number
}

export interface RefundTable {
  id: string
  appDid: string
  environment: string
  paymentId: string
  amount: number
  currency: string
  reason: string | null
  forced: number
  providerRef: string
  createdAt: number
}

export interface CheckInListTable {
  id: string
  eventId: string
  appDid: string
  environment: string
  name: string
  createdAt: number
}

export interface CheckInTable {
  id: string
  ticketId: string
  checkInListId: string
  appDid: string
  environment: string
  checkedInAt: number
  metadata: string | null
}

export interface ServiceInstanceTable {
  /** Random, made when the process opens the database. */
  id: string
  pid: number
  startedAt: number
}

export interface IdempotencyTable {
  appDid: string
  environment: string
  method: string
  key: string
  requestHash: string
  /** pending while the first request runs; done once its answer is stored. */
  state: string
  /** A random nonce of the request that holds the key: only it may do the work and store the answer. */
  owner: string
  /**
   * The service process (`serviceInstance.id`) the owner runs in: once it is gone, the key is
   * free at once. Null for keys taken before processes were recorded.
   */
  ownerInstance: string | null
  /** JSON: { ok: true, body } or { ok: false, status, error, message }. */
  response: string | null
  createdAt: number
}

export interface SpentTokenTable {
  seq: Generated<number>
  iss: string
  jti: string
  expiresAt: number
}

export interface OutboxTable {
  id: string
  appDid: string
  environment: string
  type: string
  payload: string
  createdAt: number
  attempts: number
  nextAttemptAt: number
  deliveredAt: number | null
  lastError: string | null
  seq: Generated<number>
}

export interface DatabaseSchema {
  app: AppTable
  organizer: OrganizerTable
  paymentSetup: PaymentSetupTable
  event: EventTable
  capacityGroup: CapacityGroupTable
  tier: TierTable
  hold: HoldTable
  holdItem: HoldItemTable
  claim: ClaimTable
  ticket: TicketTable
  idempotency: IdempotencyTable
  serviceInstance: ServiceInstanceTable
  spentToken: SpentTokenTable
  outbox: OutboxTable
  payment: PaymentTable
  refund: RefundTable
  checkInList: CheckInListTable
  checkIn: CheckInTable
}
