// The checkout page in a real browser (Debian's chromium through playwright-core): paying by
// keyboard on a phone-sized screen, a declined card, cancel, a hold that expires while the
// page is open, and a double click on Pay. It also writes the README's screenshot.
import { copyFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { launchBrowser } from './helpers/browser.js'
import { checkoutLink, paymentIdOf } from './helpers/checkout.js'
import { expectOk, type Body } from './helpers/expect.js'
import { REPO_ROOT } from './helpers/service.js'
import { createEventWithTier, nsid, startWorld, type World } from './helpers/world.js'

const PHONE = { width: 390, height: 844 }
// Every run writes the screenshot under test-artifacts/ (ignored by git); with
// ATM_UPDATE_SCREENSHOTS=1 it also replaces the README's copy in docs/images/.
const SCREENSHOT = join(REPO_ROOT, 'test-artifacts', 'checkout.png')
const README_SCREENSHOT = join(REPO_ROOT, 'docs', 'images', 'checkout.png')

let world: World
let fastWorld: World // holds live 4 s
let browser: Browser

beforeAll(async () => {
  ;[world, fastWorld, browser] = await Promise.all([startWorld(), startWorld({ holdTtlSeconds: 4 }), launchBrowser()])
})
afterAll(async () => {
  await Promise.all([browser?.close(), world?.close(), fastWorld?.close()])
})

function concertTier(w: World, quantityTotal: number) {
  return createEventWithTier(
    w,
    { quantityTotal, currency: 'gbp', unitAmount: 2250 },
    { event: { title: 'Night Owls at the Roundhouse', startsAt: '2027-05-14T19:00:00Z' } },
  )
}

/** Fills the form as a buyer would and presses Pay; resolves once the answer page loaded. */
async function payOnPage(page: Page, email: string, cardNumber: string, click: 'click' | 'dblclick' = 'click') {
  await page.getByLabel('Email').fill(email)
  await page.getByLabel('Card number').fill(cardNumber)
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: /^Pay/ })[click]()])
}

async function newHold(w: World, tierId: string, quantity: number, extra: Body = {}) {
  return expectOk(await w.app.call(nsid('createTicketHold'), { items: [{ tierId, quantity }], ...extra }))
}

async function holdState(w: World, holdId: string) {
  return expectOk(await w.app.call(nsid('getTicketHold'), { holdId })).hold as Body
}

async function remaining(w: World, eventId: string, tierId: string): Promise<number> {
  const availability = expectOk(await w.app.call(nsid('getTicketAvailability'), { eventId }))
  return availability.tiers.find((t: Body) => t.id === tierId).remaining
}

async function phonePage(): Promise<Page> {
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true })
  return context.newPage()
}

