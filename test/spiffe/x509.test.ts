import t, { type Test } from 'tap';
import fc from 'fast-check';
import { createHash, X509Certificate as NodeX509 } from 'node:crypto';
import { x509 as px509 } from './peculiar.js';
import { derFromPem, encodeName, generateKeyPair, keyIdentifier, type KeyType, KeyUsage, MeshidError, mintCertificate, mintX509Svid, OID, parseCertificate, type ParsedCertificate, pemFromDer, randomSerial, SerialSource, signedBy, SpiffeId, spkiDer, splitConcatenatedDer, SVID_SUBJECT } from '../../spiffe/index.js';
import { children, oid, readWhole, seq, TAG, tlv } from '../../spiffe/der.js';
import { at, HOUR, makeIntermediate, makeLeaf, makeRoot, NOW, openssl, tempDir, writeTemp, type TestCa } from './fixtures.js';

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const attime = String(Math.floor(NOW.getTime() / 1000));

/** The checks every minted certificate must pass in other parsers. */
function peculiarOf(der: Buffer): px509.X509Certificate { return new px509.X509Certificate(der); }

t.test('a leaf X509-SVID carries exactly one URI SAN, CA=false (critical), the leaf key usages and serverAuth+clientAuth', async (tt) => {
  const root = makeRoot();
  const leaf = makeLeaf(root, 'spiffe://example.org/ns/default/sa/web');
  const p = parseCertificate(leaf.der);
  tt.same(p.uris, ['spiffe://example.org/ns/default/sa/web']);
  tt.same(p.dnsNames, []);
  tt.equal(p.isCa, false);
  const bc = p.extensions.get(OID.basicConstraints)!;
  tt.ok(bc.critical, 'basicConstraints is critical');
  tt.equal(bc.value.toString('hex'), '3000', 'CA=false is the DER default, so the SEQUENCE is empty');
  tt.equal(p.keyUsage, KeyUsage.digitalSignature | KeyUsage.keyEncipherment | KeyUsage.keyAgreement);
  tt.ok(p.extensions.get(OID.keyUsage)!.critical, 'keyUsage is critical');
  tt.equal(p.keyUsage! & (KeyUsage.keyCertSign | KeyUsage.cRLSign), 0, 'never keyCertSign or cRLSign on a leaf');
  const eku = children(readWhole(p.extensions.get(OID.extKeyUsage)!.value, TAG.SEQUENCE).content).map((x) => x.content.toString('hex'));
  tt.same(eku, ['2b06010505070301', '2b06010505070302'], 'extKeyUsage is serverAuth then clientAuth');
  tt.ok(p.subject.equals(SVID_SUBJECT), 'subject is C=US, O=meshid');
  tt.notOk(p.extensions.get(OID.subjectAltName)!.critical, 'SAN is not critical when the subject is not empty');
  tt.ok(p.subjectKeyId!.equals(keyIdentifier(spkiDer(leaf.keys.publicKey))));
  tt.ok(p.authorityKeyId!.equals(root.parsed.subjectKeyId!), 'authorityKeyIdentifier is the issuer\'s subjectKeyIdentifier');
  tt.ok(p.issuer.equals(root.subject));
  tt.ok(p.spki.equals(spkiDer(leaf.keys.publicKey)));
  tt.ok(signedBy(p, root.parsed));
});

t.test('DNS names go into the SAN after the URI and the first becomes the CN', async (tt) => {
  const root = makeRoot();
  const leaf = makeLeaf(root, 'spiffe://example.org/web', { dnsNames: ['web.default.svc', 'web'] });
  const p = parseCertificate(leaf.der);
  tt.same(p.uris, ['spiffe://example.org/web']);
  tt.same(p.dnsNames, ['web.default.svc', 'web']);
  tt.ok(p.subject.equals(encodeName([['C', 'US'], ['O', 'meshid'], ['CN', 'web.default.svc']])));
  tt.match(new NodeX509(leaf.der).subject, /CN=web\.default\.svc/);
});

