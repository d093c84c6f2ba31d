import fc from 'fast-check';
import t from 'tap';
import { formatIp, formatPrefix, parseIp, parsePrefix } from '../../bpf/address.js';

/** The WHATWG URL parser's serialization of an IPv6 address: RFC 5952 canonical text. */
function canonicalIpv6(ip: string): string {
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

t.test('IPv4 and IPv6 addresses parse to their bytes', async (t) => {
  t.same(parseIp('10.1.2.3'), { family: 4, bytes: Uint8Array.from([10, 1, 2, 3]) });
  t.same([...parseIp('fd00::1').bytes], [0xfd, 0, ...Array(13).fill(0), 1]);
  t.same([...parseIp('::ffff:192.0.2.1').bytes], [...Array(10).fill(0), 0xff, 0xff, 192, 0, 2, 1]);
  t.same([...parseIp('1:2:3:4:5:6:7:8').bytes], [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]);
  t.same([...parseIp('::').bytes], Array(16).fill(0));
  t.throws(() => parseIp('10.1.2', 'ip'), { code: 'invalid_argument', field: 'ip' });
  t.throws(() => parseIp('fd00:::1'), { code: 'invalid_argument' });
});

t.test('any 16 bytes format as canonical IPv6 text and parse back', async (t) => {
  const groups = fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 });
  fc.assert(fc.property(groups, (g) => {
    const bytes = new Uint8Array(16);
    g.forEach((v, i) => { bytes[2 * i] = v >> 8; bytes[2 * i + 1] = v & 0xff; });
    const text = formatIp(6, bytes);
    return text === canonicalIpv6(text) && Buffer.from(parseIp(text).bytes).equals(Buffer.from(bytes));
  }), { numRuns: 2000 });
});

t.test('prefixes parse with their length, refuse host bits and bad lengths, and format back', async (t) => {
  t.same(parsePrefix('10.0.0.0/8'), { family: 4, bytes: Uint8Array.from([10, 0, 0, 0]), length: 8 });
  t.equal(parsePrefix('10.0.0.1').length, 32, 'a bare address is a host prefix');
  t.equal(parsePrefix('fd00::1').length, 128);
  t.equal(formatPrefix(parsePrefix('fd00:0:0::/48')), 'fd00::/48');
  t.throws(() => parsePrefix('10.0.0.1/8', 'cidr'), { code: 'invalid_argument', field: 'cidr' });
  t.throws(() => parsePrefix('10.0.0.0/33'), { code: 'invalid_argument' });
  t.throws(() => parsePrefix('fd00::/129'), { code: 'invalid_argument' });
  t.throws(() => parsePrefix('10.0.0.0/x'), { code: 'invalid_argument' });
});
