import t, { type Test } from 'tap';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Devnet, type DevnetSpec, type DevnetState } from '../../../deploy/devnet/index.js';
import { MeshidError } from '../../../spiffe/index.js';
import { namespacesOf, rootLinksOf, uniquePrefix, uniqueUnderlay } from './fixtures/names.js';

function stateDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-devnet-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A Devnet whose teardown destroys it (through a fresh instance, so a failed test cannot leave it behind). */
function devnet(t: Test, tag: string, dir = stateDir(t)): Devnet {
  const prefix = uniquePrefix(tag);
  t.teardown(() => new Devnet(prefix, { stateDir: dir }).destroy());
  return new Devnet(prefix, { stateDir: dir });
}

const twoNodes = (index: number, host = false): DevnetSpec => ({
  underlayCidr: uniqueUnderlay(index),
  podCidrPool: '10.210.0.0/16',
  host,
  nodes: [{ name: 'n1' }, { name: 'n2' }],
  pods: [{ name: 'a', node: 'n1' }, { name: 'b', node: 'n1' }, { name: 'c', node: 'n2' }],
});

const isAlive = (pid: number): boolean => { try { process.kill(pid, 0); return true; } catch { return false; } };

function assertGone(t: Test, prefix: string, dir: string): void {
  t.same(namespacesOf(prefix), [], 'no namespaces of the prefix are left (ip netns list)');
  t.same(rootLinksOf(`${prefix}-`), [], 'no links of the prefix are left in the root namespace (ip link)');
  t.notOk(existsSync(join(dir, `${prefix}.json`)), 'no state file');
  for (const ns of ['ul', 'n1', 'n2', 'a', 'b', 'c']) t.notOk(existsSync(`/run/netns/${prefix}-${ns}`), `no /run/netns/${prefix}-${ns}`);
}

