/**
 * A tiny HTML template: every interpolated value is escaped unless it is already `Html`
 * (the result of another `html` template, or `trusted` markup such as a generated QR SVG).
 */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value
  }
}

type Part = string | number | Html | null | undefined | false | ReadonlyArray<Part>

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => ESCAPES[ch]!)
}

function render(part: Part): string {
  if (part === null || part === undefined || part === false) return ''
  if (part instanceof Html) return part.value
  if (Array.isArray(part)) return part.map(render).join('')
  return escapeHtml(String(part))
}

export function html(strings: TemplateStringsArray, ...parts: Part[]): Html {
  let out = strings[0]!
  for (let i = 0; i < parts.length; i++) out += render(parts[i]) + strings[i + 1]!
  return new Html(out)
}

/** Markup this service generated itself and vouches for. */
export function trusted(markup: string): Html {
  return new Html(markup)
}
