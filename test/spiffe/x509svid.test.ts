import t, { type Test } from 'tap';
import { X509Certificate as NodeX509 } from 'node:crypto';
import {
  checkLeafRules, encodeName, generateKeyPair, keyIdentifier, MeshidError, mintCertificate, mintX509Svid, parseCertificate, pemFromDer,
  SpiffeId, spkiDer, SVID_SUBJECT, TrustDomain, verifyX509Svid, issuerFromKey, type X509BundleSource,
} from '../../spiffe/index.js';
import { x509 as px509 } from './peculiar.js';
import { at, foreignCert, HOUR, makeIntermediate, makeLeaf, makeRoot, NOW, openssl, tempDir, writeTemp, type TestCa } from './fixtures.js';

const TD = 'example.org';
const ID = 'spiffe://example.org/ns/default/sa/web';
const F = px509.KeyUsageFlags;
const LEAF_USAGES = F.digitalSignature | F.keyEncipherment | F.keyAgreement;

/** A bundle source holding `roots` for example.org only. */
const bundleOf = (...roots: TestCa[]): X509BundleSource => (td) => (td.name === TD ? roots.map((r) => r.der) : undefined);

function failure(fn: () => unknown): MeshidError {
  try { fn(); } catch (err) { if (err instanceof MeshidError) return err; throw err; }
  throw new Error('expected a rejection, got success');
}

/** Asserts a rejection with the given code and a message naming the rule. */
function rejects(tt: Test, fn: () => unknown, code: string, why: RegExp): void {
  const err = failure(fn);
  tt.equal(err.code, code, `code ${code}`);
  tt.match(err.message, why);
}

const attime = (d: Date): string => String(Math.floor(d.getTime() / 1000));
function opensslVerifies(tt: Test, root: TestCa, intermediates: Buffer[], leaf: Buffer, when = NOW): boolean {
  const dir = tempDir(tt);
  const args = ['verify', '-attime', attime(when), '-CAfile', writeTemp(dir, 'root.pem', pemFromDer(root.der))];
  if (intermediates.length > 0) args.push('-untrusted', writeTemp(dir, 'inter.pem', intermediates.map((d) => pemFromDer(d)).join('')));
  return openssl([...args, writeTemp(dir, 'leaf.pem', pemFromDer(leaf))]).status === 0;
}

t.test('a leaf signed by a bundle root verifies', async (tt) => {
  const root = makeRoot();
  const leaf = makeLeaf(root, ID);
  const v = verifyX509Svid([leaf.der], bundleOf(root), NOW);
  tt.equal(v.spiffeId.toString(), ID);
  tt.equal(v.path.length, 2);
  tt.ok(v.path[0]!.der.equals(leaf.der) && v.path[1]!.der.equals(root.der), 'path is leaf then root');
  tt.ok(v.leaf.der.equals(leaf.der));
  tt.equal(v.expiresAt.getTime(), at(HOUR).getTime(), 'expiresAt is the leaf notAfter when the leaf is shortest-lived');
});

t.test('a leaf signed by an intermediate that the root signed verifies', async (tt) => {
  const root = makeRoot();
  const inter = makeIntermediate(root);
  const leaf = makeLeaf(inter, ID);
  const v = verifyX509Svid([leaf.der, inter.der], bundleOf(root), NOW);
  tt.equal(v.path.length, 3);
  tt.ok(v.path[1]!.der.equals(inter.der));
  tt.ok(opensslVerifies(tt, root, [inter.der], leaf.der), 'openssl agrees');
});

