/**
 * X.509 certificates encoded straight to DER and signed with node:crypto.
 * The constant parts of a certificate are built once; minting a certificate
 * is a handful of Buffer copies plus one signature, which is what makes the
 * server's signing path fast (see bench/sign.ts).
 */
import { createHash, randomBytes, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import {
  bitString, bool, children, decodeOid, decodeTime, explicit, octets, oid, readTlv, readWhole, seq, set, smallInteger,
  TAG, time, tlv, unsignedInteger, type Tlv,
} from './der.js';
import { InvalidArgument, InvalidSvid } from './errors.js';
import { publicKeyFromSpki, SIGNATURE_OIDS, signatureAlgorithmFor, type SignatureAlgorithm } from './keys.js';

export const OID = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

/** keyUsage bits (RFC 5280 §4.2.1.3), as a mask over the first two bytes of the BIT STRING. */
export const KeyUsage = {
  digitalSignature: 0x80, nonRepudiation: 0x40, keyEncipherment: 0x20, dataEncipherment: 0x10,
  keyAgreement: 0x08, keyCertSign: 0x04, cRLSign: 0x02,
} as const;

const ATTR: Record<string, string> = { C: '2.5.4.6', O: '2.5.4.10', OU: '2.5.4.11', CN: '2.5.4.3', serialNumber: '2.5.4.5', x500UniqueIdentifier: '2.5.4.45' };

/** A Name from (attribute, value) pairs, one RDN each: name([['C','US'],['O','meshid']]). */
export function encodeName(rdns: ReadonlyArray<readonly [string, string]>): Buffer {
  return seq(...rdns.map(([type, value]) => {
    const o = ATTR[type];
    if (!o) throw new InvalidArgument(`unknown name attribute ${type}`);
    const str = type === 'C' || type === 'serialNumber'
      ? tlv(TAG.PRINTABLE_STRING, Buffer.from(value, 'latin1'))
      : tlv(TAG.UTF8_STRING, Buffer.from(value, 'utf8'));
    return set(seq(oid(o), str));
  }));
}

function keyUsageExtension(bits: number): Buffer {
  let unused = 0;
  while (unused < 7 && !(bits & (1 << unused))) unused++;
  return extension(OID.keyUsage, true, bitString(Buffer.from([bits]), unused));
}

const encodedOids = new Map<string, Buffer>();
function extension(id: string, critical: boolean, value: Buffer): Buffer {
  let o = encodedOids.get(id);
  if (!o) { o = oid(id); encodedOids.set(id, o); }
  return critical ? seq(o, bool(true), octets(value)) : seq(o, octets(value));
}

/** The subjectPublicKey bits of an SPKI, hashed with SHA-1 (RFC 5280 §4.2.1.2 method 1). */
export function keyIdentifier(spki: Buffer): Buffer {
  const outer = readWhole(spki, TAG.SEQUENCE, 'SubjectPublicKeyInfo');
  const parts = children(outer.content);
  const bits = parts[1];
  if (!bits || bits.tag !== TAG.BIT_STRING) throw new InvalidArgument('SubjectPublicKeyInfo has no public key bits');
  return createHash('sha1').update(bits.content.subarray(1)).digest();
}

const V3 = explicit(0, smallInteger(2));
const LEAF_BASIC_CONSTRAINTS = extension(OID.basicConstraints, true, seq());
const LEAF_KEY_USAGE = keyUsageExtension(KeyUsage.digitalSignature | KeyUsage.keyEncipherment | KeyUsage.keyAgreement);
const LEAF_EXT_KEY_USAGE = extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth)));
const CA_KEY_USAGE = keyUsageExtension(KeyUsage.digitalSignature | KeyUsage.keyCertSign | KeyUsage.cRLSign);

/** A key that signs certificates, with its certificate's subject and key identifier. */
export interface CertificateIssuer {
  subject: Buffer;
  keyId: Buffer;
  privateKey: KeyObject;
  algorithm: SignatureAlgorithm;
  /**
   * Signs with privateKey under `algorithm` by other means than node:crypto
   * (server/ca's native P-256 signer); absent: node:crypto signs.
   */
  sign?: (tbs: Buffer) => Buffer;
}

export function issuerFromKey(subject: Buffer, keyId: Buffer, privateKey: KeyObject): CertificateIssuer {
  return { subject, keyId, privateKey, algorithm: signatureAlgorithmFor(privateKey) };
}

export interface CertificateFields {
  serial?: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  publicKeySpki: Buffer;
  uris?: string[];
  dnsNames?: string[];
  /** CA certificates: basicConstraints CA=true, keyUsage keyCertSign + cRLSign. */
  ca?: { pathLen?: number };
}

