import cluster, { type Cluster, type Worker } from 'node:cluster'
import type http from 'node:http'
import net from 'node:net'
import { FORGET_AFTER_MS, judgeAttempt, type GuessRecord } from '../storage/guess-rules.js'

/** A guesser spread over more addresses than this pushes the oldest out of the count. */
const MAX_ADDRESSES = 100_000

/** The wrong admin passwords per client address, and how long each address must wait (see `judgeAttempt`). */
export class AdminGuessBook {
  // In order of the last wrong guess, oldest first (an entry is moved to the end when updated).
  private readonly byClient = new Map<string, GuessRecord>()

  /**
   * One admin attempt from `client`: how long it must still wait (the attempt is refused and
   * not counted), or 0 once the outcome is counted (a right password clears the count).
   */
  attempt(client: string, correct: boolean, now = Date.now()): number {
    const verdict = judgeAttempt(this.byClient.get(client), correct, now)
    if (verdict.waitMs > 0) return verdict.waitMs
    this.byClient.delete(client)
    if (verdict.next) {
      this.byClient.set(client, verdict.next)
      this.forgetOld(now)
    }
    return 0
  }

  private forgetOld(now: number): void {
    for (const [client, record] of this.byClient) {
      if (this.byClient.size <= MAX_ADDRESSES && now - record.lastWrongAt < FORGET_AFTER_MS) return
      this.byClient.delete(client)
    }
  }
}

/** Where a worker's questions about admin attempts go: the cluster's primary process, which keeps the one count. */
const CHANNEL = 'atm.adminAttempt'

interface AttemptQuestion {
  [CHANNEL]: { id: number; client: string; correct: boolean }
}
interface AttemptAnswer {
  [CHANNEL]: { id: number; waitMs: number }
}

/** Answers the workers' admin attempts from one book, so the limit holds whatever worker a guess reaches. */
export function serveAdminGuesses(workers: Cluster = cluster): void {
  const book = new AdminGuessBook()
  workers.on('message', (worker: Worker, message: unknown) => {
    const question = (message as Partial<AttemptQuestion> | null)?.[CHANNEL]
    if (!question || typeof question.client !== 'string') return
    const answer: AttemptAnswer = { [CHANNEL]: { id: question.id, waitMs: book.attempt(question.client, question.correct === true) } }
    if (worker.isConnected()) worker.send(answer)
  })
}

export interface AdminAttempts {
  /** See `AdminGuessBook.attempt`. */
  attempt(client: string, correct: boolean): Promise<number>
}

/** A worker's view: asks the primary; counts on its own only once the primary is gone. */
class AskPrimary implements AdminAttempts {
  private nextId = 0
  private readonly waiting = new Map<number, { client: string; correct: boolean; resolve: (waitMs: number) => void }>()
  private readonly fallback = new AdminGuessBook()

  constructor() {
    process.on('message', (message: unknown) => {
      const answer = (message as Partial<AttemptAnswer> | null)?.[CHANNEL]
      if (!answer) return
      this.waiting.get(answer.id)?.resolve(answer.waitMs)
      this.waiting.delete(answer.id)
    })
    process.once('disconnect', () => {
      for (const { client, correct, resolve } of this.waiting.values()) resolve(this.fallback.attempt(client, correct))
      this.waiting.clear()
    })
  }

  attempt(client: string, correct: boolean): Promise<number> {
    if (!process.connected || !process.send) return Promise.resolve(this.fallback.attempt(client, correct))
    const id = ++this.nextId
    return new Promise((resolve) => {
      this.waiting.set(id, { client, correct, resolve })
      const question: AttemptQuestion = { [CHANNEL]: { id, client, correct } }
      process.send!(question)
    })
  }
}

class CountHere implements AdminAttempts {
  private readonly book = new AdminGuessBook()
  attempt(client: string, correct: boolean): Promise<number> {
    return Promise.resolve(this.book.attempt(client, correct))
  }
}

let processAttempts: AdminAttempts | undefined

/** This process's count of admin attempts: the primary's when it is a cluster worker, else its own. */
export function adminAttempts(): AdminAttempts {
  processAttempts ??= cluster.isWorker ? new AskPrimary() : new CountHere()
  return processAttempts
}

/** The client's address, for counting: the connection's peer, or what trusted proxies say it was. */
export function clientAddress(req: http.IncomingMessage, trusted: net.BlockList): string {
  let address = plainAddress(req.socket.remoteAddress ?? '')
  const forwarded = req.headers['x-forwarded-for']
  if (forwarded === undefined) return countingKey(address)
  // From the nearest hop back: each trusted proxy vouches for the address before it.
  const hops = (Array.isArray(forwarded) ? forwarded.join(',') : forwarded).split(',').map((hop) => plainAddress(hop.trim()))
  while (hops.length > 0 && isTrusted(trusted, address)) {
    const previous = hops.pop()!
    if (net.isIP(previous) === 0) break
    address = previous
  }
  return countingKey(address)
}

function plainAddress(address: string): string {
  const withoutZone = address.split('%', 1)[0]!
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(withoutZone) ? withoutZone.slice(7) : withoutZone
}

function isTrusted(trusted: net.BlockList, address: string): boolean {
  const version = net.isIP(address)
  return version !== 0 && trusted.check(address, version === 6 ? 'ipv6' : 'ipv4')
}

/** IPv6 clients are counted by their /64: one host usually has a whole /64 to pick addresses from. */
function countingKey(address: string): string {
  if (net.isIP(address) !== 6) return address
  const [head = '', tail] = address.toLowerCase().split('::', 2)
  const headGroups = head === '' ? [] : head.split(':')
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':')
  // A trailing dotted IPv4 part stands for two groups.
  const width = (groups: string[]) => groups.reduce((sum, group) => sum + (group.includes('.') ? 2 : 1), 0)
  const zeros = tail === undefined ? [] : Array<string>(Math.max(0, 8 - width(headGroups) - width(tailGroups))).fill('0')
  const groups = [...headGroups, ...zeros, ...tailGroups]
  return `${groups.slice(0, 4).map((group) => group.replace(/^0+(?=.)/, '')).join(':')}::/64`
}