t.test('a CA certificate has CA=true (critical), keyCertSign and cRLSign, and its pathLen', async (tt) => {
  const root = makeRoot({ pathLen: 1 });
  tt.equal(root.parsed.isCa, true);
  tt.ok(root.parsed.extensions.get(OID.basicConstraints)!.critical);
  tt.equal(root.parsed.keyUsage, KeyUsage.digitalSignature | KeyUsage.keyCertSign | KeyUsage.cRLSign);
  tt.equal(root.parsed.extensions.get(OID.extKeyUsage), undefined, 'no extKeyUsage on a CA');
  tt.equal(root.parsed.authorityKeyId, undefined, 'a self-signed root has no authorityKeyIdentifier');
  tt.ok(root.parsed.issuer.equals(root.parsed.subject), 'self-issued');
  tt.ok(signedBy(root.parsed, root.parsed), 'self-signed');
  const pc = peculiarOf(root.der);
  const bc = pc.getExtension(px509.BasicConstraintsExtension)!;
  tt.equal(bc.ca, true);
  tt.equal(bc.pathLength, 1);
  tt.equal(peculiarOf(makeRoot().der).getExtension(px509.BasicConstraintsExtension)!.pathLength, undefined, 'no pathLen unless asked');
  const inter = makeIntermediate(root, { pathLen: 0 });
  tt.equal(peculiarOf(inter.der).getExtension(px509.BasicConstraintsExtension)!.pathLength, 0);
  tt.ok(inter.parsed.authorityKeyId!.equals(root.parsed.subjectKeyId!));
});

t.test('the SAN is critical when the subject is empty (RFC 5280 §4.2.1.6)', async (tt) => {
  const root = makeRoot();
  const k = generateKeyPair();
  const der = mintCertificate({ subject: seq(), notBefore: at(-HOUR), notAfter: at(HOUR), publicKeySpki: spkiDer(k.publicKey), uris: ['spiffe://example.org/x'] }, root.issuer);
  tt.ok(parseCertificate(der).extensions.get(OID.subjectAltName)!.critical);
  const dir = tempDir(tt);
  const r = openssl(['verify', '-x509_strict', '-attime', attime, '-CAfile', writeTemp(dir, 'root.pem', pemFromDer(root.der)), writeTemp(dir, 'leaf.pem', pemFromDer(der))]);
  tt.equal(r.status, 0, `openssl -x509_strict accepts it: ${r.stderr}`);
});

interface Variant { name: string; rootKey: KeyType; interKey?: KeyType; leafKey: KeyType; dnsNames?: string[] }
const variants: Variant[] = [
  { name: 'P-256 root, P-256 leaf', rootKey: 'ec-p256', leafKey: 'ec-p256' },
  { name: 'P-384 root, P-256 leaf with DNS names', rootKey: 'ec-p384', leafKey: 'ec-p256', dnsNames: ['web.example.org', 'web'] },
  { name: 'RSA root, P-256 leaf', rootKey: 'rsa-2048', leafKey: 'ec-p256' },
  { name: 'P-256 root, P-384 intermediate, RSA leaf', rootKey: 'ec-p256', interKey: 'ec-p384', leafKey: 'rsa-2048' },
  { name: 'RSA root, P-256 intermediate, P-384 leaf with a DNS name', rootKey: 'rsa-2048', interKey: 'ec-p256', leafKey: 'ec-p384', dnsNames: ['db'] },
  { name: 'P-384 root, RSA intermediate, P-256 leaf', rootKey: 'ec-p384', interKey: 'rsa-2048', leafKey: 'ec-p256' },
];

