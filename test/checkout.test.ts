// The hosted checkout over plain HTTP, as a browser's form posts reach it: the page behind a
// hold's url, test-card payments, completion into a payment and tickets, cancel, expiry, and
// the races (two submits of one hold; Pay at the instant the hold expires). The same pages in
// a real browser are in checkout-page.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkoutLink, payHold, paymentIdOf, submitCheckout } from './helpers/checkout.js'
import { expectOk, type Body } from './helpers/expect.js'
import { createEventWithTier, nsid, startWorld, type World } from './helpers/world.js'

let world: World
let fastWorld: World // holds live 2 s

beforeAll(async () => {
  ;[world, fastWorld] = await Promise.all([startWorld(), startWorld({ holdTtlSeconds: 2 })])
})
afterAll(async () => {
  await Promise.all([world?.close(), fastWorld?.close()])
})

async function newHold(w: World, items: Array<{ tierId: string; quantity: number }>, extra: Body = {}) {
  return expectOk(await w.app.call(nsid('createTicketHold'), { items, ...extra }))
}

async function tierUsage(w: World, eventId: string, tierId: string) {
  const availability = expectOk(await w.app.call(nsid('getTicketAvailability'), { eventId }))
  const tier = availability.tiers.find((t: Body) => t.id === tierId)
  return { held: tier.held as number, sold: tier.sold as number, remaining: tier.remaining as number }
}

async function holdState(w: World, holdId: string) {
  return expectOk(await w.app.call(nsid('getTicketHold'), { holdId })).hold as Body
}

async function paymentTickets(w: World, paymentId: string) {
  return expectOk(await w.app.call(nsid('listBuyerTickets'), { paymentId, limit: 100 })).tickets as Body[]
}

describe('checkout page access', () => {
  it('answers the same plain "not found" page for a wrong token, no token and an unknown hold', async () => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 10, title: 'Secret tier name' })
    const hold = await newHold(world, [{ tierId, quantity: 1 }])
    const link = checkoutLink(hold.url)
    const good = await fetch(hold.url)
    expect(good.status).toBe(200)
    expect(await good.text()).toContain('Secret tier name')

    const answers = await Promise.all(
      [
        `/checkout/${link.holdId}?token=${encodeURIComponent(link.token.slice(0, -1) + 'x')}`,
        `/checkout/${link.holdId}`,
        `/checkout/hold_doesnotexist?token=${encodeURIComponent(link.token)}`,
      ].map(async (path) => {
        const res = await fetch(new URL(path, hold.url))
        return { status: res.status, body: await res.text() }
      }),
    )
    for (const answer of answers) {
      expect(answer.status).toBe(404)
      expect(answer.body).toContain('Not found')
      expect(answer.body).not.toContain('Secret tier name')
      expect(answer.body).not.toContain(link.holdId)
    }
    // Bodies differ only by the per-response CSP nonce.
    const strip = (body: string) => body.replace(/nonce="[^"]+"/g, '')
    expect(new Set(answers.map((a) => strip(a.body))).size).toBe(1)

    // Acting with a wrong token changes nothing either.
    const refused = await submitCheckout(hold.url, { action: 'cancel', token: 'hold_tok_wrong' })
    expect(refused.status).toBe(404)
    expect((await holdState(world, hold.holdId)).status).toBe('active')
    expect(await tierUsage(world, eventId, tierId)).toMatchObject({ held: 1, sold: 0 })
  })

  it('shows the event, each item with quantity and price, the total in the currency, a countdown and the form', async () => {
    const created = await createEventWithTier(
      world,
      { title: 'Balcony', currency: 'eur', unitAmount: 1250, quantityTotal: 20 },
      { event: { title: '<b>Rock & "Roll"</b>', startsAt: '2027-03-01T19:30:00Z' } },
    )
    const second = expectOk(
      await world.app.call(nsid('createTicketTier'), {
        organizerDid: world.organizer.did,
        organizerAssertionJwt: await world.organizer.token(nsid('createTicketTier')),
        event: { eventId: created.eventId },
        title: 'Standing',
        currency: 'eur',
        unitAmount: 900,
        quantityTotal: 20,
      }),
    )
    const hold = await newHold(
      world,
      [
        { tierId: created.tierId, quantity: 2 },
        { tierId: second.tier.id, quantity: 1 },
      ],
      { customerEmail: 'ada@example.com' },
    )
    const res = await fetch(hold.url)
    const page = await res.text()
    expect(res.status).toBe(200)
    expect(page).toContain('Monday, March 1, 2027')
    expect(res.headers.get('content-type')).toMatch(/^text\/html/)
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(res.headers.get('referrer-policy')).toBe('no-referrer')
    expect(res.headers.get('content-security-policy')).toMatch(/default-src 'none'/)
    // The title is escaped, never markup.
    expect(page).toContain('&lt;b&gt;Rock &amp; &quot;Roll&quot;&lt;/b&gt;')
    expect(page).not.toContain('<b>Rock')
    expect(page).toContain('Balcony')
    expect(page).toContain('2 × €12.50')
    expect(page).toContain('€25.00')
    expect(page).toContain('1 × €9.00')
    expect(page).toContain('€34.00') // total
    expect(page).toMatch(/<label for="email">Email<\/label>/)
    expect(page).toMatch(/<label for="cardNumber">Card number<\/label>/)
    expect(page).toContain('value="ada@example.com"')
    expect(page).toMatch(/<button[^>]*value="pay"[^>]*>Pay €34.00<\/button>/)
    expect(page).toMatch(/<button[^>]*value="cancel"[^>]*>Cancel<\/button>/)
    expect(page).toMatch(/<time id="countdown" datetime="[^"]+" data-ms-left="\d+">\d+:\d\d<\/time>/)
    // Small: no external assets, a few kilobytes.
    expect(page).not.toMatch(/<(script|link|img)[^>]+(src|href)=/)
    expect(Buffer.byteLength(page)).toBeLessThan(12_000)
  })
})

