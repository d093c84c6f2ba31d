import t from 'tap';
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { cluster, rawClient, until } from './fixtures.js';

// A flood of idle TCP connections at the mutual-auth port. The flooder runs in a process of its own, from
// 127.0.0.2, an address that is no node of the registry (the fixture's nodes are all at 127.0.0.1).
const FLOOD = 4200;
const FLOODER = `
const net = require('node:net');
const [port, count] = [Number(process.argv[1]), Number(process.argv[2])];
let opened = 0;
const socks = [];
function one() {
  if (opened >= count) return;
  opened++;
  const s = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
  s.on('error', () => {}); s.on('close', () => { if (!stopped) setImmediate(one); });
  socks.push(s);
}
let stopped = false;
for (let i = 0; i < 256; i++) one();
const timer = setInterval(() => { for (let i = 0; i < 256; i++) one(); }, 5);
process.stdin.on('data', () => { stopped = true; clearInterval(timer); for (const s of socks) s.destroy(); process.exit(0); });
`;

async function handshakeMs(port: number, svid: Parameters<typeof rawClient>[1]): Promise<number> {
  const t0 = performance.now();
  const c = await rawClient(port, svid);
  const ms = performance.now() - t0;
  await c.close();
  return ms;
}
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };

t.test(`${FLOOD} connections from an address outside the registry are closed before TLS and delay a registered peer's handshake by < 100 ms`, async (tt) => {
  const c = await cluster(tt);
  const port = c.b.auth.port;
  const baseline: number[] = [];
  for (let i = 0; i < 15; i++) baseline.push(await handshakeMs(port, c.a.agent));

  const flooder = spawn(process.execPath, ['-e', FLOODER, String(port), String(FLOOD)], { stdio: ['pipe', 'ignore', 'inherit'] });
  tt.teardown(() => { flooder.stdin.write('x'); });
  await until(() => (c.b.auth.stats().failures['unregistered_source'] ?? 0) >= 1000, 20_000);
  const during: number[] = [];
  for (let i = 0; i < 15; i++) during.push(await handshakeMs(port, c.a.agent));
  await until(() => (c.b.auth.stats().failures['unregistered_source'] ?? 0) >= FLOOD, 30_000);
  const refused = c.b.auth.stats().failures['unregistered_source']!;
  flooder.stdin.write('x');

  tt.ok(refused >= FLOOD, `${refused} connections from the unregistered address were closed`);
  tt.equal(c.b.auth.stats().handshakes.failed, 0, 'none of them got as far as a TLS handshake');
  const delay = median(during) - median(baseline);
  tt.ok(delay < 100, `the registered peer's handshake: median ${median(baseline).toFixed(1)} ms alone, ${median(during).toFixed(1)} ms during the flood (+${delay.toFixed(1)} ms, limit 100)`);
});

t.test('a registered address holds at most 16 connections, and one that never handshakes is closed after the 2 s deadline', async (tt) => {
  const c = await cluster(tt);
  const port = c.b.auth.port;
  const idle: Socket[] = [];
  const closedAt: number[] = [];
  const opened = Date.now();
  for (let i = 0; i < 40; i++) {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    s.on('close', () => closedAt.push(Date.now() - opened));
    idle.push(s);
  }
  tt.teardown(() => { for (const s of idle) s.destroy(); });
  await until(() => (c.b.auth.stats().failures['source_limit'] ?? 0) >= 24, 5000);
  tt.equal(c.b.auth.stats().failures['source_limit'], 24, '40 - 16 were closed at once');
  await until(() => closedAt.length === 40, 10_000);
  const late = closedAt.filter((ms) => ms >= 1500);
  tt.equal(late.length, 16, 'the 16 admitted ones were held until the handshake deadline');
  tt.ok(Math.max(...closedAt) < 6000, `and closed by it (${Math.max(...closedAt)} ms)`);
  // the slots are free again: the real peer gets in
  const ms = await handshakeMs(port, c.a.agent);
  tt.ok(ms < 2000, `the registered peer's handshake after the flood: ${ms.toFixed(1)} ms`);
});