function crossCheck(tt: Test, cert: Buffer, issuer: TestCa, want: { ca: boolean; uri?: string; dnsNames?: string[]; notBefore: Date; notAfter: Date }): void {
  // @peculiar/x509
  const pc = peculiarOf(cert);
  const bc = pc.getExtension(px509.BasicConstraintsExtension);
  tt.equal(bc?.ca, want.ca, 'peculiar: basicConstraints CA');
  tt.equal(bc?.critical, true, 'peculiar: basicConstraints critical');
  const ku = pc.getExtension(px509.KeyUsagesExtension)!;
  tt.equal(ku.critical, true, 'peculiar: keyUsage critical');
  const F = px509.KeyUsageFlags;
  if (want.ca) {
    tt.equal(ku.usages, F.digitalSignature | F.keyCertSign | F.cRLSign, 'peculiar: CA key usages');
  } else {
    tt.equal(ku.usages, F.digitalSignature | F.keyEncipherment | F.keyAgreement, 'peculiar: leaf key usages');
    tt.same(pc.getExtension(px509.ExtendedKeyUsageExtension)?.usages, [SERVER_AUTH, CLIENT_AUTH], 'peculiar: EKU');
  }
  const san = pc.getExtension(px509.SubjectAlternativeNameExtension);
  const uris = san?.names.items.filter((n) => n.type === 'url').map((n) => n.value) ?? [];
  const dns = san?.names.items.filter((n) => n.type === 'dns').map((n) => n.value) ?? [];
  tt.same(uris, want.uri ? [want.uri] : [], 'peculiar: URI SANs');
  tt.same(dns, want.dnsNames ?? [], 'peculiar: DNS SANs');
  tt.equal(pc.notBefore.getTime(), Math.floor(want.notBefore.getTime() / 1000) * 1000, 'peculiar: notBefore');
  tt.equal(pc.notAfter.getTime(), Math.floor(want.notAfter.getTime() / 1000) * 1000, 'peculiar: notAfter');
  tt.ok(/^[0-7][0-9a-f]*$/i.test(pc.serialNumber) && !/^0+$/.test(pc.serialNumber), `peculiar: serial ${pc.serialNumber} is positive`);
  tt.ok(pc.serialNumber.length <= 40, 'serial is at most 20 octets');
  // node:crypto (OpenSSL)
  const nc = new NodeX509(cert);
  tt.ok(nc.verify(issuer.keys.publicKey), 'node: signature verifies with the issuer key');
  tt.ok(nc.checkIssued(new NodeX509(issuer.der)), 'node: checkIssued by the issuer certificate');
  tt.equal(nc.ca, want.ca, 'node: ca');
  const nodeSan = [...(want.uri ? [`URI:${want.uri}`] : []), ...(want.dnsNames ?? []).map((d) => `DNS:${d}`)].join(', ');
  tt.equal(nc.subjectAltName, nodeSan || undefined, 'node: subjectAltName');
  if (!want.ca) tt.same(nc.keyUsage, [SERVER_AUTH, CLIENT_AUTH], 'node: extended key usage');
  // our own parser agrees
  const ours = parseCertificate(cert);
  tt.equal(ours.serialHex.replace(/^00/, ''), pc.serialNumber.toLowerCase().replace(/^00/, ''), 'serial agrees with peculiar');
  tt.equal(ours.notAfter.getTime(), pc.notAfter.getTime());
}

