/** X509-SVIDs per the SPIFFE X509-SVID standard: minting and chain validation. */
import type { KeyObject } from 'node:crypto';
import { encodeName, KeyUsage, mintCertificate, OID, parseCertificate, signedBy, type CertificateIssuer, type ParsedCertificate } from './x509.js';
import { children, readWhole, TAG } from './der.js';
import { InvalidSvid, Untrusted } from './errors.js';
import { SpiffeId, type TrustDomain } from './id.js';

export interface X509Svid {
  spiffeId: SpiffeId;
  /** Leaf first, then intermediates up to (not including) a bundle authority. */
  certChainDer: Buffer[];
  privateKey: KeyObject;
  expiresAt: Date;
  hint?: string;
}

/** The subject every meshid X509-SVID carries; identity is in the URI SAN only. */
export const SVID_SUBJECT = encodeName([['C', 'US'], ['O', 'meshid']]);

export interface SvidRequest {
  spiffeId: SpiffeId;
  publicKeySpki: Buffer;
  notBefore: Date;
  notAfter: Date;
  dnsNames?: string[];
  serial?: Buffer;
}

/** The one function that mints an X509-SVID leaf. */
export function mintX509Svid(issuer: CertificateIssuer, req: SvidRequest): Buffer {
  const dnsNames = req.dnsNames ?? [];
  const subject = dnsNames.length > 0 ? encodeName([['C', 'US'], ['O', 'meshid'], ['CN', dnsNames[0]!]]) : SVID_SUBJECT;
  const fields = {
    subject,
    notBefore: req.notBefore,
    notAfter: req.notAfter,
    publicKeySpki: req.publicKeySpki,
    uris: [req.spiffeId.toString()],
    dnsNames,
    ...(req.serial ? { serial: req.serial } : {}),
  };
  return mintCertificate(fields, issuer);
}

/** Where chain validation finds a trust domain's X.509 authorities (DER). */
export type X509BundleSource = (td: TrustDomain) => readonly Buffer[] | undefined;

export interface VerifiedX509Svid {
  spiffeId: SpiffeId;
  leaf: ParsedCertificate;
  /** The leaf, the intermediates used, and the bundle authority that anchors them. */
  path: ParsedCertificate[];
  /** The earliest notAfter on the path: the SVID is only as good as its shortest-lived link. */
  expiresAt: Date;
}

/** The extensions that this validator acts on; RFC 5280 §4.2 says to reject a certificate with any other critical one. */
const PROCESSED_EXTENSIONS: ReadonlySet<string> = new Set([
  OID.basicConstraints, OID.keyUsage, OID.extKeyUsage, OID.subjectAltName, OID.subjectKeyIdentifier, OID.authorityKeyIdentifier,
]);

function checkCriticalExtensions(c: ParsedCertificate, what: string): void {
  for (const [id, ext] of c.extensions) {
    if (ext.critical && !PROCESSED_EXTENSIONS.has(id)) throw new InvalidSvid(`${what} has critical extension ${id}, which this validator does not process`);
  }
}

/** X509-SVID leaf rules (standard §4, §5.2): exactly one SPIFFE URI SAN, not a CA, digitalSignature, no keyCertSign/cRLSign. */
export function checkLeafRules(leaf: ParsedCertificate): SpiffeId {
  checkCriticalExtensions(leaf, 'leaf certificate');
  if (leaf.uris.length !== 1) throw new InvalidSvid(`an X509-SVID has exactly one URI SAN; this one has ${leaf.uris.length}`);
  let id: SpiffeId;
  try { id = SpiffeId.parse(leaf.uris[0]!); } catch (err) { throw new InvalidSvid(`URI SAN is not a SPIFFE ID: ${(err as Error).message}`); }
  if (id.path === '') throw new InvalidSvid('leaf SPIFFE ID has no path (a trust domain ID belongs on a signing certificate)');
  if (leaf.isCa) throw new InvalidSvid('leaf certificate has basicConstraints CA=true');
  if (leaf.keyUsage === undefined) throw new InvalidSvid('leaf certificate has no keyUsage extension');
  if (!(leaf.keyUsage & KeyUsage.digitalSignature)) throw new InvalidSvid('leaf keyUsage lacks digitalSignature');
  if (leaf.keyUsage & KeyUsage.keyCertSign) throw new InvalidSvid('leaf keyUsage has keyCertSign');
  if (leaf.keyUsage & KeyUsage.cRLSign) throw new InvalidSvid('leaf keyUsage has cRLSign');
  return id;
}

