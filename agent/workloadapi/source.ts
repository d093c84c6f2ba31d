import type { SelectorSet, SpiffeId } from '../../spiffe/index.js';

/** One X509-SVID as the agent's SVID cache holds it. */
export interface CachedX509Svid {
  spiffeId: SpiffeId;
  hint: string;
  /** DER certificates, leaf first. */
  certChainDer: Buffer[];
  privateKeyPkcs8Der: Buffer;
  expiresAt: Date;
}

/**
 * What the Workload API serves, as the agent's SVID cache answers it. The
 * server knows nothing of entries, rotation or the server connection; it asks
 * this on every call and again whenever `onChange` fires.
 */
export interface WorkloadSource {
  /** SVIDs of every entry whose selectors are all among the caller's selectors; empty = caller matches no entry. */
  x509SvidsFor(caller: SelectorSet): CachedX509Svid[];
  /** own trust domain name + federated: trust domain name -> DER certificates of its X.509 authorities */
  x509Bundles(): Map<string, Buffer[]>;
  /** trust domain name -> SPIFFE bundle JWKS JSON bytes (jwt-svid keys) */
  jwtBundles(): Map<string, Buffer>;
  /** Which trust domains the caller's entries federate with (to filter federated_bundles); may return all. */
  federatedBundlesFor(caller: SelectorSet): Map<string, Buffer[]>;
  /** Mints or returns a cached JWT-SVID for each matching identity (all matching, or only spiffeId if given). Throws PermissionDenied (spiffe/errors.ts) when none match. */
  jwtSvidsFor(caller: SelectorSet, audience: string[], spiffeId?: SpiffeId): Promise<{ spiffeId: SpiffeId; token: string; hint: string }[]>;
  /** Validates against the JWT bundles; throws a MeshidError (InvalidJwt, JwtExpired, JwtSignatureInvalid, JwtAudienceMismatch, Untrusted) on failure. */
  validateJwtSvid(token: string, audience: string, caller?: SelectorSet): { spiffeId: SpiffeId; claims: Record<string, unknown> };
  /** The SPIFFE IDs the caller is entitled to, whether or not a valid SVID is held for them now. Absent: those of x509SvidsFor. */
  identitiesFor?(caller: SelectorSet): SpiffeId[];
  /** Why an entitled caller has no valid SVID (the server unreachable since when); said in the Unavailable status. */
  unavailableReason?(): string;
  /** Called on every change that may alter any answer above (rotation, entry change, bundle change). Returns unsubscribe. */
  onChange(listener: () => void): () => void;
}
