import { AtpAgent, AtUri } from '@atproto/api'
import { getPdsEndpoint } from '@atproto/common-web'
import type { IdResolver } from '@atproto/identity'
import { safeFetchWrap } from '@atproto-labs/fetch-node'

/** What a bound event takes from its record when the app does not say it. */
export interface EventRecordDetails {
  title: string
  cid: string
  startsAt?: string
  endsAt?: string
}

type Fetch = typeof globalThis.fetch

/**
 * Reads event records (normally `community.lexicon.calendar.event`) from the repo's own PDS,
 * found through its DID document. Outside development the fetch refuses plain http, private
 * and loopback addresses, custom ports and redirects, as identity resolution does.
 */
export class EventRecordReader {
  private readonly fetch: Fetch

  constructor(
    private readonly idResolver: IdResolver,
    devMode: boolean,
  ) {
    if (devMode) {
      this.fetch = globalThis.fetch
    } else {
      const safe = safeFetchWrap({ allowIpHost: false, allowImplicitRedirect: false, timeout: 5000 })
      this.fetch = ((input: string | URL | Request, init?: RequestInit) => safe(input, { ...init, redirect: 'error' })) as Fetch
    }
  }

  /** The record's title, times and CID; throws with a reason a caller can act on. */
  async read(uri: string): Promise<EventRecordDetails> {
    const atUri = new AtUri(uri)
    const repo = atUri.hostname
    const doc = await this.idResolver.did.resolve(repo).catch(() => null)
    const pds = doc ? getPdsEndpoint(doc) : undefined
    if (!pds) throw new Error(`the DID document of ${repo} could not be fetched or names no PDS`)
    const agent = new AtpAgent({ service: pds, fetch: this.fetch })
    let record: { cid?: string; value: unknown }
    try {
      const res = await agent.com.atproto.repo.getRecord({ repo, collection: atUri.collection, rkey: atUri.rkey })
      record = res.data
    } catch (err) {
      throw new Error(`the record could not be read from ${repo}'s PDS (${(err as Error).message})`)
    }
    const value = record.value as { name?: unknown; startsAt?: unknown; endsAt?: unknown }
    if (typeof value.name !== 'string' || value.name.length === 0 || !record.cid) {
      throw new Error('the record has no name to use as the title')
    }
    return {
      title: value.name.slice(0, 300),
      cid: record.cid,
      startsAt: typeof value.startsAt === 'string' && !Number.isNaN(Date.parse(value.startsAt)) ? value.startsAt : undefined,
      endsAt: typeof value.endsAt === 'string' && !Number.isNaN(Date.parse(value.endsAt)) ? value.endsAt : undefined,
    }
  }
}
