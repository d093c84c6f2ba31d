import t, { type Test } from 'tap';
import fc from 'fast-check';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  createCsr, encodeName, generateKeyPair, MAX_CSR_BYTES, MeshidError, parseCsr, pemFromDer, privateKeyPem, spkiDer, type KeyPair, type KeyType,
} from '../../spiffe/index.js';
import { bitString, children, oid, readWhole, seq, smallInteger, TAG, tlv } from '../../spiffe/der.js';
import { x509 as px509 } from './peculiar.js';
import { openssl, tempDir, webKeys, writeTemp } from './fixtures.js';

const ALG = {
  ecdsaSha256: seq(oid('1.2.840.10045.4.3.2')),
  ecdsaSha384: seq(oid('1.2.840.10045.4.3.3')),
  rsaSha256: seq(oid('1.2.840.113549.1.1.11'), tlv(TAG.NULL)),
};

interface CsrParts {
  version?: Buffer;
  subject?: Buffer;
  spki: Buffer;
  attributes?: Buffer;
  algorithm: Buffer;
  signer: KeyObject;
  hash: string;
  /** Sign this instead of the encoded info (to make a signature over other bytes). */
  signOver?: Buffer;
  unusedBits?: number;
}

/** A CSR assembled field by field, so a test can get exactly one thing wrong. */
function buildCsr(p: CsrParts): Buffer {
  const info = seq(p.version ?? smallInteger(0), p.subject ?? seq(), p.spki, p.attributes ?? tlv(0xa0));
  const sig = sign(p.hash, p.signOver ?? info, p.signer);
  return seq(info, p.algorithm, bitString(sig, p.unusedBits ?? 0));
}

function csrError(der: Buffer): MeshidError {
  try { parseCsr(der); } catch (err) { if (err instanceof MeshidError) return err; throw err; }
  throw new Error('parseCsr accepted it');
}

function rejects(tt: Test, der: Buffer, why: RegExp, what: string): void {
  const err = csrError(der);
  tt.equal(err.code, 'invalid_csr', `${what}: InvalidCsr`);
  tt.equal(err.field, 'csr', `${what}: field is csr`);
  tt.match(err.message, why, `${what}: message`);
}

t.test('createCsr output is a PKCS#10 request that openssl verifies, for each key type', async (tt) => {
  const dir = tempDir(tt);
  for (const type of ['ec-p256', 'ec-p384', 'rsa-2048'] as KeyType[]) {
    const k = generateKeyPair(type);
    const der = createCsr(k.privateKey, k.publicKey);
    const file = writeTemp(dir, `${type}.csr`, der);
    const r = openssl(['req', '-inform', 'DER', '-in', file, '-verify', '-noout']);
    tt.equal(r.status, 0, `${type}: openssl req -verify exits 0 (${r.stderr.trim()})`);
    tt.match(r.stdout + r.stderr, /verify OK/, `${type}: openssl says verify OK`);
    tt.equal(openssl(['asn1parse', '-inform', 'DER', '-in', file]).status, 0, `${type}: asn1parse reads it`);
    const parsed = parseCsr(der);
    tt.ok(parsed.publicKeySpki.equals(spkiDer(k.publicKey)), `${type}: the parsed SPKI is the key's`);
    tt.ok(parsed.publicKey.equals(k.publicKey), `${type}: the parsed key is the key`);
    tt.equal(parsed.subject.toString('hex'), '3000', `${type}: empty subject by default`);
    const pc = new px509.Pkcs10CertificateRequest(der);
    tt.ok(await pc.verify(), `${type}: @peculiar/x509 verifies it`);
  }
});

t.test('createCsr carries a given subject', async (tt) => {
  const k = generateKeyPair();
  const subject = encodeName([['O', 'meshid'], ['CN', 'agent']]);
  tt.ok(parseCsr(createCsr(k.privateKey, k.publicKey, subject)).subject.equals(subject));
});

t.test('createCsr refuses keys the core does not sign with', async (tt) => {
  const ed = generateKeyPairSync('ed25519');
  tt.throws(() => createCsr(ed.privateKey, ed.publicKey), { code: 'invalid_argument', message: /unsupported key type ed25519/ });
  const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
  tt.throws(() => createCsr(small.privateKey, small.publicKey), { message: /too small/ });
});

