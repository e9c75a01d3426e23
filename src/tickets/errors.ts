/** How a domain failure maps onto XRPC: 400 unless the contract says otherwise. */
export type ErrorKind = 'invalid' | 'forbidden' | 'conflict'

/**
 * A failure with a lexicon error name and a message that tells the caller what to do.
 * Domain modules throw these and know nothing of HTTP; the server maps `kind` to a status.
 */
export class DomainError extends Error {
  constructor(
    readonly errorName: string,
    message: string,
    readonly kind: ErrorKind = 'invalid',
  ) {
    super(message)
    this.name = 'DomainError'
  }
}

export function fail(errorName: string, message: string, kind: ErrorKind = 'invalid'): never {
  throw new DomainError(errorName, message, kind)
}
