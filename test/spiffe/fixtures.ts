/** Shared helpers for the SPIFFE core tests: CAs and leaves minted with the core, openssl, temp dirs. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { webcrypto, type KeyObject } from 'node:crypto';
import { x509 as px509 } from './peculiar.js';
import {
  encodeName, generateKeyPair, issuerFromKey, keyIdentifier, mintCertificate, mintX509Svid, parseCertificate, pkcs8Der, spkiDer,
  SpiffeId, type CertificateIssuer, type KeyPair, type KeyType, type ParsedCertificate,
} from '../../spiffe/index.js';

type CryptoKey = webcrypto.CryptoKey;
type Algorithm = webcrypto.Algorithm;
type EcdsaParams = webcrypto.EcdsaParams;

export const HOUR = 3600_000;
export const NOW = new Date(Date.UTC(2030, 0, 15, 12, 0, 0));
export const at = (offsetMs: number): Date => new Date(NOW.getTime() + offsetMs);

/** A signing certificate with its key: a root (self-signed) or an intermediate. */
export interface TestCa {
  keys: KeyPair;
  spki: Buffer;
  subject: Buffer;
  der: Buffer;
  parsed: ParsedCertificate;
  issuer: CertificateIssuer;
}

export interface CaOptions {
  keyType?: KeyType;
  cn?: string;
  notBefore?: Date;
  notAfter?: Date;
  pathLen?: number;
  uris?: string[];
}

function makeCa(opts: CaOptions, parent: TestCa | undefined): TestCa {
  const keys = generateKeyPair(opts.keyType ?? 'ec-p256');
  const spki = spkiDer(keys.publicKey);
  const subject = encodeName([['C', 'US'], ['O', 'meshid test'], ['CN', opts.cn ?? `ca ${process.pid} ${Math.random()}`]]);
  const issuer = issuerFromKey(subject, keyIdentifier(spki), keys.privateKey);
  const der = mintCertificate({
    subject,
    notBefore: opts.notBefore ?? at(-24 * HOUR),
    notAfter: opts.notAfter ?? at(365 * 24 * HOUR),
    publicKeySpki: spki,
    ca: opts.pathLen === undefined ? {} : { pathLen: opts.pathLen },
    ...(opts.uris ? { uris: opts.uris } : {}),
  }, parent ? parent.issuer : issuer);
  return { keys, spki, subject, der, parsed: parseCertificate(der), issuer };
}

export const makeRoot = (opts: CaOptions = {}): TestCa => makeCa(opts, undefined);
export const makeIntermediate = (parent: TestCa, opts: CaOptions = {}): TestCa => makeCa(opts, parent);

export interface TestLeaf { keys: KeyPair; der: Buffer; id: SpiffeId }

export function makeLeaf(issuer: TestCa, id: string | SpiffeId, opts: { keyType?: KeyType; notBefore?: Date; notAfter?: Date; dnsNames?: string[] } = {}): TestLeaf {
  const keys = generateKeyPair(opts.keyType ?? 'ec-p256');
  const spiffeId = typeof id === 'string' ? SpiffeId.parse(id) : id;
  const der = mintX509Svid(issuer.issuer, {
    spiffeId,
    publicKeySpki: spkiDer(keys.publicKey),
    notBefore: opts.notBefore ?? at(-HOUR),
    notAfter: opts.notAfter ?? at(HOUR),
    ...(opts.dnsNames ? { dnsNames: opts.dnsNames } : {}),
  });
  return { keys, der, id: spiffeId };
}

/** A temp dir removed in teardown; the name carries the pid so concurrent runs never collide. */
export function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), `meshid-core-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function writeTemp(dir: string, name: string, data: string | Buffer): string {
  const p = join(dir, name);
  writeFileSync(p, data);
  return p;
}

export interface RunResult { status: number | null; stdout: string; stderr: string }

export function openssl(args: string[], input?: Buffer): RunResult {
  const r = spawnSync('openssl', args, { input, encoding: 'buffer', timeout: 30_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
}

const WEBCRYPTO_ALG: Record<string, { import: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams; sign: EcdsaParams | Algorithm }> = {
  'prime256v1': { import: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams },
  'secp384r1': { import: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } as EcdsaParams },
  'rsa': { import: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, sign: { name: 'RSASSA-PKCS1-v1_5' } },
};

/** A node:crypto key pair as WebCrypto keys, for @peculiar/x509's generators. */
export async function webKeys(keys: KeyPair): Promise<{ privateKey: CryptoKey; publicKey: CryptoKey; signingAlgorithm: Algorithm }> {
  const which = keys.privateKey.asymmetricKeyType === 'rsa' ? 'rsa' : keys.privateKey.asymmetricKeyDetails!.namedCurve!;
  const alg = WEBCRYPTO_ALG[which]!;
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8Der(keys.privateKey), alg.import, true, ['sign']);
  const publicKey = await webcrypto.subtle.importKey('spki', spkiDer(keys.publicKey), alg.import, true, ['verify']);
  return { privateKey, publicKey, signingAlgorithm: alg.sign };
}

export interface ForeignCertOptions {
  /** The subject DER (e.g. from encodeName), placed byte for byte. */
  subjectName?: Buffer;
  /** The issuer's subject DER (e.g. TestCa.subject), placed byte for byte. */
  issuerName: Buffer;
  issuerKeys: KeyPair;
  subjectKeys: KeyPair;
  uris?: string[];
  ca?: boolean;
  keyUsage?: number | undefined;
  notBefore?: Date;
  notAfter?: Date;
  extraExtensions?: px509.Extension[];
}

/** A certificate built by @peculiar/x509, not by the core: for shapes the core refuses to mint. */
export async function foreignCert(o: ForeignCertOptions): Promise<Buffer> {
  const signer = await webKeys(o.issuerKeys);
  const subject = await webKeys(o.subjectKeys);
  const extensions: px509.Extension[] = [new px509.BasicConstraintsExtension(o.ca ?? false, undefined, true)];
  if (o.keyUsage !== undefined) extensions.push(new px509.KeyUsagesExtension(o.keyUsage, true));
  if (o.uris && o.uris.length > 0) {
    extensions.push(new px509.SubjectAlternativeNameExtension(o.uris.map((u) => ({ type: 'url' as const, value: u }))));
  }
  extensions.push(...(o.extraExtensions ?? []));
  const cert = await px509.X509CertificateGenerator.create({
    serialNumber: '01' + Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex'),
    subject: o.subjectName ? new px509.Name(o.subjectName) : 'O=foreign',
    issuer: new px509.Name(o.issuerName),
    notBefore: o.notBefore ?? at(-HOUR),
    notAfter: o.notAfter ?? at(HOUR),
    signingAlgorithm: signer.signingAlgorithm,
    publicKey: subject.publicKey,
    signingKey: signer.privateKey,
    extensions,
  });
  return Buffer.from(cert.rawData);
}

export const publicKeyOf = (ca: TestCa): KeyObject => ca.keys.publicKey;
