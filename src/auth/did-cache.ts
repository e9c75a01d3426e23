import type { CacheResult, DidCache, DidDocument } from '@atproto/identity'

export interface DidCacheOptions {
  /** Bytes of documents kept for known issuers: registered apps and organizers. */
  knownMaxBytes?: number
  /**
   * Bytes of documents kept for every other issuer. Anyone can send a token from a DID of
   * their own making, so these have a small budget of their own and cannot push out the
   * documents of the apps and organizers the service works for.
   */
  unknownMaxBytes?: number
  /** Served, then refreshed in the background, once this old. */
  staleTtlMs?: number
  /** Forgotten once this old. */
  maxTtlMs?: number
  /** How long a failed lookup is answered from memory instead of being fetched again. */
  failureTtlMs?: number
  /** Whether a DID is a known issuer (its document goes to the larger budget). */
  isKnown?: (did: string) => boolean | Promise<boolean>
  /**
   * Told of every document just fetched, before it is stored: a fresh look at the DID's key,
   * which other workers must hear of (see SigningKeyLog). The resolver waits for it.
   */
  onFetched?: (did: string, doc: DidDocument) => void | Promise<void>
  /** Told of the counters after every store (for debug logs). */
  onStored?: (did: string, stats: DidCacheStats) => void
}

export interface DidCacheStats {
  known: { entries: number; bytes: number }
  unknown: { entries: number; bytes: number }
  failures: number
}

interface Entry {
  doc: DidDocument
  updatedAt: number
  /** The document as JSON, in UTF-8 bytes, plus the DID: what counts against the budget. */
  bytes: number
}

/** Failed lookups remembered at most: a DID string and a time each. */
const MAX_FAILURES = 10_000

/** Least recently used entries go first once the bytes exceed the budget. */
class ByteBudget {
  readonly entries = new Map<string, Entry>()
  bytes = 0

  constructor(readonly maxBytes: number) {}

  get(did: string): Entry | undefined {
    return this.entries.get(did)
  }

  touch(did: string, entry: Entry): void {
    this.entries.delete(did)
    this.entries.set(did, entry)
  }

  set(did: string, entry: Entry): void {
    this.delete(did)
    this.entries.set(did, entry)
    this.bytes += entry.bytes
    while (this.bytes > this.maxBytes) {
      const oldest = this.entries.keys().next().value
      if (oldest === undefined) break
      this.delete(oldest)
    }
  }

  delete(did: string): void {
    const entry = this.entries.get(did)
    if (!entry) return
    this.entries.delete(did)
    this.bytes -= entry.bytes
  }

  clear(): void {
    this.entries.clear()
    this.bytes = 0
  }
}

/**
 * The DID document cache behind every token check, bounded in bytes: documents of known
 * issuers in one budget, everyone else's in a small one (the stock MemoryCache grows without
 * a bound). Entries go stale after `staleTtlMs` (served, then refreshed in the background)
 * and expire after `maxTtlMs`. It also remembers failed lookups for a short while, so a
 * burst of tokens from a DID that cannot be resolved costs one fetch, not one per token.
 */
export class BoundedDidCache implements DidCache {
  private readonly known: ByteBudget
  private readonly unknown: ByteBudget
  /** Background refreshes under way: one per DID, however many requests find it stale. */
  private readonly refreshing = new Set<string>()
  /** DID → when its last lookup failed. */
  private readonly failures = new Map<string, number>()
  readonly staleTtlMs: number
  readonly maxTtlMs: number
  readonly failureTtlMs: number

  constructor(private readonly opts: DidCacheOptions = {}) {
    this.known = new ByteBudget(opts.knownMaxBytes ?? 32 * 1024 * 1024)
    this.unknown = new ByteBudget(opts.unknownMaxBytes ?? 2 * 1024 * 1024)
    this.staleTtlMs = opts.staleTtlMs ?? 60 * 60 * 1000
    this.maxTtlMs = opts.maxTtlMs ?? 24 * 60 * 60 * 1000
    this.failureTtlMs = opts.failureTtlMs ?? 30_000
  }