t.test('two intermediates in any order, and a chain that repeats the root, verify', async (tt) => {
  const root = makeRoot();
  const i1 = makeIntermediate(root, { keyType: 'ec-p384' });
  const i2 = makeIntermediate(i1, { keyType: 'rsa-2048' });
  const leaf = makeLeaf(i2, ID);
  tt.equal(verifyX509Svid([leaf.der, i2.der, i1.der], bundleOf(root), NOW).path.length, 4);
  tt.equal(verifyX509Svid([leaf.der, i1.der, i2.der], bundleOf(root), NOW).path.length, 4, 'intermediates out of order');
  tt.equal(verifyX509Svid([leaf.der, i2.der, i1.der, root.der], bundleOf(root), NOW).path.length, 4, 'the root sent along is not counted twice');
  const other = makeRoot();
  tt.equal(verifyX509Svid([leaf.der, i2.der, i1.der], bundleOf(other, root), NOW).path.length, 4, 'the right root is found among several');
});

t.test('expiresAt is the earliest notAfter on the path', async (tt) => {
  const root = makeRoot({ notAfter: at(10 * HOUR) });
  const inter = makeIntermediate(root, { notAfter: at(2 * HOUR) });
  const leaf = makeLeaf(inter, ID, { notAfter: at(5 * HOUR) });
  tt.equal(verifyX509Svid([leaf.der, inter.der], bundleOf(root), NOW).expiresAt.getTime(), at(2 * HOUR).getTime(), 'intermediate is earliest');
  const shortRoot = makeRoot({ notAfter: at(3 * HOUR) });
  const leaf2 = makeLeaf(shortRoot, ID, { notAfter: at(5 * HOUR) });
  tt.equal(verifyX509Svid([leaf2.der], bundleOf(shortRoot), NOW).expiresAt.getTime(), at(3 * HOUR).getTime(), 'root is earliest');
});

t.test('a bundle of another trust domain does not anchor the chain', async (tt) => {
  const root = makeRoot();
  const otherTdRoot = makeRoot();
  const leaf = makeLeaf(root, ID);
  rejects(tt, () => verifyX509Svid([leaf.der], bundleOf(otherTdRoot), NOW), 'untrusted', /does not lead to an authority of trust domain "example.org"/);
  const foreignLeaf = makeLeaf(root, 'spiffe://other.org/web');
  rejects(tt, () => verifyX509Svid([foreignLeaf.der], bundleOf(root), NOW), 'untrusted', /no bundle for trust domain "other.org"/);
});

t.test('a missing or empty bundle is untrusted', async (tt) => {
  const root = makeRoot();
  const leaf = makeLeaf(root, ID);
  rejects(tt, () => verifyX509Svid([leaf.der], () => undefined, NOW), 'untrusted', /no bundle for trust domain "example.org"/);
  rejects(tt, () => verifyX509Svid([leaf.der], () => [], NOW), 'untrusted', /no bundle/);
});

t.test('an expired leaf is rejected, and notAfter itself is still valid', async (tt) => {
  const root = makeRoot();
  const leaf = makeLeaf(root, ID, { notAfter: at(HOUR) });
  tt.ok(verifyX509Svid([leaf.der], bundleOf(root), at(HOUR)), 'valid at exactly notAfter (RFC 5280 is inclusive)');
  rejects(tt, () => verifyX509Svid([leaf.der], bundleOf(root), at(HOUR + 1000)), 'invalid_svid', /leaf certificate expired at/);
  tt.notOk(opensslVerifies(tt, root, [], leaf.der, at(HOUR + 1000)), 'openssl agrees');
});

t.test('a leaf that is not valid yet is rejected', async (tt) => {
  const root = makeRoot();
  const leaf = makeLeaf(root, ID, { notBefore: at(HOUR), notAfter: at(2 * HOUR) });
  rejects(tt, () => verifyX509Svid([leaf.der], bundleOf(root), NOW), 'invalid_svid', /leaf certificate is not valid before/);
  tt.ok(verifyX509Svid([leaf.der], bundleOf(root), at(HOUR)), 'valid from notBefore on');
});

