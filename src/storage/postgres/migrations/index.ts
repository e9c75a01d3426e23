import * as init from './001-init.js'
import * as sharedPromises from './002-shared-promises.js'
import * as serviceKey from './003-service-key.js'

/**
 * Ordered list of PostgreSQL migrations; the `schema_migrations` table names those that ran.
 * A migration, once shipped, is never edited: append the next one instead. A change to the
 * schema is made in both backends' migrations together (the storage tests compare them),
 * except for the tables only PostgreSQL needs (002), which those tests list by name.
 */
export const migrations: ReadonlyArray<{ name: string; up: string }> = [
  { name: '001-init', up: init.up },
  { name: '002-shared-promises', up: sharedPromises.up },
  { name: '003-service-key', up: serviceKey.up },
]

/**
 * Tables that only PostgreSQL has (002, 003): what several nodes need to share (spent tokens by
 * their key, the latest signing key per DID, the admin-guess count, the service's own key).
 * SQLite keeps these in its logs, in the cluster's primary and in a file beside the database,
 * so a copy from SQLite leaves them empty.
 */
export const POSTGRES_ONLY_TABLES: ReadonlySet<string> = new Set(['adminGuess', 'signingKeyLatest', 'spentJti', 'serviceKey'])
