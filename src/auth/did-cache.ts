import type { CacheResult, DidCache, DidDocument } from '@atproto/identity'

/**
 * A DID document cache with a size bound (the stock MemoryCache grows without one).
 * Entries go stale after `staleTtlMs` (served, then refreshed in the background) and
 * expire after `maxTtlMs`. Least recently used entries are evicted first.
 */
export class BoundedDidCache implements DidCache {
  private readonly entries = new Map<string, { doc: DidDocument; updatedAt: number }>()
  /** Background refreshes under way: one per DID, however many requests find it stale. */
  private readonly refreshing = new Set<string>()

  constructor(
    readonly maxEntries = 10_000,
    readonly staleTtlMs = 60 * 60 * 1000,
    readonly maxTtlMs = 24 * 60 * 60 * 1000,
  ) {}

  get size(): number {
    return this.entries.size
  }

  async cacheDid(did: string, doc: DidDocument): Promise<void> {
    this.entries.delete(did)
    this.entries.set(did, { doc, updatedAt: Date.now() })
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value
      if (oldest === undefined) break
      this.entries.delete(oldest)
    }
  }

  /**
   * Called by the resolver, which awaits it, when it finds a stale entry: it starts the fetch
   * and returns at once, so the request goes on with the stale document instead of waiting
   * for the network (stale-while-revalidate). A document that is gone now (deactivated DID)
   * is forgotten; a failed fetch keeps the stale one until it expires.
   */
  async refreshCache(did: string, getDoc: () => Promise<DidDocument | null>): Promise<void> {
    if (this.refreshing.has(did)) return
    this.refreshing.add(did)
    void getDoc()
      .then(
        (doc) => (doc ? this.cacheDid(did, doc) : this.clearEntry(did)),
        () => undefined,
      )
      .finally(() => this.refreshing.delete(did))
  }

  async checkCache(did: string): Promise<CacheResult | null> {
    const entry = this.entries.get(did)
    if (!entry) return null
    const age = Date.now() - entry.updatedAt
    if (age > this.maxTtlMs) {
      this.entries.delete(did)
      return null
    }
    this.entries.delete(did)
    this.entries.set(did, entry)
    return { did, doc: entry.doc, updatedAt: entry.updatedAt, stale: age > this.staleTtlMs, expired: false }
  }

  async clearEntry(did: string): Promise<void> {
    this.entries.delete(did)
  }

  async clear(): Promise<void> {
    this.entries.clear()
  }
}
