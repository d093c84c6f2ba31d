/**
 * The manager end to end on the devnet: two node namespaces on an underlay bridge, a
 * WireGuard manager per node (commands run in the node namespace through the netns
 * option), and pod-to-pod traffic across nodes that can only flow through the tunnel.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WireGuardManager, type WireGuardPeer } from '../../../agent/wireguard/index.js';
import { Devnet, type DevnetNode } from '../../../deploy/devnet/index.js';
import { namespacesOf, uniquePrefix, uniqueUnderlay } from '../../deploy/devnet/fixtures/names.js';

t.test('pod traffic between nodes flows only through WireGuard, and stops when the peer is removed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-wge2e-'));
  const net = new Devnet(uniquePrefix('we'), { stateDir: dir });
  const managers: WireGuardManager[] = [];
  t.teardown(async () => {
    for (const m of managers) await m.stop();
    await new Devnet(net.prefix, { stateDir: dir }).destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const state = await net.create({
    underlayCidr: uniqueUnderlay(10), podCidrPool: '10.220.0.0/16', host: false,
    nodes: [{ name: 'n1' }, { name: 'n2' }], pods: [{ name: 'a', node: 'n1' }, { name: 'c', node: 'n2' }],
  });
  const [n1, n2] = state.nodes as [DevnetNode, DevnetNode];
  const [a, c] = state.pods as [(typeof state.pods)[0], (typeof state.pods)[0]];
  for (const node of [n1, n2]) {
    managers.push(new WireGuardManager({
      keyFile: join(dir, `${node.name}.key`), device: node.wgDevice, netns: node.namespace, address: `${node.gatewayIp}/32`,
    }));
  }
  const [m1, m2] = managers as [WireGuardManager, WireGuardManager];
  await Promise.all([m1.start(), m2.start()]);
  await net.serveEcho(c.namespace, 7000);
  t.notOk(await net.probeTcp(a.namespace, c.ip, 7000, 1000), 'no path between the pods before the peers are set');

  // Everything that crosses the underlay bridge from here on.
  const capture = net.spawnIn(state.underlay.namespace, ['tcpdump', '-i', state.underlay.bridge, '-n', '-l'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let captured = '';
  let capturedErr = '';
  capture.stdout!.on('data', (chunk: Buffer) => { captured += chunk.toString(); });
  capture.stderr!.on('data', (chunk: Buffer) => { capturedErr += chunk.toString(); });
  const deadline = Date.now() + 10_000;
  while (!capturedErr.includes('listening on') && Date.now() < deadline) await sleep(20);
  t.match(capturedErr, 'listening on', 'tcpdump is capturing');

  const peerOf = (node: DevnetNode, m: WireGuardManager): WireGuardPeer =>
    ({ publicKey: m.publicKey, endpoint: `${node.underlayIp}:51871`, allowedIps: [node.podCidr] });
  t.same(await m1.setPeers([peerOf(n2, m2)]), { added: [m2.publicKey], updated: [], removed: [] });
  await m2.setPeers([peerOf(n1, m1)]);
  t.ok(await net.probeTcp(a.namespace, c.ip, 7000, 5000), 'pod a on node 1 reaches pod c on node 2 through the tunnel');

  const handshakes = (await net.exec(n1.namespace, ['wg', 'show', n1.wgDevice, 'latest-handshakes'])).stdout.trim().split('\t');
  t.equal(handshakes[0], m2.publicKey);
  t.ok(Number(handshakes[1]) > 0, '`wg show` reports a handshake');
  const peer = (await m1.status()).peers[0]!;
  t.ok(peer.latestHandshake !== null && Math.abs(peer.latestHandshake.getTime() - Date.now()) < 60_000, 'status() has the handshake time');
  t.ok(peer.rxBytes > 0 && peer.txBytes > 0, 'status() counts bytes both ways');

  t.same(await m1.setPeers([]), { added: [], updated: [], removed: [m2.publicKey] });
  t.notOk(await net.probeTcp(a.namespace, c.ip, 7000, 1000), 'no path once node 1 removed the peer');
  t.equal((await net.exec(n1.namespace, ['ip', 'route', 'show', state.nodes[1]!.podCidr])).stdout.trim(), '', 'the route went with the peer');

  await sleep(200); // let tcpdump print the last packets
  await capture.stop({ signal: 'SIGINT' });
  const lines = captured.split('\n').filter((l) => l.trim().length > 0);
  const nodeIps = new Set([n1.underlayIp, n2.underlayIp]);
  const tunnel = /^\S+ IP (\d+\.\d+\.\d+\.\d+)\.51871 > (\d+\.\d+\.\d+\.\d+)\.51871: UDP, length \d+$/;
  // The kernel's own IGMP membership reports (a link coming up) carry no data; the devnet turns multicast off on
  // the underlay so they should not appear, and if one does it is matched exactly, so nothing else can pass as one.
  const igmpReport = /^\S+ IP (0\.0\.0\.0|\d+\.\d+\.\d+\.\d+) > 224\.0\.0\.(22|2): igmp (v3 report, \d+ group record\(s\)|v2 report \S+|leave \S+)$/;
  const ipLines = lines.filter((l) => / IP6? /.test(l) && !igmpReport.test(l));
  t.ok(ipLines.length >= 4, `the tunnel carried packets (${ipLines.length} captured)`);
  const strays = ipLines.filter((l) => {
    const m = tunnel.exec(l);
    return m === null || !nodeIps.has(m[1]!) || !nodeIps.has(m[2]!) || m[1] === m[2];
  });
  t.same(strays, [], 'every IP packet on the underlay is WireGuard UDP 51871 between the two node addresses');
  t.same(lines.filter((l) => l.includes('10.220.')), [], 'no pod address appears on the underlay');
  t.same(lines.filter((l) => !/ IP6? /.test(l) && !/ ARP, /.test(l)), [], 'nothing else but ARP crossed the bridge');

  for (const m of managers) await m.stop();
  managers.length = 0;
  await net.destroy();
  t.same(namespacesOf(net.prefix), []);
});