t.test('an expired or not-yet-valid intermediate is rejected', async (tt) => {
  const root = makeRoot();
  const old = makeIntermediate(root, { notBefore: at(-10 * HOUR), notAfter: at(-HOUR) });
  const leaf = makeLeaf(old, ID);
  rejects(tt, () => verifyX509Svid([leaf.der, old.der], bundleOf(root), NOW), 'invalid_svid', /intermediate certificate expired/);
  tt.notOk(opensslVerifies(tt, root, [old.der], leaf.der), 'openssl agrees');
  const future = makeIntermediate(root, { notBefore: at(HOUR), notAfter: at(10 * HOUR) });
  const leaf2 = makeLeaf(future, ID);
  rejects(tt, () => verifyX509Svid([leaf2.der, future.der], bundleOf(root), NOW), 'invalid_svid', /intermediate certificate is not valid before/);
});

t.test('an expired bundle authority is rejected', async (tt) => {
  const root = makeRoot({ notBefore: at(-10 * HOUR), notAfter: at(-HOUR) });
  const leaf = makeLeaf(root, ID);
  rejects(tt, () => verifyX509Svid([leaf.der], bundleOf(root), NOW), 'invalid_svid', /bundle authority expired/);
});

t.test('a leaf signed by an unrelated key under the same issuer name is untrusted', async (tt) => {
  const root = makeRoot({ cn: `twin ${process.pid}` });
  const impostor = makeRoot({ cn: `twin ${process.pid}` });
  tt.ok(root.subject.equals(impostor.subject), 'same subject bytes, different keys');
  const leaf = makeLeaf(impostor, ID);
  rejects(tt, () => verifyX509Svid([leaf.der], bundleOf(root), NOW), 'untrusted', /does not lead/);
  rejects(tt, () => verifyX509Svid([leaf.der, impostor.der], bundleOf(root), NOW), 'untrusted', /does not lead/);
  tt.notOk(opensslVerifies(tt, root, [], leaf.der), 'openssl agrees');
});

t.test('a missing intermediate leaves the chain untrusted', async (tt) => {
  const root = makeRoot();
  const inter = makeIntermediate(root);
  const leaf = makeLeaf(inter, ID);
  rejects(tt, () => verifyX509Svid([leaf.der], bundleOf(root), NOW), 'untrusted', /does not lead/);
});

t.test('an intermediate that is not a CA cannot sign a leaf', async (tt) => {
  const root = makeRoot();
  const k = generateKeyPair();
  const subject = encodeName([['O', 'not a ca'], ['CN', `${process.pid}`]]);
  const notCaDer = mintCertificate({ subject, notBefore: at(-HOUR), notAfter: at(HOUR), publicKeySpki: spkiDer(k.publicKey), uris: ['spiffe://example.org/signer'] }, root.issuer);
  const notCa = issuerFromKey(subject, keyIdentifier(spkiDer(k.publicKey)), k.privateKey);
  const leafDer = mintX509Svid(notCa, { spiffeId: SpiffeId.parse(ID), publicKeySpki: spkiDer(generateKeyPair().publicKey), notBefore: at(-HOUR), notAfter: at(HOUR) });
  rejects(tt, () => verifyX509Svid([leafDer, notCaDer], bundleOf(root), NOW), 'invalid_svid', /intermediate certificate is not a CA/);
  tt.notOk(opensslVerifies(tt, root, [notCaDer], leafDer), 'openssl agrees');
});

t.test('a CA intermediate without keyCertSign cannot sign a leaf', async (tt) => {
  const root = makeRoot();
  const interKeys = generateKeyPair();
  const interName = encodeName([['O', 'no certsign'], ['CN', `${process.pid}`]]);
  const interDer = await foreignCert({
    subjectName: interName, issuerName: root.subject, issuerKeys: root.keys, subjectKeys: interKeys, ca: true,
    keyUsage: F.digitalSignature | F.cRLSign,
  });
  tt.ok(parseCertificate(interDer).subject.equals(interName), 'peculiar encodes the same subject bytes');
  const leafDer = mintX509Svid(issuerFromKey(interName, keyIdentifier(spkiDer(interKeys.publicKey)), interKeys.privateKey), {
    spiffeId: SpiffeId.parse(ID), publicKeySpki: spkiDer(generateKeyPair().publicKey), notBefore: at(-HOUR), notAfter: at(HOUR),
  });
  rejects(tt, () => verifyX509Svid([leafDer, interDer], bundleOf(root), NOW), 'invalid_svid', /intermediate certificate keyUsage lacks keyCertSign/);
});

