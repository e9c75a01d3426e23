// Free loopback ports for the processes a test starts.
import { createServer } from 'node:net'

/**
 * A TCP port that is free on 127.0.0.1 right now: listen on port 0, read the
 * port the kernel chose, close. Another process could take it before the
 * caller binds it; on a test machine that race is rare enough.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen(0, host, () => {
      const addr = srv.address()
      if (addr === null || typeof addr === 'string') {
        srv.close()
        reject(new Error('freePort: no address'))
        return
      }
      srv.close(() => resolve(addr.port))
    })
  })
}
