import { pino, type Logger } from 'pino'

export type { Logger }

/** Structured JSON logs on stdout. Secrets are redacted by path, and are never put in messages. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    // pid: which worker process wrote the line.
    base: { service: 'atm-tickets', pid: process.pid },
    redact: {
      paths: [
        'req.headers.authorization',
        'headers.authorization',
        '*.password',
        '*.webhookSecret',
        '*.token',
        '*.ticketToken',
        '*.buyerAssertionJwt',
        '*.organizerAssertionJwt',
      ],
      censor: '[redacted]',
    },
  })
}