t.test('a devnet connects pods to their node, nodes over the underlay, the host address to every node, and no pod across nodes', async (t) => {
  const dir = stateDir(t);
  const net = devnet(t, 'da', dir);
  const state = await net.create(twoNodes(0, true));
  t.equal(state.status, 'ready');
  const [n1, n2] = state.nodes as [DevnetState['nodes'][0], DevnetState['nodes'][0]];
  const [a, b, c] = state.pods as [DevnetState['pods'][0], DevnetState['pods'][0], DevnetState['pods'][0]];
  t.same([n1.podCidr, n2.podCidr], ['10.210.1.0/24', '10.210.2.0/24']);
  t.same([a.ip, b.ip, c.ip], ['10.210.1.2', '10.210.1.3', '10.210.2.2']);
  t.same(namespacesOf(net.prefix).sort(), ['a', 'b', 'c', 'n1', 'n2', 'ul'].map((n) => `${net.prefix}-${n}`).sort());
  t.equal(spawnSync('ip', ['-n', n1.namespace, 'link', 'show', 'dev', a.hostVeth]).status, 0, "the pod veth's node end is in the node namespace");
  t.equal((await net.exec(n1.namespace, ['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1', 'nodes forward');

  // The server's view: something listening on the host address in the root namespace.
  const server = createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => server.listen(0, state.host!.address, resolve));
  t.teardown(() => server.close());
  const serverPort = (server.address() as { port: number }).port;
  t.ok(await net.probeTcp(n1.namespace, state.host!.address, serverPort), 'node 1 reaches the host address');
  t.ok(await net.probeTcp(n2.namespace, state.host!.address, serverPort), 'node 2 reaches the host address');

  for (const ns of [b.namespace, c.namespace, n1.namespace, n2.namespace]) await net.serveEcho(ns, 7000);
  t.ok(await net.probeTcp(a.namespace, b.ip, 7000), 'pod a reaches pod b on the same node');
  t.ok(await net.probeTcp(a.namespace, n1.gatewayIp, 7000), 'pod a reaches its node through the gateway address');
  t.ok(await net.probeTcp(n1.namespace, n2.underlayIp, 7000), 'node 1 reaches node 2 over the underlay');
  t.notOk(await net.probeTcp(a.namespace, c.ip, 7000, 1000), 'pod a does not reach pod c on the other node without WireGuard');
  t.notOk(await net.probeTcp(n1.namespace, c.ip, 7000, 1000), 'node 1 has no plain route to node 2 pods');
  t.equal((await net.exec(n1.namespace, ['ip', 'route', 'get', c.ip], { check: false })).code !== 0, true, 'no route at all');

  await net.destroy();
  assertGone(t, net.prefix, dir);
  await net.destroy(); // again: nothing to do, no error
});

t.test('spawnIn processes belong to the devnet: stop ends them, destroy ends the rest; foreign namespaces are refused', async (t) => {
  const dir = stateDir(t);
  const net = devnet(t, 'db', dir);
  const state = await net.create({ ...twoNodes(1), pods: [] });
  const sleeper = net.spawnIn(state.nodes[0]!.namespace, ['sleep', '60']);
  const echo = await net.serveEcho(state.nodes[1]!.namespace, 7000);
  t.same(await sleeper.stop(), { code: null, signal: 'SIGTERM' });
  t.notOk(isAlive(sleeper.pid!));
  await net.destroy();
  t.ok((await echo.exited) !== null, 'destroy ended the echo server');
  t.notOk(isAlive(echo.pid!));
  t.throws(() => net.spawnIn('other-ns', ['true']), { code: 'invalid_argument', field: 'namespace' });
  await t.rejects(net.exec('other-ns', ['true']), { code: 'invalid_argument', field: 'namespace' });
  assertGone(t, net.prefix, dir);
});

t.test('create refuses a prefix in use and leaves the existing devnet as it was', async (t) => {
  const dir = stateDir(t);
  const net = devnet(t, 'dc', dir);
  await net.create(twoNodes(2));
  const again = new Devnet(net.prefix, { stateDir: dir });
  await t.rejects(again.create(twoNodes(2)), { code: 'already_exists', message: /state file/ });
  // Without the state file, the namespaces themselves say the prefix is taken.
  const elsewhere = new Devnet(net.prefix, { stateDir: stateDir(t) });
  await t.rejects(elsewhere.create(twoNodes(3)), { code: 'already_exists', message: new RegExp(`namespace ${net.prefix}-`) });
  t.equal(namespacesOf(net.prefix).length, 6, 'the first devnet is intact');
  t.equal(net.describe().status, 'ready');
});

t.test('a fresh instance describes and destroys a devnet through the state file', async (t) => {
  const dir = stateDir(t);
  const net = devnet(t, 'dd', dir);
  const state = await net.create(twoNodes(4));
  const echo = await net.serveEcho(state.pods[2]!.namespace, 7000);

  const fresh = new Devnet(net.prefix, { stateDir: dir });
  t.same(fresh.describe(), state);
  t.same(Devnet.list({ stateDir: dir }).map((s) => s.prefix), [net.prefix]);
  await fresh.destroy();
  await echo.exited;
  t.notOk(isAlive(echo.pid!), 'processes in the namespaces are gone');
  assertGone(t, net.prefix, dir);
  t.throws(() => fresh.describe(), { code: 'not_found' });
});

t.test('a create that fails half-way removes what it made and nothing else', async (t) => {
  const dir = stateDir(t);
  const net = devnet(t, 'de', dir);
  // A link of the host veth's name in the root namespace: the underlay namespace is made, then the host veth fails.
  const squatter = `${net.prefix}-host`;
  execFileSync('ip', ['link', 'add', squatter, 'type', 'bridge']);
  t.teardown(() => { spawnSync('ip', ['link', 'del', squatter]); });
  const err = await net.create(twoNodes(5, true)).then(() => null, (e: unknown) => e);
  t.ok(err instanceof MeshidError, 'create rejects');
  t.match((err as Error).message, squatter);
  t.same(namespacesOf(net.prefix), [], 'the namespaces it made are gone');
  t.notOk(existsSync(join(dir, `${net.prefix}.json`)), 'no state file');
  t.equal(spawnSync('ip', ['link', 'show', 'dev', squatter]).status, 0, 'the link it did not make is still there');
});

t.test('a create killed half-way is cleaned up by destroy from a fresh instance', async (t) => {
  const dir = stateDir(t);
  const net = devnet(t, 'df', dir);
  const spec: DevnetSpec = { ...twoNodes(6, true), pods: ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'].map((name, i) => ({ name, node: i % 2 ? 'n2' : 'n1' })) };
  const moduleUrl = new URL('../../../deploy/devnet/index.js', import.meta.url).href;
  const script = `const { Devnet } = await import(${JSON.stringify(moduleUrl)});
    await new Devnet(${JSON.stringify(net.prefix)}, { stateDir: ${JSON.stringify(dir)} }).create(${JSON.stringify(spec)});`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const deadline = Date.now() + 10_000;
  while (!existsSync(`/run/netns/${net.prefix}-n1`) && Date.now() < deadline) await sleep(5);
  child.kill('SIGKILL');
  await exited;
  const leftState = JSON.parse(readFileSync(join(dir, `${net.prefix}.json`), 'utf8')) as DevnetState;
  t.equal(leftState.status, 'creating', 'the creator died before finishing');
  t.ok(namespacesOf(net.prefix).length > 0, 'it left namespaces behind');

  await new Devnet(net.prefix, { stateDir: dir }).destroy();
  assertGone(t, net.prefix, dir);
  t.notOk(existsSync(`/run/netns/${net.prefix}-p1`));
});

t.test('spec errors name the field and create nothing', async (t) => {
  const dir = stateDir(t);
  const net = new Devnet(uniquePrefix('dg'), { stateDir: dir });
  const base = twoNodes(7);
  const cases: [DevnetSpec, string][] = [
    [{ ...base, nodes: [{ name: 'N1' }] }, 'nodes.0.name'],
    [{ ...base, nodes: [{ name: 'n1' }, { name: 'n1' }] }, 'nodes.1.name'],
    [{ ...base, pods: [{ name: 'n1', node: 'n1' }] }, 'pods.0.name'],
    [{ ...base, pods: [{ name: 'a', node: 'n9' }] }, 'pods.0.node'],
    [{ ...base, pods: [{ name: 'a', node: 'n1', ip: '10.210.2.5' }] }, 'pods.0.ip'],
    [{ ...base, pods: [{ name: 'a', node: 'n1', ip: '10.210.1.1' }] }, 'pods.0.ip'],
    [{ ...base, nodes: [{ name: 'n1', underlayIp: '10.0.0.1' }] }, 'nodes.0.underlayIp'],
    [{ ...base, nodes: [{ name: 'n1', podCidr: '10.210.1.0/24' }, { name: 'n2', podCidr: '10.210.1.128/25' }] }, 'nodes.1.podCidr'],
    [{ ...base, underlayCidr: '198.18.0.1/24' }, 'underlayCidr'],
    [{ ...base, nodes: [] }, 'nodes'],
  ];
  for (const [spec, field] of cases) {
    await t.rejects(net.create(spec), { code: 'invalid_argument', field }, field);
  }
  t.throws(() => new Devnet('Bad-Prefix'), { code: 'invalid_argument', field: 'prefix' });
  t.same(namespacesOf(net.prefix), []);
  t.notOk(existsSync(join(dir, `${net.prefix}.json`)));
  t.ok(fileURLToPath(import.meta.url)); // the module path resolves (used by the killed-create test)
});
