/**
 * A failure of the connection to the database server, not of the request: the server
 * restarting or shutting down, a cut connection, no connection to be had in time.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string' && (code.startsWith('08') || ['57P01', '57P02', '57P03', '53300', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE'].includes(code))) return true
  const message = (err as Error | null)?.message ?? ''
  return /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/.test(message)
}