describe('paying', () => {
  it('4242 completes the hold: one payment, one ticket per unit, held moves to sold, the ticket page shows QR codes', async () => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 10, unitAmount: 2500 })
    const hold = await newHold(world, [{ tierId, quantity: 3 }])
    expect(await tierUsage(world, eventId, tierId)).toEqual({ held: 3, sold: 0, remaining: 7 })

    const location = await payHold(hold.url)
    expect(location).toMatch(new RegExp(`^${world.service.url}/tickets/pay_[A-Za-z0-9]+\\?key=`))
    const paymentId = paymentIdOf(location)

    expect(await tierUsage(world, eventId, tierId)).toEqual({ held: 0, sold: 3, remaining: 7 })
    const after = await holdState(world, hold.holdId)
    expect(after.status).toBe('completed')
    expect(after.paymentId).toBe(paymentId)
    expect(after.completedAt).toBeTypeOf('string')

    const tickets = await paymentTickets(world, paymentId)
    expect(tickets).toHaveLength(3)
    for (const ticket of tickets) {
      expect(ticket).toMatchObject({ eventId, tierId, status: 'issued', paymentId, holdId: hold.holdId })
      expect(ticket.ticketToken).toMatch(/^atmt_[A-Za-z0-9_-]{43}$/)
    }
    expect(new Set(tickets.map((t) => t.ticketToken)).size).toBe(3)

    const ticketPage = await fetch(location)
    expect(ticketPage.status).toBe(200)
    const body = await ticketPage.text()
    expect(body.match(/<svg[^>]*viewBox/g)).toHaveLength(3)
    for (const ticket of tickets) expect(body).toContain(ticket.id)
    expect(body).toContain('$75.00')
    expect(body).toContain('ending 4242')
    // The scan tokens are in the QR codes, not printed as text.
    for (const ticket of tickets) expect(body).not.toContain(ticket.ticketToken)

    // The ticket page's own secret is needed; the hold token does not open it.
    const wrongKey = await fetch(`${world.service.url}/tickets/${paymentId}?key=${encodeURIComponent(checkoutLink(hold.url).token)}`)
    expect(wrongKey.status).toBe(404)
    // The checkout link of a paid hold now leads to the tickets.
    const again = await fetch(hold.url, { redirect: 'manual' })
    expect(again.status).toBe(303)
    expect(again.headers.get('location')).toBe(location)
  })

  it('goes to returnUrl with the hold and payment ids, and cancel goes to cancelUrl with the capacity back', async () => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 5 })
    const hold = await newHold(world, [{ tierId, quantity: 2 }], {
      returnUrl: 'https://app.example/done?order=42',
      cancelUrl: 'https://app.example/cart',
    })
    const location = await payHold(hold.url)
    const url = new URL(location)
    expect(url.origin + url.pathname).toBe('https://app.example/done')
    expect(url.searchParams.get('order')).toBe('42')
    expect(url.searchParams.get('holdId')).toBe(hold.holdId)
    expect(url.searchParams.get('paymentId')).toMatch(/^pay_/)
    expect(await paymentTickets(world, url.searchParams.get('paymentId')!)).toHaveLength(2)

    const other = await newHold(world, [{ tierId, quantity: 3 }], { cancelUrl: 'https://app.example/cart' })
    expect(await tierUsage(world, eventId, tierId)).toEqual({ held: 3, sold: 2, remaining: 0 })
    const cancelled = await submitCheckout(other.url, { action: 'cancel' })
    expect(cancelled.status).toBe(303)
    expect(cancelled.location).toBe('https://app.example/cart')
    expect((await holdState(world, other.holdId)).status).toBe('released')
    expect(await tierUsage(world, eventId, tierId)).toEqual({ held: 0, sold: 2, remaining: 3 })
    // A cancelled hold cannot be paid afterwards.
    const late = await submitCheckout(other.url, { action: 'pay', email: 'a@b.example', cardNumber: '4242424242424242' })
    expect(late.status).toBe(409)
    expect(late.html).toContain('was cancelled')
  })

  it.each([
    ['4000 0000 0000 0002', 'Your card was declined'],
    ['4000000000009995', 'insufficient funds'],
    ['4242 4242 4242 4241', 'card number is incorrect'],
    ['5105 1051 0510 5100', 'use a test card'],
  ])('card %s is refused with a clear message and the hold stays active', async (cardNumber, message) => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 4 })
    const hold = await newHold(world, [{ tierId, quantity: 2 }])
    const answer = await submitCheckout(hold.url, { action: 'pay', email: 'buyer@example.com', cardNumber })
    expect(answer.status).toBe(402)
    expect(answer.html).toContain(message)
    expect(answer.html).toContain('value="buyer@example.com"') // what they typed is kept
    expect(answer.html).not.toContain(cardNumber.replace(/ /g, '')) // the card number is not echoed
    expect((await holdState(world, hold.holdId)).status).toBe('active')
    expect(await tierUsage(world, eventId, tierId)).toEqual({ held: 2, sold: 0, remaining: 2 })
    // The same hold can still be paid with a good card.
    expect(paymentIdOf(await payHold(hold.url))).toMatch(/^pay_/)
  })

  it('refuses a missing email or an unknown action without charging or changing anything', async () => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 4 })
    const hold = await newHold(world, [{ tierId, quantity: 1 }])
    const noEmail = await submitCheckout(hold.url, { action: 'pay', email: 'not-an-email', cardNumber: '4242424242424242' })
    expect(noEmail.status).toBe(400)
    expect(noEmail.html).toContain('Enter a valid email address')
    const res = await fetch(new URL(`/checkout/${hold.holdId}`, hold.url), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: checkoutLink(hold.url).token, action: 'refund' }).toString(),
    })
    expect(res.status).toBe(400)
    expect((await holdState(world, hold.holdId)).status).toBe('active')
    expect(await tierUsage(world, eventId, tierId)).toEqual({ held: 1, sold: 0, remaining: 3 })
  })

  it('20 concurrent submits of one hold make exactly one payment, and all go to the same place', async () => {
    const { eventId, tierId } = await createEventWithTier(world, { quantityTotal: 10 })
    const hold = await newHold(world, [{ tierId, quantity: 2 }])
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        submitCheckout(hold.url, { action: 'pay', email: 'buyer@example.com', cardNumber: '4242424242424242' }),
      ),
    )
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(303))
    const locations = new Set(answers.map((a) => a.location))
    expect(locations.size).toBe(1)
    const paymentId = paymentIdOf([...locations][0]!)
    expect((await holdState(world, hold.holdId)).paymentId).toBe(paymentId)
    expect(await paymentTickets(world, paymentId)).toHaveLength(2)
    expect(await tierUsage(world, eventId, tierId)).toEqual({ held: 0, sold: 2, remaining: 8 })
    const all = expectOk(await world.app.call(nsid('listOrganizerTickets'), { eventId, limit: 100 })).tickets
    expect(all).toHaveLength(2)
  })
})