for (const v of variants) {
  t.test(`minted chain (${v.name}) passes openssl verify -x509_strict, asn1parse, @peculiar/x509 and node:crypto`, async (tt) => {
    const dir = tempDir(tt);
    const root = makeRoot({ keyType: v.rootKey, pathLen: v.interKey ? 1 : 0 });
    const inter = v.interKey ? makeIntermediate(root, { keyType: v.interKey, pathLen: 0, uris: ['spiffe://example.org'] }) : undefined;
    const issuer = inter ?? root;
    const uri = 'spiffe://example.org/ns/prod/sa/api';
    const leaf = makeLeaf(issuer, uri, { keyType: v.leafKey, ...(v.dnsNames ? { dnsNames: v.dnsNames } : {}) });
    const rootPem = writeTemp(dir, 'root.pem', pemFromDer(root.der));
    const leafPem = writeTemp(dir, 'leaf.pem', pemFromDer(leaf.der));
    const args = ['verify', '-x509_strict', '-attime', attime, '-CAfile', rootPem];
    if (inter) args.push('-untrusted', writeTemp(dir, 'inter.pem', pemFromDer(inter.der)));
    for (const purpose of ['sslclient', 'sslserver']) {
      const r = openssl([...args, '-purpose', purpose, leafPem]);
      tt.equal(r.status, 0, `openssl verify -purpose ${purpose}: ${r.stdout}${r.stderr}`);
    }
    const selfCheck = openssl(['verify', '-x509_strict', '-attime', attime, '-CAfile', rootPem, rootPem]);
    tt.equal(selfCheck.status, 0, `root verifies as its own anchor: ${selfCheck.stderr}`);
    const wrongTime = openssl([...args, '-attime', String(Math.floor(at(2 * HOUR).getTime() / 1000)), leafPem]);
    tt.not(wrongTime.status, 0, 'openssl rejects the leaf after its notAfter (the check above is live)');
    for (const [name, der] of [['root', root.der], ['leaf', leaf.der], ...(inter ? [['intermediate', inter.der] as const] : [])] as const) {
      const file = writeTemp(dir, `${name}.der`, der);
      tt.equal(openssl(['asn1parse', '-inform', 'DER', '-in', file]).status, 0, `asn1parse reads the ${name} DER`);
      tt.equal(openssl(['x509', '-inform', 'DER', '-in', file, '-noout', '-text']).status, 0, `openssl x509 reads the ${name}`);
    }
    crossCheck(tt, root.der, root, { ca: true, notBefore: root.parsed.notBefore, notAfter: root.parsed.notAfter });
    if (inter) crossCheck(tt, inter.der, root, { ca: true, uri: 'spiffe://example.org', notBefore: inter.parsed.notBefore, notAfter: inter.parsed.notAfter });
    crossCheck(tt, leaf.der, issuer, { ca: false, uri, ...(v.dnsNames ? { dnsNames: v.dnsNames } : {}), notBefore: at(-HOUR), notAfter: at(HOUR) });
  });
}

t.test('a notAfter in 2050 or later is GeneralizedTime and reads back exactly', async (tt) => {
  const root = makeRoot({ notAfter: new Date('2060-07-01T12:34:56Z') });
  const notAfter = new Date('2051-02-03T04:05:06Z');
  const leaf = makeLeaf(root, 'spiffe://example.org/long', { notAfter });
  const p = parseCertificate(leaf.der);
  tt.equal(p.notAfter.toISOString(), '2051-02-03T04:05:06.000Z');
  tt.ok(leaf.der.includes(Buffer.from('\x18\x0f20510203040506Z', 'latin1')), 'encoded as GeneralizedTime');
  tt.ok(leaf.der.includes(Buffer.from('\x17\x0d', 'latin1')), 'notBefore (2030) is still UTCTime');
  tt.equal(peculiarOf(leaf.der).notAfter.toISOString(), '2051-02-03T04:05:06.000Z', 'peculiar reads the same instant');
  tt.equal(new Date(new NodeX509(leaf.der).validTo).toISOString(), '2051-02-03T04:05:06.000Z', 'node reads the same instant');
  tt.equal(parseCertificate(root.der).notAfter.toISOString(), '2060-07-01T12:34:56.000Z');
  const dir = tempDir(tt);
  const r = openssl(['verify', '-x509_strict', '-attime', String(Math.floor(new Date('2051-01-01T00:00:00Z').getTime() / 1000)),
    '-CAfile', writeTemp(dir, 'root.pem', pemFromDer(root.der)), writeTemp(dir, 'leaf.pem', pemFromDer(leaf.der))]);
  tt.equal(r.status, 0, `openssl accepts it in 2051: ${r.stderr}`);
});

