import t from 'tap';
import fc from 'fast-check';
import {
  bitString, bool, children, decodeOid, decodeTime, explicit, octets, oid, readTlv, readWhole, seq, set, smallInteger, TAG, time, tlv,
  unsignedInteger,
} from '../../spiffe/der.js';
import { InvalidArgument } from '../../spiffe/index.js';

const hex = (b: Buffer): string => b.toString('hex');
const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

t.test('OIDs encode to the X.690 bytes and decode back', async (tt) => {
  tt.equal(hex(oid('1.2.840.10045.4.3.2')), '06082a8648ce3d040302', 'ecdsa-with-SHA256');
  tt.equal(hex(oid('1.2.840.113549.1.1.11')), '06092a864886f70d01010b', 'sha256WithRSAEncryption');
  tt.equal(hex(oid('2.5.29.17')), '0603551d11', 'subjectAltName');
  tt.equal(hex(oid('2.999.3')), '0603883703', 'X.690 §8.19.5 example: first arc 2 with a second arc over 39');
  tt.equal(hex(oid('1.3.132.0.34')), '06052b81040022', 'secp384r1');
  for (const o of ['1.2.840.10045.4.3.2', '2.5.29.17', '2.999.3', '0.9.2342.19200300.100.1.1', '1.3.6.1.4.1.311.21.7', '2.16.840.1.101.3.4.2.1']) {
    tt.equal(decodeOid(readWhole(oid(o), TAG.OID).content), o, `${o} round-trips`);
  }
});

t.test('OIDs with random arcs round-trip', async (tt) => {
  // Under arc 2 the second arc is unbounded, so the first subidentifier can take several bytes.
  const firstTwo = fc.integer({ min: 0, max: 2 }).chain((a) => fc.tuple(fc.constant(a), fc.integer({ min: 0, max: a < 2 ? 39 : 2 ** 24 })));
  const arcs = fc.tuple(firstTwo, fc.array(fc.integer({ min: 0, max: 2 ** 31 - 1 }), { maxLength: 8 })).map(([[a, b], rest]) => [a, b, rest] as const);
  fc.assert(fc.property(arcs, ([a, b, rest]) => {
    const dotted = [a, b, ...rest].join('.');
    return decodeOid(readWhole(oid(dotted), TAG.OID).content) === dotted;
  }), { numRuns: 1000 });
  tt.pass('1000 random OIDs round-tripped');
});

t.test('integers are minimal two\'s complement and positive', async (tt) => {
  tt.equal(hex(unsignedInteger(h('00007f'))), '02017f', 'leading zero bytes are trimmed');
  tt.equal(hex(unsignedInteger(h('80'))), '02020080', 'a set top bit gets a 0x00 so the value stays positive');
  tt.equal(hex(unsignedInteger(h('0000'))), '020100', 'zero is one zero byte');
  tt.equal(hex(unsignedInteger(h('00ff01'))), '020300ff01', 'trimmed then re-padded');
  tt.equal(hex(smallInteger(0)), '020100');
  tt.equal(hex(smallInteger(127)), '02017f');
  tt.equal(hex(smallInteger(128)), '02020080');
  tt.equal(hex(smallInteger(256)), '02020100');
  tt.equal(hex(smallInteger(0x7fffffff)), '02047fffffff');
  tt.throws(() => smallInteger(-1), InvalidArgument);
  tt.throws(() => smallInteger(2 ** 31), InvalidArgument);
  tt.throws(() => smallInteger(1.5), InvalidArgument);
});

t.test('lengths use the short form below 128 and the minimal long form above', async (tt) => {
  tt.equal(hex(tlv(0x04, Buffer.alloc(127)).subarray(0, 2)), '047f');
  tt.equal(hex(tlv(0x04, Buffer.alloc(128)).subarray(0, 3)), '048180');
  tt.equal(hex(tlv(0x04, Buffer.alloc(255)).subarray(0, 3)), '0481ff');
  tt.equal(hex(tlv(0x04, Buffer.alloc(256)).subarray(0, 4)), '04820100');
  tt.equal(hex(tlv(0x04, Buffer.alloc(65536)).subarray(0, 5)), '0483010000');
  tt.equal(tlv(0x30, h('01'), h('0203'), h('')).length, 5, 'parts are concatenated');
});