describe('expiry', () => {
  it('an expired hold cannot be paid: the page says so, nothing is charged or issued', async () => {
    const { eventId, tierId } = await createEventWithTier(fastWorld, { quantityTotal: 3 })
    const hold = await newHold(fastWorld, [{ tierId, quantity: 3 }])
    await new Promise((resolve) => setTimeout(resolve, Date.parse(hold.expiresAt) - Date.now() + 200))
    const page = await (await fetch(hold.url)).text()
    expect(page).toContain('has expired')
    expect(page).toMatch(/<button[^>]*value="pay"[^>]*disabled/)
    const answer = await submitCheckout(hold.url, { action: 'pay', email: 'buyer@example.com', cardNumber: '4242424242424242' })
    expect(answer.status).toBe(409)
    expect(answer.html).toContain('has expired')
    expect((await holdState(fastWorld, hold.holdId)).status).toBe('expired')
    expect(await tierUsage(fastWorld, eventId, tierId)).toEqual({ held: 0, sold: 0, remaining: 3 })
    expect(expectOk(await fastWorld.app.call(nsid('listOrganizerTickets'), { eventId })).tickets).toHaveLength(0)
  })

  it('Pay racing the expiry instant either completes the hold with its tickets or refuses it, never half', async () => {
    // A round whose submits all landed on one side of the instant did not test the race, so
    // rounds go on until both outcomes were seen (and each round checks that nothing is half).
    const seen = { completed: 0, refused: 0 }
    for (let round = 0; round < 5 && (seen.completed === 0 || seen.refused === 0); round++) {
      const outcome = await payAcrossExpiry()
      seen.completed += outcome.completed
      seen.refused += outcome.refused
    }
    expect(seen.completed).toBeGreaterThan(0)
    expect(seen.refused).toBeGreaterThan(0)
  })
})

