import t from 'tap';
import { type AuthPair, AuthType, bootTimeNs, Datapath, EventReader, type FlowEvent, PerLoadMapName, Protocol, Reason, SignalReader } from '../../bpf/index.js';
import { PodShell, Topology, ip, runAll, sleep, testPinDir } from './netns.js';

// Two endpoints on one node, and a namespace standing for another node.
const ID_A = 1001;
const ID_B = 1002;
const ID_REMOTE = 3000;
const REMOTE_NODE = 7;
const PORT = 8080;
const tcp = Protocol.tcp;

const topo = new Topology('dp', 71);
const pinDir = testPinDir('dp');
const shells: PodShell[] = [];
let dp: Datapath;
const signals: Array<{ pair: AuthPair; at: number }> = [];
const events: FlowEvent[] = [];
let signalReader: SignalReader;
let eventReader: EventReader;

t.before(async () => {
  topo.create(2);
  const remote = topo.addRemote();
  ip('-n', topo.nodeNs, 'link', 'add', 'wgstub', 'type', 'veth', 'peer', 'name', 'wgstubpeer');
  dp = new Datapath({ pinDir, netns: topo.nodeNsPath });
  dp.start();
  const [a, b] = topo.pods as [typeof topo.pods[0], typeof topo.pods[0]];
  for (const [pod, identity] of [[a, ID_A], [b, ID_B]] as const) {
    dp.ipcache.upsert(pod.ipv4, { identity, nodeId: 0 });
    dp.ipcache.upsert(pod.ipv6, { identity, nodeId: 0 });
    dp.attachEndpoint(pod.nodeIf);
  }
  dp.ipcache.upsert(remote.ipv4, { identity: ID_REMOTE, nodeId: REMOTE_NODE });
  for (const pod of [a, b, remote]) {
    const shell = new PodShell(pod.ns);
    shell.start();
    shells.push(shell);
    for (const port of [PORT, PORT + 1]) {
      const listening = await shell.listen(port);
      if (!listening.ok) throw new Error(`cannot listen on ${port} in ${pod.ns}: ${listening.error}`);
    }
  }
  signalReader = new SignalReader({ pinDir }, (pair) => signals.push({ pair, at: Date.now() }));
  eventReader = new EventReader({ pinDir }, (e) => events.push(e));
  signalReader.start();
  eventReader.start();
});

t.teardown(() => runAll([
  () => signalReader?.stop(),
  () => eventReader?.stop(),
  () => Promise.all(shells.map((s) => s.stop())),
  () => dp?.stop(),
  () => topo.destroy(),
  () => Datapath.removePins(pinDir),
]));

const [podA, podB, remote] = [() => topo.pods[0]!, () => topo.pods[1]!, () => topo.remote!];
const [shellA, shellB, shellRemote] = [() => shells[0]!, () => shells[1]!, () => shells[2]!];

function resetPolicyAndAuth(): void {
  for (const { key } of dp.policy.entries()) dp.policy.delete(key);
  for (const { pair } of dp.auth.entries()) dp.auth.delete(pair);
  dp.setWireguardDevice(null);
}

let connections = 0;
async function tryConnect(shell: PodShell, host: string, port = PORT, timeoutMs = 600): Promise<{ ok: boolean; id: string }> {
  const id = `c${++connections}`;
  const reply = await shell.connect(id, host, port, timeoutMs);
  if (reply.ok) {
    const echoed = await shell.echo(id, 'ping', 1000);
    return { ok: echoed.ok, id };
  }
  return { ok: false, id };
}

const pairBA = { localIdentity: ID_B, remoteIdentity: ID_A, remoteNodeId: 0, authType: AuthType.mutual };

