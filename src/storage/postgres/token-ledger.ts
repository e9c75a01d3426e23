import { keyReplaced, type KeyLedger, type TokenLedger } from '../../auth/replay-store.js'
import type { Storage, Tx } from '../types.js'
import { PostgresSpendLog } from './spend-log.js'

/**
 * Spent tokens and issuers' latest keys on PostgreSQL (see `PostgresSpendLog`): nothing kept in
 * memory that another node could have moved past, so every spend asks the server.
 */
export class PostgresTokenLedger implements TokenLedger {
  readonly signingKeys: KeyLedger
  private readonly log: PostgresSpendLog

  constructor(private readonly storage: Storage) {
    this.log = new PostgresSpendLog(storage.db)
    const log = this.log
    this.signingKeys = {
      record: (did, key) => log.recordKey(did, key),
      onChange: () => undefined,
    }
  }

  async load(): Promise<void> {}

  async spend(iss: string, jti: string, expiresAtMs: number, signingKey?: string): Promise<boolean> {
    return this.storage.write((tx) => this.spendIn(tx, iss, jti, expiresAtMs, signingKey))
  }

  async spendIn(tx: Tx, iss: string, jti: string, expiresAtMs: number, signingKey?: string): Promise<boolean> {
    const outcome = await this.log.spendIn(tx.db, { iss, jti, expiresAtMs, signingKey })
    if (outcome === 'key-replaced') {
      // This node's cached document is older than the recorded key: fetch it again next time.
      this.signingKeys.onChange(iss, await this.log.latestKeyIn(tx.db, iss))
      throw keyReplaced(iss)
    }
    return outcome === 'first-use'
  }

  purgeExpired(nowMs = Date.now()): Promise<number> {
    return this.log.purgeExpired(nowMs)
  }
}