t.test('parseCertificate keeps the input bytes and re-minting the parsed fields is byte-identical', async (tt) => {
  // RSA PKCS#1 v1.5 signatures are deterministic, so the whole certificate must come out identical.
  const root = makeRoot({ keyType: 'rsa-2048' });
  const k = generateKeyPair();
  const der = mintCertificate({
    subject: encodeName([['C', 'US'], ['O', 'meshid'], ['CN', 'x']]), notBefore: at(-HOUR), notAfter: at(HOUR), publicKeySpki: spkiDer(k.publicKey),
    uris: ['spiffe://example.org/a'], dnsNames: ['a.example.org'],
  }, root.issuer);
  const p = parseCertificate(der);
  tt.equal(p.der, der, 'parseCertificate(der).der is the input');
  const again = (q: ParsedCertificate, ca?: { pathLen?: number }): Buffer => mintCertificate({
    serial: Buffer.from(q.serialHex, 'hex'), subject: q.subject, notBefore: q.notBefore, notAfter: q.notAfter, publicKeySpki: q.spki,
    uris: q.uris, dnsNames: q.dnsNames, ...(ca ? { ca } : {}),
  }, root.issuer);
  tt.ok(again(p).equals(der), 'leaf re-encodes to the same bytes');
  const rootAgain = mintCertificate({
    serial: Buffer.from(root.parsed.serialHex, 'hex'), subject: root.parsed.subject, notBefore: root.parsed.notBefore,
    notAfter: root.parsed.notAfter, publicKeySpki: root.parsed.spki, ca: {},
  }, root.issuer);
  tt.ok(rootAgain.equals(root.der), 'root re-encodes to the same bytes');
  // ECDSA signatures are randomised; the signed part must still be identical.
  const ecRoot = makeRoot();
  const ecLeaf = makeLeaf(ecRoot, 'spiffe://example.org/b', { dnsNames: ['b'] });
  const ep = parseCertificate(ecLeaf.der);
  const ecAgain = parseCertificate(mintCertificate({
    serial: Buffer.from(ep.serialHex, 'hex'), subject: ep.subject, notBefore: ep.notBefore, notAfter: ep.notAfter, publicKeySpki: ep.spki,
    uris: ep.uris, dnsNames: ep.dnsNames,
  }, ecRoot.issuer));
  tt.ok(ecAgain.tbs.equals(ep.tbs), 'EC-signed leaf: tbsCertificate re-encodes to the same bytes');
});

t.test('serials are random, 16 bytes, positive and never start with a zero byte', async (tt) => {
  const seen = new Set<string>();
  const bad: string[] = [];
  const source = new SerialSource();
  for (let i = 0; i < 2000; i++) {
    const s = i % 2 === 0 ? randomSerial() : source.next();
    if (s.length !== 16 || s[0]! & 0x80 || s[0] === 0) bad.push(s.toString('hex'));
    seen.add(s.toString('hex'));
  }
  tt.same(bad, [], 'every serial is 16 bytes, positive, with a non-zero first byte');
  tt.equal(seen.size, 2000, 'no repeats in 2000 serials');
  const a = source.next();
  const b = source.next();
  const before = b.toString('hex');
  a.fill(0xaa);
  tt.equal(b.toString('hex'), before, 'a returned serial is a copy, not a view of the pool');
  tt.not(new SerialSource().next().toString('hex'), new SerialSource().next().toString('hex'), 'two sources draw from the RNG apart');
  const root = makeRoot();
  const leaf = mintX509Svid(root.issuer, { spiffeId: SpiffeId.parse('spiffe://example.org/s'), publicKeySpki: root.spki, notBefore: at(0), notAfter: at(HOUR), serial: Buffer.from('00ff', 'hex') });
  tt.equal(parseCertificate(leaf).serialHex, '00ff', 'a given serial is used, encoded as a positive INTEGER');
});

