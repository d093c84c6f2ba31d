/**
 * As root, in network namespaces: the agent's datapath manager finds the
 * interface of each local endpoint that the config does not name (a Kubernetes
 * pod, wired by the primary CNI) in the node's routing table, attaches the tc
 * programs there, and detaches them when the endpoint goes.
 */
import t from 'tap';
import { DatapathManager } from '../../../agent/datapath/index.js';
import { AgentState } from '../../../agent/sync/state.js';
import type { EndpointMsg } from '../../../api/agentproto.js';
import { Datapath } from '../../../bpf/index.js';
import { JsonLogger, MemoryLogSink } from '../../../common/log.js';
import { MetricsRegistry } from '../../../common/metrics.js';
import { delta, makeCa, snapshot } from '../mutualauth/fixtures.js';
import { Topology, ip, runAll, testPinDir } from '../../bpf/netns.js';

const S = 73;
const topo = new Topology('disc', S);
const pinDir = testPinDir('disc');
const state = new AgentState(makeCa().td);
let manager: DatapathManager;

const ep = (ipAddr: string, nodeId: number, identity = 500): EndpointMsg => ({ ip: ipAddr, identity, node_id: nodeId, namespace: 'default', name: ipAddr, labels: {} });
const LATE_IP = `10.${S}.9.2`;
const GATEWAY_IP = `10.${S}.60.2`;

t.before(() => {
  topo.create(2);
  ip('-n', topo.nodeNs, 'link', 'add', 'wgdisc', 'type', 'veth', 'peer', 'name', 'wgdiscpeer');
  ip('-n', topo.nodeNs, 'link', 'set', 'wgdisc', 'up');
  // reached through a gateway (pod 1), as a remote network would be: not an endpoint's own interface
  ip('-n', topo.nodeNs, 'route', 'add', `10.${S}.60.0/24`, 'via', topo.pods[0]!.ipv4);
});

t.teardown(() => runAll([
  () => manager?.stop(),
  () => topo.destroy(),
  () => Datapath.removePins(pinDir),
]));

t.test('local endpoints get the programs on the device their IP is routed to; remote endpoints, gateway routes and the WireGuard device do not', async (t) => {
  const [pod1, pod2] = topo.pods as [typeof topo.pods[0], typeof topo.pods[0]];
  state.apply(snapshot(1, makeCa(), {
    endpoints: [ep(pod1.ipv4, 1), ep(pod1.ipv6, 1), ep(pod2.ipv4, 2), ep(GATEWAY_IP, 1)],
  }));
  manager = new DatapathManager({
    state, logger: new JsonLogger(new MemoryLogSink(), 'error'), registry: new MetricsRegistry(), pinDir, netns: topo.nodeNsPath,
    interfaces: [], wireguardDevice: 'wgdisc', onSignal: () => {}, discoverRetryMs: 50,
  });
  manager.start();
  await manager.discoverInterfaces();
  const dp = manager.datapath;
  const ours = dp.programIds();
  t.same(dp.attachment(pod1.nodeIf), ours, 'pod 1 (IPv4 and IPv6 on one veth) is policed by our programs');
  t.same(dp.attachment(pod2.nodeIf), { fromEndpoint: 0, toEndpoint: 0 }, 'pod 2 is another node\'s endpoint here: nothing attached');
  t.same([...manager.discoveredInterfaces()].sort(), [[pod1.ipv4, pod1.nodeIf], [pod1.ipv6, pod1.nodeIf]], 'the gateway-routed endpoint was not taken for pod 1\'s veth');
  t.same(dp.attachment('wgdisc'), { fromEndpoint: 0, toEndpoint: 0 });

  state.apply(delta({ endpoints: [ep(pod2.ipv4, 1)] }));
  await manager.discoverInterfaces();
  t.same(dp.attachment(pod2.nodeIf), ours, 'pod 2 attached once it is a local endpoint');
});

t.test('an endpoint whose route is not there yet is attached when the CNI adds it; a re-created veth of the same name gets the programs again', async (t) => {
  const dp = manager.datapath;
  const addLatePod = (): void => {
    ip('-n', topo.nodeNs, 'link', 'add', 'cni9', 'type', 'veth', 'peer', 'name', 'cni9peer');
    ip('-n', topo.nodeNs, 'link', 'set', 'cni9', 'up');
    ip('-n', topo.nodeNs, 'route', 'add', `${LATE_IP}/32`, 'dev', 'cni9');
  };
  state.apply(delta({ endpoints: [ep(LATE_IP, 1)] }));
  await manager.discoverInterfaces();
  t.notOk(manager.discoveredInterfaces().has(LATE_IP), 'no route yet: not attached');
  addLatePod();
  const until = Date.now() + 10_000;
  while (!manager.discoveredInterfaces().has(LATE_IP) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.equal(manager.discoveredInterfaces().get(LATE_IP), 'cni9', 'found by the retry, without another state change');
  t.same(dp.attachment('cni9'), dp.programIds());

  // The pod is replaced: same IP, a new veth of the same name (no programs), in one Sync message.
  ip('-n', topo.nodeNs, 'link', 'del', 'cni9');
  addLatePod();
  t.same(dp.attachment('cni9'), { fromEndpoint: 0, toEndpoint: 0 }, 'the new veth starts bare');
  state.apply(delta({ removed_endpoints: [LATE_IP], endpoints: [ep(LATE_IP, 1, 501)] }));
  await manager.discoverInterfaces();
  t.same(dp.attachment('cni9'), dp.programIds(), 'attached again: the kernel was asked, not a memory of the old veth');
});

t.test('the programs leave an interface when its last endpoint goes, and stay while another endpoint uses it', async (t) => {
  const dp = manager.datapath;
  const pod1 = topo.pods[0]!;
  state.apply(delta({ removed_endpoints: [pod1.ipv6] }));
  await manager.discoverInterfaces();
  t.same(dp.attachment(pod1.nodeIf), dp.programIds(), 'the IPv4 endpoint still uses the veth');
  state.apply(delta({ removed_endpoints: [pod1.ipv4, LATE_IP] }));
  await manager.discoverInterfaces();
  t.same(dp.attachment(pod1.nodeIf), { fromEndpoint: 0, toEndpoint: 0 }, 'detached');
  t.same(dp.attachment('cni9'), { fromEndpoint: 0, toEndpoint: 0 }, 'detached');
  t.same([...manager.discoveredInterfaces().keys()], [topo.pods[1]!.ipv4]);
});
