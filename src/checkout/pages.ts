import type { EventTable } from '../db/schema.js'
import { currencyDigits } from '../tickets/currency.js'
import type { CheckoutState, TicketPage } from '../tickets/checkout.js'
import { html, trusted, type Html } from './html.js'

/*
 * Server-rendered pages: no build step, no external assets. Styles and the one script are
 * inline and admitted by a per-response CSP nonce; everything works without the script too
 * (it only runs the countdown and stops a double click from sending the form twice).
 */

const STYLE = `
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1c1c1e;background:#f4f4f6}
main{max-width:32rem;margin:0 auto;padding:1rem}
.card{background:#fff;border-radius:12px;padding:1.25rem;box-shadow:0 1px 3px rgba(0,0,0,.08);margin-bottom:1rem}
h1{font-size:1.35rem;margin:0 0 .25rem}
h2{font-size:1.05rem;margin:0 0 .75rem}
.muted{color:#5f5f66;font-size:.95rem}
table{width:100%;border-collapse:collapse}
td,th{padding:.4rem 0;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;white-space:nowrap}
tfoot th{border-top:1px solid #ddd;padding-top:.6rem}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input{width:100%;font:inherit;padding:.65rem .75rem;border:1px solid #b9b9c0;border-radius:8px}
input:focus,button:focus,a:focus{outline:3px solid #4c7cf0;outline-offset:2px}
.actions{display:flex;gap:.75rem;margin-top:1.25rem;flex-wrap:wrap}
button{font:inherit;font-weight:600;padding:.7rem 1.2rem;border-radius:8px;border:1px solid transparent;cursor:pointer;min-height:44px}
button.pay{background:#1f5be0;color:#fff;flex:1 1 10rem}
button.pay:disabled{background:#9aa3b5;cursor:not-allowed}
button.cancel{background:#fff;color:#1c1c1e;border-color:#b9b9c0}
.notice{padding:.75rem 1rem;border-radius:8px;margin:0 0 1rem}
.notice.error{background:#fdecec;color:#8a1414}
.notice.info{background:#eef3fe;color:#173b8c}
.notice.warn{background:#fff5e0;color:#6b4500}
.ticket{display:flex;flex-direction:column;align-items:center;text-align:center;border-top:1px dashed #ccc;padding:1rem 0}
.ticket:first-of-type{border-top:0}
.ticket svg{width:min(70vw,240px);height:auto}
code{font-size:.85rem;word-break:break-all}
`

const COUNTDOWN_SCRIPT = `
(function(){
  var el=document.getElementById('countdown');if(!el)return;
  var left=Number(el.dataset.msLeft),start=Date.now();
  var pay=document.querySelector('button.pay'),notice=document.getElementById('expiry');
  function tick(){
    var ms=Math.max(0,left-(Date.now()-start)),s=Math.ceil(ms/1000);
    el.textContent=Math.floor(s/60)+':'+String(s%60).padStart(2,'0');
    if(ms<=0){
      notice.textContent='This reservation has expired and its tickets were released. Nothing was charged.';
      notice.className='notice warn';notice.hidden=false;
      if(pay)pay.disabled=true;
      return;
    }
    setTimeout(tick,Math.min(1000,ms));
  }
  tick();
  var form=document.getElementById('checkout'),sent=false;
  if(form)form.addEventListener('submit',function(e){if(sent){e.preventDefault();return;}sent=true;});
})();
`

export function formatAmount(amount: number, currency: string): string {
  const digits = currencyDigits(currency)
  return new Intl.NumberFormat('en', { style: 'currency', currency: currency.toUpperCase() }).format(amount / 10 ** digits)
}

function formatStart(event: EventTable): string | undefined {
  if (!event.startsAt) return undefined
  const when = new Date(event.startsAt)
  if (Number.isNaN(when.getTime())) return undefined
  // timeStyle 'long' names the zone ("7:30:00 PM UTC"); an unknown zone name falls back to UTC.
  const options: Intl.DateTimeFormatOptions = { dateStyle: 'full', timeStyle: 'long' }
  try {
    return new Intl.DateTimeFormat('en', { ...options, timeZone: event.timezone ?? 'UTC' }).format(when)
  } catch {
    return new Intl.DateTimeFormat('en', { ...options, timeZone: 'UTC' }).format(when)
  }
}

function clock(msLeft: number): string {
  const seconds = Math.ceil(Math.max(0, msLeft) / 1000)
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`
}

export function layout(title: string, nonce: string, body: Html, script?: string): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${title}</title>
<style nonce="${nonce}">${trusted(STYLE)}</style>
</head>
<body>
<main>
${body}
</main>
${script ? html`<script nonce="${nonce}">${trusted(script)}</script>` : ''}
</body>
</html>
`.value
}

export type Notice = { kind: 'error' | 'info' | 'warn'; text: string }