/** 20 holds, each paid from 150 ms before to 135 ms after its own expiry; checks every outcome whole. */
async function payAcrossExpiry(): Promise<{ completed: number; refused: number }> {
  const total = 40
  const { eventId, tierId } = await createEventWithTier(fastWorld, { quantityTotal: total })
  const holds = await Promise.all(Array.from({ length: 20 }, () => newHold(fastWorld, [{ tierId, quantity: 2 }])))
  const answers = await Promise.all(
    holds.map(async (hold, i) => {
      const at = Date.parse(hold.expiresAt) - 150 + i * 15
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, at - Date.now())))
      return submitCheckout(hold.url, { action: 'pay', email: 'buyer@example.com', cardNumber: '4242424242424242' })
    }),
  )
  let completed = 0
  for (const [i, answer] of answers.entries()) {
    const state = await holdState(fastWorld, holds[i]!.holdId)
    if (answer.status === 303) {
      completed++
      expect(state.status).toBe('completed')
      expect(await paymentTickets(fastWorld, paymentIdOf(answer.location!))).toHaveLength(2)
    } else {
      expect(answer.status).toBe(409)
      expect(state.status).toBe('expired')
      expect(state.paymentId).toBeUndefined()
    }
  }
  const usage = await tierUsage(fastWorld, eventId, tierId)
  expect(usage).toEqual({ held: 0, sold: completed * 2, remaining: total - completed * 2 })
  const issued = expectOk(await fastWorld.app.call(nsid('listOrganizerTickets'), { eventId, limit: 100 })).tickets
  expect(issued).toHaveLength(completed * 2)
  return { completed, refused: answers.length - completed }
}
