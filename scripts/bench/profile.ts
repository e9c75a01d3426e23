// Where the service's CPU time goes: the .cpuprofile files its processes wrote (node
// --cpu-prof) summed up by function, and by package or project file.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

/** `node_modules/@atproto/xrpc-server/…` → `@atproto/xrpc-server`; project files keep their path. */
function ownerOf(url: string, root: string): string {
  if (!url) return '(native, GC, idle)'
  const path = url.replace(/^file:\/\//, '')
  const modules = path.lastIndexOf('node_modules/')
  if (modules >= 0) {
    const parts = path.slice(modules + 'node_modules/'.length).split('/')
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!
  }
  if (path.startsWith('node:')) return path
  return path.startsWith(root) ? path.slice(root.length) : path
}

const HTTP = /^(node:(_http|net|internal\/streams|internal\/http|stream|events|buffer|internal\/url|url)|express|body-parser|raw-body|content-type|type-is|on-finished|finalhandler|iconv-lite|http-errors|depd|mime|mime-types|mime-db|qs|statuses|destroy|media-typer|negotiator|accepts|encodeurl|escape-html|etag|fresh|parseurl|path-to-regexp|proxy-addr|range-parser|send|serve-static|setprototypeof|toidentifier|unpipe|utils-merge|vary|cookie|cookie-signature|merge-descriptors|methods|array-flatten|content-disposition|safe-buffer)/
const XRPC = /^(@atproto\/(xrpc-server|xrpc|lex[a-z-]*|syntax|common-web|common)|unicode-segmenter|multiformats|zod|cborg|@ipld|uint8arrays|graphemer|iso-datestring-validator)/
const TOKENS = /^(secp256k1|node:internal\/crypto|@atproto\/(crypto|identity)|@noble|dist\/src\/auth\/)/
const DOMAIN = /^dist\/src\/(api|tickets|util|records|payments|index\.js|context\.js)/

/** The parts of a request the benchmark reports CPU time for. */
function categoryOf(owner: string, functionName: string): string {
  if (functionName === '(garbage collector)') return 'garbage collection'
  if (owner === 'kysely' && functionName === 'executeQuery') return 'SQLite: statements, commits, lock attempts'
  if (owner === 'better-sqlite3' || owner.startsWith('dist/src/db/')) return 'SQLite: statements, commits, lock attempts'
  if (owner === 'kysely') return 'kysely: building and compiling queries'
  if (functionName === 'writev' || functionName === 'writeUtf8String' || functionName === 'writeBuffer' || HTTP.test(owner)) return 'HTTP: node:http, express, body parsing'
  if (XRPC.test(owner)) return 'XRPC routing, lexicon validation'
  // Random ids and secrets of new holds.
  if (owner === 'node:internal/crypto/random') return 'ticketing code: handlers, holds, idempotency'
  if (TOKENS.test(owner)) return 'token checks: signature, claims, DID cache'
  if (DOMAIN.test(owner)) return 'ticketing code: handlers, holds, idempotency'
  if (/^(pino|sonic-boom|thread-stream|fast-redact|quick-format-unescaped|atomic-sleep|on-exit-leak-free|safe-stable-stringify)/.test(owner)) return 'logging'
  if (/^node:internal\/(modules|bootstrap|vm)|^node:fs/.test(owner) || ['compileSourceTextModule', 'wrapSafe', 'internalModuleStat', 'readFileUtf8', 'getPackageScopeConfig'].includes(functionName)) return 'start-up: loading modules'
  if (owner === '(native, GC, idle)') return 'other native (microtasks, timers, syscalls)'
  return 'other'
}

export interface ProfileSummary {
  files: number
  totalMs: number
  byCategory: Array<{ name: string; ms: number; share: number }>
  byFunction: Array<{ name: string; ms: number; share: number }>
  byOwner: Array<{ name: string; ms: number; share: number }>
  /** Time the other processes (the cluster's primary: checkpoints) were on CPU. */
  otherProcessesMs: number
}

/**
 * Sums the profiles in `dir` of the processes whose pid is not in `exceptPids` (the nodes'
 * primaries, which serve no request), by function, by package and by part of the request.
 */
export function summarizeProfiles(dir: string, root: string, exceptPids: readonly number[] = [], top = 25): ProfileSummary {
  const selfMs = new Map<string, number>()
  const ownerMs = new Map<string, number>()
  const categoryMs = new Map<string, number>()
  let totalMs = 0
  let otherProcessesMs = 0
  const files = readdirSync(dir).filter((name) => name.endsWith('.cpuprofile'))
  for (const file of files) {
    const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile
    // Node names them CPU.<date>.<time>.<pid>.<thread>.<sequence>.cpuprofile.
    const pid = Number(file.split('.')[3])
    if (exceptPids.includes(pid)) {
      for (let index = 0; index < profile.samples.length; index++) {
        const node = profile.nodes.find((candidate) => candidate.id === profile.samples[index])
        if (node && node.callFrame.functionName !== '(idle)' && node.callFrame.functionName !== '(program)') otherProcessesMs += (profile.timeDeltas[index] ?? 0) / 1000
      }
      continue
    }
    const byId = new Map(profile.nodes.map((node) => [node.id, node]))
    for (let index = 0; index < profile.samples.length; index++) {
      const node = byId.get(profile.samples[index]!)!
      const ms = (profile.timeDeltas[index] ?? 0) / 1000
      const { functionName, url, lineNumber } = node.callFrame
      if (functionName === '(idle)' || functionName === '(program)') continue
      totalMs += ms
      const owner = ownerOf(url, root)
      const name = `${functionName || '(anonymous)'} ${owner}${url ? `:${lineNumber + 1}` : ''}`
      selfMs.set(name, (selfMs.get(name) ?? 0) + ms)
      ownerMs.set(owner, (ownerMs.get(owner) ?? 0) + ms)
      const category = categoryOf(owner, functionName)
      categoryMs.set(category, (categoryMs.get(category) ?? 0) + ms)
    }
  }
  const ranked = (map: Map<string, number>) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, ms]) => ({ name, ms, share: ms / totalMs }))
  return { files: files.length, totalMs, byCategory: ranked(categoryMs), byFunction: ranked(selfMs), byOwner: ranked(ownerMs), otherProcessesMs }
}

export function formatSummary(summary: ProfileSummary): string {
  const lines = [
    `CPU profile of the service's workers (${(summary.totalMs / 1000).toFixed(1)} s sampled, idle left out; the primaries, which serve no request, ${(summary.otherProcessesMs / 1000).toFixed(1)} s)`,
    '',
    'by part of the request (self time):',
  ]
  for (const entry of summary.byCategory) lines.push(`  ${(entry.share * 100).toFixed(1).padStart(5)}%  ${entry.name}`)
  lines.push('', 'by package or file (self time):')
  for (const entry of summary.byOwner) lines.push(`  ${(entry.share * 100).toFixed(1).padStart(5)}%  ${entry.name}`)
  lines.push('', 'by function (self time):')
  for (const entry of summary.byFunction) lines.push(`  ${(entry.share * 100).toFixed(1).padStart(5)}%  ${entry.name}`)
  return lines.join('\n')
}