t.test('auth-required traffic without an auth entry is dropped as auth required, with one signal per pair per second', async (t) => {
  resetPolicyAndAuth();
  dp.policy.select(ID_B, 'ingress');
  dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: ID_A, port: PORT, proto: tcp, direction: 'ingress' },
    { verdict: 'allow', authType: AuthType.mutual });
  const before = dp.metrics.get(Reason.authRequired, 'ingress').packets;
  signals.length = 0;
  events.length = 0;

  const start = Date.now();
  let attempts = 0;
  while (attempts < 4 && Date.now() - start < 400) {
    attempts++;
    t.equal((await tryConnect(shellA(), podB().ipv4, PORT, 120)).ok, false, `attempt ${attempts} fails`);
  }
  await sleep(200);
  t.ok(attempts >= 2, `${attempts} attempts within the second`);
  const ofPair = signals.filter((s) => s.pair.localIdentity === ID_B && s.pair.remoteIdentity === ID_A);
  t.equal(ofPair.length, 1, 'exactly one signal for repeated attempts within a second');
  t.same(ofPair[0]?.pair, pairBA, 'the signal carries the pair and the node');
  t.ok(dp.metrics.get(Reason.authRequired, 'ingress').packets > before, 'metrics count auth required drops on ingress');
  const drop = events.find((e) => e.reason === 'auth required');
  t.ok(drop, 'the event stream reports the drop');
  t.match(drop, {
    direction: 'ingress', dropped: true, localIdentity: ID_B, remoteIdentity: ID_A, remoteNodeId: 0,
    srcIp: podA().ipv4, dstIp: podB().ipv4, dstPort: PORT, proto: tcp, family: 4, authType: AuthType.mutual,
  });

  // a second later the pair may be signalled again
  await sleep(Math.max(0, ofPair[0]!.at + 1100 - Date.now()));
  t.equal((await tryConnect(shellA(), podB().ipv4, PORT, 120)).ok, false);
  await sleep(200);
  t.equal(signals.filter((s) => s.pair.localIdentity === ID_B).length, 2, 'signalled again after a second');
});

t.test('with an auth entry the connection succeeds; after it expires connections fail again', async (t) => {
  resetPolicyAndAuth();
  dp.policy.select(ID_B, 'ingress');
  dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: ID_A, port: PORT, proto: tcp, direction: 'ingress' },
    { verdict: 'allow', authType: AuthType.mutual });
  const expiresAt = bootTimeNs() + 1_500_000_000n;
  dp.auth.upsert(pairBA, expiresAt);
  t.equal(dp.auth.get(pairBA), expiresAt);

  const first = await tryConnect(shellA(), podB().ipv4);
  t.equal(first.ok, true, 'connects and echoes while the entry is valid');
  t.equal((await tryConnect(shellA(), podB().ipv6)).ok, true, 'over IPv6 too');

  await sleep(Number((expiresAt - bootTimeNs()) / 1_000_000n) + 100);
  const before = dp.metrics.get(Reason.authRequired, 'ingress').packets;
  t.equal((await tryConnect(shellA(), podB().ipv4)).ok, false, 'a new connection fails after expiry');
  t.equal((await tryConnect(shellA(), podB().ipv6)).ok, false, 'over IPv6 too');
  t.equal((await shellA().echo(first.id, 'late', 500)).ok, false, 'the established connection is cut too');
  t.ok(dp.metrics.get(Reason.authRequired, 'ingress').packets > before, 'counted as auth required');
});

t.test('an established connection on the fast path is cut at the next packet when its auth entry is deleted, and when its policy turns to deny', async (t) => {
  resetPolicyAndAuth();
  const allow = (): void => {
    dp.policy.select(ID_B, 'ingress');
    dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: ID_A, port: PORT, proto: tcp, direction: 'ingress' },
      { verdict: 'allow', authType: AuthType.mutual });
    dp.auth.upsert(pairBA, bootTimeNs() + 3_600_000_000_000n);
  };
  allow();
  const first = await tryConnect(shellA(), podB().ipv4);
  t.equal(first.ok, true, 'connects');
  t.equal((await shellA().echo(first.id, 'again', 500)).ok, true, 'and echoes on the established flow');
  const before = dp.metrics.get(Reason.authRequired, 'ingress').packets;
  dp.auth.delete(pairBA);
  t.equal((await shellA().echo(first.id, 'after delete', 300)).ok, false, 'cut once the auth entry is gone (well within the 1 s revalidation)');
  t.ok(dp.metrics.get(Reason.authRequired, 'ingress').packets > before, 'dropped as auth required');

  resetPolicyAndAuth();
  allow();
  const second = await tryConnect(shellA(), podB().ipv4);
  t.equal(second.ok, true, 'a new connection once the pair is authenticated again');
  t.equal((await shellA().echo(second.id, 'again', 500)).ok, true, 'established');
  const denied = dp.metrics.get(Reason.policyDenied, 'ingress').packets;
  dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: ID_A, port: PORT, proto: tcp, direction: 'ingress' },
    { verdict: 'deny', authType: 0 });
  t.equal((await shellA().echo(second.id, 'after deny', 300)).ok, false, 'cut once the policy denies it');
  t.ok(dp.metrics.get(Reason.policyDenied, 'ingress').packets > denied, 'dropped as policy denied');
});

