// The checkout page in a real browser (Debian's chromium through playwright-core): paying by
// keyboard on a phone-sized screen, a declined card, cancel, a hold that expires while the
// page is open, a second click on Pay with and without the page's script, and a stored
// returnUrl that cannot be followed. It also writes the README's screenshot.
import { copyFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Browser, Locator, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { launchBrowser } from './helpers/browser.js'
import { paymentIdOf } from './helpers/checkout.js'
import { dbRun } from './helpers/db.js'
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
  // At debug the service logs every request it answered: how a test sees what reached it.
  ;[world, fastWorld, browser] = await Promise.all([startWorld({ logLevel: 'debug' }), startWorld({ holdTtlSeconds: 4 }), launchBrowser()])
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
async function payOnPage(page: Page, email: string, cardNumber: string) {
  await page.getByLabel('Email').fill(email)
  await page.getByLabel('Card number').fill(cardNumber)
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: /^Pay/ }).click()])
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

async function phonePage(opts: { javaScriptEnabled?: boolean } = {}): Promise<Page> {
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true, ...opts })
  return context.newPage()
}

/**
 * A slow connection for the checkout's form posts: each one reaches the service at once, but
 * the browser gets no answer until `release()`, so a second click lands on a page still
 * waiting for the first, as on a phone with a poor signal.
 */
async function slowCheckoutAnswers(page: Page) {
  let release!: () => void
  const released = new Promise<void>((resolve) => (release = resolve))
  const posts: string[] = []
  const locations: string[] = []
  await page.route('**/checkout/*', async (route) => {
    if (route.request().method() !== 'POST') return route.continue()
    posts.push(route.request().url())
    const response = await route.fetch({ maxRedirects: 0 })
    const location = response.headers()['location']
    if (location) locations.push(location)
    await released
    // The browser has given up on an answer whose navigation a second submit replaced.
    await route.fulfill({ response }).catch(() => {})
  })
  return { posts, locations, release }
}

/**
 * Where to click on an element with the mouse: a locator's click waits for a navigation in
 * progress to finish, and a second click must land while the first one's is still pending.
 */
async function centerOf(locator: Locator): Promise<{ x: number; y: number }> {
  await locator.scrollIntoViewIfNeeded()
  const box = (await locator.boundingBox())!
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 }
}

/** The form posts to a hold's checkout that the service answered, as its request log lists them. */
function checkoutPostsServed(w: World, holdId: string) {
  return w.service.jsonLogs().filter((line) => line.msg === 'request' && line.method === 'POST' && line.path === `/checkout/${holdId}`)
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

  /** Opens the checkout, fills it and clicks Pay once, with the service's answers held back. */
  async function firstPayClick(page: Page, url: string) {
    const network = await slowCheckoutAnswers(page)
    await page.goto(url)
    await page.getByLabel('Email').fill('twice@example.com')
    await page.getByLabel('Card number').fill('4242 4242 4242 4242')
    const pay = await centerOf(page.getByRole('button', { name: /^Pay/ }))
    await page.mouse.click(pay.x, pay.y)
    await expect.poll(() => network.posts.length).toBe(1)
    return { network, pay }
  }

  it('a second click on Pay while the first is on its way sends nothing: the page\'s script holds it back', async () => {
    const { eventId, tierId } = await concertTier(world, 10)
    const hold = await newHold(world, tierId, 3)
    const page = await phonePage()
    const { network, pay } = await firstPayClick(page, hold.url)
    await page.mouse.click(pay.x, pay.y) // the page is still waiting for the first answer
    network.release()
    // Had the second been sent, it would have replaced the first's navigation before this.
    await expect.poll(() => page.url(), { timeout: 10_000 }).toMatch(/\/tickets\/pay_/)
    expect(network.posts).toHaveLength(1)
    await expect.poll(() => checkoutPostsServed(world, hold.holdId).length).toBe(1)
    const paymentId = paymentIdOf(page.url())
    const all = expectOk(await world.app.call(nsid('listOrganizerTickets'), { eventId, limit: 100 })).tickets as Body[]
    expect(all).toHaveLength(3)
    expect(new Set(all.map((t) => t.paymentId))).toEqual(new Set([paymentId]))
    await page.unrouteAll({ behavior: 'ignoreErrors' })
    await page.context().close()
  })

  it('a second click on Pay without the script reaches the service and still makes one payment', async () => {
    const { eventId, tierId } = await concertTier(world, 10)
    const hold = await newHold(world, tierId, 3)
    // No JavaScript, as in a browser with scripts off: nothing in the page stops the second submit.
    const page = await phonePage({ javaScriptEnabled: false })
    const { network, pay } = await firstPayClick(page, hold.url)
    await page.mouse.click(pay.x, pay.y)
    await expect.poll(() => network.posts.length).toBe(2)
    network.release()
    await page.waitForURL(/\/tickets\/pay_/)
    // Both reached the service, and both were answered with the way to the same tickets.
    await expect.poll(() => checkoutPostsServed(world, hold.holdId).map((line) => line.status)).toEqual([303, 303])
    expect(new Set(network.locations).size).toBe(1)
    const paymentId = paymentIdOf(page.url())
    expect(paymentIdOf(network.locations[0]!)).toBe(paymentId)
    expect((await holdState(world, hold.holdId)).paymentId).toBe(paymentId)
    const all = expectOk(await world.app.call(nsid('listOrganizerTickets'), { eventId, limit: 100 })).tickets as Body[]
    expect(all).toHaveLength(3)
    expect(new Set(all.map((t) => t.paymentId))).toEqual(new Set([paymentId]))
    expect(await remaining(world, eventId, tierId)).toBe(7)
    await page.unrouteAll({ behavior: 'ignoreErrors' })
    await page.context().close()
  })

  it('a paid buyer whose hold carries a returnUrl that cannot be followed lands on their tickets', async () => {
    const { tierId } = await concertTier(world, 10)
    const hold = await newHold(world, tierId, 2, { returnUrl: 'https://app.example/done' })
    // As a hold stored before such URLs were refused at createTicketHold.
    expect(await dbRun(world.service, 'UPDATE hold SET returnUrl = ? WHERE id = ?', ['http://[::1', hold.holdId])).toEqual({ changes: 1 })
    const page = await phonePage()
    await page.goto(hold.url)
    await payOnPage(page, 'buyer@example.com', '4242 4242 4242 4242')
    await page.waitForURL(/\/tickets\/pay_/)
    expect(await page.getByRole('heading', { level: 2, name: /Your tickets \(2\)/ }).count()).toBe(1)
    expect(await page.locator('figure svg').count()).toBe(2)
    // Opening the checkout link again leads there too.
    await page.goto(hold.url)
    expect(page.url()).toMatch(/\/tickets\/pay_/)
    expect(await page.locator('figure svg').count()).toBe(2)
    await page.context().close()
  })
})
