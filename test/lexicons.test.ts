import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, it, expect } from 'vitest'
import { Lexicons, parseLexiconDoc } from '@atproto/lexicon'

const repoRoot = fileURLToPath(new URL('..', import.meta.url))
const lexiconDir = join(repoRoot, 'lexicons')
// The product's own lexicons as the user wrote them (seeds 000 and 001), kept in the repository
// so that this comparison runs on any clone.
const seedDir = join(repoRoot, 'test', 'fixtures', 'seeds')

function listJson(dir: string): string[] {
  return readdirSync(dir)
    .flatMap((name) => {
      const path = join(dir, name)
      if (statSync(path).isDirectory()) return listJson(path)
      return name.endsWith('.json') ? [path] : []
    })
    .sort()
}

/** A fresh copy of every lexicon document (Lexicons.add mutates what it is given). */
function readDocs(): Map<string, Record<string, any>> {
  const docs = new Map<string, Record<string, any>>()
  for (const file of listJson(lexiconDir)) {
    const doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>
    docs.set(file, doc)
  }
  return docs
}

function lexiconFile(nsid: string): string {
  const parts = nsid.split('.')
  return join(lexiconDir, ...parts.slice(0, -1), `${parts[parts.length - 1]}.json`)
}

/** Every `ref` string and every entry of a union's `refs`, with the id of the document it is in. */
function collectRefs(node: unknown, found: string[] = []): string[] {
  if (Array.isArray(node)) {
    for (const item of node) collectRefs(item, found)
  } else if (node && typeof node === 'object') {
    const obj = node as Record<string, unknown>
    if (obj.type === 'ref' && typeof obj.ref === 'string') found.push(obj.ref)
    if (obj.type === 'union' && Array.isArray(obj.refs)) {
      for (const r of obj.refs) if (typeof r === 'string') found.push(r)
    }
    for (const value of Object.values(obj)) collectRefs(value, found)
  }
  return found
}

function readSeed(prefix: string): Record<string, any> {
  const name = readdirSync(seedDir).find((n) => n.startsWith(prefix))
  if (!name) throw new Error(`seed ${prefix}* not found in ${seedDir}`)
  return JSON.parse(readFileSync(join(seedDir, name), 'utf8')) as Record<string, any>
}

// CONTRACT §4: every method and its type.
const METHODS: Record<string, 'procedure' | 'query'> = {
  'tickets.atmosphere.admin.registerApp': 'procedure',
  'tickets.atmosphere.registerOrganizer': 'procedure',
  'tickets.atmosphere.completePaymentSetup': 'procedure',
  'tickets.atmosphere.createTicketEvent': 'procedure',
  'tickets.atmosphere.updateTicketEvent': 'procedure',
  'tickets.atmosphere.createCapacityGroup': 'procedure',
  'tickets.atmosphere.updateCapacityGroup': 'procedure',
  'tickets.atmosphere.createTicketTier': 'procedure',
  'tickets.atmosphere.updateTicketTier': 'procedure',
  'tickets.atmosphere.archiveTicketTier': 'procedure',
  'tickets.atmosphere.getTicketAvailability': 'query',
  'tickets.atmosphere.createTicketHold': 'procedure',
  'tickets.atmosphere.releaseTicketHold': 'procedure',
  'tickets.atmosphere.getTicketHold': 'query',
  'tickets.atmosphere.claimFreeTicket': 'procedure',
  'tickets.atmosphere.listBuyerTickets': 'query',
  'tickets.atmosphere.listOrganizerTickets': 'query',
  'tickets.atmosphere.verifyTicket': 'procedure',
  'tickets.atmosphere.checkInTicket': 'procedure',
  'tickets.atmosphere.createCheckInList': 'procedure',
  'tickets.atmosphere.listCheckInLists': 'query',
  'tickets.atmosphere.voidTickets': 'procedure',
  'tickets.atmosphere.refundTickets': 'procedure',
}