/** The maximum number of intermediate CAs that may follow `c` (basicConstraints pathLenConstraint), if it sets one. */
function pathLenOf(c: ParsedCertificate, what: string): number | undefined {
  const bc = c.extensions.get(OID.basicConstraints);
  if (!bc) return undefined;
  try {
    const n = children(readWhole(bc.value, TAG.SEQUENCE).content).find((p) => p.tag === TAG.INTEGER);
    if (!n) return undefined;
    if (n.content.length === 0 || n.content.length > 4 || (n.content[0]! & 0x80)) throw new Error('pathLenConstraint is out of range');
    return n.content.readUIntBE(0, n.content.length);
  } catch (err) {
    throw new InvalidSvid(`${what} has a malformed basicConstraints: ${(err as Error).message}`);
  }
}

function checkSigningCert(c: ParsedCertificate, what: string): void {
  checkCriticalExtensions(c, what);
  if (!c.isCa) throw new InvalidSvid(`${what} is not a CA (basicConstraints CA=false)`);
  if (c.keyUsage !== undefined && !(c.keyUsage & KeyUsage.keyCertSign)) throw new InvalidSvid(`${what} keyUsage lacks keyCertSign`);
}

function checkTime(c: ParsedCertificate, now: Date, what: string): void {
  if (now < c.notBefore) throw new InvalidSvid(`${what} is not valid before ${c.notBefore.toISOString()}`);
  if (now > c.notAfter) throw new InvalidSvid(`${what} expired at ${c.notAfter.toISOString()}`);
}

/** Each CA's pathLenConstraint bounds the intermediate CAs between it and the leaf (RFC 5280 §4.2.1.9). */
function checkPathLengths(path: readonly ParsedCertificate[]): void {
  for (let i = 2; i < path.length; i++) {
    const what = i === path.length - 1 ? 'bundle authority' : 'intermediate certificate';
    const max = pathLenOf(path[i]!, what);
    if (max !== undefined && i - 1 > max) throw new InvalidSvid(`${what} allows ${max} intermediate CA(s) below it (pathLen), the chain has ${i - 1}`);
  }
}

/**
 * Validates an X509-SVID chain (leaf first) against the bundle of the leaf's
 * trust domain: every link signed by the next, every CA a CA, every
 * certificate within its validity at `now`, anchored in a bundle authority.
 */
export function verifyX509Svid(chainDer: readonly Buffer[], bundles: X509BundleSource, now: Date): VerifiedX509Svid {
  if (chainDer.length === 0) throw new InvalidSvid('certificate chain is empty');
  const leaf = parseCertificate(chainDer[0]!);
  const spiffeId = checkLeafRules(leaf);
  checkTime(leaf, now, 'leaf certificate');
  const authorities = bundles(spiffeId.trustDomain);
  if (!authorities || authorities.length === 0) throw new Untrusted(`no bundle for trust domain "${spiffeId.trustDomain.name}"`);
  const roots = authorities.map(parseCertificate);
  const intermediates = chainDer.slice(1).map(parseCertificate);
  const path: ParsedCertificate[] = [leaf];
  let current = leaf;
  for (let depth = 0; depth <= intermediates.length; depth++) {
    const root = roots.find((r) => r.subject.equals(current.issuer) && signedBy(current, r));
    if (root) {
      if (root !== current) { checkSigningCert(root, 'bundle authority'); checkTime(root, now, 'bundle authority'); path.push(root); }
      checkPathLengths(path);
      const expiresAt = new Date(Math.min(...path.map((c) => c.notAfter.getTime())));
      return { spiffeId, leaf, path, expiresAt };
    }
    const next = intermediates.find((c) => !path.includes(c) && c.subject.equals(current.issuer) && signedBy(current, c));
    if (!next) break;
    checkSigningCert(next, 'intermediate certificate');
    checkTime(next, now, 'intermediate certificate');
    path.push(next);
    current = next;
  }
  throw new Untrusted(`certificate chain for ${spiffeId} does not lead to an authority of trust domain "${spiffeId.trustDomain.name}"`);
}
