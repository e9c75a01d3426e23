// `npm run demo` is a newcomer's first look: it must keep working end to end.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { REPO_ROOT } from './helpers/index.js'

it('the demo walks the whole flow and every step answers 2xx', async () => {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'dist', 'scripts', 'demo.js')], {
    cwd: REPO_ROOT,
    env: { ...process.env, ATM_SERVICE_DID: 'did:web:must-be-ignored.example' },
  })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  child.stderr.on('data', (chunk) => (output += chunk))
  const [code] = (await once(child, 'exit')) as [number | null]
  expect(code, output).toBe(0)
  const steps = output.split('\n').filter((line) => line.startsWith('▶ '))
  expect(steps.length).toBe(20)
  expect(output).toMatch(/The scanner checks the ticket in[\s\S]*← 200[\s\S]*"ok": true/)
  expect(output).toMatch(/already checked in[\s\S]*← 200[\s\S]*"status": "already_checked_in"/)
  expect(output).toMatch(/pays with the test card[\s\S]*← 303 Location: http:\/\/localhost:\d+\/tickets\/pay_/)
  expect(output).toMatch(/tickets of the payment[\s\S]*← 200[\s\S]*"paymentId": ?"pay_/)
  expect(output).toMatch(/Buyer also claims a free ticket[\s\S]*← 200[\s\S]*"claimId": "claim_/)
  expect(output).not.toMatch(/← [45]\d\d/)
  expect(output).not.toMatch(/eyJ[\w-]+\.[\w-]+\.[\w-]+/) // assertions are shown as <jwt>
  expect(output).toContain('Demo finished')
})
