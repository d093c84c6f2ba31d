import t from 'tap';
import { generatePrivateKey, publicKeyFromPrivate } from '../../../agent/wireguard/key.js';
import { canonicalPeers, parseDump, peerDiff, type PeerStatus } from '../../../agent/wireguard/peers.js';
import { MeshidError } from '../../../spiffe/index.js';

const key = (): string => publicKeyFromPrivate(generatePrivateKey());
const own = key();

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof MeshidError) return err.field;
    throw err;
  }
  return 'nothing thrown';
}

t.test('peers are put in the canonical form that `wg show dump` prints', async (t) => {
  const k = key();
  t.same(canonicalPeers([{ publicKey: k, endpoint: '192.168.77.12:51871', allowedIps: ['10.201.2.9/24', '10.201.2.0/24', 'FD00::1/64'] }], own), [
    { publicKey: k, endpoint: '192.168.77.12:51871', allowedIps: ['10.201.2.0/24', 'fd00::/64'], persistentKeepalive: 0 },
  ]);
  t.equal(canonicalPeers([{ publicKey: k, endpoint: '[FD00::0:2]:51871', allowedIps: [], persistentKeepalive: 25 }], own)[0]!.endpoint,
    '[fd00::2]:51871');
});

t.test('bad peers are refused with the field that is wrong', async (t) => {
  const k = key();
  const ok = { publicKey: k, endpoint: '192.168.77.12:51871', allowedIps: ['10.201.2.0/24'] };
  t.equal(fieldOf(() => canonicalPeers([{ ...ok, publicKey: 'nope' }], own)), 'peers[0].publicKey');
  t.equal(fieldOf(() => canonicalPeers([{ ...ok, publicKey: own }], own)), 'peers[0].publicKey');
  t.equal(fieldOf(() => canonicalPeers([ok, ok], own)), 'peers[1].publicKey');
  for (const endpoint of ['192.168.77.12', 'node2:51871', '192.168.77.12:0', '192.168.77.12:70000', 'fd00::2:51871', '[nothost]:1']) {
    t.equal(fieldOf(() => canonicalPeers([{ ...ok, endpoint }], own)), 'peers[0].endpoint', endpoint);
  }
  t.equal(fieldOf(() => canonicalPeers([{ ...ok, allowedIps: ['10.201.2.0/24', '10.201.2.0/40'] }], own)), 'peers[0].allowedIps[1]');
  t.equal(fieldOf(() => canonicalPeers([{ ...ok, persistentKeepalive: -1 }], own)), 'peers[0].persistentKeepalive');
});

const dump = [
  'cHJpdmF0ZQ==\tBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=\t51871\toff',
  'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\t(none)\t192.168.77.12:51871\t10.201.2.0/24,10.201.3.0/24\t1764043200\t892\t1332\t25',
  'CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCA=\t(none)\t(none)\t(none)\t0\t0\t0\toff',
  '',
].join('\n');

t.test('`wg show dump` output is parsed into the device and its peers', async (t) => {
  const parsed = parseDump(dump);
  t.equal(parsed.publicKey, 'BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=');
  t.equal(parsed.listenPort, 51871);
  t.same(parsed.peers[0], {
    publicKey: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', endpoint: '192.168.77.12:51871',
    allowedIps: ['10.201.2.0/24', '10.201.3.0/24'], latestHandshake: new Date(1764043200_000), rxBytes: 892, txBytes: 1332, persistentKeepalive: 25,
  });
  t.same(parsed.peers[1], {
    publicKey: 'CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCA=', endpoint: null, allowedIps: [], latestHandshake: null,
    rxBytes: 0, txBytes: 0, persistentKeepalive: 0,
  });
  t.throws(() => parseDump('garbage'));
});

t.test('the diff adds new peers, updates changed ones, removes gone ones, and leaves equal ones alone', async (t) => {
  const [same, changed, gone, added] = [key(), key(), key(), key()];
  const status = (publicKey: string, endpoint: string, allowedIps: string[]): PeerStatus =>
    ({ publicKey, endpoint, allowedIps, latestHandshake: null, rxBytes: 0, txBytes: 0, persistentKeepalive: 0 });
  const actual = [
    status(same, '192.168.77.11:51871', ['10.201.1.0/24']),
    status(changed, '192.168.77.12:51871', ['10.201.2.0/24']),
    status(gone, '192.168.77.13:51871', ['10.201.3.0/24']),
  ];
  const desired = canonicalPeers([
    { publicKey: same, endpoint: '192.168.77.11:51871', allowedIps: ['10.201.1.0/24'] },
    { publicKey: changed, endpoint: '192.168.77.12:51871', allowedIps: ['10.201.2.0/24'], persistentKeepalive: 10 },
    { publicKey: added, endpoint: '192.168.77.14:51871', allowedIps: ['10.201.4.0/24', '10.201.5.0/24'] },
  ], own);
  const { args, changes } = peerDiff(desired, actual);
  t.same(changes, { added: [added], updated: [changed], removed: [gone] });
  t.same(args, [
    'peer', gone, 'remove',
    'peer', changed, 'endpoint', '192.168.77.12:51871', 'allowed-ips', '10.201.2.0/24', 'persistent-keepalive', '10',
    'peer', added, 'endpoint', '192.168.77.14:51871', 'allowed-ips', '10.201.4.0/24,10.201.5.0/24', 'persistent-keepalive', 'off',
  ]);
  t.same(peerDiff(desired.slice(0, 1), actual.slice(0, 1)), { args: [], changes: { added: [], updated: [], removed: [] } });
});
