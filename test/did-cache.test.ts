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
  it('keeps at most maxEntries documents, dropping the least recently used', async () => {
    const cache = new BoundedDidCache(3)
    for (const name of ['a', 'b', 'c']) await cache.cacheDid(`did:plc:${name}`, doc(`did:plc:${name}`))
    await cache.checkCache('did:plc:a') // a is now the most recently used
    await cache.cacheDid('did:plc:d', doc('did:plc:d'))
    expect(cache.size).toBe(3)
    expect(await cache.checkCache('did:plc:b')).toBeNull()
    for (const name of ['a', 'c', 'd']) expect((await cache.checkCache(`did:plc:${name}`))?.doc.id).toBe(`did:plc:${name}`)
  })

  it('a stale entry is answered while one refresh runs; the refreshed document replaces it', async () => {
    const cache = new BoundedDidCache(10, -1)
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
    const cache = new BoundedDidCache(10, -1)
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
    const cache = new BoundedDidCache(10, -1)
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