function loadAll(): Lexicons {
  const lexicons = new Lexicons()
  for (const doc of readDocs().values()) lexicons.add(parseLexiconDoc(doc))
  return lexicons
}

describe('lexicon documents', () => {
  it('are all valid lexicon documents, stored at the path of their id', () => {
    const docs = readDocs()
    expect(docs.size).toBeGreaterThanOrEqual(Object.keys(METHODS).length + 1)
    for (const [file, doc] of docs) {
      expect(() => parseLexiconDoc(doc), file).not.toThrow()
      expect(doc.lexicon, file).toBe(1)
      expect(file).toBe(lexiconFile(doc.id))
    }
  })

  it('load together into one Lexicons with no duplicate ids', () => {
    const lexicons = loadAll()
    expect(Array.from(lexicons).length).toBe(readDocs().size)
    expect(lexicons.get('tickets.atmosphere.defs')).toBeDefined()
  })

  it('resolve every ref', () => {
    const lexicons = loadAll()
    let count = 0
    for (const doc of readDocs().values()) {
      const base = `lex:${doc.id}`
      for (const ref of collectRefs(doc.defs)) {
        const uri = lexicons.resolveLexUri(base, ref)
        expect(() => lexicons.getDefOrThrow(uri), `${doc.id}: ${ref}`).not.toThrow()
        count++
      }
    }
    expect(count).toBeGreaterThan(0)
  })

  it('define every method of CONTRACT §4 with its type', () => {
    const lexicons = loadAll()
    for (const [nsid, type] of Object.entries(METHODS)) {
      const def = lexicons.getDef(`lex:${nsid}#main`)
      expect(def, nsid).toBeDefined()
      expect(def?.type, nsid).toBe(type)
    }
  })

  it('give every procedure a JSON object input and every method a JSON output', () => {
    for (const nsid of Object.keys(METHODS)) {
      const doc = JSON.parse(readFileSync(lexiconFile(nsid), 'utf8')) as Record<string, any>
      const main = doc.defs.main
      expect(typeof main.description, nsid).toBe('string')
      if (main.type === 'procedure') {
        expect(main.input?.encoding, nsid).toBe('application/json')
        expect(main.input?.schema?.type, nsid).toBe('object')
      } else {
        expect(main.parameters?.type, nsid).toBe('params')
      }
      expect(main.output?.encoding, nsid).toBe('application/json')
      for (const error of main.errors ?? []) {
        expect(typeof error.description, `${nsid} ${error.name}`).toBe('string')
      }
    }
  })
})

describe('seed lexicons are kept field for field', () => {
  const cases: Array<[string, string]> = [
    ['000_', 'tickets.atmosphere.createTicketHold'],
    ['001_', 'tickets.atmosphere.createCapacityGroup'],
  ]
  for (const [prefix, nsid] of cases) {
    it(`${nsid} equals seed ${prefix}* (errors may only be appended)`, () => {
      const seed = readSeed(prefix)
      const doc = JSON.parse(readFileSync(lexiconFile(nsid), 'utf8')) as Record<string, any>
      expect(seed.id).toBe(nsid)

      const seedErrors = seed.defs.main.errors as Array<{ name: string }>
      const docErrors = doc.defs.main.errors as Array<{ name: string }>
      expect(Array.isArray(docErrors)).toBe(true)
      expect(docErrors.length).toBeGreaterThanOrEqual(seedErrors.length)
      // The seed's errors, unchanged and in order, are a prefix.
      expect(docErrors.slice(0, seedErrors.length)).toStrictEqual(seedErrors)
      // Appended errors are new names.
      const names = docErrors.map((e) => e.name)
      expect(new Set(names).size).toBe(names.length)

      // Everything else is identical, including key order.
      const strip = (d: Record<string, any>) => {
        const copy = structuredClone(d)
        delete copy.defs.main.errors
        return copy
      }
      expect(strip(doc)).toStrictEqual(strip(seed))
      expect(JSON.stringify(strip(doc))).toBe(JSON.stringify(strip(seed)))
    })
  }
})
