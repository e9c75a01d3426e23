import type { AppContext } from '../context.js'

/**
 * Verifies `organizerAssertionJwt` when one is sent (for the method it came with), and says
 * whether the organizer consented. Whether consent was needed is the domain's decision.
 */
export async function verifyOrganizerConsent(
  ctx: AppContext,
  nsid: string,
  body: { organizerDid: string; organizerAssertionJwt?: string | null },
): Promise<boolean> {
  if (!body.organizerAssertionJwt) return false
  await ctx.authVerifier.verifyAssertion('organizerAssertionJwt', body.organizerAssertionJwt, nsid, body.organizerDid)
  return true
}

/** buyerDid and buyerAssertionJwt come together or not at all (guest checkout). */
export async function verifyBuyer(
  ctx: AppContext,
  nsid: string,
  body: { buyerDid?: string | null; buyerAssertionJwt?: string | null },
): Promise<void> {
  if (!body.buyerDid) return
  await ctx.authVerifier.verifyAssertion('buyerAssertionJwt', body.buyerAssertionJwt!, nsid, body.buyerDid)
}
