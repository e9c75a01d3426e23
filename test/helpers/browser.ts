// A real browser for the pages: Debian's chromium (installed by CI with apt-get), driven by
// playwright-core, which downloads no browser of its own.
import { chromium, type Browser } from 'playwright-core'

export const CHROMIUM_PATH = process.env.ATM_TEST_CHROMIUM ?? '/usr/bin/chromium'

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  })
}
