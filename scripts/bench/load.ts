// The load generator, the same for the service and for the bare node:http baseline: `concurrency`
// requests in flight on keep-alive connections, each with the next pre-minted token, for a
// fixed time, sent to the given servers in turn. And the RSS and CPU time of process trees,
// sampled while it runs.
import { readFileSync } from 'node:fs'
import http from 'node:http'

export interface LoadResult {
  /** Answers with status 200. */
  ok: number
  /** Other answers and failed requests. */
  errors: number
  /** The first few error answers, for the report. */
  errorSamples: string[]
  seconds: number
  perSecond: number
  p50Ms: number
  p99Ms: number
  /** Tokens minted during the run because the pre-minted ones ran out. */
  tokensMintedDuringRun: number
}

export interface LoadOptions {
  /** The servers (nodes of one service) that take the requests in turn, one request each. */
  urls: string[]
  path: string
  concurrency: number
  durationMs: number
  /** The Authorization token of each request, used once. */
  nextToken: () => string
  /** The JSON body of each request. */
  nextBody: () => string
  mintedDuringRun?: () => number
}

function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))]!
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const targets = opts.urls.map((url) => new URL(opts.path, url))
  let nextTarget = 0
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency, maxFreeSockets: opts.concurrency })
  let latencies = new Float64Array(1 << 16)
  let count = 0
  let ok = 0
  let errors = 0
  const errorSamples: string[] = []
  const record = (ms: number) => {
    if (count === latencies.length) {
      const bigger = new Float64Array(latencies.length * 2)
      bigger.set(latencies)
      latencies = bigger
    }
    latencies[count++] = ms
  }
  const once = (token: string, body: string) =>
    new Promise<void>((resolve) => {
      const target = targets[nextTarget++ % targets.length]!
      const started = performance.now()
      const req = http.request(
        {
          agent,
          host: target.hostname,
          port: target.port,
          path: target.pathname,
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (chunk: Buffer) => chunks.push(chunk))
          res.on('end', () => {
            record(performance.now() - started)
            if (res.statusCode === 200) ok++
            else {
              errors++
              if (errorSamples.length < 5) errorSamples.push(`${res.statusCode} ${Buffer.concat(chunks).toString('utf8').slice(0, 300)}`)
            }
            resolve()
          })
        },
      )
      req.on('error', (err) => {
        record(performance.now() - started)
        errors++
        if (errorSamples.length < 5) errorSamples.push(err.message)
        resolve()
      })
      req.end(body)
    })

  const started = performance.now()
  const deadline = started + opts.durationMs
  const worker = async () => {
    while (performance.now() < deadline) await once(opts.nextToken(), opts.nextBody())
  }
  await Promise.all(Array.from({ length: opts.concurrency }, worker))
  const seconds = (performance.now() - started) / 1000
  agent.destroy()
  const sorted = latencies.slice(0, count).sort()
  return {
    ok,
    errors,
    errorSamples,
    seconds,
    perSecond: ok / seconds,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    tokensMintedDuringRun: opts.mintedDuringRun?.() ?? 0,
  }
}

/** A process and its descendants (Linux /proc); only the root elsewhere. */
function processTree(rootPid: number): number[] {
  const pids = [rootPid]
  for (let index = 0; index < pids.length; index++) {
    try {
      const children = readFileSync(`/proc/${pids[index]}/task/${pids[index]}/children`, 'utf8').trim()
      if (children) pids.push(...children.split(/\s+/).map(Number))
    } catch {
      // gone, or no /proc here
    }
  }
  return pids
}

function rssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
    return match ? Number(match[1]) * 1024 : 0
  } catch {
    return 0
  }
}

/** Total RSS of a process tree, in bytes (0 where /proc is not available). */
export function treeRss(rootPid: number): number {
  return processTree(rootPid).reduce((sum, pid) => sum + rssBytes(pid), 0)
}

/** Linux's USER_HZ: /proc counts CPU time in these ticks. */
const CLOCK_TICKS_PER_SECOND = 100

/** CPU seconds (user + system) a process has used so far, 0 where /proc is not available. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND
  } catch {
    return 0
  }
}

export interface ProcessUsage {
  startBytes: number
  endBytes: number
  peakBytes: number
  /** CPU seconds the whole tree used between start and stop. */
  cpuSeconds: number
}

export interface UsageSampler {
  stop(): ProcessUsage
}

/**
 * Samples the trees' RSS every 200 ms until stopped, and counts the CPU time they used: on a
 * machine shared with other work, CPU per request is steadier than requests per second.
 */
export function sampleUsage(rootPids: number | number[]): UsageSampler {
  const roots = typeof rootPids === 'number' ? [rootPids] : rootPids
  const allPids = () => roots.flatMap(processTree)
  const totalRss = () => roots.reduce((sum, pid) => sum + treeRss(pid), 0)
  const startBytes = totalRss()
  const cpuAt = new Map(allPids().map((pid) => [pid, cpuSeconds(pid)]))
  let peakBytes = startBytes
  const timer = setInterval(() => {
    peakBytes = Math.max(peakBytes, totalRss())
  }, 200)
  return {
    stop() {
      clearInterval(timer)
      const endBytes = totalRss()
      let used = 0
      for (const pid of allPids()) used += cpuSeconds(pid) - (cpuAt.get(pid) ?? 0)
      return { startBytes, endBytes, peakBytes: Math.max(peakBytes, endBytes), cpuSeconds: used }
    },
  }
}

/** CPU seconds this process has used so far. */
export function ownCpuSeconds(): number {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1e6
}
