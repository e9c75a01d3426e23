import * as init from './001-init.js'
import * as lifecycle from './002-lifecycle.js'
import * as checkinCounts from './003-checkin-counts.js'
import * as spentTokenLog from './004-spent-token-log.js'
import * as serviceInstance from './005-service-instance.js'
import * as signingKeyLog from './006-signing-key-log.js'

/**
 * Ordered list of migrations; the database's `user_version` says how many have run.
 * A migration, once shipped, is never edited: append the next one instead.
 */
export const migrations: ReadonlyArray<{ name: string; up: string }> = [
  { name: '001-init', up: init.up },
  { name: '002-lifecycle', up: lifecycle.up },
  { name: '003-checkin-counts', up: checkinCounts.up },
  { name: '004-spent-token-log', up: spentTokenLog.up },
  { name: '005-service-instance', up: serviceInstance.up },
  { name: '006-signing-key-log', up: signingKeyLog.up },
]
