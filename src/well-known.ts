import type { AppContext } from './context.js'

/** The did:web host of `serviceDid`, when it is a did:web this service answers for. */
export function didWebHost(serviceDid: string): string | null {
  if (!serviceDid.startsWith('did:web:') || serviceDid.slice(8).includes(':')) return null
  return decodeURIComponent(serviceDid.slice(8))
}

/** The service's DID document: its signing key and where apps reach it. */
export function didDocument(ctx: AppContext) {
  const { serviceDid, publicUrl } = ctx.cfg
  return {
    '@context': ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/multikey/v1'],
    id: serviceDid,
    verificationMethod: [
      {
        id: `${serviceDid}#atproto`,
        type: 'Multikey',
        controller: serviceDid,
        publicKeyMultibase: ctx.signingKey.did().slice('did:key:'.length),
      },
    ],
    service: [{ id: '#atm_tickets', type: 'AtmTickets', serviceEndpoint: publicUrl }],
  }
}