t.test('encodeName encodes C as PrintableString and the rest as UTF8String', async (tt) => {
  const name = encodeName([['C', 'US'], ['O', 'Zürich AG'], ['OU', 'mesh'], ['CN', 'x'], ['serialNumber', '42']]);
  const rdns = children(readWhole(name, TAG.SEQUENCE).content);
  const strTags = rdns.map((r) => children(children(r.content)[0]!.content)[1]!.tag);
  tt.same(strTags, [TAG.PRINTABLE_STRING, TAG.UTF8_STRING, TAG.UTF8_STRING, TAG.UTF8_STRING, TAG.PRINTABLE_STRING]);
  tt.equal(new px509.Name(name).toString(), 'C=US, O=Zürich AG, OU=mesh, CN=x, 2.5.4.5=42');
  tt.throws(() => encodeName([['XX', 'y']]), { code: 'invalid_argument', message: /unknown name attribute XX/ });
});

t.test('keyIdentifier is SHA-1 of the subjectPublicKey bits, as @peculiar/x509 computes it', async (tt) => {
  for (const type of ['ec-p256', 'rsa-2048'] as const) {
    const k = generateKeyPair(type);
    const spki = spkiDer(k.publicKey);
    const ski = await px509.SubjectKeyIdentifierExtension.create(new px509.PublicKey(spki));
    tt.equal(keyIdentifier(spki).toString('hex'), ski.keyId, type);
  }
  tt.throws(() => keyIdentifier(Buffer.from('3003020100', 'hex')), { code: 'invalid_argument' });
});

t.test('signedBy is true only for the issuing key and a known algorithm', async (tt) => {
  const root = makeRoot();
  const other = makeRoot({ cn: 'other' });
  const leaf = parseCertificate(makeLeaf(root, 'spiffe://example.org/x').der);
  tt.ok(signedBy(leaf, root.parsed));
  tt.ok(signedBy(leaf, root.keys.publicKey), 'a KeyObject works too');
  tt.notOk(signedBy(leaf, other.parsed));
  tt.notOk(signedBy({ ...leaf, signatureOid: '1.2.840.113549.1.1.5' }, root.parsed), 'sha1WithRSA is not an accepted algorithm');
  const flipped = Buffer.from(leaf.signature);
  flipped[10]! ^= 1;
  tt.notOk(signedBy({ ...leaf, signature: flipped }, root.parsed));
});

t.test('PEM round-trips, with 64-character lines, and openssl reads it', async (tt) => {
  const root = makeRoot();
  const pem = pemFromDer(root.der);
  tt.match(pem, /^-----BEGIN CERTIFICATE-----\n/);
  tt.ok(pem.split('\n').slice(1, -2).every((l) => l.length <= 64));
  tt.ok(derFromPem(pem)[0]!.equals(root.der));
  const two = pem + 'junk between\n' + pemFromDer(makeRoot().der);
  tt.equal(derFromPem(two).length, 2);
  tt.equal(derFromPem(pemFromDer(Buffer.from('abc'), 'PRIVATE KEY'), 'PRIVATE KEY')[0]!.toString(), 'abc');
  tt.same(derFromPem('no pem here'), []);
  const r = openssl(['x509', '-noout', '-fingerprint', '-sha256'], Buffer.from(pem));
  tt.equal(r.status, 0);
  const fp = createHash('sha256').update(root.der).digest('hex').toUpperCase().match(/../g)!.join(':');
  tt.match(r.stdout, fp, 'openssl reads the PEM as the same certificate');
});

t.test('splitConcatenatedDer splits the Workload API chain encoding', async (tt) => {
  const root = makeRoot();
  const inter = makeIntermediate(root);
  const leaf = makeLeaf(inter, 'spiffe://example.org/x');
  const parts = splitConcatenatedDer(Buffer.concat([leaf.der, inter.der, root.der]));
  tt.equal(parts.length, 3);
  tt.ok(parts[0]!.equals(leaf.der) && parts[1]!.equals(inter.der) && parts[2]!.equals(root.der));
  tt.same(splitConcatenatedDer(Buffer.alloc(0)), []);
  tt.throws(() => splitConcatenatedDer(Buffer.concat([leaf.der, inter.der.subarray(0, 50)])), { code: 'invalid_argument' });
});