  get size(): number {
    return this.known.entries.size + this.unknown.entries.size
  }

  stats(): DidCacheStats {
    return {
      known: { entries: this.known.entries.size, bytes: this.known.bytes },
      unknown: { entries: this.unknown.entries.size, bytes: this.unknown.bytes },
      failures: this.failures.size,
    }
  }

  async cacheDid(did: string, doc: DidDocument): Promise<void> {
    await this.opts.onFetched?.(did, doc)
    const bytes = Buffer.byteLength(JSON.stringify(doc)) + did.length
    const isKnown = (await this.opts.isKnown?.(did)) ?? true
    const entry = { doc, updatedAt: Date.now(), bytes }
    this.failures.delete(did)
    if (isKnown) {
      this.unknown.delete(did)
      this.known.set(did, entry)
    } else {
      this.known.delete(did)
      this.unknown.set(did, entry)
    }
    this.opts.onStored?.(did, this.stats())
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
    const budget = this.known.get(did) ? this.known : this.unknown
    const entry = budget.get(did)
    if (!entry) return null
    const age = Date.now() - entry.updatedAt
    if (age > this.maxTtlMs) {
      budget.delete(did)
      return null
    }
    budget.touch(did, entry)
    return { did, doc: entry.doc, updatedAt: entry.updatedAt, stale: age > this.staleTtlMs, expired: false }
  }

  /** The cached document, if any, without counting as a use. */
  peek(did: string): DidDocument | undefined {
    return (this.known.get(did) ?? this.unknown.get(did))?.doc
  }

  async clearEntry(did: string): Promise<void> {
    this.forget(did)
  }

  forget(did: string): void {
    this.known.delete(did)
    this.unknown.delete(did)
  }

  async clear(): Promise<void> {
    this.known.clear()
    this.unknown.clear()
    this.failures.clear()
  }

  /** Remembers that looking `did` up failed just now. */
  noteFailure(did: string): void {
    this.failures.delete(did)
    this.failures.set(did, Date.now())
    if (this.failures.size > MAX_FAILURES) this.failures.delete(this.failures.keys().next().value!)
  }

  /** Milliseconds until `did` may be looked up again, or 0 when it may now. */
  failedRecently(did: string): number {
    const failedAt = this.failures.get(did)
    if (failedAt === undefined) return 0
    const left = failedAt + this.failureTtlMs - Date.now()
    if (left > 0) return left
    this.failures.delete(did)
    return 0
  }
}

export class DidDocumentTooLargeError extends Error {
  constructor(maxBytes: number) {
    super(`DID document larger than ${maxBytes} bytes`)
  }
}

/**
 * `fetchFn` whose response bodies stop at `maxBytes`: reading stops there and the connection
 * is dropped, so a host serving an endless document costs `maxBytes`, not its size. Every DID
 * document is fetched through it, in every mode.
 */
export function cappedFetch(fetchFn: typeof globalThis.fetch, maxBytes: number): typeof globalThis.fetch {
  return async (input, init) => {
    const res = await fetchFn(input, init)
    const declared = Number(res.headers.get('content-length') ?? 0)
    if (declared > maxBytes) {
      await res.body?.cancel().catch(() => undefined)
      throw new DidDocumentTooLargeError(maxBytes)
    }
    if (!res.body) return res
    let received = 0
    const limited = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          received += chunk.byteLength
          // Erroring here cancels the source too: nothing more is read from the socket.
          if (received > maxBytes) controller.error(new DidDocumentTooLargeError(maxBytes))
          else controller.enqueue(chunk)
        },
      }),
    )
    return new Response(limited, { status: res.status, statusText: res.statusText, headers: res.headers })
  }
}
