// The DID document cache behind every token check: bounded, and stale-while-revalidate through
// the real resolver (@atproto/identity's IdResolver against a local PLC directory): a stale
// document answers at once while one background fetch replaces it.
import { IdResolver, type DidDocument } from '@atproto/identity'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BoundedDidCache } from '../src/auth/did-cache.js'
import { createPlcIdentity, rotateAtprotoKey, startPlc, type PlcHandle } from './helpers/index.js'

let plc: PlcHandle

beforeAll(async () => {
  plc = await startPlc()
})
afterAll(async () => {
  await plc?.close()
})

function doc(did: string): DidDocument {
  return { id: did }
}

/** A promise settled from outside: a document fetch that is still under way. */
function pending<T>() {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

describe('BoundedDidCache', () => {
  it('keeps documents within its bytes, dropping the least recently used', async () => {
    // Each entry counts its JSON ({"id":"did:plc:a"}, 18 bytes) and its DID (11): 29 bytes.
    const cache = new BoundedDidCache({ knownMaxBytes: 3 * 27 })
    for (const name of ['a', 'b', 'c']) await cache.cacheDid(`did:plc:${name}`, doc(`did:plc:${name}`))
    expect(cache.stats().known).toEqual({ entries: 3, bytes: 81 })
    await cache.checkCache('did:plc:a') // a is now the most recently used
    await cache.cacheDid('did:plc:d', doc('did:plc:d'))
    expect(cache.size).toBe(3)
    expect(await cache.checkCache('did:plc:b')).toBeNull()
    for (const name of ['a', 'c', 'd']) expect((await cache.checkCache(`did:plc:${name}`))?.doc.id).toBe(`did:plc:${name}`)
  })

  it('keeps the documents of unknown issuers in a budget of their own, which cannot push out known ones', async () => {
    const known = new Set(['did:plc:app'])
    const cache = new BoundedDidCache({ knownMaxBytes: 1000, unknownMaxBytes: 2 * 27, isKnown: (did) => known.has(did) })
    await cache.cacheDid('did:plc:app', doc('did:plc:app'))
    for (const name of ['a', 'b', 'c', 'd', 'e']) await cache.cacheDid(`did:plc:${name}`, doc(`did:plc:${name}`))
    expect(cache.stats().unknown).toEqual({ entries: 2, bytes: 54 })
    expect(cache.stats().known.entries).toBe(1)
    expect((await cache.checkCache('did:plc:app'))?.doc.id).toBe('did:plc:app')
    // Once known (registered), its next document goes to the known budget.
    known.add('did:plc:e')
    await cache.cacheDid('did:plc:e', doc('did:plc:e'))
    expect(cache.stats()).toMatchObject({ known: { entries: 2 }, unknown: { entries: 1, bytes: 27 } })
  })

  it('a stale entry is answered while one refresh runs; the refreshed document replaces it', async () => {
    const cache = new BoundedDidCache({ staleTtlMs: -1 })
    await cache.cacheDid('did:plc:a', doc('did:plc:a'))
    const stale = await cache.checkCache('did:plc:a')
    expect(stale?.stale).toBe(true)

    const fetch = pending<DidDocument | null>()
    let fetches = 0
    const getDoc = () => {
      fetches++
      return fetch.promise
    }
    // The resolver awaits refreshCache before answering: it must not wait for the fetch.
    await cache.refreshCache('did:plc:a', getDoc)
    await cache.refreshCache('did:plc:a', getDoc)
    expect(fetches).toBe(1)
    expect((await cache.checkCache('did:plc:a'))?.doc).toBe(stale!.doc)

    const fresh = { id: 'did:plc:a', alsoKnownAs: ['at://fresh.test'] }
    fetch.resolve(fresh)
    await new Promise((resolve) => setImmediate(resolve))
    expect((await cache.checkCache('did:plc:a'))?.doc).toBe(fresh)
  })

  it('a failed refresh keeps the stale document; a DID that is gone is forgotten', async () => {
    const cache = new BoundedDidCache({ staleTtlMs: -1 })
    await cache.cacheDid('did:plc:a', doc('did:plc:a'))
    await cache.cacheDid('did:plc:b', doc('did:plc:b'))
    await cache.refreshCache('did:plc:a', () => Promise.reject(new Error('directory unreachable')))
    await cache.refreshCache('did:plc:b', () => Promise.resolve(null))
    await new Promise((resolve) => setImmediate(resolve))
    expect((await cache.checkCache('did:plc:a'))?.doc.id).toBe('did:plc:a')
    expect(await cache.checkCache('did:plc:b')).toBeNull()
  })

  it('through IdResolver: a stale key is served at once, and the rotated key follows without a forced refresh', async () => {
    const identity = await createPlcIdentity(plc.url)
    const cache = new BoundedDidCache({ staleTtlMs: -1 })
    const resolver = new IdResolver({ plcUrl: plc.url, didCache: cache, fetch: globalThis.fetch })
    const oldKey = identity.keypair.did()
    expect(await resolver.did.resolveAtprotoKey(identity.did)).toBe(oldKey)

    await rotateAtprotoKey(plc.url, identity)
    const newKey = identity.keypair.did()
    // Stale at once (a negative stale TTL): the cached document answers, a refresh starts behind it.
    expect(await resolver.did.resolveAtprotoKey(identity.did)).toBe(oldKey)
    for (let attempt = 0; attempt < 200; attempt++) {
      if ((await resolver.did.resolveAtprotoKey(identity.did)) === newKey) break
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    expect(await resolver.did.resolveAtprotoKey(identity.did)).toBe(newKey)
  })
})
