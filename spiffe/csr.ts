/** PKCS#10 certification requests: parsed, size-limited and signature-checked. */
import { sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { bitString, children, decodeOid, readWhole, seq, smallInteger, TAG, tlv, type Tlv } from './der.js';
import { InvalidCsr } from './errors.js';
import { p256Point, publicKeyFromSpki, SIGNATURE_OIDS, signatureAlgorithmFor, spkiDer, type SignatureAlgorithm } from './keys.js';

export const MAX_CSR_BYTES = 16 * 1024;

export interface CertificationRequest {
  /** The SubjectPublicKeyInfo DER, ready to be placed in a certificate. */
  publicKeySpki: Buffer;
  /** Imported on first use when the signature was checked without it (CsrOptions.verifyP256). */
  readonly publicKey: KeyObject;
  subject: Buffer;
}

export interface CsrOptions {
  /**
   * Checks an ECDSA-with-SHA256 signature of a P-256 key given as its
   * uncompressed point, without importing the key into node:crypto (the
   * server's native verifier). Other keys and algorithms go through node:crypto.
   */
  verifyP256?: (point: Buffer, message: Buffer, signature: Buffer) => boolean;
}

/**
 * Parses a DER CSR and proves that its signature was made by the key it carries.
 * Only the public key is used from a CSR: the subject, SANs and extensions of
 * the certificate come from the registration entry, never from the request.
 */
export function parseCsr(der: Buffer, options: CsrOptions = {}): CertificationRequest {
  if (!Buffer.isBuffer(der) || der.length === 0) throw new InvalidCsr('CSR is empty');
  if (der.length > MAX_CSR_BYTES) throw new InvalidCsr(`CSR is ${der.length} bytes; the limit is ${MAX_CSR_BYTES}`);
  let info: Buffer, spki: Buffer, subject: Buffer, sigOid: string, sigParams: Tlv[], signature: Buffer;
  try {
    const outer = readWhole(der, TAG.SEQUENCE, 'CSR');
    const [infoT, algT, sigT] = children(outer.content);
    if (!infoT || infoT.tag !== TAG.SEQUENCE || !algT || !sigT || sigT.tag !== TAG.BIT_STRING) throw new Error('not a PKCS#10 structure');
    const parts = children(infoT.content);
    if (parts.length < 3 || parts[0]!.tag !== TAG.INTEGER || parts[0]!.content.length !== 1 || parts[0]!.content[0] !== 0) {
      throw new Error('version must be 0');
    }
    subject = parts[1]!.whole;
    spki = parts[2]!.whole;
    if (parts[2]!.tag !== TAG.SEQUENCE) throw new Error('subjectPKInfo is not a SEQUENCE');
    info = infoT.whole;
    // The AlgorithmIdentifier is outside the signed bytes: read it strictly so that it has one encoding.
    const [oidT, ...params] = algT.tag === TAG.SEQUENCE ? children(algT.content) : [];
    if (oidT?.tag !== TAG.OID) throw new Error('signatureAlgorithm is not an AlgorithmIdentifier');
    sigOid = decodeOid(oidT.content);
    sigParams = params;
    if (sigT.content[0] !== 0) throw new Error('signature BIT STRING has unused bits');
    signature = sigT.content.subarray(1);
  } catch (err) {
    throw new InvalidCsr(`malformed CSR: ${(err as Error).message}`);
  }
  const alg = SIGNATURE_OIDS[sigOid];
  if (!alg) throw new InvalidCsr(`unsupported CSR signature algorithm ${sigOid}`);
  // ECDSA identifiers have no parameters (RFC 5758 §3.2); RSA ones have NULL, or none (RFC 4055 §5).
  const paramsOk = sigParams.length === 0 ||
    (alg.family === 'rsa' && sigParams.length === 1 && sigParams[0]!.tag === TAG.NULL && sigParams[0]!.content.length === 0);
  if (!paramsOk) throw new InvalidCsr(`CSR signature algorithm ${sigOid} has parameters it must not have`);
  const point = options.verifyP256 && alg.family === 'ec' && alg.hash === 'sha256' ? p256Point(spki) : undefined;
  if (point) {
    // false also for a point that is not on the curve
    if (!options.verifyP256!(point, info, signature)) throw new InvalidCsr('CSR signature does not verify with the CSR public key');
    let imported: KeyObject | undefined;
    return { publicKeySpki: spki, subject, get publicKey() { imported ??= publicKeyFromSpki(spki); return imported; } };
  }
  let publicKey: KeyObject;
  try {
    publicKey = publicKeyFromSpki(spki);
    signatureAlgorithmFor(publicKey);
  } catch (err) {
    throw new InvalidCsr(`CSR public key is not usable: ${(err as Error).message}`);
  }
  if (publicKey.asymmetricKeyType !== alg.family) throw new InvalidCsr(`CSR signature algorithm ${sigOid} does not fit its ${publicKey.asymmetricKeyType} key`);
  let ok = false;
  try { ok = cryptoVerify(alg.hash, info, publicKey, signature); } catch { ok = false; }
  if (!ok) throw new InvalidCsr('CSR signature does not verify with the CSR public key');
  return { publicKeySpki: spki, publicKey, subject };
}

/** Encodes and signs a CSR for `privateKey` (empty subject, no attributes: the server ignores both). */
export function createCsr(privateKey: KeyObject, publicKey: KeyObject, subject: Buffer = seq(), alg: SignatureAlgorithm = signatureAlgorithmFor(privateKey)): Buffer {
  const info = seq(smallInteger(0), subject, spkiDer(publicKey), tlv(0xa0));
  return seq(info, alg.algorithmIdentifier, bitString(cryptoSign(alg.hash, info, privateKey)));
}
