import t from 'tap';
import { AgentState } from '../../../agent/sync/state.js';
import { NodeMembership } from '../../../agent/node/index.js';
import type { ServerConnection } from '../../../agent/serverapi/connection.js';
import type { PeerChanges, WireGuardManager, WireGuardPeer } from '../../../agent/wireguard/index.js';
import { JsonLogger, MemoryLogSink } from '../../../common/log.js';
import { delta, makeCa, nodes, snapshot } from '../mutualauth/fixtures.js';

/** A WireGuard device whose setPeers() calls complete when the test says so. */
class SlowDevice {
  readonly publicKey = 'bG9jYWwta2V5LWxvY2FsLWtleS1sb2NhbC1rZXktbG8=';
  readonly calls: { peers: readonly WireGuardPeer[]; finish: (err?: Error) => void }[] = [];
  setPeers(peers: readonly WireGuardPeer[]): Promise<PeerChanges> {
    return new Promise((resolve, reject) => {
      this.calls.push({ peers, finish: (err) => (err ? reject(err) : resolve({ added: [], updated: [], removed: [] })) });
    });
  }
}

const connection = { unary: async () => ({ endpoints: [] }) } as unknown as ServerConnection;
const key = (id: number): string => Buffer.alloc(32, id).toString('base64');
const withKeys = () => nodes().map((n) => ({ ...n, wireguard_public_key: key(n.id) }));
const settle = () => new Promise((r) => setImmediate(r));

function setup(t: { teardown(fn: () => unknown): void }) {
  const state = new AgentState(makeCa().td);
  const device = new SlowDevice();
  const m = new NodeMembership({
    name: 'node-a', address: '127.0.0.1', podCidr: '10.0.1.0/24', endpoints: [], connection, state,
    logger: new JsonLogger(new MemoryLogSink(), 'error'), wireguardPort: 51871, wireguard: device as unknown as WireGuardManager,
  });
  m.start();
  t.teardown(() => m.stop());
  return { state, device, m };
}

t.test('the tunnel to a node is ready only once the device holds its peer as the registry describes it', async (t) => {
  const { state, device, m } = setup(t);
  state.apply(snapshot(1, makeCa(), { nodes: withKeys() }));
  t.notOk(m.ready(2), 'not before the device has the peer');
  const waited = m.wait(2, 30_000);
  await settle();
  t.equal(device.calls.length, 1, 'one setPeers for the snapshot');
  t.same(device.calls[0]!.peers.map((p) => p.publicKey), [key(2), key(3)], 'every other node is a peer, this one is not');
  device.calls[0]!.finish();
  t.equal(await waited, true, 'wait() resolves when the peers are on the device');
  t.ok(m.ready(2) && m.ready(3));

  // The node moves: its new endpoint is not ready until the device has it.
  state.apply(delta({ nodes: [{ ...withKeys()[1]!, address: '127.0.0.9' }] }));
  t.notOk(m.ready(2), 'a changed endpoint is not ready before it is applied');
  t.ok(m.ready(3), 'the unchanged node stays ready');
  await settle();
  device.calls[1]!.finish(new Error('wg set failed'));
  await settle();
  t.notOk(m.ready(2), 'a failed setPeers leaves it not ready');
  state.apply(delta({ nodes: [{ ...withKeys()[1]!, address: '127.0.0.9' }] }));
  await settle();
  device.calls[2]!.finish();
  await settle();
  t.ok(m.ready(2), 'ready after a setPeers that worked');
});

t.test('a node without a WireGuard key needs no tunnel; an unknown node is never ready; wait() ends with false on timeout or when the node leaves', async (t) => {
  const { state, device, m } = setup(t);
  state.apply(snapshot(1, makeCa(), { nodes: nodes() })); // no keys
  t.ok(m.ready(2), 'no key: nothing to wait for');
  t.notOk(m.ready(9), 'a node the registry does not hold');
  t.equal(await m.wait(9, 20), false, 'timed out');
  state.apply(delta({ nodes: withKeys() }));
  const leaving = m.wait(2, 30_000);
  state.apply(delta({ removed_nodes: [2] }));
  t.equal(await leaving, false, 'the node left the registry');
  await settle();
  for (const c of device.calls) c.finish();
});

t.test('without WireGuard there is no tunnel to wait for', async (t) => {
  const state = new AgentState(makeCa().td);
  const m = new NodeMembership({
    name: 'node-a', address: '127.0.0.1', podCidr: '10.0.1.0/24', endpoints: [], connection, state,
    logger: new JsonLogger(new MemoryLogSink(), 'error'), wireguardPort: 51871,
  });
  t.ok(m.ready(2));
  t.equal(await m.wait(2, 10), true);
});

t.test('of two nodes the lower id leads the handshake: it turns on the keepalive (which starts one) only once the peer is known to be configured; the other never does', async (t) => {
  const { state, device, m } = setup(t);
  state.apply(snapshot(1, makeCa(), { nodes: withKeys() }));
  await settle();
  t.same(device.calls[0]!.peers.map((p) => p.persistentKeepalive ?? 0), [0, 0], 'no keepalive before mutual auth says the peer is configured');
  device.calls[0]!.finish();
  await settle();
  m.peerConfigured(2);
  m.peerConfigured(2);
  await settle();
  t.equal(device.calls.length, 2, 'one more setPeers, however often it is told');
  t.same(device.calls[1]!.peers.map((p) => [p.publicKey, p.persistentKeepalive ?? 0]), [[key(2), 25], [key(3), 0]]);
  device.calls[1]!.finish();
  await settle();
  t.ok(m.ready(2), 'still ready: the keepalive is not part of what makes the tunnel ready');

  // seen from node 3: node 1 and 2 have lower ids, so node 3 starts no handshake
  const other = setup(t);
  other.state.apply(snapshot(3, makeCa(), { nodes: withKeys().map((n) => (n.id === 3 ? { ...n, name: 'node-a' } : { ...n, name: `node-${n.id}` })) }));
  await settle();
  other.device.calls[0]!.finish();
  await settle();
  other.m.peerConfigured(1);
  other.m.peerConfigured(2);
  await settle();
  t.equal(other.device.calls.length, 1, 'no setPeers: node 3 leads no pair');
});
