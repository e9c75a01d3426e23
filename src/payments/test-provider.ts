import { randomBytes } from 'node:crypto'
import type { AuthorizeRequest, AuthorizeResult, PaymentProvider, RefundRequest, RefundResult } from './provider.js'

/**
 * Stripe's test cards, so people can use the numbers they already know. Any other number
 * that passes the Luhn check is refused: this provider never sees a real card.
 */
const TEST_CARDS: Record<string, { brand: string; outcome: 'succeed' | 'card_declined' | 'insufficient_funds' | 'expired_card' }> = {
  '4242424242424242': { brand: 'visa', outcome: 'succeed' },
  '4000056655665556': { brand: 'visa', outcome: 'succeed' },
  '5555555555554444': { brand: 'mastercard', outcome: 'succeed' },
  '378282246310005': { brand: 'amex', outcome: 'succeed' },
  '4000000000000002': { brand: 'visa', outcome: 'card_declined' },
  '4000000000009995': { brand: 'visa', outcome: 'insufficient_funds' },
  '4000000000000069': { brand: 'visa', outcome: 'expired_card' },
}

const DECLINE_MESSAGES = {
  card_declined: 'Your card was declined. Try another card.',
  insufficient_funds: 'Your card has insufficient funds. Try another card.',
  expired_card: 'Your card has expired. Try another card.',
} as const

export function normalizeCardNumber(input: string): string {
  return input.replace(/[\s-]/g, '')
}

export function passesLuhn(digits: string): boolean {
  if (!/^\d{12,19}$/.test(digits)) return false
  let sum = 0
  for (let i = 0; i < digits.length; i++) {
    let digit = digits.charCodeAt(digits.length - 1 - i) - 48
    if (i % 2 === 1) {
      digit *= 2
      if (digit > 9) digit -= 9
    }
    sum += digit
  }
  return sum % 10 === 0
}

/**
 * The built-in provider of the `test` environment. It keeps no state: an authorization is
 * decided by the card number alone, so captures and refunds stay valid across restarts.
 */
export class TestPaymentProvider implements PaymentProvider {
  readonly name = 'test'

  async authorize(req: AuthorizeRequest): Promise<AuthorizeResult> {
    const digits = normalizeCardNumber(req.cardNumber)
    if (!passesLuhn(digits)) {
      return { ok: false, code: 'incorrect_number', message: 'Your card number is incorrect. Check it and try again.' }
    }
    const card = TEST_CARDS[digits]
    if (!card) {
      return {
        ok: false,
        code: 'test_card_required',
        message: 'This is a test checkout: use a test card such as 4242 4242 4242 4242. No real card is ever charged here.',
      }
    }
    if (card.outcome !== 'succeed') return { ok: false, code: card.outcome, message: DECLINE_MESSAGES[card.outcome] }
    return { ok: true, ref: `test_auth_${randomBytes(12).toString('hex')}`, cardBrand: card.brand, cardLast4: digits.slice(-4) }
  }

  async capture(): Promise<void> {}

  async cancel(): Promise<void> {}

  async refund(req: RefundRequest): Promise<RefundResult> {
    if (!req.paymentRef.startsWith('test_auth_')) return { ok: false, message: 'not a test-mode payment' }
    return { ok: true, ref: `test_refund_${randomBytes(12).toString('hex')}` }
  }
}

/**
 * The provider for an environment, or null where none is configured. Live card payments need a
 * real processor, which this server does not have yet: nothing is charged or held in `live`.
 */
export function paymentProviderFor(environment: string): PaymentProvider | null {
  return environment === 'test' ? testProvider : null
}

const testProvider = new TestPaymentProvider()