t.test('parseCsr accepts CSRs from @peculiar/x509 (P-256, P-384, RSA-2048)', async (tt) => {
  for (const type of ['ec-p256', 'ec-p384', 'rsa-2048'] as KeyType[]) {
    const k = generateKeyPair(type);
    const wk = await webKeys(k);
    const csr = await px509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=workload, O=meshid',
      keys: { privateKey: wk.privateKey, publicKey: wk.publicKey },
      signingAlgorithm: wk.signingAlgorithm,
      extensions: [new px509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'ignored.example.org' }])],
    });
    const parsed = parseCsr(Buffer.from(csr.rawData));
    tt.ok(parsed.publicKeySpki.equals(spkiDer(k.publicKey)), `${type}: key carried through`);
  }
});

t.test('parseCsr accepts CSRs made by openssl req', async (tt) => {
  const dir = tempDir(tt);
  for (const type of ['ec-p256', 'rsa-2048'] as KeyType[]) {
    const k = generateKeyPair(type);
    const keyFile = writeTemp(dir, `${type}.key`, privateKeyPem(k.privateKey));
    const out = `${dir}/${type}.csr`;
    const r = openssl(['req', '-new', '-key', keyFile, '-subj', '/CN=x/O=y', '-outform', 'DER', '-out', out]);
    tt.equal(r.status, 0, r.stderr);
    const der = readFileSync(out);
    tt.ok(parseCsr(der).publicKey.equals(k.publicKey), `${type}`);
  }
});

t.test('an empty CSR is rejected', async (tt) => {
  rejects(tt, Buffer.alloc(0), /CSR is empty/, 'empty');
  rejects(tt, 'not a buffer' as unknown as Buffer, /CSR is empty/, 'not a Buffer');
});

t.test('a CSR over MAX_CSR_BYTES is rejected and one of exactly MAX_CSR_BYTES is accepted', async (tt) => {
  const k = generateKeyPair();
  const spki = spkiDer(k.publicKey);
  const sized = (target: number): Buffer => {
    let cn = target - 200;
    for (;;) {
      const der = buildCsr({ subject: encodeName([['CN', 'x'.repeat(cn)]]), spki, algorithm: ALG.ecdsaSha256, signer: k.privateKey, hash: 'sha256' });
      if (der.length === target) return der;
      cn += target - der.length;
      if (cn < 0) throw new Error('cannot size the CSR');
    }
  };
  const atLimit = sized(MAX_CSR_BYTES);
  tt.equal(atLimit.length, 16384);
  tt.ok(parseCsr(atLimit), 'exactly 16384 bytes is accepted');
  const over = sized(MAX_CSR_BYTES + 1);
  rejects(tt, over, /CSR is 16385 bytes; the limit is 16384/, 'one byte over');
  rejects(tt, Buffer.alloc(1 << 20), /the limit is 16384/, '1 MiB of zeros');
});

t.test('a truncated CSR or one with trailing bytes is rejected as malformed', async (tt) => {
  const k = generateKeyPair();
  const der = createCsr(k.privateKey, k.publicKey);
  for (const cut of [1, 10, der.length - 1]) rejects(tt, der.subarray(0, cut), /malformed CSR/, `cut to ${cut} bytes`);
  rejects(tt, Buffer.concat([der, Buffer.from([0])]), /malformed CSR: DER: trailing bytes/, 'one trailing zero');
  rejects(tt, Buffer.concat([der, der]), /trailing bytes/, 'two CSRs back to back');
});

t.test('a CSR whose version is not 0 is rejected', async (tt) => {
  const k = generateKeyPair();
  const spki = spkiDer(k.publicKey);
  for (const v of [1, 2]) {
    rejects(tt, buildCsr({ version: smallInteger(v), spki, algorithm: ALG.ecdsaSha256, signer: k.privateKey, hash: 'sha256' }), /version must be 0/, `version ${v}`);
  }
  rejects(tt, buildCsr({ version: tlv(TAG.INTEGER, Buffer.from([0, 0])), spki, algorithm: ALG.ecdsaSha256, signer: k.privateKey, hash: 'sha256' }), /version must be 0/, 'non-minimal zero');
  tt.ok(parseCsr(buildCsr({ spki, algorithm: ALG.ecdsaSha256, signer: k.privateKey, hash: 'sha256' })), 'the same builder with version 0 is accepted (control)');
});

