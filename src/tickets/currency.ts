// ISO 4217 codes as the runtime's ICU knows them (Intl), lower case as the API answers them.
const codes = new Set(Intl.supportedValuesOf('currency').map((code) => code.toLowerCase()))

export function isIsoCurrency(code: string): boolean {
  return codes.has(code.toLowerCase())
}

/** Digits after the decimal point: amounts are integers in the smallest unit (cents, yen). */
export function currencyDigits(code: string): number {
  return new Intl.NumberFormat('en', { style: 'currency', currency: code.toUpperCase() }).resolvedOptions()
    .maximumFractionDigits ?? 2
}
