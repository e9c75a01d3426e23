export function isoFromMs(ms: number): string {
  return new Date(ms).toISOString()
}

export function msFromIso(iso: string | null | undefined): number | null {
  if (iso === null || iso === undefined) return null
  const ms = Date.parse(iso)
  return Number.isNaN(ms) ? null : ms
}
