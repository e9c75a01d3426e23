export function isoFromMs(ms: number): string {
  return new Date(ms).toISOString()
}

export function msFromIso(iso: string | null | undefined): number | null {
  if (iso === null || iso === undefined) return null
  const ms = Date.parse(iso)
  return Number.isNaN(ms) ? null : ms
}

/** Blocks the thread: for start-up only, where nothing else may run yet. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}