t.test('a bundle authority that is not a CA does not anchor a chain', async (tt) => {
  const k = generateKeyPair();
  const subject = encodeName([['CN', `leafy ${process.pid}`]]);
  const issuer = issuerFromKey(subject, keyIdentifier(spkiDer(k.publicKey)), k.privateKey);
  const selfSignedLeaf = mintCertificate({ subject, notBefore: at(-HOUR), notAfter: at(HOUR), publicKeySpki: spkiDer(k.publicKey), uris: ['spiffe://example.org/x'] }, issuer);
  const leafDer = mintX509Svid(issuer, { spiffeId: SpiffeId.parse(ID), publicKeySpki: spkiDer(generateKeyPair().publicKey), notBefore: at(-HOUR), notAfter: at(HOUR) });
  rejects(tt, () => verifyX509Svid([leafDer], () => [selfSignedLeaf], NOW), 'invalid_svid', /bundle authority is not a CA/);
});

/** A leaf built by @peculiar/x509 under `root`, with the given shape. */
const foreignLeaf = (root: TestCa, o: { uris?: string[]; ca?: boolean; keyUsage?: number | undefined; extra?: InstanceType<typeof px509.Extension>[] }): Promise<Buffer> =>
  foreignCert({
    issuerName: root.subject, issuerKeys: root.keys, subjectKeys: generateKeyPair(), uris: o.uris ?? [ID], ca: o.ca ?? false,
    keyUsage: 'keyUsage' in o ? o.keyUsage : LEAF_USAGES, ...(o.extra ? { extraExtensions: o.extra } : {}),
  });

t.test('a leaf with the SVID shape built by @peculiar/x509 verifies (control for the foreign-leaf cases)', async (tt) => {
  const root = makeRoot();
  const der = await foreignLeaf(root, {});
  tt.equal(verifyX509Svid([der], bundleOf(root), NOW).spiffeId.toString(), ID);
});

t.test('a leaf with two URI SANs is rejected', async (tt) => {
  const root = makeRoot();
  const der = mintCertificate({ subject: SVID_SUBJECT, notBefore: at(-HOUR), notAfter: at(HOUR), publicKeySpki: spkiDer(generateKeyPair().publicKey), uris: [ID, 'spiffe://example.org/other'] }, root.issuer);
  rejects(tt, () => verifyX509Svid([der], bundleOf(root), NOW), 'invalid_svid', /exactly one URI SAN; this one has 2/);
  const foreign = await foreignLeaf(root, { uris: [ID, 'https://example.org/'] });
  rejects(tt, () => verifyX509Svid([foreign], bundleOf(root), NOW), 'invalid_svid', /exactly one URI SAN; this one has 2/);
});

t.test('a leaf without a URI SAN is rejected', async (tt) => {
  const root = makeRoot();
  const der = mintCertificate({ subject: SVID_SUBJECT, notBefore: at(-HOUR), notAfter: at(HOUR), publicKeySpki: spkiDer(generateKeyPair().publicKey), dnsNames: ['web'] }, root.issuer);
  rejects(tt, () => verifyX509Svid([der], bundleOf(root), NOW), 'invalid_svid', /this one has 0/);
  const der11 = await foreignLeaf(root, { uris: [] });
  rejects(tt, () => verifyX509Svid([der11], bundleOf(root), NOW), 'invalid_svid', /this one has 0/);
});