t.test('parseCertificate rejects truncated, padded and non-certificate input as InvalidSvid', async (tt) => {
  const root = makeRoot();
  const der = makeLeaf(root, 'spiffe://example.org/x').der;
  for (const [what, bad] of [
    ['empty', Buffer.alloc(0)],
    ['truncated', der.subarray(0, der.length - 1)],
    ['trailing byte', Buffer.concat([der, Buffer.from([0])])],
    ['an OCTET STRING', Buffer.from('0400', 'hex')],
    ['an empty SEQUENCE', Buffer.from('3000', 'hex')],
    ['a SEQUENCE of garbage', Buffer.from('3003020100', 'hex')],
  ] as const) {
    tt.throws(() => parseCertificate(bad), { code: 'invalid_svid', message: /malformed certificate/ }, what);
  }
});

t.test('random mutations of a certificate never crash the parser', async (tt) => {
  const root = makeRoot();
  const der = makeLeaf(root, 'spiffe://example.org/x', { dnsNames: ['x'] }).der;
  let accepted = 0;
  fc.assert(fc.property(fc.nat(der.length - 1), fc.integer({ min: 1, max: 255 }), (pos, xor) => {
    const m = Buffer.from(der);
    m[pos]! ^= xor;
    try {
      const p = parseCertificate(m);
      accepted++;
      // A changed certificate must never still verify: that would make certificates malleable.
      if (signedBy(p, root.parsed)) throw new Error(`mutation ${pos}^${xor} still verifies`);
    } catch (err) {
      if (!(err instanceof MeshidError) || err.code !== 'invalid_svid') throw err;
    }
  }), { numRuns: 3000 });
  tt.pass(`3000 mutations; ${accepted} still parsed, none verified`);
});

t.test('every single-byte change outside the signed part is rejected or fails verification', async (tt) => {
  for (const type of ['ec-p256', 'rsa-2048'] as const) {
    const root = makeRoot({ keyType: type });
    const der = makeLeaf(root, 'spiffe://example.org/x').der;
    const tbsEnd = parseCertificate(der).tbs.byteOffset - der.byteOffset + parseCertificate(der).tbs.length;
    const stillValid: string[] = [];
    for (let pos = 0; pos < der.length; pos++) {
      if (pos >= 4 && pos < tbsEnd) continue;
      for (const xor of [0x01, 0x02, 0x40, 0x80, 0xff]) {
        const m = Buffer.from(der);
        m[pos]! ^= xor;
        try { if (signedBy(parseCertificate(m), root.parsed)) stillValid.push(`${pos}^${xor}`); } catch { /* rejected */ }
      }
    }
    tt.same(stillValid, [], `${type}: no changed certificate still verifies`);
  }
});

t.test('the outer signatureAlgorithm must be the one inside the signed part (RFC 5280 §4.1.1.2)', async (tt) => {
  const root = makeRoot({ keyType: 'rsa-2048' });
  const der = makeLeaf(root, 'spiffe://example.org/x').der;
  const [tbsT, algT, sigT] = children(readWhole(der, TAG.SEQUENCE).content);
  const noParams = seq(tbsT!.whole, seq(children(algT!.content)[0]!.whole), sigT!.whole);
  tt.throws(() => parseCertificate(noParams), { code: 'invalid_svid', message: /signatureAlgorithm/ }, 'outer identifier without the NULL the signed one has');
  const sha384 = seq(tbsT!.whole, seq(oid('1.2.840.113549.1.1.12'), tlv(TAG.NULL)), sigT!.whole);
  tt.throws(() => parseCertificate(sha384), { code: 'invalid_svid', message: /signatureAlgorithm/ }, 'outer identifier names another digest');
  const unused = Buffer.concat([Buffer.from([0x00]), sigT!.content.subarray(1)]);
  unused[0] = 1;
  tt.throws(() => parseCertificate(seq(tbsT!.whole, algT!.whole, tlv(TAG.BIT_STRING, unused))), { code: 'invalid_svid', message: /unused bits/ }, 'signature with unused bits');
});