t.test('a CSR signed by another key than the one it carries is rejected', async (tt) => {
  const victim = generateKeyPair();
  const attacker = generateKeyPair();
  const real = createCsr(attacker.privateKey, attacker.publicKey);
  // Keep the attacker's signature, swap in the victim's SPKI.
  const [infoT, algT, sigT] = children(readWhole(real, TAG.SEQUENCE).content);
  const parts = children(infoT!.content);
  const swappedInfo = seq(parts[0]!.whole, parts[1]!.whole, spkiDer(victim.publicKey), parts[3]!.whole);
  const swapped = seq(swappedInfo, algT!.whole, sigT!.whole);
  rejects(tt, swapped, /signature does not verify with the CSR public key/, 'swapped SPKI');
  const dir = tempDir(tt);
  const r = openssl(['req', '-inform', 'DER', '-in', writeTemp(dir, 'swapped.csr', swapped), '-verify', '-noout']);
  tt.match(r.stdout + r.stderr, /verify failure/, 'openssl agrees (its exit status stays 0, the message says failure)');
  const other = buildCsr({ spki: spkiDer(victim.publicKey), algorithm: ALG.ecdsaSha256, signer: victim.privateKey, hash: 'sha256', signOver: Buffer.from('something else') });
  rejects(tt, other, /does not verify/, 'signature over other bytes');
});