t.test('a leaf whose URI SAN is not a SPIFFE ID, or is a trust domain ID, is rejected', async (tt) => {
  const root = makeRoot();
  rejects(tt, () => verifyX509Svid([makeLeaf(root, 'spiffe://example.org').der], bundleOf(root), NOW), 'invalid_svid', /has no path/);
  const der12 = await foreignLeaf(root, { uris: ['https://example.org/web'] });
  rejects(tt, () => verifyX509Svid([der12], bundleOf(root), NOW), 'invalid_svid', /not a SPIFFE ID/);
  const der13 = await foreignLeaf(root, { uris: ['spiffe://example.org/a/../b'] });
  rejects(tt, () => verifyX509Svid([der13], bundleOf(root), NOW), 'invalid_svid', /not a SPIFFE ID/);
});

t.test('a leaf with CA=true is rejected', async (tt) => {
  const root = makeRoot();
  const der = mintCertificate({ subject: SVID_SUBJECT, notBefore: at(-HOUR), notAfter: at(HOUR), publicKeySpki: spkiDer(generateKeyPair().publicKey), uris: [ID], ca: {} }, root.issuer);
  rejects(tt, () => verifyX509Svid([der], bundleOf(root), NOW), 'invalid_svid', /CA=true/);
  const der14 = await foreignLeaf(root, { ca: true });
  rejects(tt, () => verifyX509Svid([der14], bundleOf(root), NOW), 'invalid_svid', /CA=true/);
});

t.test('a leaf with keyCertSign or cRLSign is rejected', async (tt) => {
  const root = makeRoot();
  const der1 = await foreignLeaf(root, { keyUsage: F.digitalSignature | F.keyCertSign });
  rejects(tt, () => verifyX509Svid([der1], bundleOf(root), NOW), 'invalid_svid', /keyCertSign/);
  const der2 = await foreignLeaf(root, { keyUsage: F.digitalSignature | F.cRLSign });
  rejects(tt, () => verifyX509Svid([der2], bundleOf(root), NOW), 'invalid_svid', /cRLSign/);
});

t.test('a leaf without keyUsage, or without digitalSignature, is rejected', async (tt) => {
  const root = makeRoot();
  const der3 = await foreignLeaf(root, { keyUsage: undefined });
  rejects(tt, () => verifyX509Svid([der3], bundleOf(root), NOW), 'invalid_svid', /no keyUsage extension/);
  const der4 = await foreignLeaf(root, { keyUsage: F.keyEncipherment });
  rejects(tt, () => verifyX509Svid([der4], bundleOf(root), NOW), 'invalid_svid', /lacks digitalSignature/);
});

t.test('an empty chain and undecodable certificates are rejected', async (tt) => {
  const root = makeRoot();
  rejects(tt, () => verifyX509Svid([], bundleOf(root), NOW), 'invalid_svid', /chain is empty/);
  rejects(tt, () => verifyX509Svid([Buffer.from('garbage')], bundleOf(root), NOW), 'invalid_svid', /malformed certificate/);
  const leaf = makeLeaf(root, ID);
  rejects(tt, () => verifyX509Svid([leaf.der, Buffer.from('3000', 'hex')], bundleOf(root), NOW), 'invalid_svid', /malformed certificate/);
});

t.test('a CA with pathLen 0 cannot have an intermediate CA below it', async (tt) => {
  const root = makeRoot({ pathLen: 0 });
  const inter = makeIntermediate(root);
  const leaf = makeLeaf(inter, ID);
  rejects(tt, () => verifyX509Svid([leaf.der, inter.der], bundleOf(root), NOW), 'invalid_svid', /pathLen/);
  tt.notOk(opensslVerifies(tt, root, [inter.der], leaf.der), 'openssl agrees');
  tt.ok(verifyX509Svid([makeLeaf(root, ID).der], bundleOf(root), NOW), 'pathLen 0 still signs leaves');
  const root1 = makeRoot({ pathLen: 1 });
  const i1 = makeIntermediate(root1);
  const i2 = makeIntermediate(i1);
  const deep = makeLeaf(i2, ID);
  rejects(tt, () => verifyX509Svid([deep.der, i2.der, i1.der], bundleOf(root1), NOW), 'invalid_svid', /pathLen/);
  tt.notOk(opensslVerifies(tt, root1, [i2.der, i1.der], deep.der), 'openssl agrees');
  const i1Limited = makeIntermediate(makeRoot(), { pathLen: 0 });
  tt.ok(verifyX509Svid([makeLeaf(i1Limited, ID).der], () => [i1Limited.der], NOW), 'an intermediate with pathLen 0 as the anchor signs leaves');
  const okRoot = makeRoot({ pathLen: 1 });
  const okInter = makeIntermediate(okRoot, { pathLen: 0 });
  tt.ok(verifyX509Svid([makeLeaf(okInter, ID).der, okInter.der], bundleOf(okRoot), NOW), 'root pathLen 1 allows one intermediate');
});

