/**
 * High availability, end to end, with the real binaries: three meshid-servers
 * on one PostgreSQL (a real cluster started here), two meshid-agents given all
 * three addresses, workloads reading FetchX509SVID with 30 s SVIDs while
 * entries churn through whichever server is up. Then: SIGKILL the server the
 * first agent is synced to, later the leader (or another), and restart
 * PostgreSQL itself. Nothing a workload asks for may fail, no SVID it gets may
 * be expired, every SVID is renewed before it expires, every acknowledged
 * write is there at the end, and the leader moved.
 */
import { credentials } from '@grpc/grpc-js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadWorkloadProto, workloadCallMetadata, type X509SVIDResponseMessage } from '../../agent/workloadapi/index.js';
import { parseCertificate, splitConcatenatedDer } from '../../spiffe/index.js';
import { PostgresCluster } from '../helpers/postgres.js';
import { Daemon, freePort, run } from '../helpers/process.js';

const uid = process.getuid!();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const TTL = 30;
const PER_AGENT = 6;

t.test('three servers on PostgreSQL, two agents: servers killed and the database restarted under load, nothing lost', { timeout: 300_000 }, async (t) => {
  const pg = await PostgresCluster.start();
  t.teardown(() => pg.destroy());
  const url = await pg.createDatabase('meshid_ha_e2e');
  const dir = mkdtempSync(join(tmpdir(), 'meshid-ha-e2e-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tokenFile = join(dir, 'admin.token');
  writeFileSync(tokenFile, 'ha-e2e-admin-token-0123456789\n', { mode: 0o600 });
  const adminToken = readFileSync(tokenFile, 'utf8').trim();

  // three servers, one database
  const servers: { name: string; daemon: Daemon; agentPort: number; adminPort: number; id: string; alive: boolean }[] = [];
  for (const name of ['s1', 's2', 's3']) {
    const agentPort = await freePort();
    const adminPort = await freePort();
    const config = join(dir, `${name}.yaml`);
    writeFileSync(config, [
      `data_dir: ${join(dir, name)}`, 'trust_domain: example.org', `bind: 127.0.0.1:${agentPort}`, `admin: 127.0.0.1:${adminPort}`,
      `admin_token_file: ${tokenFile}`, 'key_manager: memory', `datastore: { url: "${url}" }`, 'x509_svid_ttl: 30s', 'agent_svid_ttl: 60s',
    ].join('\n') + '\n');
    const daemon = new Daemon('meshid-server', ['run', '--config', config]);
    t.teardown(() => daemon.stop('SIGKILL'));
    await daemon.waitFor(/meshid-server started/, 60_000);
    const id = readFileSync(join(dir, name, 'server_id'), 'utf8').trim();
    servers.push({ name, daemon, agentPort, adminPort, id, alive: true });
  }
  const alive = () => servers.filter((s) => s.alive);
  const admin = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
    let last: unknown;
    for (const s of alive()) {
      try {
        const res = await fetch(`http://127.0.0.1:${s.adminPort}${path}`, {
          method, headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
          ...(body ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(5000),
        });
        return { status: res.status, json: await res.json() as Record<string, unknown> };
      } catch (err) { last = err; }
    }
    throw last;
  };
  // the bundle holds every server's CA before agents start
  for (let i = 0; i < 200; i++) {
    const pem = run('meshid', ['--server', `http://127.0.0.1:${servers[0]!.adminPort}`, '--token-file', tokenFile, 'bundle', 'show', '--format', 'pem']).stdout;
    if ((pem.match(/BEGIN CERTIFICATE/g) ?? []).length === 3) { writeFileSync(join(dir, 'bundle.pem'), pem); break; }
    await sleep(100);
  }
  t.equal((readFileSync(join(dir, 'bundle.pem'), 'utf8').match(/BEGIN CERTIFICATE/g) ?? []).length, 3, 'the bundle has all three servers\' CAs');

  // two agents, each given all three servers
  const serverList = servers.map((s) => `127.0.0.1:${s.agentPort}`).join(',');
  const agents: { name: string; daemon: Daemon; socket: string; agentId: string }[] = [];
  for (const name of ['node-a', 'node-b']) {
    const agentId = `spiffe://example.org/meshid/agent/join_token/${name}`;
    const tok = await admin('POST', '/v1/tokens', { agent_id: agentId, ttl: 600 });
    const entries = Array.from({ length: PER_AGENT }, (_, i) => ({
      spiffe_id: `spiffe://example.org/ns/${name}/sa/w${i}`, parent_id: agentId, x509_svid_ttl: TTL, selectors: [`unix:uid:${uid}`],
    }));
    const created = await admin('POST', '/v1/entries:batchCreate', { entries });
    t.equal(created.status, 200);
    const socket = join(dir, `${name}.sock`);
    const daemon = new Daemon('meshid-agent', ['run', '--server', serverList, '--join-token', String(tok.json.token), '--trust-bundle', join(dir, 'bundle.pem'),
      '--socket', socket, '--data-dir', join(dir, name), '--health', '127.0.0.1:0', '--node-name', name]);
    t.teardown(() => daemon.stop('SIGKILL'));
    await daemon.waitFor(/meshid-agent started/, 60_000);
    agents.push({ name, daemon, socket, agentId });
  }

  // workloads: one live stream per agent, and a fresh fetch every 250 ms
  const proto = loadWorkloadProto();
  let failedFetches = 0;
  let fetches = 0;
  let expiredServed = 0;
  const serials = new Map<string, Set<string>>(); // spiffe id → serials seen
  const lastExpiry = new Map<string, number>();
  const note = (m: X509SVIDResponseMessage): void => {
    for (const svid of m.svids) {
      const leaf = parseCertificate(splitConcatenatedDer(svid.x509_svid)[0]!);
      if (leaf.notAfter.getTime() <= Date.now()) expiredServed++;
      const set = serials.get(svid.spiffe_id) ?? new Set<string>();
      set.add(leaf.serialHex);
      serials.set(svid.spiffe_id, set);
      lastExpiry.set(svid.spiffe_id, Math.max(lastExpiry.get(svid.spiffe_id) ?? 0, leaf.notAfter.getTime()));
    }
  };
  const clients = agents.map((a) => new proto.Client(`unix:${a.socket}`, credentials.createInsecure()) as unknown as Record<string, Function> & { close(): void });
  t.teardown(() => { for (const c of clients) c.close(); });
  const fetchOnce = (c: Record<string, Function>): Promise<X509SVIDResponseMessage> => new Promise((resolve, reject) => {
    const st = c['FetchX509SVID']!({}, workloadCallMetadata(), { deadline: Date.now() + 5000 }) as NodeJS.EventEmitter & { cancel(): void };
    st.once('data', (m: X509SVIDResponseMessage) => { st.removeAllListeners(); st.on('error', () => {}); st.cancel(); resolve(m); });
    st.once('error', reject);
  });
  for (const c of clients) {
    for (let i = 0; i < 300; i++) { const m = await fetchOnce(c).catch(() => undefined); if (m?.svids.length === PER_AGENT) break; await sleep(100); }
    const st = c['FetchX509SVID']!({}, workloadCallMetadata()) as NodeJS.EventEmitter;
    st.on('data', note);
    st.on('error', () => undefined);
  }
  let running = true;
  const readers = clients.map(async (c) => {
    while (running) {
      fetches++;
      try {
        const m = await fetchOnce(c);
        if (m.svids.length !== PER_AGENT) failedFetches++;
        note(m);
      } catch { failedFetches++; }
      await sleep(250);
    }
  });

  // churn: entries created and deleted through whichever server answers
  const acknowledged = new Set<string>();
  const deleted = new Set<string>();
  let churnErrors = 0;
  const churn = (async () => {
    let i = 0;
    while (running) {
      try {
        const r = await admin('POST', '/v1/entries', { spiffe_id: `spiffe://example.org/ns/churn/sa/c${i}`, parent_id: agents[i % 2]!.agentId, selectors: [`unix:uid:${70000 + i}`] });
        if (r.status === 201) acknowledged.add(String(r.json.id));
        if (i % 3 === 2) {
          const victim = [...acknowledged].find((id) => !deleted.has(id));
          if (victim && (await admin('DELETE', `/v1/entries/${victim}`)).status === 200) deleted.add(victim);
        }
      } catch { churnErrors++; }
      i++;
      await sleep(150);
    }
  })();

  const leaderOf = async (): Promise<string | undefined> => {
    const r = await admin('GET', '/v1/servers');
    return (r.json.servers as { server_id: string; leases: string[] }[]).find((s) => s.leases.includes('maintenance'))?.server_id;
  };
  await sleep(8000);
  const leaderBefore = await leaderOf();
  // 1. SIGKILL the server the first agent is synced to
  const synced = [...agents[0]!.daemon.lines].reverse().find((l) => l['msg'] === 'synced with the server')?.['server'] as string | undefined;
  const first = servers.find((s) => synced?.endsWith(`:${s.agentPort}`)) ?? servers[0]!;
  first.daemon.child.kill('SIGKILL');
  first.alive = false;
  t.pass(`killed ${first.name}, the server ${agents[0]!.name} was synced to`);
  await sleep(12_000);
  // 2. SIGKILL the leader if it is still up, else another one
  const leaderNow = await leaderOf();
  const second = alive().find((s) => s.id === leaderNow) ?? alive()[0]!;
  second.daemon.child.kill('SIGKILL');
  second.alive = false;
  t.pass(`killed ${second.name}${second.id === leaderNow ? ' (the leader)' : ''}`);
  await sleep(12_000);
  // 3. PostgreSQL restarts under the last server
  pg.stopServer('fast');
  await sleep(3000);
  pg.startServer();
  await sleep(20_000); // past a whole SVID lifetime since the first kill
  running = false;
  await Promise.all([...readers, churn]);

  const last = alive()[0]!;
  t.equal(alive().length, 1);
  t.equal(failedFetches, 0, `every one of ${fetches} Workload API fetches was answered with every SVID`);
  t.equal(expiredServed, 0, 'no expired SVID was ever served');
  for (const a of agents) {
    for (let i = 0; i < PER_AGENT; i++) {
      const id = `spiffe://example.org/ns/${a.name}/sa/w${i}`;
      t.ok((serials.get(id)?.size ?? 0) >= 3, `${id} was renewed along the way (${serials.get(id)?.size ?? 0} SVIDs seen)`);
      t.ok((lastExpiry.get(id) ?? 0) > Date.now(), `${id} holds an SVID that is still valid`);
    }
  }
  // every acknowledged write is there (and every acknowledged delete is gone)
  const listed = new Set<string>();
  let pageToken = '';
  do {
    const r = await admin('GET', `/v1/entries?page_size=500${pageToken ? `&page_token=${pageToken}` : ''}`);
    for (const e of r.json.entries as { id: string }[]) listed.add(e.id);
    pageToken = String(r.json.next_page_token ?? '');
  } while (pageToken);
  const lost = [...acknowledged].filter((id) => !deleted.has(id) && !listed.has(id));
  const resurrected = [...deleted].filter((id) => listed.has(id));
  t.same(lost, [], `all ${acknowledged.size - deleted.size} acknowledged entries are there (${churnErrors} writes failed while a server or the database was down)`);
  t.same(resurrected, [], 'no deleted entry came back');
  t.ok(acknowledged.size > 50, `entries kept being written (${acknowledged.size})`);
  // (identity and node numbers allocated through two servers at once: test/server/ha.test.ts;
  // these agents run without a datapath, so they publish no node)
  const agentsListed = (await admin('GET', '/v1/agents')).json.agents as { spiffe_id: string; banned: boolean }[];
  t.same(agentsListed.map((a) => a.spiffe_id).sort(), agents.map((a) => a.agentId).sort(), 'both agents attested once each, neither evicted nor banned');
  // the survivor leads
  const leaderAfter = await leaderOf();
  t.equal(leaderAfter, last.id, `the leader moved to the survivor (${leaderBefore} → ${leaderAfter})`);
  t.ok(agents.every((a) => a.daemon.child.exitCode === null), 'both agents are still running');
});
