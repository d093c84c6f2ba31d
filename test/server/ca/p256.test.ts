// server/ca/p256.ts: the native ECDSA P-256 path, checked against node:crypto
// (an independent implementation of the same signature scheme's encoding
// rules) and openssl, and differentially against parseCsr's node:crypto path.
import { execFileSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import { systemClock } from '../../../common/clock.js';
import { silentLogger } from '../../../common/log.js';
import { CertificateAuthority, MemoryCaJournal, MemoryKeyManager, P256 } from '../../../server/ca/index.js';
import { createCsr, generateKeyPair, MeshidError, p256Point, parseCsr, pemFromDer, SpiffeId, spkiDer, TrustDomain } from '../../../spiffe/index.js';

// built by `make native` (setup.sh): without it every test here fails rather than skips
const p256 = P256.load();
const pointOf = (k: KeyObject): Buffer => p256Point(spkiDer(k))!;

t.test('the native P-256 addon is built (make native), as meshid-server runs with it', async (t) => {
  t.ok(p256, 'P256.load() found server/ca/p256/build/Release/p256.node');
});

t.test('verify accepts what node:crypto signs and refuses another message, another key, a changed signature, a point off the curve and a compressed point', async (t) => {
  const a = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const b = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  let accepted = 0;
  for (let i = 0; i < 200; i++) {
    const message = randomBytes(1 + (i % 300));
    if (p256!.verify(pointOf(a.publicKey), message, sign('sha256', message, a.privateKey))) accepted++;
  }
  t.equal(accepted, 200, 'every node:crypto signature verifies');
  const message = randomBytes(64);
  const signature = sign('sha256', message, a.privateKey);
  t.notOk(p256!.verify(pointOf(a.publicKey), Buffer.concat([message, Buffer.from([0])]), signature), 'another message');
  t.notOk(p256!.verify(pointOf(b.publicKey), message, signature), 'another key');
  const changed = Buffer.from(signature);
  changed[changed.length - 1]! ^= 1;
  t.notOk(p256!.verify(pointOf(a.publicKey), message, changed), 'a changed signature');
  const offCurve = Buffer.from(pointOf(a.publicKey));
  offCurve[64]! ^= 1;
  t.notOk(p256!.verify(offCurve, message, signature), 'a point not on the curve');
  const compressed = Buffer.concat([Buffer.from([0x02 + (pointOf(a.publicKey)[64]! & 1)]), pointOf(a.publicKey).subarray(1, 33)]);
  t.notOk(p256!.verify(compressed, message, signature), 'a compressed point (only the uncompressed form is taken)');
  t.notOk(p256!.verify(Buffer.concat([pointOf(a.publicKey), Buffer.from([0])]), message, signature), 'a point with a trailing byte');
  t.notOk(p256!.verify(pointOf(a.publicKey), message, Buffer.concat([signature, Buffer.from([0])])), 'a signature with a trailing byte (not DER)');
  t.throws(() => p256!.verify('x' as unknown as Buffer, message, signature), /three Buffers/);
});

t.test('signerFor signs P-256 keys so that node:crypto and openssl verify, and declines other keys', async (t) => {
  const k = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const signer = p256!.signerFor(k.privateKey);
  t.type(signer, 'function');
  let ok = 0;
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const message = randomBytes(100);
    const signature = signer!(message);
    seen.add(signature.toString('hex'));
    if (verify('sha256', message, k.publicKey, signature)) ok++;
  }
  t.equal(ok, 200, 'node:crypto verifies every signature');
  t.equal(seen.size, 200, 'each signature is fresh (random nonce)');
  const dir = mkdtempSync(join(tmpdir(), 'meshid-p256-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const message = randomBytes(333);
  writeFileSync(join(dir, 'msg'), message);
  writeFileSync(join(dir, 'sig'), signer!(message));
  writeFileSync(join(dir, 'pub.pem'), k.publicKey.export({ type: 'spki', format: 'pem' }));
  t.match(execFileSync('openssl', ['dgst', '-sha256', '-verify', join(dir, 'pub.pem'), '-signature', join(dir, 'sig'), join(dir, 'msg')]).toString(), /Verified OK/);
  t.equal(p256!.signerFor(generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey), undefined, 'P-384 stays on node:crypto');
  t.equal(p256!.signerFor(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey), undefined, 'RSA stays on node:crypto');
});

t.test('parseCsr with the native verifier accepts and refuses exactly what the node:crypto path does, over single-byte mutations', async (t) => {
  const k = generateKeyPair('ec-p256');
  const der = createCsr(k.privateKey, k.publicKey);
  const fast = { verifyP256: (p: Buffer, m: Buffer, s: Buffer) => p256!.verify(p, m, s) };
  const outcome = (csr: Buffer, options = {}): string => {
    try { parseCsr(csr, options); return 'accepted'; } catch (err) { if (err instanceof MeshidError) return err.code; throw err; }
  };
  t.equal(outcome(der, fast), 'accepted');
  t.ok(parseCsr(der, fast).publicKey.equals(k.publicKey), 'the public key is still there, imported on use');
  let disagreements = 0;
  fc.assert(fc.property(fc.nat(der.length - 1), fc.integer({ min: 1, max: 255 }), (pos, xor) => {
    const m = Buffer.from(der);
    m[pos]! ^= xor;
    if (outcome(m) !== outcome(m, fast)) disagreements++;
  }), { numRuns: 1500 });
  t.equal(disagreements, 0, 'both paths give the same outcome for 1,500 mutations');
  const other = generateKeyPair('ec-p256');
  const swapped = createCsr(other.privateKey, other.publicKey);
  // the other key's signature under this key's SPKI
  const forged = Buffer.from(der.toString('hex').replace(spkiDer(k.publicKey).toString('hex'), spkiDer(other.publicKey).toString('hex')), 'hex');
  t.equal(outcome(forged, fast), 'invalid_csr', 'a CSR whose signature is not by its key');
  t.equal(outcome(swapped, fast), 'accepted');
});

t.test('a CA with the accelerator signs X509-SVIDs natively that openssl verifies against the bundle', async (t) => {
  let nativeSignatures = 0;
  const counting = Object.create(p256!) as P256;
  counting.signerFor = (key) => {
    const sign = p256!.signerFor(key);
    return sign && ((m: Buffer) => { nativeSignatures++; return sign(m); });
  };
  const ca = new CertificateAuthority({
    trustDomain: TrustDomain.parse('example.org'), keys: new MemoryKeyManager(), journal: new MemoryCaJournal(), clock: systemClock, logger: silentLogger,
    caTtlSeconds: 86400, x509SvidTtlSeconds: 3600, jwtSvidTtlSeconds: 300, keyType: 'ec-p256', caSubject: [['O', 'p256 test']], p256: counting,
  });
  await ca.start();
  t.teardown(() => ca.stop());
  const leaf = generateKeyPair('ec-p256');
  const before = nativeSignatures;
  const { publicKeySpki } = ca.parseCsr(createCsr(leaf.privateKey, leaf.publicKey));
  const svid = ca.signX509Svid(SpiffeId.parse('spiffe://example.org/ns/default/sa/web'), publicKeySpki);
  t.equal(nativeSignatures, before + 1, 'the SVID was signed by the native signer');
  const dir = mkdtempSync(join(tmpdir(), 'meshid-p256-ca-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'bundle.pem'), ca.bundle().x509Pem());
  writeFileSync(join(dir, 'svid.pem'), pemFromDer(svid.certChainDer[0]!));
  t.match(execFileSync('openssl', ['verify', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'svid.pem')]).toString(), /svid\.pem: OK/);
  t.ok(createPublicKey({ key: publicKeySpki, format: 'der', type: 'spki' }).equals(leaf.publicKey), 'the SVID carries the CSR key');
});