t.test('an unknown critical extension anywhere on the path is rejected; a non-critical one is ignored', async (tt) => {
  const root = makeRoot();
  const unknown = (critical: boolean): InstanceType<typeof px509.Extension> => new px509.Extension('1.3.6.1.4.1.99999.1', critical, new Uint8Array([0x05, 0x00]));
  tt.ok(verifyX509Svid([await foreignLeaf(root, { extra: [unknown(false)] })], bundleOf(root), NOW), 'non-critical unknown extension');
  const der5 = await foreignLeaf(root, { extra: [unknown(true)] });
  rejects(tt, () => verifyX509Svid([der5], bundleOf(root), NOW), 'invalid_svid', /critical extension 1\.3\.6\.1\.4\.1\.99999\.1/);
  const interKeys = generateKeyPair();
  const interName = encodeName([['O', 'crit'], ['CN', `${process.pid}`]]);
  const interDer = await foreignCert({
    subjectName: interName, issuerName: root.subject, issuerKeys: root.keys, subjectKeys: interKeys, ca: true,
    keyUsage: F.keyCertSign | F.cRLSign, extraExtensions: [unknown(true)],
  });
  const leafDer = mintX509Svid(issuerFromKey(interName, keyIdentifier(spkiDer(interKeys.publicKey)), interKeys.privateKey), {
    spiffeId: SpiffeId.parse(ID), publicKeySpki: spkiDer(generateKeyPair().publicKey), notBefore: at(-HOUR), notAfter: at(HOUR),
  });
  rejects(tt, () => verifyX509Svid([leafDer, interDer], bundleOf(root), NOW), 'invalid_svid', /critical extension/);
  tt.notOk(opensslVerifies(tt, root, [interDer], leafDer), 'openssl agrees');
});

t.test('checkLeafRules returns the SPIFFE ID of a good leaf', async (tt) => {
  const root = makeRoot();
  tt.equal(checkLeafRules(parseCertificate(makeLeaf(root, ID).der)).toString(), ID);
  tt.throws(() => checkLeafRules(root.parsed), { code: 'invalid_svid' }, 'a CA is not a leaf');
});

t.test('mintX509Svid puts the ID in the SAN, the first DNS name in the CN, and uses the given serial', async (tt) => {
  const root = makeRoot();
  const k = generateKeyPair();
  const der = mintX509Svid(root.issuer, {
    spiffeId: TrustDomain.parse(TD).child('ns', 'a', 'sa', 'b'), publicKeySpki: spkiDer(k.publicKey), notBefore: at(-HOUR), notAfter: at(HOUR),
    dnsNames: ['b.a.svc'], serial: Buffer.from('0102', 'hex'),
  });
  const nc = new NodeX509(der);
  tt.equal(nc.subjectAltName, 'URI:spiffe://example.org/ns/a/sa/b, DNS:b.a.svc');
  tt.match(nc.subject, /CN=b\.a\.svc/);
  tt.equal(nc.serialNumber, '0102');
  tt.ok(nc.checkPrivateKey(k.privateKey), 'the certificate carries the requested public key');
  const plain = mintX509Svid(root.issuer, { spiffeId: SpiffeId.parse(ID), publicKeySpki: spkiDer(k.publicKey), notBefore: at(-HOUR), notAfter: at(HOUR) });
  tt.ok(parseCertificate(plain).subject.equals(SVID_SUBJECT));
});
