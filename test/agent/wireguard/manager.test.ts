import t, { type Test } from 'tap';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  generatePrivateKey, loadOrCreateKeyPair, publicKeyFromPrivate, uapiSocketPath, WireGuardManager, type WireGuardManagerOptions,
} from '../../../agent/wireguard/index.js';
import { MeshidError } from '../../../spiffe/index.js';

let counter = 0;
/** A fresh network namespace and a device name unique on the machine, both removed after the test. */
function sandbox(t: Test): { netns: string; device: string; keyFile: string } {
  counter++;
  const netns = `mwt${process.pid}-${counter}`;
  const device = `mw${process.pid}x${counter}`;
  execFileSync('ip', ['netns', 'add', netns]);
  const dir = mkdtempSync(join(tmpdir(), 'meshid-wgm-'));
  t.teardown(async () => {
    // Anything a failed test left running in the namespace goes before the namespace does.
    const pids = spawnSync('ip', ['netns', 'pids', netns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    await sleep(pids.length > 0 ? 100 : 0);
    spawnSync('ip', ['netns', 'del', netns]);
    rmSync(uapiSocketPath(device), { force: true });
    rmSync(dir, { recursive: true, force: true });
  });
  return { netns, device, keyFile: join(dir, 'wg.key') };
}

function manager(t: Test, options: WireGuardManagerOptions): WireGuardManager {
  const m = new WireGuardManager({ restartBackoff: { initialMs: 50, maxMs: 400, resetAfterMs: 10_000 }, ...options });
  t.teardown(() => m.stop());
  return m;
}

const inNetns = (netns: string, argv: string[]): string => execFileSync('ip', ['netns', 'exec', netns, ...argv], { encoding: 'utf8' });
const routes = (netns: string, device: string): string[] =>
  (JSON.parse(inNetns(netns, ['ip', '-j', 'route', 'show', 'dev', device])) as { dst: string }[]).map((r) => r.dst).sort();
const linkExists = (netns: string, device: string): boolean => spawnSync('ip', ['-n', netns, 'link', 'show', 'dev', device]).status === 0;
const isAlive = (pid: number): boolean => { try { process.kill(pid, 0); return true; } catch { return false; } };
const peerKey = (): string => publicKeyFromPrivate(generatePrivateKey());

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 8_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

function kernelHasWireGuard(netns: string): boolean {
  const probe = `wgprobe${process.pid}`.slice(0, 15);
  const ok = spawnSync('ip', ['-n', netns, 'link', 'add', probe, 'type', 'wireguard']).status === 0;
  if (ok) spawnSync('ip', ['-n', netns, 'link', 'del', probe]);
  return ok;
}

t.test('start creates the device with the node key, listen port and address; kernel WireGuard only where the kernel has it', async (t) => {
  const { netns, device, keyFile } = sandbox(t);
  const expected = kernelHasWireGuard(netns) ? 'kernel' : 'wireguard-go';
  const m = manager(t, { keyFile, device, netns, address: '10.77.1.1/32', listenPort: 51999 });
  await m.start();
  const status = await m.status();
  t.equal(status.implementation, expected);
  t.equal(status.up, true);
  t.equal(m.publicKey, loadOrCreateKeyPair(keyFile).publicKey, 'the key file holds the device key');
  t.equal(inNetns(netns, ['wg', 'show', device, 'public-key']).trim(), m.publicKey);
  t.equal(inNetns(netns, ['wg', 'show', device, 'listen-port']).trim(), '51999');
  const link = JSON.parse(inNetns(netns, ['ip', '-j', 'address', 'show', 'dev', device]))[0];
  t.ok(link.flags.includes('UP'), 'the device is up');
  t.ok(link.addr_info.some((a: { local: string; prefixlen: number }) => a.local === '10.77.1.1' && a.prefixlen === 32), 'the address is on the device');
  if (expected === 'wireguard-go') t.ok(existsSync(uapiSocketPath(device)), 'wireguard-go serves its UAPI socket');
});

t.test('the default device is meshid-wg on UDP 51871', async (t) => {
  const m = new WireGuardManager({ keyFile: '/nonexistent/wg.key' });
  t.equal(m.device, 'meshid-wg');
  t.equal(m.listenPort, 51871);
  t.throws(() => new WireGuardManager({ keyFile: 'k', device: 'a-name-too-long-for-linux' }), { code: 'invalid_argument', field: 'wireguard.device' });
  t.throws(() => new WireGuardManager({ keyFile: 'k', listenPort: 0 }), { code: 'invalid_argument', field: 'wireguard.listenPort' });
  t.throws(() => new WireGuardManager({ keyFile: 'k', address: '10.1.1.300/32' }), { code: 'invalid_argument', field: 'wireguard.address' });
});

t.test('setPeers adds, updates and removes peers with their routes, and changes nothing when repeated', async (t) => {
  const { netns, device, keyFile } = sandbox(t);
  const m = manager(t, { keyFile, device, netns });
  await m.start();
  const [a, b] = [peerKey(), peerKey()];
  const peerA = { publicKey: a, endpoint: '198.18.9.12:51871', allowedIps: ['10.77.2.0/24'] };
  const peerB = { publicKey: b, endpoint: '198.18.9.13:51871', allowedIps: ['10.77.3.0/24'] };

  t.same(await m.setPeers([peerA, peerB]), { added: [a, b], updated: [], removed: [] });
  t.same(routes(netns, device), ['10.77.2.0/24', '10.77.3.0/24']);
  t.same(await m.setPeers([peerA, peerB]), { added: [], updated: [], removed: [] }, 'a repeat is a no-op');

  const movedA = { ...peerA, endpoint: '198.18.9.22:51871', allowedIps: ['10.77.4.0/24', '10.77.5.0/24'], persistentKeepalive: 15 };
  t.same(await m.setPeers([movedA, peerB]), { added: [], updated: [a], removed: [] });
  t.same(routes(netns, device), ['10.77.3.0/24', '10.77.4.0/24', '10.77.5.0/24'], 'the old CIDR route is gone, the new ones are there');
  const status = await m.status();
  const shownA = status.peers.find((p) => p.publicKey === a)!;
  t.equal(shownA.endpoint, '198.18.9.22:51871');
  t.same(shownA.allowedIps, ['10.77.4.0/24', '10.77.5.0/24']);
  t.equal(shownA.persistentKeepalive, 15);
  t.equal(shownA.latestHandshake, null, 'no handshake with a peer that does not exist');

  t.same(await m.setPeers([movedA]), { added: [], updated: [], removed: [b] });
  t.same(routes(netns, device), ['10.77.4.0/24', '10.77.5.0/24']);
  t.same(await m.setPeers([]), { added: [], updated: [], removed: [a] });
  t.same(routes(netns, device), []);
  t.same(inNetns(netns, ['wg', 'show', device, 'peers']).trim(), '');
});

t.test('setPeers refuses bad peers, naming the field, and leaves the device as it was', async (t) => {
  const { netns, device, keyFile } = sandbox(t);
  const m = manager(t, { keyFile, device, netns });
  await m.start();
  const good = { publicKey: peerKey(), endpoint: '198.18.9.12:51871', allowedIps: ['10.77.2.0/24'] };
  await m.setPeers([good]);
  await t.rejects(m.setPeers([good, { ...good, publicKey: peerKey(), allowedIps: ['10.77.2.0/99'] }]), { code: 'invalid_argument', field: 'peers[1].allowedIps[0]' });
  await t.rejects(m.setPeers([{ ...good, publicKey: m.publicKey }]), { code: 'invalid_argument', field: 'peers[0].publicKey' });
  t.same((await m.status()).peers.map((p) => p.publicKey), [good.publicKey]);
  t.same(routes(netns, device), ['10.77.2.0/24']);
});

t.test('stop removes the device, ends wireguard-go and removes its socket; a new start reuses the key', async (t) => {
  const { netns, device, keyFile } = sandbox(t);
  const m = manager(t, { keyFile, device, netns, implementation: 'wireguard-go' });
  await m.start();
  const pid = (await m.status()).processId;
  t.type(pid, 'number');
  const publicKey = m.publicKey;
  await m.stop();
  t.equal(linkExists(netns, device), false, 'no device');
  t.equal(isAlive(pid!), false, 'no wireguard-go process');
  t.equal(existsSync(uapiSocketPath(device)), false, 'no socket file');
  await t.rejects(m.status(), { code: 'failed_precondition' });
  await m.stop(); // a second stop is harmless

  await m.start();
  t.equal(m.publicKey, publicKey, 'the same key after a restart');
  t.equal(linkExists(netns, device), true);
});

t.test('a wireguard-go that dies is restarted and given its configuration and peers again', async (t) => {
  const { netns, device, keyFile } = sandbox(t);
  const logged: string[] = [];
  const m = manager(t, {
    keyFile, device, netns, implementation: 'wireguard-go', address: '10.77.1.1/32',
    logger: { info: (msg) => logged.push(msg), warn: (msg) => logged.push(msg), error: (msg) => logged.push(msg) },
  });
  await m.start();
  const peer = { publicKey: peerKey(), endpoint: '198.18.9.12:51871', allowedIps: ['10.77.2.0/24'] };
  await m.setPeers([peer]);
  const firstPid = (await m.status()).processId!;
  process.kill(firstPid, 'SIGKILL');
  await until('the restart', async () => (await m.status()).restarts === 1 && (await m.status()).up);
  const status = await m.status();
  t.not(status.processId, firstPid, 'a new process');
  t.same(status.peers.map((p) => [p.publicKey, p.endpoint, p.allowedIps]), [[peer.publicKey, peer.endpoint, peer.allowedIps]]);
  t.same(routes(netns, device), ['10.77.2.0/24'], 'routes are back');
  t.match(inNetns(netns, ['ip', 'address', 'show', 'dev', device]), '10.77.1.1/32', 'the address is back');
  t.ok(logged.includes('wireguard-go exited unexpectedly; restarting'), 'the death is logged');
});

t.test('a wireguard-go left by an earlier run in the same namespace is ended and replaced', async (t) => {
  const { netns, device, keyFile } = sandbox(t);
  const orphan = spawn('ip', ['netns', 'exec', netns, 'wireguard-go', '-f', device], {
    stdio: 'ignore', env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' },
  });
  t.teardown(() => { orphan.kill('SIGKILL'); });
  await until('the leftover wireguard-go', () => existsSync(uapiSocketPath(device)));
  const m = manager(t, { keyFile, device, netns, implementation: 'wireguard-go' });
  await m.start();
  t.equal(isAlive(orphan.pid!) && orphan.exitCode === null && orphan.signalCode === null, false, 'the leftover process is gone');
  t.not((await m.status()).processId, orphan.pid);
  t.equal(inNetns(netns, ['wg', 'show', device, 'public-key']).trim(), m.publicKey, 'the device runs with our key');
});

t.test('a device name that wireguard-go serves in another namespace is refused, and that process is left alone', async (t) => {
  const ours = sandbox(t);
  const other = sandbox(t);
  const foreign = spawn('ip', ['netns', 'exec', other.netns, 'wireguard-go', '-f', ours.device], {
    stdio: 'ignore', env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' },
  });
  t.teardown(() => { foreign.kill('SIGKILL'); });
  await until('the other wireguard-go', () => existsSync(uapiSocketPath(ours.device)));
  const m = manager(t, { keyFile: ours.keyFile, device: ours.device, netns: ours.netns, implementation: 'wireguard-go' });
  const err = await m.start().then(() => null, (e: unknown) => e);
  t.ok(err instanceof MeshidError && err.field === 'wireguard.device', 'refused with the device field');
  t.match((err as Error).message, `pid ${foreign.pid}`);
  t.equal(foreign.exitCode, null, 'the other process still runs');
  t.equal(linkExists(ours.netns, ours.device), false, 'nothing made in our namespace');
});

t.test('start refuses a key file with loose permissions and creates no device', async (t) => {
  const { netns, device, keyFile } = sandbox(t);
  loadOrCreateKeyPair(keyFile);
  chmodSync(keyFile, 0o604);
  const m = manager(t, { keyFile, device, netns });
  await t.rejects(m.start(), { field: 'wireguard.keyFile', message: new RegExp(keyFile) });
  t.equal(linkExists(netns, device), false);
});
