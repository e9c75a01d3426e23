import type { Environment } from '../config.js'
import { fail } from './errors.js'

/** `environment` is optional everywhere and defaults to test, as with Stripe's test mode. */
export function parseEnvironment(value: string | undefined | null): Environment {
  if (value === undefined || value === null) return 'test'
  if (value === 'test' || value === 'live') return value
  return fail('InvalidRequest', `environment must be "test" or "live", got "${value}"`)
}