/** A positive random 128-bit serial (RFC 5280: at most 20 octets, positive). */
export function randomSerial(): Buffer { return positive(randomBytes(16)); }

const positive = (b: Buffer): Buffer => { b[0] = (b[0]! & 0x7f) | 0x01; return b; };

/**
 * Random serials for an issuer that signs many certificates: one RNG call per
 * 256 serials, since randomBytes costs as much as the DER work of a whole
 * certificate. Each issuer owns one; nothing is shared between them.
 */
export class SerialSource {
  private pool = Buffer.alloc(0);
  private offset = 0;

  next(): Buffer {
    if (this.offset >= this.pool.length) { this.pool = randomBytes(16 * 256); this.offset = 0; }
    const b = Buffer.from(this.pool.subarray(this.offset, this.offset + 16));
    this.offset += 16;
    return positive(b);
  }
}

function subjectAltName(uris: string[], dnsNames: string[]): Buffer {
  const names = [
    ...uris.map((u) => tlv(0x86, Buffer.from(u, 'utf8'))),
    ...dnsNames.map((d) => tlv(0x82, Buffer.from(d, 'latin1'))),
  ];
  return seq(...names);
}

/**
 * Encodes and signs a certificate. `issuer` undefined means self-signed with
 * `selfKey`. One function for leaves and CAs; the leaf extensions are the
 * X509-SVID ones (CA=false, digitalSignature|keyEncipherment|keyAgreement,
 * serverAuth+clientAuth).
 */
export function mintCertificate(fields: CertificateFields, issuer: CertificateIssuer): Buffer {
  const skid = keyIdentifier(fields.publicKeySpki);
  const uris = fields.uris ?? [];
  const dns = fields.dnsNames ?? [];
  const exts: Buffer[] = [];
  if (fields.ca) {
    const bc = fields.ca.pathLen === undefined ? seq(bool(true)) : seq(bool(true), smallInteger(fields.ca.pathLen));
    exts.push(extension(OID.basicConstraints, true, bc), CA_KEY_USAGE);
  } else {
    exts.push(LEAF_BASIC_CONSTRAINTS, LEAF_KEY_USAGE, LEAF_EXT_KEY_USAGE);
  }
  exts.push(extension(OID.subjectKeyIdentifier, false, octets(skid)));
  if (!issuer.keyId.equals(skid)) exts.push(extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, issuer.keyId))));
  if (uris.length + dns.length > 0) {
    // RFC 5280 §4.2.1.6: critical when the subject is empty.
    exts.push(extension(OID.subjectAltName, fields.subject.length <= 2, subjectAltName(uris, dns)));
  }
  const tbs = seq(
    V3,
    unsignedInteger(fields.serial ?? randomSerial()),
    issuer.algorithm.algorithmIdentifier,
    issuer.subject,
    seq(time(fields.notBefore), time(fields.notAfter)),
    fields.subject,
    fields.publicKeySpki,
    explicit(3, seq(...exts)),
  );
  const signature = issuer.sign ? issuer.sign(tbs) : cryptoSign(issuer.algorithm.hash, tbs, issuer.privateKey);
  return seq(tbs, issuer.algorithm.algorithmIdentifier, bitString(signature));
}

export interface Extension { critical: boolean; value: Buffer }

/** A certificate parsed just far enough for SPIFFE's rules and chain building. */
export interface ParsedCertificate {
  der: Buffer;
  tbs: Buffer;
  serialHex: string;
  signatureOid: string;
  signature: Buffer;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  extensions: Map<string, Extension>;
  isCa: boolean;
  /** keyUsage bits, or undefined when the extension is absent. */
  keyUsage: number | undefined;
  uris: string[];
  dnsNames: string[];
  subjectKeyId: Buffer | undefined;
  authorityKeyId: Buffer | undefined;
}

export function parseCertificate(der: Buffer): ParsedCertificate {
  try {
    return parseCertificateUnchecked(der);
  } catch (err) {
    throw new InvalidSvid(`malformed certificate: ${(err as Error).message}`);
  }
}

