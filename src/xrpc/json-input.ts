import { isUtf8 } from 'node:buffer'
import type http from 'node:http'
import { createGunzip, createInflate } from 'node:zlib'
import type { Transform } from 'node:stream'
import { InvalidRequestError, XRPCError, ResponseType } from '@atproto/xrpc-server'

/**
 * How deep objects and arrays may nest in an input. The lexicons' own fields need four levels
 * at most, which leaves an app's free-form `metadata` plenty; the libraries that validate and
 * convert an input recurse, so a much deeper one would end in a stack overflow instead of a
 * named refusal.
 */
export const MAX_INPUT_DEPTH = 32

/** The client went away before its body arrived in full: nobody is left to answer. */
export class ClientGoneError extends Error {
  constructor() {
    super('the client closed the connection before its request body arrived in full')
    this.name = 'ClientGoneError'
  }
}

/**
 * The JSON input of a procedure, read the same way whichever lane serves the request: a
 * UTF-8 body (gzip and deflate accepted), within `limit` bytes once decompressed, a JSON
 * object nested at most `MAX_INPUT_DEPTH` deep, with no NUL and no unpaired surrogate in any
 * string. SQLite and the answers keep text as UTF-8, so an unpaired surrogate would be stored
 * as U+FFFD while the caller was told it was stored as sent; NUL cuts names short in the
 * C libraries that read them later.
 */
export async function readJsonInput(req: http.IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  refuseOtherCharsets(req.headers['content-type'])
  const bytes = await readBytes(req, limit)
  if (!isUtf8(bytes)) throw new InvalidRequestError('request body is not valid UTF-8: send JSON encoded as UTF-8')
  let value: unknown
  try {
    value = JSON.parse(bytes.toString('utf8'))
  } catch (err) {
    throw new InvalidRequestError(`request body is not valid JSON: ${(err as Error).message}`)
  }
  return assertCleanInput(value)
}

const CHARSET = /;\s*charset\s*=\s*"?([^";\s]*)"?/i

function refuseOtherCharsets(contentType: string | undefined): void {
  const charset = CHARSET.exec(contentType ?? '')?.[1]?.toLowerCase()
  if (charset === undefined || charset === 'utf-8' || charset === 'utf8') return
  // The name is echoed only when it is a plain token, so the message stays printable.
  const named = /^[a-z0-9._:-]{1,40}$/.test(charset) ? `charset=${charset}` : 'that charset'
  throw new InvalidRequestError(`request body must be UTF-8 JSON: ${named} is not accepted; send Content-Type: application/json (UTF-8)`)
}

function decoderFor(contentEncoding: string | undefined): Transform | null {
  const encoding = (contentEncoding ?? 'identity').trim().toLowerCase()
  if (encoding === 'identity' || encoding === '') return null
  if (encoding === 'gzip' || encoding === 'x-gzip') return createGunzip()
  if (encoding === 'deflate') return createInflate()
  throw new InvalidRequestError('Content-Encoding must be gzip, deflate or none: send the body uncompressed or gzipped')
}

/**
 * The body's bytes, decompressed. The request is never destroyed here, so that a refusal can
 * still be answered (Node discards what the client sends after it).
 */
function readBytes(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const decoder = decoderFor(req.headers['content-encoding'])
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let settled = false
    const source = decoder ?? req
    const finish = (err: Error | null, body?: Buffer) => {
      if (settled) return
      settled = true
      source.off('data', onData)
      req.off('close', onClose)
      req.off('error', onClose)
      if (decoder) {
        req.unpipe(decoder)
        decoder.destroy()
      }
      if (err) reject(err)
      else resolve(body!)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) {
        finish(new XRPCError(ResponseType.PayloadTooLarge, `request body is larger than ${limit} bytes (decompressed): send a smaller input`))
        return
      }
      chunks.push(chunk)
    }
    // A request closed before its end was read never gets one; a complete one being
    // decompressed still has its decoder's end to come.
    const onClose = () => {
      if (!req.complete || !decoder) finish(new ClientGoneError())
    }
    // Destroyed (the connection went while the auth ran), its unread bytes are gone with it.
    if (req.destroyed) return finish(new ClientGoneError())
    req.once('close', onClose)
    req.once('error', onClose)
    source.on('data', onData)
    source.once('end', () => finish(null, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)))
    if (decoder) {
      decoder.once('error', (err: Error) => {
        // A client that went away mid-body also cuts the compressed stream short.
        if (!req.complete) return finish(new ClientGoneError())
        finish(new InvalidRequestError(`request body is not valid ${req.headers['content-encoding']!.trim().toLowerCase()} data (${err.message}): send it compressed whole, or uncompressed`))
      })
      req.pipe(decoder)
    }
  })
}

/**
 * Refuses, naming the place as the lexicon validator does (`Input/items/0/tierId`), an input
 * that is not an object, nests deeper than `MAX_INPUT_DEPTH`, or has a string (property
 * names included) with NUL or an unpaired UTF-16 surrogate. Walks without recursion.
 */
export function assertCleanInput(value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const kind = Array.isArray(value) ? 'an array' : value === null ? 'null' : `a ${typeof value}`
    throw new InvalidRequestError(`Input must be a JSON object, not ${kind}`)
  }
  const pending: Array<{ value: object; path: string; depth: number }> = [{ value, path: 'Input', depth: 1 }]
  while (pending.length > 0) {
    const { value: container, path, depth } = pending.pop()!
    if (depth > MAX_INPUT_DEPTH) {
      throw new InvalidRequestError(`Input is nested too deeply at ${path}: at most ${MAX_INPUT_DEPTH} levels of objects and arrays`)
    }
    const isArray = Array.isArray(container)
    for (const [key, item] of Object.entries(container)) {
      const keyProblem = isArray ? null : textProblem(key)
      if (keyProblem) throw new InvalidRequestError(`${path} has a property name with ${keyProblem}: send well-formed names`)
      const itemPath = `${path}/${key}`
      const problem = typeof item === 'string' ? textProblem(item) : null
      if (problem) throw new InvalidRequestError(`${itemPath} must not contain ${problem}`)
      if (typeof item === 'object' && item !== null) pending.push({ value: item, path: itemPath, depth: depth + 1 })
    }
  }
  return value as Record<string, unknown>
}

/** ES2024's `String.prototype.isWellFormed`, which Node has and the compiler's library here lacks. */
type WellFormedCheck = string & { isWellFormed(): boolean }

function textProblem(text: string): string | null {
  if (text.includes('\u0000')) return 'NUL (U+0000)'
  if (!(text as WellFormedCheck).isWellFormed()) return 'an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape): send well-formed Unicode'
  return null
}