t.test('constructors produce the expected encodings', async (tt) => {
  tt.equal(hex(bool(true)), '0101ff', 'DER TRUE is 0xff');
  tt.equal(hex(bool(false)), '010100');
  tt.equal(hex(seq()), '3000');
  tt.equal(hex(set(h('0500'))), '31020500');
  tt.equal(hex(octets(h('abcd'))), '0402abcd');
  tt.equal(hex(bitString(h('a8'), 3)), '030203a8');
  tt.equal(hex(explicit(3, h('0500'))), 'a3020500');
  tt.equal(hex(tlv(TAG.NULL)), '0500');
});

t.test('times before 2050 are UTCTime and from 2050 GeneralizedTime (RFC 5280 §4.1.2.5)', async (tt) => {
  const enc = (iso: string): string => time(new Date(iso)).toString('latin1');
  tt.equal(enc('2049-12-31T23:59:59Z'), '\x17\x0d491231235959Z');
  tt.equal(enc('2050-01-01T00:00:00Z'), '\x18\x0f20500101000000Z');
  tt.equal(enc('1950-01-01T00:00:00Z'), '\x17\x0d500101000000Z');
  tt.equal(enc('1949-12-31T23:59:59Z'), '\x18\x0f19491231235959Z');
  tt.equal(enc('2030-06-15T08:09:10.999Z'), '\x17\x0d300615080910Z', 'milliseconds are dropped, not rounded');
});

t.test('times round-trip through decodeTime', async (tt) => {
  const read = (d: Date): Date => { const x = readTlv(time(d)); return decodeTime(x.tag, x.content); };
  fc.assert(fc.property(fc.date({ min: new Date('0100-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z'), noInvalidDate: true }), (d) => {
    const secs = new Date(Math.floor(d.getTime() / 1000) * 1000);
    return read(d).getTime() === secs.getTime();
  }), { numRuns: 3000 });
  tt.equal(read(new Date('2050-03-04T05:06:07Z')).toISOString(), '2050-03-04T05:06:07.000Z');
});

t.test('GeneralizedTime years below 100 are read as those years, not as 19xx', async (tt) => {
  const d = decodeTime(TAG.GENERALIZED_TIME, Buffer.from('00500101000000Z'));
  tt.equal(d.getUTCFullYear(), 50);
  tt.equal(decodeTime(TAG.GENERALIZED_TIME, Buffer.from('00010203040506Z')).toISOString(), '0001-02-03T04:05:06.000Z');
});

t.test('UTCTime years 50-99 are 19xx and 00-49 are 20xx', async (tt) => {
  tt.equal(decodeTime(TAG.UTC_TIME, Buffer.from('500101000000Z')).getUTCFullYear(), 1950);
  tt.equal(decodeTime(TAG.UTC_TIME, Buffer.from('991231235959Z')).getUTCFullYear(), 1999);
  tt.equal(decodeTime(TAG.UTC_TIME, Buffer.from('000101000000Z')).getUTCFullYear(), 2000);
  tt.equal(decodeTime(TAG.UTC_TIME, Buffer.from('491231235959Z')).getUTCFullYear(), 2049);
});