function parseCertificateUnchecked(der: Buffer): ParsedCertificate {
  const cert = readWhole(der, TAG.SEQUENCE, 'certificate');
  const [tbsT, algT, sigT] = children(cert.content);
  if (!tbsT || !algT || !sigT || sigT.tag !== TAG.BIT_STRING) throw new Error('certificate needs tbsCertificate, signatureAlgorithm, signatureValue');
  const tbs = children(tbsT.content);
  let i = 0;
  if (tbs[0]?.tag === 0xa0) i++;
  const [serialT, innerAlgT, issuerT, validityT, subjectT, spkiT] = tbs.slice(i, i + 6);
  if (!serialT || !innerAlgT || !issuerT || !validityT || !subjectT || !spkiT) throw new Error('tbsCertificate is incomplete');
  // The outer signatureAlgorithm and the signature's unused-bits octet are not signed: pin them down
  // (RFC 5280 §4.1.1.2) so that no other encoding of a certificate verifies.
  if (!algT.whole.equals(innerAlgT.whole)) throw new Error('signatureAlgorithm differs from the one in tbsCertificate');
  if (sigT.content[0] !== 0) throw new Error('signature BIT STRING has unused bits');
  const [nb, na] = children(validityT.content);
  if (!nb || !na) throw new Error('validity is incomplete');
  const extensions = new Map<string, Extension>();
  const extsT = tbs.slice(i + 6).find((t) => t.tag === 0xa3);
  if (extsT) {
    for (const e of children(readTlv(extsT.content).content)) {
      const parts = children(e.content);
      const id = decodeOid(parts[0]!.content);
      const critical = parts.length === 3 && parts[1]!.tag === TAG.BOOLEAN && parts[1]!.content[0] !== 0;
      const value = parts[parts.length - 1]!;
      if (value.tag !== TAG.OCTET_STRING) throw new Error(`extension ${id} has no value`);
      if (extensions.has(id)) throw new Error(`extension ${id} appears twice`);
      extensions.set(id, { critical, value: value.content });
    }
  }
  const bc = extensions.get(OID.basicConstraints);
  const bcParts = bc ? children(readWhole(bc.value, TAG.SEQUENCE).content) : [];
  const isCa = bcParts[0]?.tag === TAG.BOOLEAN && bcParts[0].content[0] !== 0;
  const ku = extensions.get(OID.keyUsage);
  let keyUsage: number | undefined;
  if (ku) {
    const bits = readWhole(ku.value, TAG.BIT_STRING).content;
    keyUsage = bits[1] ?? 0;
  }
  const uris: string[] = [];
  const dnsNames: string[] = [];
  const san = extensions.get(OID.subjectAltName);
  if (san) {
    for (const n of children(readWhole(san.value, TAG.SEQUENCE).content)) {
      if (n.tag === 0x86) uris.push(n.content.toString('utf8'));
      else if (n.tag === 0x82) dnsNames.push(n.content.toString('latin1'));
    }
  }
  const skid = extensions.get(OID.subjectKeyIdentifier);
  const akid = extensions.get(OID.authorityKeyIdentifier);
  let authorityKeyId: Buffer | undefined;
  if (akid) authorityKeyId = children(readWhole(akid.value, TAG.SEQUENCE).content).find((t) => t.tag === 0x80)?.content;
  return {
    der,
    tbs: tbsT.whole,
    serialHex: serialT.content.toString('hex'),
    signatureOid: signatureOidOf(innerAlgT),
    signature: sigT.content.subarray(1),
    issuer: issuerT.whole,
    subject: subjectT.whole,
    notBefore: decodeTime(nb.tag, nb.content),
    notAfter: decodeTime(na.tag, na.content),
    spki: spkiT.whole,
    extensions,
    isCa,
    keyUsage,
    uris,
    dnsNames,
    subjectKeyId: skid ? readWhole(skid.value, TAG.OCTET_STRING).content : undefined,
    authorityKeyId,
  };
}

function signatureOidOf(alg: Tlv): string {
  const oidT = alg.tag === TAG.SEQUENCE ? children(alg.content)[0] : undefined;
  if (oidT?.tag !== TAG.OID) throw new Error('signatureAlgorithm is not an AlgorithmIdentifier');
  return decodeOid(oidT.content);
}

/** True when `issuer`'s key signed `cert`. */
export function signedBy(cert: ParsedCertificate, issuer: ParsedCertificate | KeyObject): boolean {
  const alg = SIGNATURE_OIDS[cert.signatureOid];
  if (!alg) return false;
  try {
    const key = 'spki' in issuer ? publicKeyFromSpki(issuer.spki) : issuer;
    return cryptoVerify(alg.hash, cert.tbs, key, cert.signature);
  } catch {
    return false;
  }
}

export const pemFromDer = (der: Buffer, label = 'CERTIFICATE'): string =>
  `-----BEGIN ${label}-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END ${label}-----\n`;

/** Every PEM block of `label` in `text`, decoded. */
export function derFromPem(text: string, label = 'CERTIFICATE'): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`, 'g');
  return [...text.matchAll(re)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
}

/** Splits concatenated DER certificates (the Workload API's chain and bundle encoding). */
export function splitConcatenatedDer(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off < buf.length) {
    const t = readTlv(buf, off);
    out.push(buf.subarray(off, t.end));
    off = t.end;
  }
  return out;
}