t.test('a deny policy drops with reason policy denied, and so does the default deny of a selected endpoint', async (t) => {
  resetPolicyAndAuth();
  dp.policy.select(ID_B, 'ingress');
  dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: ID_A, port: PORT, proto: tcp, direction: 'ingress' },
    { verdict: 'deny', authType: 0 });
  dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: 0, port: PORT, proto: tcp, direction: 'ingress' },
    { verdict: 'allow', authType: 0 });
  events.length = 0;
  const before = dp.metrics.get(Reason.policyDenied, 'ingress').packets;
  t.equal((await tryConnect(shellA(), podB().ipv4)).ok, false, 'the identity-specific deny outranks the any-identity allow');
  t.ok(dp.metrics.get(Reason.policyDenied, 'ingress').packets > before, 'metrics count policy denied');
  await sleep(100);
  t.match(events.find((e) => e.dropped), { reason: 'policy denied', reasonCode: Reason.policyDenied, dstPort: PORT });

  const mid = dp.metrics.get(Reason.policyDenied, 'ingress').packets;
  t.equal((await tryConnect(shellA(), podB().ipv4, PORT + 1)).ok, false, 'a port no entry allows is denied by default');
  t.ok(dp.metrics.get(Reason.policyDenied, 'ingress').packets > mid);
  t.equal((await tryConnect(shellRemote(), podB().ipv4)).ok, true, 'the any-identity allow admits another identity');
});

t.test('traffic passes where no policy selects the endpoint in that direction', async (t) => {
  resetPolicyAndAuth();
  // B is selected on egress only, A on ingress from another identity only
  dp.policy.select(ID_B, 'egress');
  dp.policy.select(ID_A, 'ingress', 'allow');
  const before = dp.metrics.get(Reason.forwarded, 'ingress').packets;
  t.equal((await tryConnect(shellA(), podB().ipv4)).ok, true, 'A to B: B is not selected on ingress');
  t.equal((await tryConnect(shellA(), podB().ipv6)).ok, true, 'over IPv6 too');
  t.ok(dp.metrics.get(Reason.forwarded, 'ingress').packets > before, 'counted as forwarded');
  t.equal((await tryConnect(shellB(), podA().ipv4)).ok, false, 'B to A: B is selected on egress with default deny');
});

t.test('replies of an allowed connection pass the default deny of the other direction', async (t) => {
  resetPolicyAndAuth();
  for (const [id, dir] of [[ID_A, 'ingress'], [ID_A, 'egress'], [ID_B, 'ingress'], [ID_B, 'egress']] as const) {
    dp.policy.select(id, dir);
  }
  dp.policy.upsert({ localIdentity: ID_A, remoteIdentity: ID_B, port: PORT, proto: tcp, direction: 'egress' },
    { verdict: 'allow', authType: 0 });
  dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: ID_A, port: PORT, proto: tcp, direction: 'ingress' },
    { verdict: 'allow', authType: 0 });
  t.equal((await tryConnect(shellA(), podB().ipv4)).ok, true, 'A to B works both ways');
  t.equal((await tryConnect(shellB(), podA().ipv4)).ok, false, 'B to A is not allowed');
});