export interface CheckoutPageOptions {
  nowMs: number
  token: string
  email?: string
  notice?: Notice
  /** Set when no payment provider serves the hold's environment (live, on this server). */
  paymentsUnavailable?: boolean
}

function eventHeader(event: EventTable): Html {
  const starts = formatStart(event)
  return html`<h1>${event.title}</h1>${starts ? html`<p class="muted">${starts}</p>` : ''}`
}

export function checkoutPage(state: CheckoutState, opts: CheckoutPageOptions, nonce: string): string {
  const { hold, items, event } = state
  const msLeft = hold.expiresAt - opts.nowMs
  const payable = hold.status === 'active' && msLeft > 0
  const rows = items.map(
    (item) => html`<tr>
<td>${item.title}<br><span class="muted">${item.quantity} × ${formatAmount(item.unitAmount, item.currency)}</span></td>
<td class="num">${formatAmount(item.unitAmount * item.quantity, item.currency)}</td>
</tr>`,
  )
  const testMode = hold.environment === 'test'
  const body = html`
<div class="card">
${eventHeader(event)}
${testMode ? html`<p class="notice info">Test mode: pay with the test card 4242 4242 4242 4242. No real card is charged.</p>` : ''}
</div>
<div class="card">
<h2>Your order</h2>
<table>
<thead><tr><th>Ticket</th><th class="num">Amount</th></tr></thead>
<tbody>${rows}</tbody>
<tfoot><tr><th>Total</th><th class="num" id="total">${formatAmount(hold.amountCents, hold.currency)}</th></tr></tfoot>
</table>
${
  payable
    ? html`<p>Your tickets are held for <strong><time id="countdown" datetime="${new Date(hold.expiresAt).toISOString()}" data-ms-left="${msLeft}">${clock(msLeft)}</time></strong> more.</p>`
    : ''
}
</div>
<div class="card">
<div id="expiry" role="alert" ${opts.notice ? '' : 'hidden'} class="notice ${opts.notice?.kind ?? 'warn'}">${opts.notice?.text ?? ''}</div>
${
  opts.paymentsUnavailable
    ? html`<p class="notice warn" role="alert">Live payments are not configured on this server. Nothing has been charged.</p>`
    : ''
}
<form id="checkout" method="post" action="/checkout/${hold.id}" autocomplete="on">
<input type="hidden" name="token" value="${opts.token}">
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="email" required maxlength="254" value="${opts.email ?? hold.customerEmail ?? ''}">
<label for="cardNumber">Card number</label>
<input id="cardNumber" name="cardNumber" type="text" inputmode="numeric" autocomplete="cc-number" required maxlength="23" pattern="[0-9 \\-]{12,23}" placeholder="4242 4242 4242 4242">
<div class="actions">
<button class="pay" type="submit" name="action" value="pay" ${payable && !opts.paymentsUnavailable ? '' : 'disabled'}>Pay ${formatAmount(hold.amountCents, hold.currency)}</button>
<button class="cancel" type="submit" name="action" value="cancel" formnovalidate>Cancel</button>
</div>
</form>
</div>`
  return layout(`Checkout: ${event.title}`, nonce, body, payable ? COUNTDOWN_SCRIPT : undefined)
}

export function messagePage(title: string, text: string, nonce: string, link?: { href: string; label: string }): string {
  const body = html`<div class="card"><h1>${title}</h1><p>${text}</p>${link ? html`<p><a href="${link.href}">${link.label}</a></p>` : ''}</div>`
  return layout(title, nonce, body)
}

export function notFoundPage(nonce: string): string {
  return messagePage('Not found', 'There is nothing at this address. Check the link you were given.', nonce)
}

export function ticketsPage(page: TicketPage, qrSvgs: Map<string, string>, nonce: string): string {
  const { payment, event, tickets } = page
  const list = tickets.map(
    (ticket) => html`<section class="ticket" aria-label="Ticket ${ticket.id}">
<h2>${ticket.tierTitle}</h2>
${
  ticket.status === 'issued' || ticket.status === 'checked_in'
    ? html`<figure>${trusted(qrSvgs.get(ticket.id)!)}<figcaption class="muted">Show this code at the door</figcaption></figure>`
    : html`<p class="notice warn">This ticket was ${ticket.status}.</p>`
}
<p class="muted"><code>${ticket.id}</code></p>
</section>`,
  )
  const body = html`
<div class="card">
${eventHeader(event)}
<p>Paid ${formatAmount(payment.amount, payment.currency)}${payment.cardLast4 ? html` with card ending ${payment.cardLast4}` : ''}${
    payment.customerEmail ? html`; receipt to ${payment.customerEmail}` : ''
  }.</p>
</div>
<div class="card">
<h2>Your tickets (${tickets.length})</h2>
${list}
</div>`
  return layout(`Tickets: ${event.title}`, nonce, body)
}
