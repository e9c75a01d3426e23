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

export interface ProfileSummary {
  files: number
  totalMs: number
  byFunction: Array<{ name: string; ms: number; share: number }>
  byOwner: Array<{ name: string; ms: number; share: number }>
}

export function summarizeProfiles(dir: string, root: string, top = 25): ProfileSummary {
  const selfMs = new Map<string, number>()
  const ownerMs = new Map<string, number>()
  let totalMs = 0
  const files = readdirSync(dir).filter((name) => name.endsWith('.cpuprofile'))
  for (const file of files) {
    const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile
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
    }
  }
  const ranked = (map: Map<string, number>) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, ms]) => ({ name, ms, share: ms / totalMs }))
  return { files: files.length, totalMs, byFunction: ranked(selfMs), byOwner: ranked(ownerMs) }
}

export function formatSummary(summary: ProfileSummary): string {
  const lines = [`CPU profile of the service (${summary.files} processes, ${(summary.totalMs / 1000).toFixed(1)} s on CPU, idle left out)`, '', 'by package or file (self time):']
  for (const entry of summary.byOwner) lines.push(`  ${(entry.share * 100).toFixed(1).padStart(5)}%  ${entry.name}`)
  lines.push('', 'by function (self time):')
  for (const entry of summary.byFunction) lines.push(`  ${(entry.share * 100).toFixed(1).padStart(5)}%  ${entry.name}`)
  return lines.join('\n')
}
