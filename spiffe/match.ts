import { isAgentId, SpiffeId, type TrustDomain } from './id.js';

/**
 * Decides whether a peer's SPIFFE ID is the one expected: undefined when it
 * is, otherwise why not, in words that name both. After go-spiffe's
 * `spiffeid.Matcher`; every peer check of meshid (agent → server, server →
 * agent, agent ↔ agent) goes through one.
 */
export type Matcher = (actual: SpiffeId) => string | undefined;

/** Any ID at all; for a caller that decides later. */
export const matchAny = (): Matcher => () => undefined;

/** Exactly this ID. */
export const matchId = (expected: SpiffeId): Matcher => (actual) =>
  (actual.equals(expected) ? undefined : `${actual} is not ${expected}`);

/** One of these IDs. */
export function matchOneOf(...expected: SpiffeId[]): Matcher {
  const set = new Set(expected.map(String));
  return (actual) => (set.has(actual.toString()) ? undefined : `${actual} is not one of ${[...set].join(', ')}`);
}

/** Any ID of this trust domain. */
export const matchMemberOf = (td: TrustDomain): Matcher => (actual) =>
  (actual.memberOf(td) ? undefined : `${actual} is not a member of trust domain ${td.name}`);

/** A meshid agent's ID (spiffe://<td>/meshid/agent/<attestor>/<node…>) of this trust domain. */
export const matchAgentOf = (td: TrustDomain): Matcher => (actual) =>
  (actual.memberOf(td) && isAgentId(actual) ? undefined : `${actual} is not an agent of trust domain ${td.name}`);

/**
 * Checks the URI SANs of a peer's certificate: exactly one, a SPIFFE ID that
 * the matcher accepts (an X509-SVID carries exactly one URI SAN).
 */
export function matchUriSans(uris: readonly string[], matcher: Matcher): string | undefined {
  if (uris.length !== 1) return `presented ${uris.length === 0 ? 'no URI SAN' : `${uris.length} URI SANs (${uris.join(', ')})`}, not one SPIFFE ID`;
  const id = SpiffeId.tryParse(uris[0]!);
  if (!id) return `presented ${uris[0]}, which is not a SPIFFE ID`;
  return matcher(id);
}
