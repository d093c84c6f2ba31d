import t from 'tap';
import { type AuthPair, AuthType, Datapath, EventReader, type FlowEvent, Protocol, SignalReader } from '../../bpf/index.js';
import { PodShell, Topology, runAll, sleep, testPinDir } from './netns.js';

const ID_A = 2001;
const ID_B = 2002;
const PORT = 9090;
const topo = new Topology('rd', 73);
const pinDir = testPinDir('rd');
const dp = new Datapath({ pinDir, netns: `/run/netns/${topo.nodeNs}` });
const shells: PodShell[] = [];
const readers: Array<{ stop(): void }> = [];

t.before(async () => {
  topo.create(2);
  dp.start();
  for (const [pod, identity] of [[topo.pods[0]!, ID_A], [topo.pods[1]!, ID_B]] as const) {
    dp.ipcache.upsert(pod.ipv4, { identity, nodeId: 0 });
    dp.attachEndpoint(pod.nodeIf);
    const shell = new PodShell(pod.ns);
    shell.start();
    shells.push(shell);
    const listening = await shell.listen(PORT);
    if (!listening.ok) throw new Error(`cannot listen in ${pod.ns}: ${listening.error}`);
  }
});

t.teardown(() => runAll([
  ...readers.map((r) => () => r.stop()),
  () => Promise.all(shells.map((s) => s.stop())),
  () => dp.stop(),
  () => topo.destroy(),
  () => Datapath.removePins(pinDir),
]));

let n = 0;
const connectAtoB = async (timeoutMs = 400): Promise<boolean> => {
  const id = `r${++n}`;
  const ok = (await shells[0]!.connect(id, topo.pods[1]!.ipv4, PORT, timeoutMs)).ok;
  if (ok) {
    for (let i = 0; i < 5; i++) await shells[0]!.echo(id, `packet ${i}`);
    await shells[0]!.close(id);
  }
  return ok;
};
function track<T extends { stop(): void }>(reader: T): T {
  readers.push(reader);
  return reader;
}

t.test('forwarded flows are reported once per new flow, and only while tracing is on', async (t) => {
  const events: FlowEvent[] = [];
  const reader = track(new EventReader({ pinDir }, (e) => events.push(e)));
  reader.start();
  t.equal(reader.running, true);
  t.equal(await connectAtoB(), true);
  await sleep(100);
  t.same(events, [], 'nothing while tracing is off');

  dp.setTraceForwarded(true);
  t.equal(await connectAtoB(), true);
  await sleep(100);
  dp.setTraceForwarded(false);
  const toB = events.filter((e) => e.dstPort === PORT);
  t.equal(toB.length, 2, 'one flow event where it leaves A and one where it enters B, whatever the packet count');
  t.match(toB.find((e) => e.direction === 'egress'), {
    reason: 'forwarded', dropped: false, localIdentity: ID_A, remoteIdentity: ID_B, proto: Protocol.tcp,
    srcIp: topo.pods[0]!.ipv4, dstIp: topo.pods[1]!.ipv4,
  });
  t.match(toB.find((e) => e.direction === 'ingress'), { localIdentity: ID_B, remoteIdentity: ID_A });
  t.equal(events.filter((e) => e.srcPort === PORT).length, 0, 'replies are not new flows');
  reader.stop();
  t.equal(reader.running, false);
});

t.test('after stop() nothing is delivered, and unread records wait in the ring for the next reader', async (t) => {
  dp.policy.select(ID_B, 'ingress');
  dp.policy.upsert({ localIdentity: ID_B, remoteIdentity: ID_A, port: PORT, proto: Protocol.tcp, direction: 'ingress' },
    { verdict: 'allow', authType: AuthType.mutual });
  t.teardown(() => { for (const { key } of dp.policy.entries()) dp.policy.delete(key); });

  const first: AuthPair[] = [];
  const reader = track(new SignalReader({ pinDir }, (p) => first.push(p)));
  reader.start();
  reader.start(); // already running: no second ring
  t.equal(await connectAtoB(200), false);
  await sleep(100);
  t.equal(first.length, 1, 'the signal arrives while running');
  reader.stop();
  reader.stop(); // stopping twice is harmless

  await sleep(1100); // past the per-pair rate limit
  t.equal(await connectAtoB(200), false);
  await sleep(100);
  t.equal(first.length, 1, 'nothing is delivered after stop()');

  const second: AuthPair[] = [];
  const next = track(new SignalReader({ pinDir }, (p) => second.push(p)));
  next.start();
  await sleep(100);
  next.stop();
  t.same(second, [{ localIdentity: ID_B, remoteIdentity: ID_A, remoteNodeId: 0, authType: AuthType.mutual }],
    'the next reader gets the signal written while none ran');
});

t.test('what a handler throws goes to onError and reading goes on', async (t) => {
  dp.policy.select(ID_B, 'ingress');
  t.teardown(() => { dp.policy.deselect(ID_B, 'ingress'); });
  const errors: Error[] = [];
  let calls = 0;
  const reader = track(new EventReader({ pinDir, onError: (e) => errors.push(e) }, () => {
    calls++;
    throw new Error('handler failed');
  }));
  reader.start();
  t.equal(await connectAtoB(200), false);
  t.equal(await connectAtoB(200), false);
  await sleep(100);
  reader.stop();
  t.ok(calls >= 2, `the handler ran for each drop (${calls})`);
  t.equal(errors.length, calls);
  t.equal(errors[0]?.message, 'handler failed');
});
