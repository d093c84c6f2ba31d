import t from 'tap';
import { canonicalCidr, cidrRange, rangeContains, rangesOverlap } from '../../common/cidr.js';

t.test('IPv4 CIDRs are canonical with host bits cleared; a bare address is a /32', async (t) => {
  t.equal(canonicalCidr('10.201.2.0/24'), '10.201.2.0/24');
  t.equal(canonicalCidr('10.201.2.77/24'), '10.201.2.0/24');
  t.equal(canonicalCidr('10.201.2.77'), '10.201.2.77/32');
  t.equal(canonicalCidr('0.0.0.0/0'), '0.0.0.0/0');
  t.equal(canonicalCidr('192.168.1.255/23'), '192.168.0.0/23');
});

t.test('IPv6 CIDRs are canonical as `wg show` prints them (RFC 5952)', async (t) => {
  t.equal(canonicalCidr('FD00:0:0:0::1/64'), 'fd00::/64');
  t.equal(canonicalCidr('fd00:1:2:3:4:5:6:7/128'), 'fd00:1:2:3:4:5:6:7/128');
  t.equal(canonicalCidr('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1/128');
  t.equal(canonicalCidr('::/0'), '::/0');
  t.equal(canonicalCidr('::ffff:10.1.2.3/128'), '::ffff:a01:203/128');
  t.equal(canonicalCidr('fd00:0:1::/48'), 'fd00:0:1::/48');
});

t.test('text that is not a CIDR is refused', async (t) => {
  for (const bad of ['', '10.0.0.0/33', '10.0.0/8', 'fd00::/129', 'host/24', '10.0.0.0/', '10.0.0.0/ab', '1.2.3.4/-1']) {
    t.equal(canonicalCidr(bad), null, JSON.stringify(bad));
  }
});

t.test('cidrRange gives first and last address; overlap and containment follow from them', async (tt) => {
  const a = cidrRange('10.201.1.7/24')!;
  tt.equal(a.text, '10.201.1.0/24');
  tt.equal(a.first, 0x0ac90100n);
  tt.equal(a.last, 0x0ac901ffn);
  tt.ok(rangesOverlap(a, cidrRange('10.201.0.0/16')!), 'a /16 around it overlaps');
  tt.ok(rangesOverlap(a, cidrRange('10.201.1.128/25')!), 'a /25 inside it overlaps');
  tt.notOk(rangesOverlap(a, cidrRange('10.201.2.0/24')!), 'the next /24 does not');
  tt.notOk(rangesOverlap(a, cidrRange('::/0')!), 'families never overlap');
  tt.ok(rangeContains(a, '10.201.1.255'));
  tt.notOk(rangeContains(a, '10.201.2.0'));
  tt.notOk(rangeContains(a, 'fd00::1'));
  tt.notOk(rangeContains(a, 'not an ip'));
  const v6 = cidrRange('fd00:1::/64')!;
  tt.ok(rangeContains(v6, 'fd00:1::ffff:1'));
  tt.notOk(rangeContains(v6, 'fd00:2::1'));
  tt.equal(cidrRange('999.1.1.1/99'), null, 'not a CIDR');
  tt.equal(cidrRange('10.0.0.0/33'), null, 'prefix too long');
});
