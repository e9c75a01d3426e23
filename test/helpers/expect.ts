// Assertions every suite shares: an answer's status, its error name and its message.
import { expect } from 'vitest'
import type { XrpcResponse } from './xrpc.js'

export type Body = Record<string, any>

export function expectOk(res: XrpcResponse): Body {
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return res.body as Body
}

/** A failure: its status, its error name, and a non-empty message (matching `message` if given). */
export function expectError(res: XrpcResponse, status: number, error: string, message?: RegExp): void {
  const detail = JSON.stringify(res.body)
  expect(res.status, detail).toBe(status)
  expect(res.body?.error, detail).toBe(error)
  expect(typeof res.body?.message, detail).toBe('string')
  expect((res.body.message as string).length, detail).toBeGreaterThan(0)
  if (message) expect(res.body.message, detail).toMatch(message)
}

/** A response, or the transport error that took its place (status -1). */
export type Outcome = XrpcResponse & { error?: string }

export async function settle(pending: Promise<XrpcResponse>): Promise<Outcome> {
  try {
    return await pending
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } }
    return { status: -1, body: undefined, headers: new Headers(), error: `${e.message} ${e.cause?.code ?? e.cause?.message ?? ''}`.trim() }
  }
}