describe('checkout in a browser', () => {
  it('pays with 4242 by keyboard on a phone: redirected to the tickets, each with a QR code', async () => {
    const { eventId, tierId } = await concertTier(world, 50)
    const hold = await newHold(world, tierId, 2, { customerEmail: 'ada@example.com' })
    const page = await phonePage()
    await page.goto(hold.url)

    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe('Night Owls at the Roundhouse')
    expect(await page.locator('#total').textContent()).toBe('£45.00')
    expect(await page.getByLabel('Email').inputValue()).toBe('ada@example.com')
    // The countdown runs.
    const first = await page.locator('#countdown').textContent()
    await expect.poll(() => page.locator('#countdown').textContent(), { timeout: 3000 }).not.toBe(first)
    // Nothing wider than the phone's screen.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(PHONE.width)

    mkdirSync(join(REPO_ROOT, 'test-artifacts'), { recursive: true })
    await page.getByLabel('Card number').fill('4242 4242 4242 4242')
    await page.screenshot({ path: SCREENSHOT, fullPage: true })
    if (process.env.ATM_UPDATE_SCREENSHOTS === '1') copyFileSync(SCREENSHOT, README_SCREENSHOT)
    await page.getByLabel('Card number').fill('')

    // By keyboard only: focus moves from Email to Card number, Enter submits with Pay.
    await page.getByLabel('Email').focus()
    await page.keyboard.press('Tab')
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('cardNumber')
    await page.keyboard.type('4242 4242 4242 4242')
    await page.keyboard.press('Tab')
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Pay £45.00')
    await Promise.all([page.waitForURL(/\/tickets\/pay_/), page.keyboard.press('Enter')])

    expect(await page.getByRole('heading', { level: 2, name: /Your tickets \(2\)/ }).count()).toBe(1)
    expect(await page.locator('figure svg').count()).toBe(2)
    const box = await page.locator('figure svg').first().boundingBox()
    expect(box!.width).toBeGreaterThan(150)
    const paymentId = paymentIdOf(page.url())
    const tickets = expectOk(await world.app.call(nsid('listBuyerTickets'), { paymentId })).tickets as Body[]
    expect(tickets).toHaveLength(2)
    for (const ticket of tickets) expect(await page.getByText(ticket.id).count()).toBe(1)
    expect((await holdState(world, hold.holdId)).status).toBe('completed')
    expect(await remaining(world, eventId, tierId)).toBe(48)
    await page.context().close()
  })

  it('shows a declined card plainly and keeps the hold active', async () => {
    const { eventId, tierId } = await concertTier(world, 10)
    const hold = await newHold(world, tierId, 1)
    const page = await phonePage()
    await page.goto(hold.url)
    await payOnPage(page, 'buyer@example.com', '4000 0000 0000 0002')
    await expect.poll(() => page.getByRole('alert').first().textContent()).toContain('Your card was declined')
    expect(await page.getByLabel('Email').inputValue()).toBe('buyer@example.com')
    expect(await page.getByRole('button', { name: /^Pay/ }).isEnabled()).toBe(true)
    expect((await holdState(world, hold.holdId)).status).toBe('active')
    expect(await remaining(world, eventId, tierId)).toBe(9)
    await page.context().close()
  })

  it('cancel releases the hold and goes to the app\'s cancelUrl', async () => {
    const { eventId, tierId } = await concertTier(world, 10)
    const cancelUrl = `${world.service.url}/xrpc/_health?cancelled=1`
    const hold = await newHold(world, tierId, 4, { cancelUrl })
    expect(await remaining(world, eventId, tierId)).toBe(6)
    const page = await phonePage()
    await page.goto(hold.url)
    await Promise.all([page.waitForURL(cancelUrl), page.getByRole('button', { name: 'Cancel' }).click()])
    expect((await holdState(world, hold.holdId)).status).toBe('released')
    expect(await remaining(world, eventId, tierId)).toBe(10)
    await page.context().close()
  })

  it('says so when the hold expires while the page is open, and the server refuses Pay', async () => {
    const { eventId, tierId } = await concertTier(fastWorld, 10)
    const hold = await newHold(fastWorld, tierId, 2)
    const page = await phonePage()
    await page.goto(hold.url)
    await page.getByLabel('Email').fill('late@example.com')
    await page.getByLabel('Card number').fill('4242 4242 4242 4242')
    const pay = page.getByRole('button', { name: /^Pay/ })
    expect(await pay.isEnabled()).toBe(true)

    await expect.poll(() => page.locator('#expiry').textContent(), { timeout: 10_000 }).toContain('has expired')
    expect(await page.locator('#expiry').isVisible()).toBe(true)
    expect(await pay.isDisabled()).toBe(true)

    // A page that was kept from noticing (or a forged post) still cannot pay: the server decides.
    await page.evaluate(() => (document.querySelector('button.pay') as HTMLButtonElement).removeAttribute('disabled'))
    await Promise.all([page.waitForLoadState('load'), pay.click()])
    await expect.poll(() => page.getByRole('alert').first().textContent()).toContain('has expired')
    const state = await holdState(fastWorld, hold.holdId)
    expect(state.status).toBe('expired')
    expect(state.paymentId).toBeUndefined()
    expect(await remaining(fastWorld, eventId, tierId)).toBe(10)
    await page.context().close()
  })

  it('a double click on Pay makes one payment', async () => {
    const { eventId, tierId } = await concertTier(world, 10)
    const hold = await newHold(world, tierId, 3)
    const page = await phonePage()
    await page.goto(hold.url)
    await payOnPage(page, 'twice@example.com', '4242 4242 4242 4242', 'dblclick')
    await page.waitForURL(/\/tickets\/pay_/)
    const paymentId = paymentIdOf(page.url())
    expect((await holdState(world, hold.holdId)).paymentId).toBe(paymentId)
    const all = expectOk(await world.app.call(nsid('listOrganizerTickets'), { eventId, limit: 100 })).tickets as Body[]
    expect(all).toHaveLength(3)
    expect(new Set(all.map((t) => t.paymentId))).toEqual(new Set([paymentId]))
    expect(checkoutLink(hold.url).holdId).toBe(hold.holdId)
    await page.context().close()
  })
})
