/**
 * `meshid demo up --servers 3` end to end, as root: the devnet with three
 * meshid-servers on a PostgreSQL the demo starts itself (Debian's, as the
 * postgres user), two nodes with real agents, WireGuard and the tc programs.
 * The server an agent is synced to is killed under traffic; the agent moves,
 * traffic goes on, and a pod whose entry is written through a surviving server
 * gets its identity and its first request through.
 */
import t, { type Test } from 'tap';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { DemoCluster } from '../../deploy/devnet/demo.js';
import { freePort, run } from '../helpers/process.js';

/** A port where it and the next two servers' (+10, +20) are free: the demo gives server i base + 10·i. */
async function freeBase(): Promise<number> {
  for (;;) {
    const base = await freePort();
    if (base + 20 > 65535) continue;
    const taken = await Promise.all([base + 10, base + 20].map((p) => new Promise<boolean>((resolve) => {
      const srv = createServer().once('error', () => resolve(true)).listen(p, '127.0.0.1', () => srv.close(() => resolve(false)));
    })));
    if (!taken.includes(true)) return base;
  }
}

const n = process.pid % 50;
const prefix = `h${process.pid % 100000}`;
const lines: string[] = [];
const cluster = new DemoCluster({
  prefix,
  underlayCidr: `192.168.${100 + n}.0/24`,
  podCidrPool: `10.${150 + n}.0.0/16`,
  adminPort: await freeBase(),
  agentApiPort: 18181,
  postgresPort: await freePort(),
  servers: 3,
  stateDir: mkdtempSync(join(tmpdir(), 'meshid-devnet-ha-')),
  say: (l) => lines.push(l),
});
t.teardown(() => cluster.down());

/** What the daemons said, printed before down() removes the logs. */
function showLogs(t: Test, tail: number): void {
  for (const name of ['postgres', 'server1', 'server2', 'server3', 'agent-n1', 'agent-n2']) {
    const log = join(cluster.stateDir, `${name}.log`);
    if (existsSync(log)) t.comment(`${name}.log:\n${readFileSync(log, 'utf8').trim().split('\n').slice(-tail).join('\n')}`);
  }
}

t.test('three servers on the demo\'s PostgreSQL: the synced server killed under traffic, the agent moves, a new pod joins through another server', async (t) => {
  try {
    await cluster.up();
  } catch (err) {
    showLogs(t, 8);
    throw err;
  }
  const s = cluster.state();
  t.equal(s.servers?.length, 3, 'three servers');
  t.ok(s.postgresDir && existsSync(s.postgresDir), 'a PostgreSQL cluster of the demo\'s own');
  t.match(lines.join('\n'), /PostgreSQL \(Debian's, a cluster of its own/);
  const shown = await cluster.show();
  t.ok(shown.allowed.ok, `frontend → backend answered before the failover (${shown.allowed.body})`);
  t.notOk(shown.refused.ok, 'legacy is refused');
  const servers = run('meshid', ['--server', s.adminUrl, '--token-file', s.tokenFile, '-o', 'json', 'server', 'list']);
  t.equal(servers.code, 0, servers.stderr);
  t.equal((JSON.parse(servers.stdout).servers as unknown[]).length, 3, '`meshid server list` shows the three');

  // every server shows the whole cluster: each agent relays to each server
  for (const server of s.servers!) {
    const admin = ['--server', server.adminUrl, '--token-file', s.tokenFile];
    const until = Date.now() + 20_000;
    let nodes: Array<{ node: string; state: string }> = [];
    while (Date.now() < until) {
      const r = await fetch(new URL('/v1/relay/nodes', server.adminUrl), { headers: { authorization: `Bearer ${readFileSync(s.tokenFile, 'utf8').trim()}` } });
      nodes = ((await r.json()) as { nodes: typeof nodes }).nodes;
      if (nodes.filter((n) => n.state === 'connected').length === 2) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    t.same(nodes.map((n) => [n.node, n.state]), [['n1', 'connected'], ['n2', 'connected']], `${server.name} hears both nodes`);
    const drops = run('meshid', [...admin, 'observe', '--verdict', 'DROPPED', '--last', '10']);
    t.match(drops.stdout, /\[n2\]: default\/legacy:\d+ .*DROPPED/, `${server.name} shows legacy's refused flow`);
  }

  let f: Awaited<ReturnType<DemoCluster['failover']>>;
  try {
    f = await cluster.failover();
  } catch (err) {
    showLogs(t, 40);
    throw err;
  }
  t.not(f.movedTo, f.killed, `n1 moved from ${f.killed} to ${f.movedTo} in ${f.moveMs} ms`);
  t.ok(f.traffic.ok, `traffic went on (${f.traffic.body})`);
  t.ok(f.late.readyMs !== null && f.late.first.ok, 'a pod whose entry was written through a surviving server got its identity and its first request through');
  t.match(lines.join('\n'), /10\. Agent n1 is synced to server\d .*SIGKILL it[\s\S]*11\. n1 moved to server\d/);
});

t.test('demo down removes the database too', async (t) => {
  const s = cluster.state();
  const pids = s.pids.map((p) => p.pid);
  await cluster.down();
  t.notOk(existsSync(s.postgresDir!), 'the PostgreSQL directory is gone');
  t.notOk(existsSync(`/run/netns/${prefix}-n1`), 'no node namespace left');
  const alive = pids.filter((pid) => { try { process.kill(pid, 0); return true; } catch { return false; } });
  t.same(alive, [], 'no process left (PostgreSQL included)');
});