t.test('malformed times are rejected', async (tt) => {
  const bad: Array<[number, string, string]> = [
    [TAG.UTC_TIME, '2501010000Z', 'no seconds'],
    [TAG.UTC_TIME, '250101000000', 'no Z'],
    [TAG.UTC_TIME, '250101000000+0100', 'offset'],
    [TAG.UTC_TIME, '20250101000000Z', 'four-digit year in a UTCTime'],
    [TAG.GENERALIZED_TIME, '250101000000Z', 'two-digit year in a GeneralizedTime'],
    [TAG.GENERALIZED_TIME, '20500101000000.5Z', 'fractional seconds'],
    [TAG.UTC_TIME, '251301000000Z', 'month 13'],
    [TAG.UTC_TIME, '250001000000Z', 'month 0'],
    [TAG.UTC_TIME, '250230000000Z', 'February 30'],
    [TAG.UTC_TIME, '250100000000Z', 'day 0'],
    [TAG.UTC_TIME, '250101240000Z', 'hour 24'],
    [TAG.UTC_TIME, '250101006000Z', 'minute 60'],
    [TAG.UTC_TIME, '250101000060Z', 'second 60'],
  ];
  for (const [tag, s, what] of bad) tt.throws(() => decodeTime(tag, Buffer.from(s, 'latin1')), InvalidArgument, what);
});

t.test('readTlv reads tag, content and end in place', async (tt) => {
  const buf = h('ff 30 03 02 01 05 aa');
  const x = readTlv(buf, 1);
  tt.equal(x.tag, 0x30);
  tt.equal(hex(x.content), '020105');
  tt.equal(hex(x.whole), '3003020105');
  tt.equal(x.end, 6);
  tt.equal(x.content.buffer, buf.buffer, 'content is a view, not a copy');
  const long = tlv(0x04, Buffer.alloc(300, 7));
  tt.equal(readTlv(long).content.length, 300);
  tt.same(children(h('020101 020102 0500')).map((c) => c.tag), [2, 2, 5]);
});

t.test('readTlv rejects non-DER and out-of-bounds encodings', async (tt) => {
  const bad: Array<[string, RegExp, string]> = [
    ['30', /truncated header/, 'one byte'],
    ['', /truncated header/, 'empty'],
    ['3080 0000', /indefinite length/, 'BER indefinite length'],
    ['3081 05 0000000000', /non-minimal length/, 'long form for a short length'],
    ['3082 0080' + '00'.repeat(128), /non-minimal length/, 'leading zero length byte'],
    ['3084 00000001 00', /length too large/, 'four length bytes'],
    ['3082 01', /truncated length/, 'length bytes cut off'],
    ['3005 0000', /runs past its container/, 'content cut off'],
    ['1f01 00', /multi-byte tags/, 'high tag number form'],
  ];
  for (const [s, why, what] of bad) tt.throws(() => readTlv(h(s)), { name: 'InvalidArgument', message: why }, what);
  tt.throws(() => readTlv(h('3003 020101'), 0, 4), { message: /runs past/ }, 'limit is respected');
  tt.throws(() => children(h('020101 02')), InvalidArgument, 'a truncated child');
});

t.test('readWhole wants exactly one TLV of the expected tag', async (tt) => {
  tt.equal(readWhole(h('0500'), TAG.NULL).content.length, 0);
  tt.throws(() => readWhole(h('0500 00'), TAG.NULL, 'thing'), { message: /trailing bytes after thing/ });
  tt.throws(() => readWhole(h('0500'), TAG.SEQUENCE, 'thing'), { message: /thing has tag 0x5, want 0x30/ });
});

t.test('random bytes never make the reader throw anything but InvalidArgument', async (tt) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
    const buf = Buffer.from(bytes);
    for (const fn of [() => readTlv(buf), () => readWhole(buf), () => children(buf)]) {
      try { fn(); } catch (err) { if (!(err instanceof InvalidArgument)) throw err; }
    }
  }), { numRuns: 5000 });
  tt.pass('5000 random buffers');
});

t.test('tlv and readTlv round-trip any content length', async (tt) => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0, max: 0x1e }), (len, tag) => {
    const content = Buffer.alloc(len, 0x5a);
    const x = readWhole(tlv(tag, content));
    return x.tag === tag && x.content.equals(content);
  }), { numRuns: 200 });
  tt.pass('200 lengths');
});
