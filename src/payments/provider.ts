/**
 * What the checkout needs from a card processor. Authorize-then-capture, as Stripe's manual
 * capture: the card is authorized before the hold is completed, captured only once the
 * completion committed, and the authorization cancelled when it could not (the hold expired or
 * was paid by a concurrent submit), so a buyer is never charged for tickets they did not get.
 */
export interface PaymentProvider {
  /** Stored with each payment and refund, e.g. "test". */
  readonly name: string
  authorize(req: AuthorizeRequest): Promise<AuthorizeResult>
  capture(authorizationRef: string): Promise<void>
  cancel(authorizationRef: string): Promise<void>
  refund(req: RefundRequest): Promise<RefundResult>
}

export interface AuthorizeRequest {
  /** In the currency's smallest unit. */
  amount: number
  currency: string
  cardNumber: string
  description: string
}

export type DeclineCode = 'card_declined' | 'insufficient_funds' | 'incorrect_number' | 'expired_card' | 'test_card_required'

export type AuthorizeResult =
  | { ok: true; ref: string; cardBrand: string; cardLast4: string }
  | { ok: false; code: DeclineCode; message: string }

export interface RefundRequest {
  /** The captured authorization's ref, as stored on the payment. */
  paymentRef: string
  amount: number
  currency: string
}

export type RefundResult = { ok: true; ref: string } | { ok: false; message: string }