t.test('an established connection survives a new loader re-using the pins, and detach plus re-attach', async (t) => {
  resetPolicyAndAuth();
  for (const [id, dir] of [[ID_A, 'ingress'], [ID_A, 'egress'], [ID_B, 'ingress'], [ID_B, 'egress']] as const) {
    dp.policy.select(id, dir);
  }
  dp.policy.upsert({ localIdentity: ID_A, remoteIdentity: ID_B, port: PORT, proto: tcp, direction: 'egress' },
    { verdict: 'allow', authType: AuthType.mutual });
  dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: ID_A, port: PORT, proto: tcp, direction: 'ingress' },
    { verdict: 'allow', authType: AuthType.mutual });
  const expiry = bootTimeNs() + 600_000_000_000n;
  dp.auth.upsert(pairBA, expiry);
  dp.auth.upsert({ localIdentity: ID_A, remoteIdentity: ID_B, remoteNodeId: 0, authType: AuthType.mutual }, expiry);
  const conn = await tryConnect(shellA(), podB().ipv4);
  t.equal(conn.ok, true, 'connected');

  // the agent restarts: a new instance re-uses the pinned maps and replaces the programs in place
  const oldMaps = dp.mapIds();
  const oldPrograms = dp.programIds();
  dp.stop();
  t.equal((await shellA().echo(conn.id, 'while no agent runs')).ok, true, 'the datapath keeps running without an agent');
  dp = new Datapath({ pinDir, netns: topo.nodeNsPath });
  dp.start();
  const pinned = (ids: Record<string, number>): Record<string, number> =>
    Object.fromEntries(Object.entries(ids).filter(([name]) => !(Object.values(PerLoadMapName) as string[]).includes(name)));
  t.same(pinned(dp.mapIds()), pinned(oldMaps), 'the same pinned kernel maps are re-used');
  t.equal(dp.auth.get(pairBA), expiry, 'entries survive the restart');
  for (const pod of [podA(), podB()]) {
    t.same(dp.attachment(pod.nodeIf), oldPrograms, 'the old programs still run until replaced');
    dp.attachEndpoint(pod.nodeIf);
    t.same(dp.attachment(pod.nodeIf), dp.programIds(), 'the new programs replaced them');
  }
  t.not(dp.programIds().fromEndpoint, oldPrograms.fromEndpoint);
  t.equal((await shellA().echo(conn.id, 'after restart')).ok, true, 'the connection survives the restart');

  for (const pod of [podA(), podB()]) t.equal(dp.detachEndpoint(pod.nodeIf), true);
  t.same(dp.attachment(podB().nodeIf), { fromEndpoint: 0, toEndpoint: 0 }, 'detached');
  t.equal(dp.detachEndpoint(podB().nodeIf), false, 'detaching again finds nothing');
  t.equal((await shellA().echo(conn.id, 'detached')).ok, true, 'passes while detached');
  for (const pod of [podA(), podB()]) dp.attachEndpoint(pod.nodeIf);
  t.equal((await shellA().echo(conn.id, 're-attached')).ok, true, 'the connection survives re-attaching');
  t.equal((await tryConnect(shellB(), podA().ipv4)).ok, false, 'and the default deny still holds');
  t.throws(() => dp.attachEndpoint('nosuchif0'), { code: 'not_found' });
});

t.test('cross-node auth-required traffic is accepted only when it arrived through the WireGuard device', async (t) => {
  resetPolicyAndAuth();
  dp.policy.select(ID_B, 'ingress');
  dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: ID_REMOTE, port: PORT, proto: tcp, direction: 'ingress' },
    { verdict: 'allow', authType: AuthType.mutual });
  const expiry = bootTimeNs() + 600_000_000_000n;
  dp.auth.upsert({ localIdentity: ID_B, remoteIdentity: ID_REMOTE, remoteNodeId: REMOTE_NODE, authType: AuthType.mutual }, expiry);
  events.length = 0;

  const before = dp.metrics.get(Reason.wireguardRequired, 'ingress').packets;
  t.equal((await tryConnect(shellRemote(), podB().ipv4)).ok, false, 'no WireGuard device configured: dropped');
  t.ok(dp.metrics.get(Reason.wireguardRequired, 'ingress').packets > before, 'counted as wireguard required');
  await sleep(100);
  t.match(events.find((e) => e.dropped), {
    reason: 'wireguard required', srcIp: remote().ipv4, remoteIdentity: ID_REMOTE, remoteNodeId: REMOTE_NODE,
  });

  const stub = dp.setWireguardDevice('wgstub');
  t.ok(stub > 0);
  t.equal((await tryConnect(shellRemote(), podB().ipv4)).ok, false, 'arrived through a plain veth, not the device: dropped');

  const uplink = dp.setWireguardDevice(remote().nodeIf);
  t.same(dp.config(), { wireguardIfindex: uplink, traceForwarded: false });
  t.equal((await tryConnect(shellRemote(), podB().ipv4)).ok, true, 'arrived through the configured device: accepted');

  // replies of an authenticated connection to another node must arrive through the device too
  dp.policy.select(ID_A, 'egress');
  dp.policy.upsert({ localIdentity: ID_A, remoteIdentity: ID_REMOTE, port: PORT, proto: tcp, direction: 'egress' },
    { verdict: 'allow', authType: AuthType.mutual });
  dp.auth.upsert({ localIdentity: ID_A, remoteIdentity: ID_REMOTE, remoteNodeId: REMOTE_NODE, authType: AuthType.mutual }, expiry);
  t.equal((await tryConnect(shellA(), remote().ipv4)).ok, true, 'to the other node, replies through the device');
  dp.setWireguardDevice('wgstub');
  const mid = dp.metrics.get(Reason.wireguardRequired, 'ingress').packets;
  t.equal((await tryConnect(shellA(), remote().ipv4)).ok, false, 'replies not through the device are dropped');
  t.ok(dp.metrics.get(Reason.wireguardRequired, 'ingress').packets > mid);

  t.equal(dp.setWireguardDevice(null), 0);
  t.throws(() => dp.setWireguardDevice('nosuchif0'), { code: 'not_found' });
});