t.test('a CSR with an unsupported key is rejected', async (tt) => {
  const dir = tempDir(tt);
  const fromOpenssl = (name: string, keyArgs: string[]): Buffer => {
    const key = `${dir}/${name}.key`;
    const csr = `${dir}/${name}.csr`;
    tt.equal(openssl(['genpkey', ...keyArgs, '-out', key]).status, 0, `genpkey ${name}`);
    tt.equal(openssl(['req', '-new', '-key', key, '-subj', '/CN=x', '-outform', 'DER', '-out', csr]).status, 0, `req ${name}`);
    return readFileSync(csr);
  };
  rejects(tt, fromOpenssl('ed25519', ['-algorithm', 'ed25519']), /unsupported CSR signature algorithm 1\.3\.101\.112/, 'Ed25519');
  rejects(tt, fromOpenssl('rsa1024', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024']), /RSA key of 1024 bits is too small/, 'RSA-1024');
  rejects(tt, fromOpenssl('p521', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521']), /unsupported EC curve secp521r1/, 'P-521');
  const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' });
  rejects(tt, buildCsr({ spki: spkiDer(k1.publicKey), algorithm: ALG.ecdsaSha256, signer: k1.privateKey, hash: 'sha256' }), /not usable/, 'secp256k1');
});

t.test('a signature algorithm that does not fit the key is rejected', async (tt) => {
  const ec = generateKeyPair();
  const rsa = generateKeyPair('rsa-2048');
  rejects(tt, buildCsr({ spki: spkiDer(ec.publicKey), algorithm: ALG.rsaSha256, signer: ec.privateKey, hash: 'sha256' }), /does not fit its ec key/, 'RSA OID on an EC key');
  rejects(tt, buildCsr({ spki: spkiDer(rsa.publicKey), algorithm: ALG.ecdsaSha256, signer: rsa.privateKey, hash: 'sha256' }), /does not fit its rsa key/, 'ECDSA OID on an RSA key');
  rejects(tt, buildCsr({ spki: spkiDer(ec.publicKey), algorithm: ALG.ecdsaSha384, signer: ec.privateKey, hash: 'sha256' }), /does not verify/, 'SHA-384 OID over a SHA-256 signature');
  rejects(tt, buildCsr({ spki: spkiDer(rsa.publicKey), algorithm: seq(oid('1.2.840.113549.1.1.5'), tlv(TAG.NULL)), signer: rsa.privateKey, hash: 'sha1' }), /unsupported CSR signature algorithm 1\.2\.840\.113549\.1\.1\.5/, 'SHA-1 with RSA');
});

t.test('structural damage is named: unused bits in the signature, a non-SEQUENCE key, a bad algorithm identifier', async (tt) => {
  const k = generateKeyPair();
  const spki = spkiDer(k.publicKey);
  rejects(tt, buildCsr({ spki, algorithm: ALG.ecdsaSha256, signer: k.privateKey, hash: 'sha256', unusedBits: 1 }), /unused bits/, 'unused bits');
  rejects(tt, buildCsr({ spki: tlv(TAG.OCTET_STRING, spki), algorithm: ALG.ecdsaSha256, signer: k.privateKey, hash: 'sha256' }), /subjectPKInfo is not a SEQUENCE/, 'key wrapped in an OCTET STRING');
  rejects(tt, buildCsr({ spki, algorithm: tlv(TAG.SET, oid('1.2.840.10045.4.3.2')), signer: k.privateKey, hash: 'sha256' }), /malformed CSR/, 'algorithm identifier is a SET');
  rejects(tt, buildCsr({ spki, algorithm: seq(tlv(TAG.OCTET_STRING, oid('1.2.840.10045.4.3.2').subarray(2))), signer: k.privateKey, hash: 'sha256' }), /malformed CSR/, 'algorithm is not an OID');
  rejects(tt, buildCsr({ spki, algorithm: seq(oid('1.2.840.10045.4.3.2'), tlv(TAG.NULL)), signer: k.privateKey, hash: 'sha256' }), /malformed CSR|parameters/, 'ECDSA with NULL parameters (RFC 5758 says absent)');
  rejects(tt, seq(), /malformed CSR/, 'empty SEQUENCE');
  const rsa = generateKeyPair('rsa-2048');
  tt.ok(parseCsr(buildCsr({ spki: spkiDer(rsa.publicKey), algorithm: seq(oid('1.2.840.113549.1.1.11')), signer: rsa.privateKey, hash: 'sha256' })), 'RSA with absent parameters is accepted (RFC 4055 §5)');
  rejects(tt, buildCsr({ spki: spkiDer(rsa.publicKey), algorithm: seq(oid('1.2.840.113549.1.1.11'), tlv(TAG.OCTET_STRING)), signer: rsa.privateKey, hash: 'sha256' }), /parameters it must not have/, 'RSA with non-NULL parameters');
});

/** Single-byte mutations of a valid CSR: returns the mutated CSRs that parseCsr accepted. */
function acceptedMutations(keys: KeyPair): Buffer[] {
  const der = createCsr(keys.privateKey, keys.publicKey);
  const accepted: Buffer[] = [];
  fc.assert(fc.property(fc.nat(der.length - 1), fc.integer({ min: 1, max: 255 }), (pos, xor) => {
    const m = Buffer.from(der);
    m[pos]! ^= xor;
    try {
      parseCsr(m);
      accepted.push(m);
    } catch (err) {
      if (!(err instanceof MeshidError) || err.code !== 'invalid_csr') throw err;
    }
  }), { numRuns: 1500 });
  return accepted;
}

t.test('single-byte mutations of a valid CSR never crash and are rejected', async (tt) => {
  for (const type of ['ec-p256', 'rsa-2048'] as KeyType[]) {
    const keys = generateKeyPair(type);
    const accepted = acceptedMutations(keys);
    // Anything accepted would have to be a benign re-encoding: same key, and a signature that
    // @peculiar/x509 (which shares no code with parseCsr) also verifies.
    const suspicious: string[] = [];
    for (const m of accepted) {
      try {
        const pc = new px509.Pkcs10CertificateRequest(m);
        if (!(await pc.verify()) || !Buffer.from(pc.publicKey.rawData).equals(spkiDer(keys.publicKey))) suspicious.push(m.toString('hex'));
      } catch {
        suspicious.push(m.toString('hex'));
      }
    }
    tt.same(suspicious, [], `${type}: nothing accepted that an independent verifier rejects`);
    tt.equal(accepted.length, 0, `${type}: all 1500 single-byte mutations are rejected`);
  }
});

t.test('random bytes never crash parseCsr', async (tt) => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), (bytes) => {
    try { parseCsr(Buffer.from(bytes)); } catch (err) { if (!(err instanceof MeshidError) || err.code !== 'invalid_csr') throw err; }
  }), { numRuns: 5000 });
  // Random content inside a plausible outer structure reaches the deeper checks.
  fc.assert(fc.property(fc.uint8Array({ maxLength: 120 }), fc.uint8Array({ maxLength: 20 }), (a, b) => {
    const der = seq(seq(smallInteger(0), seq(), Buffer.from(a)), Buffer.from(b), bitString(Buffer.from(a)));
    try { parseCsr(der); } catch (err) { if (!(err instanceof MeshidError) || err.code !== 'invalid_csr') throw err; }
  }), { numRuns: 3000 });
  tt.pass('8000 random inputs');
});

t.test('a CSR PEM decoded by the caller parses the same as its DER', async (tt) => {
  const k = generateKeyPair();
  const der = createCsr(k.privateKey, k.publicKey);
  const pem = pemFromDer(der, 'CERTIFICATE REQUEST');
  const back = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  tt.ok(parseCsr(back).publicKey.equals(k.publicKey));
});

