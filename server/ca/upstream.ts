/** An upstream CA read from PEM files: the server's signing certificates are issued under it. */
import { readFileSync } from 'node:fs';
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { derFromPem, FailedPrecondition, KeyUsage, parseCertificate, type ParsedCertificate, signatureAlgorithmFor, spkiDer } from '../../spiffe/index.js';

export interface UpstreamAuthority {
  /** The upstream CA certificate that signs ours, first, then its own chain (not the root). */
  chain: Buffer[];
  cert: ParsedCertificate;
  key: KeyObject;
  /** The roots that go into the trust bundle. */
  roots: Buffer[];
}

/**
 * Reads `certFile` (the upstream signing certificate, optionally followed by
 * its intermediates), `keyFile`, and `bundleFile` (roots; defaults to the last
 * certificate of certFile when that one is self-signed).
 */
export function loadUpstreamAuthority(certFile: string, keyFile: string, bundleFile?: string): UpstreamAuthority {
  const certs = derFromPem(readFileSync(certFile, 'utf8'));
  if (certs.length === 0) throw new FailedPrecondition(`upstream CA file ${certFile} holds no CERTIFICATE`, 'upstream_authority.cert_file');
  let key: KeyObject;
  try { key = createPrivateKey(readFileSync(keyFile)); } catch (err) {
    throw new FailedPrecondition(`upstream CA key ${keyFile}: ${(err as Error).message}`, 'upstream_authority.key_file');
  }
  signatureAlgorithmFor(key);
  const cert = parseCertificate(certs[0]!);
  if (!cert.isCa || (cert.keyUsage !== undefined && !(cert.keyUsage & KeyUsage.keyCertSign))) {
    throw new FailedPrecondition(`upstream certificate in ${certFile} is not a CA with keyCertSign`, 'upstream_authority.cert_file');
  }
  if (!spkiDer(createPublicKey(key)).equals(cert.spki)) {
    throw new FailedPrecondition(`upstream key ${keyFile} does not match the certificate in ${certFile}`, 'upstream_authority.key_file');
  }
  let roots: Buffer[];
  if (bundleFile) {
    roots = derFromPem(readFileSync(bundleFile, 'utf8'));
    if (roots.length === 0) throw new FailedPrecondition(`upstream bundle ${bundleFile} holds no CERTIFICATE`, 'upstream_authority.bundle_file');
  } else {
    const last = parseCertificate(certs[certs.length - 1]!);
    if (!last.subject.equals(last.issuer)) throw new FailedPrecondition(`${certFile} does not end with a self-signed root; give upstream_authority.bundle_file`, 'upstream_authority.bundle_file');
    roots = [certs[certs.length - 1]!];
  }
  const chain = certs.filter((c) => !roots.some((r) => r.equals(c)));
  return { chain, cert, key, roots };
}
