/**
 * The devnet end to end, as root: two nodes in network namespaces with real
 * agents, wireguard-go, the tc programs and mutual authentication; a server in
 * the root namespace. One cluster for the whole file (bringing one up takes
 * seconds), torn down at the end.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DemoCluster, httpFromNamespace, POLICY_YAML, tcpRetransmits } from '../../deploy/devnet/demo.js';
import { bin, freePort, run } from '../helpers/process.js';

const until = async (what: string, cond: () => Promise<boolean>, ms = 30_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!(await cond().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

const n = process.pid % 50;
const prefix = `e${process.pid % 100000}`;
const cluster = new DemoCluster({
  prefix,
  underlayCidr: `192.168.${150 + n}.0/24`,
  podCidrPool: `10.${200 + n}.0.0/16`,
  adminPort: await freePort(),
  agentApiPort: 18081,
  stateDir: mkdtempSync(join(tmpdir(), 'meshid-devnet-')),
});
// a safety net: the last test tears down and checks; down() is idempotent
t.teardown(() => cluster.down());

await cluster.up();
const state = cluster.state();
const pod = (name: string) => state.devnet.pods.find((p) => p.name === name)!;
const backendUrl = `http://${pod('backend').ip}:8080/`;
const hasPair = (entries: { local_spiffe_id: string | null; remote_spiffe_id: string | null }[], local: string, remote: string): boolean =>
  entries.some((e) => e.local_spiffe_id?.endsWith(`/sa/${local}`) && e.remote_spiffe_id?.endsWith(`/sa/${remote}`));

/** What a failed connection leaves to read: each node's WireGuard peers and routes, and the end of each agent's log. */
function diagnosis(): string {
  const inNode = (ns: string, argv: string[]): string => spawnSync('nsenter', [`--net=/run/netns/${ns}`, ...argv], { encoding: 'utf8' }).stdout;
  return state.devnet.nodes.map((n) => {
    const log = readFileSync(join(cluster.stateDir, `agent-${n.name}.log`), 'utf8').trim().split('\n').slice(-40).join('\n');
    return `--- ${n.name}\n${inNode(n.namespace, ['wg', 'show', 'all', 'dump'])}${inNode(n.namespace, ['ip', 'route'])}${log}`;
  }).join('\n');
}

interface DroppedFlow { verdict: string; drop_reason_desc?: string; source: { pod_name?: string } }

/** The DROPPED flows a node's agent reports from now on (`meshid observe`), collected until the test ends; `errors` says if the stream broke. */
async function droppedFlows(t: { teardown(fn: () => unknown): void }, node: string): Promise<DroppedFlow[] & { errors: string[] }> {
  const flows = Object.assign([] as DroppedFlow[], { errors: [] as string[] });
  let stopped = false;
  const stream = httpRequest({ socketPath: state.agentSockets[node]!.admin, path: '/v1/observe?verdict=DROPPED', agent: false }, (res) => {
    let buf = '';
    res.on('data', (d: Buffer) => { buf += d; let i; while ((i = buf.indexOf('\n')) >= 0) { flows.push(JSON.parse(buf.slice(0, i)) as DroppedFlow); buf = buf.slice(i + 1); } });
  });
  // a failed stream is this test's failure, with the agent's last words, not an uncaught exception in whichever test runs then
  stream.on('error', (err) => { if (!stopped) flows.errors.push(`the observe stream of ${node} failed: ${err.message}\n${diagnosis()}`); });
  t.teardown(() => { stopped = true; });
  stream.end();
  t.teardown(() => stream.destroy());
  await new Promise((r) => setTimeout(r, 300)); // subscribed before the traffic starts
  return flows;
}

t.test('the policy\'s pair is authenticated on both nodes before any packet, and the first connection succeeds with no SYN retransmission', async (t) => {
  t.ok(hasPair(await cluster.authEntries('n1'), 'frontend', 'backend'), 'n1 holds frontend → backend');
  t.ok(hasPair(await cluster.authEntries('n2'), 'backend', 'frontend'), 'n2 holds backend ← frontend');
  const before = tcpRetransmits(pod('frontend').namespace);
  const r = httpFromNamespace(pod('frontend').namespace, backendUrl);
  const retransmitted = tcpRetransmits(pod('frontend').namespace) - before;
  const why = r.ok && retransmitted === 0 ? '' : `\n${diagnosis()}`;
  t.ok(r.ok, `frontend reached backend: ${r.body}${why}`);
  t.match(r.body, /hello from backend/);
  t.equal(retransmitted, 0, `no retransmitted segment (no SYN was dropped)${why}`);
});

t.test('cross-node pod traffic crosses the underlay only as WireGuard UDP', async (t) => {
  const result = await cluster.show();
  t.ok(result.allowed.ok, 'request succeeded during the capture');
  t.ok(result.capture.wireguard > 0, 'WireGuard packets were seen');
  t.same(result.capture.other, [], 'nothing but WireGuard UDP 51871 on the underlay');
  t.notOk(result.refused.ok, 'the pod without an SVID was refused');
});

t.test('a pod without an authenticated pair is dropped with reason AUTH_REQUIRED, seen by observe', async (t) => {
  const flows = await droppedFlows(t, 'n2');
  const r = httpFromNamespace(pod('legacy').namespace, backendUrl, 1500);
  t.notOk(r.ok, 'legacy cannot reach backend');
  await until('a drop event', async () => flows.some((f) => f.source.pod_name === 'legacy'));
  const drop = flows.find((f) => f.source.pod_name === 'legacy')!;
  t.equal(drop.verdict, 'DROPPED');
  t.equal(drop.drop_reason_desc, 'AUTH_REQUIRED');
  t.notOk(hasPair(await cluster.authEntries('n2'), 'backend', 'legacy'), 'no auth entry was written for it');
  t.same(flows.errors, [], 'the observe stream held');
});

t.test('through the server alone, after the fact: `meshid observe --verdict DROPPED --last 10` shows legacy\'s refused flow on n2, and `meshid auth list` every node\'s pairs', async (t) => {
  const admin = ['--server', state.adminUrl, '--token-file', state.tokenFile];
  // the drop of the test before, relayed by n2's agent; no agent socket is read
  await until('the drop relayed to the server', async () => /legacy/.test(run('meshid', [...admin, 'observe', '--verdict', 'DROPPED', '--last', '10']).stdout));
  const compact = run('meshid', [...admin, 'observe', '--verdict', 'DROPPED', '--last', '10']);
  t.equal(compact.code, 0, compact.stderr);
  t.match(compact.stdout, /\[n2\]: default\/legacy:\d+ \(ID:\d+\) -> default\/backend:8080 \(ID:\d+\) ingress Authentication required by default\/backend-requires-auth DROPPED \(TCP\) auth=SPIRE/,
    'the compact line names the node and the policy that required authentication');
  const json = run('meshid', [...admin, '-o', 'json', 'observe', '--verdict', 'DROPPED', '--from-pod', 'default/legacy', '--last', '1']);
  const line = JSON.parse(json.stdout.trim().split('\n').pop()!) as { node_name: string; flow: { drop_reason_desc: string; destination: { pod_name: string }; traffic_direction: string } };
  t.same([line.node_name, line.flow.drop_reason_desc, line.flow.destination.pod_name, line.flow.traffic_direction], ['n2', 'AUTH_REQUIRED', 'backend', 'INGRESS']);
  const both = run('meshid', [...admin, '-o', 'json', 'observe', '--last', '200']);
  const nodes = new Set(both.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { node_name?: string }).node_name).filter(Boolean));
  t.same([...nodes].sort(), ['n1', 'n2'], 'flows of both nodes reach the server');
  const auth = run('meshid', [...admin, 'auth', 'list']);
  t.equal(auth.code, 0, auth.stderr);
  t.match(auth.stdout, /\nn1 .*sa\/frontend.*sa\/backend.*n2 +mutual/, 'n1\'s pair');
  t.match(auth.stdout, /\nn2 .*sa\/backend.*sa\/frontend.*n1 +mutual/, 'n2\'s pair');
  const explain = run('meshid', [...admin, 'explain', '--from', 'legacy', '--to', 'backend', '--port', '8080']);
  t.equal(explain.code, 0, explain.stderr);
  t.match(explain.stdout, /\[n2\]\ningress of .*DENY|\[n2\]\ningress of .*ALLOW/, 'n2, which hosts backend, explains it');
  t.match(explain.stdout, /auth entry: missing/);
});

t.test('the Grafana dashboard (deploy/kubernetes/components/monitoring) queries only metrics that the server and the agents export', async (t) => {
  const { packageRoot } = await import('../../api/assets.js');
  const dashboard = JSON.parse(readFileSync(join(packageRoot, 'deploy', 'kubernetes', 'components', 'monitoring', 'grafana-dashboard.json'), 'utf8')) as
    { uid: string; panels: Array<{ id: number; type: string; targets?: Array<{ expr: string; datasource: { uid: string } }> }> };
  const exported = new Set<string>();
  const names = (text: string): void => { for (const m of text.matchAll(/^# TYPE (\S+) (\w+)$/gm)) { exported.add(m[1]!); if (m[2] === 'histogram') exported.add(`${m[1]}_bucket`); } };
  names(await (await fetch(new URL('/metrics', state.adminUrl))).text());
  for (const n of state.devnet.nodes) {
    const r = httpFromNamespace(n.namespace, 'http://127.0.0.1:8082/metrics');
    t.ok(r.ok, `${n.name}'s agent answers /metrics`);
    names(r.body);
  }
  const ids = dashboard.panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  const queries = dashboard.panels.flatMap((p) => p.targets ?? []);
  t.ok(queries.length >= 15, `${queries.length} queries`);
  for (const q of queries) {
    t.equal(q.datasource.uid, '\${datasource}', 'every query uses the dashboard\'s data source variable');
    for (const [metric] of q.expr.matchAll(/meshid_[a-z0-9_]+/g)) t.ok(exported.has(metric), `${metric} is exported (${q.expr.slice(0, 60)}…)`);
  }
});

t.test('the web UI in Chromium: the map shows frontend → backend authenticated and legacy → backend dropped for want of authentication; its edge explains the deciding policy; every page renders; a session only reads', async (t) => {
  const { chromium } = await import('playwright-core');
  const { packageRoot } = await import('../../api/assets.js');
  const { mkdirSync } = await import('node:fs');
  const admin = ['--server', state.adminUrl, '--token-file', state.tokenFile];
  const shots = join(packageRoot, 'build', 'test-output', 'ui');
  mkdirSync(shots, { recursive: true });
  const link = run('meshid', [...admin, 'ui', '--print-url']);
  t.equal(link.code, 0, link.stderr);
  const url = link.stdout.trim();
  t.match(url, /\/ui\/login\?code=[A-Za-z0-9_-]{20,}$/);
  const profile = mkdtempSync(join(tmpdir(), 'meshid-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true, viewport: { width: 1500, height: 1000 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  t.teardown(() => browser.close());
  const page = browser.pages()[0] ?? await browser.newPage();
  await page.goto(url);
  t.match(page.url(), /\/ui\/$/, 'the link signs in and leads to the UI');

  // the map: its pairs are also a table (the map's own), each row naming its state
  const authed = page.locator('#pairs tr[data-state="authenticated"]', { hasText: /frontend.*backend/ });
  await authed.first().waitFor({ timeout: 30_000 });
  t.match(await authed.first().innerText(), /default\/frontend\s+default\/backend\s+authenticated/, 'frontend → backend is authenticated');
  const refused = page.locator('#pairs tr[data-state="auth-missing"]', { hasText: /legacy.*backend/ });
  await refused.first().waitFor({ timeout: 30_000 });
  t.match(await refused.first().innerText(), /dropped: auth required/, 'legacy → backend is dropped for want of authentication');
  await page.screenshot({ path: join(shots, 'map.png') });

  // a real click on the edge as drawn
  const pairId = (await refused.first().getAttribute('data-pair'))!;
  const at = await page.evaluate((id) => (globalThis as unknown as { meshidMap: { edgePoint(id: string): { x: number; y: number } | undefined } }).meshidMap.edgePoint(id), pairId);
  t.ok(at, 'the edge is drawn');
  await page.mouse.click(at!.x, at!.y);
  await page.locator('#explain', { hasText: /selected by/ }).waitFor({ timeout: 15_000 });
  const explained = await page.locator('#explain').innerText();
  t.match(explained, /default\/backend-requires-auth/, 'the panel names the deciding policy');
  t.match(explained, /auth entry: missing/);
  t.match(await page.locator('#panel').innerText(), /Authentication required by default\/backend-requires-auth DROPPED/, 'and lists the pair\'s last flows');
  await page.screenshot({ path: join(shots, 'map-edge.png') });

  await page.goto(url.replace(/\/ui\/login.*$/, '/ui/#/flows'));
  await page.locator('#flows tbody tr').first().waitFor({ timeout: 15_000 });
  await page.screenshot({ path: join(shots, 'flows.png') });
  await page.goto(url.replace(/\/ui\/login.*$/, '/ui/#/entries'));
  await page.locator('#list tbody tr').first().waitFor();
  const entries = await page.locator('#list').innerText();
  for (const sa of ['frontend', 'backend']) t.match(entries, new RegExp(`spiffe://[^\\s]+/ns/default/sa/${sa}`), `the entries page lists ${sa}`);
  await page.fill('#search', 'backend');
  t.equal(await page.locator('#list tbody tr').count(), 1, 'the search narrows the list');
  await page.locator('#list tbody tr').first().click();
  t.match(await page.locator('#panel').innerText(), /X509-SVID TTL/, 'a row opens its detail');
  await page.screenshot({ path: join(shots, 'entries.png') });
  for (const view of ['agents', 'policies', 'identities']) {
    await page.goto(url.replace(/\/ui\/login.*$/, `/ui/#/${view}`));
    await page.locator('#list tbody tr').first().waitFor();
    await page.screenshot({ path: join(shots, `${view}.png`) });
  }
  t.match(await page.locator('#list').innerText(), /default\/backend/, 'the identities page lists the demo\'s identities');

  const write = await page.evaluate(async () => (await fetch('/v1/entries', { method: 'POST', body: '{}' })).status);
  t.equal(write, 403, 'a browser session cannot change anything');
  const reused = await browser.newPage();
  const again = await reused.goto(url);
  t.equal(again?.status(), 401, 'a login link works once');
  const anonymous = await fetch(new URL('/ui/', state.adminUrl));
  t.equal(anonymous.status, 401, 'no session, no UI');
});

t.test('the CLI: policy list, auth list and explain read the server and the agents; an unsupported policy field is refused by name', async (t) => {
  const admin = ['--server', state.adminUrl, '--token-file', state.tokenFile];
  const list = run('meshid', [...admin, 'policy', 'list']);
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, /backend-requires-auth\s+CiliumNetworkPolicy/);
  const auth = run('meshid', ['auth', 'list', '--agent', state.agentSockets['n1']!.admin]);
  t.equal(auth.code, 0, auth.stderr);
  t.match(auth.stdout, /sa\/frontend.*sa\/backend.*n2\s+mutual/);
  const explain = run('meshid', ['explain', '--from', 'legacy', '--to', 'backend', '--port', '8080', '--agent', state.agentSockets['n2']!.admin]);
  t.equal(explain.code, 0, explain.stderr);
  t.match(explain.stdout, /selected by: default\/backend-requires-auth/);
  t.match(explain.stdout, /auth entry: missing/);
  const bad = join(cluster.stateDir, 'bad-policy.yaml');
  writeFileSync(bad, 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: fqdn, namespace: default}\nspec:\n  endpointSelector: {}\n  egress:\n    - toFQDNs: [{matchName: example.com}]\n');
  const refused = run('meshid', [...admin, 'policy', 'apply', '-f', bad]);
  t.not(refused.code, 0, 'refused');
  t.match(refused.stderr, /toFQDNs/, 'the message names the unsupported field');
  t.notMatch(run('meshid', [...admin, 'policy', 'list']).stdout, /fqdn/, 'nothing was stored');
});

t.test('requiring authentication of a flow that is already allowed drops none of its packets: the old verdict holds until the pair is authenticated', async (t) => {
  const applyPolicy = async (yaml: string): Promise<void> => {
    const res = await fetch(new URL('/v1/policies:apply', state.adminUrl), {
      method: 'POST', headers: { authorization: `Bearer ${readFileSync(state.tokenFile, 'utf8').trim()}` }, body: JSON.stringify({ yaml }),
    });
    t.equal(res.status, 200, `policy applied: ${await res.text()}`);
  };
  // the same policy without its authentication requirement: the flow is allowed, no auth entry is needed
  const open = POLICY_YAML.replace('      authentication:\n        mode: required\n', '');
  t.not(open, POLICY_YAML);
  await applyPolicy(open);
  await until('n2 to drop its backend ← frontend entry', async () => !hasPair(await cluster.authEntries('n2'), 'backend', 'frontend'));
  t.ok(httpFromNamespace(pod('frontend').namespace, backendUrl).ok, 'allowed without authentication');

  const flows = await droppedFlows(t, 'n2');

  // a new TCP connection every 10 ms from frontend while the requirement is applied
  const script = `const http=require('node:http');const end=Date.now()+Number(process.argv[2]);let ok=0,failed=0;const errors=[];
(async()=>{while(Date.now()<end){await new Promise(res=>{http.get(process.argv[1],{agent:false,timeout:2000},r=>{r.resume();r.on('end',()=>{ok++;res()})}).on('timeout',function(){this.destroy(new Error('timeout'))}).on('error',e=>{failed++;errors.push(e.message);res()})});await new Promise(r=>setTimeout(r,10));}
process.stdout.write(JSON.stringify({ok,failed,errors:errors.slice(0,5)})+'\\n');})();`;
  const retransmitsBefore = tcpRetransmits(pod('frontend').namespace);
  const child = spawn('nsenter', [`--net=/run/netns/${pod('frontend').namespace}`, process.execPath, '-e', script, backendUrl, '3000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise((r) => setTimeout(r, 700));
  await applyPolicy(POLICY_YAML);
  await exited;
  const traffic = JSON.parse(out.trim()) as { ok: number; failed: number; errors: string[] };
  t.ok(traffic.ok > 50, `connections kept being made (${traffic.ok})`);
  t.equal(traffic.failed, 0, `no connection failed: ${traffic.errors.join('; ')}`);
  t.equal(tcpRetransmits(pod('frontend').namespace) - retransmitsBefore, 0, 'no segment was retransmitted');
  t.same(flows.filter((f) => f.source.pod_name === 'frontend'), [], 'no packet of frontend was dropped');
  t.same(flows.errors, [], 'the observe stream held');
  t.ok(hasPair(await cluster.authEntries('n2'), 'backend', 'frontend'), 'the pair is authenticated again');
  // legacy (app: frontend, but no SVID) was allowed by the open policy too: its flow is held for
  // mutual_auth.upgrade_grace (2 s), then enforced although its pair never authenticates
  await until('legacy to be refused again', async () => !httpFromNamespace(pod('legacy').namespace, backendUrl, 1000).ok, 15_000);
  t.notOk(httpFromNamespace(pod('legacy').namespace, backendUrl, 1000).ok, 'the requirement is enforced: legacy, which cannot authenticate, is refused');
  t.notOk(hasPair(await cluster.authEntries('n2'), 'backend', 'legacy'), 'and has no auth entry');
});

t.test('a pod added at run time: `meshid-agent endpoint add --wait` returns once its pairs are authenticated, and its first connection has no retransmission', async (t) => {
  // a new ServiceAccount, so its identity, SVID and pair are all new: nothing was authenticated before
  const fresh = await cluster.addPod('frontend2', 'n1', 'frontend2');
  const admin = state.agentSockets['n1']!.admin;
  const add = (extra: string[] = []) => run('meshid-agent', ['endpoint', 'add', '--admin-socket', admin, '--name', 'frontend2', '--service-account', 'frontend2',
    '--label', 'app=frontend', '--ip', fresh.ip, '--interface', fresh.hostVeth, ...extra]);

  const bad = run('meshid-agent', ['endpoint', 'add', '--admin-socket', admin, '--name', 'x', '--ip', '10.999.0.1', '--interface', fresh.hostVeth]);
  t.not(bad.code, 0, 'a bad IP is refused');
  t.match(bad.stderr, /\(ip\)/, 'naming the field');
  const noLink = run('meshid-agent', ['endpoint', 'add', '--admin-socket', admin, '--name', 'x', '--ip', fresh.ip, '--interface', 'nosuchveth']);
  t.not(noLink.code, 0, 'an interface that does not exist is refused');
  t.match(noLink.stderr, /nosuchveth.*\(interface\)/);
  const raw = (method: string, path: string, body?: string): Promise<number> => new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: admin, path, method, agent: false }, (res) => { res.resume(); resolve(res.statusCode!); });
    req.on('error', reject);
    req.end(body);
  });
  t.equal(await raw('POST', '/v1/endpoints', '{not json'), 400, 'a body that is not JSON: 400');
  t.equal(await raw('PUT', '/v1/endpoints'), 405);
  t.equal(await raw('POST', '/v1/endpoints?wait=forever', '{}'), 400, 'a bad wait: 400');
  t.notMatch(run('meshid-agent', ['endpoint', 'list', '--admin-socket', admin]).stdout, new RegExp(fresh.ip.replace(/\./g, '\\.')), 'nothing was added');

  const before = tcpRetransmits(fresh.namespace);
  const added = add(['--wait', '30']);
  t.equal(added.code, 0, added.stdout + added.stderr);
  t.match(added.stdout, /default\/frontend2.*ready/);
  t.ok(hasPair(await cluster.authEntries('n2'), 'backend', 'frontend2'), 'n2 authenticated backend ← frontend2 before the pod sent anything');
  const r = httpFromNamespace(fresh.namespace, backendUrl);
  const retransmitted = tcpRetransmits(fresh.namespace) - before;
  const why = r.ok && retransmitted === 0 ? '' : `\n${diagnosis()}`;
  t.ok(r.ok, `frontend2 reached backend at once: ${r.body}${why}`);
  t.equal(retransmitted, 0, `its first SYN was not dropped${why}`);

  const listed = run('meshid-agent', ['endpoint', 'list', '--admin-socket', admin]);
  t.match(listed.stdout, new RegExp(`default/frontend2\\s+${fresh.ip.replace(/\./g, '\\.')}\\s+${fresh.hostVeth}.*ready`));
  const removed = run('meshid-agent', ['endpoint', 'remove', '--admin-socket', admin, '--ip', fresh.ip]);
  t.equal(removed.code, 0, removed.stderr);
  await until('n2 to drop backend ← frontend2', async () => !hasPair(await cluster.authEntries('n2'), 'backend', 'frontend2'));
  t.notOk(httpFromNamespace(fresh.namespace, backendUrl, 1500).ok, 'removed: its traffic is no longer let in');
  const again = run('meshid-agent', ['endpoint', 'remove', '--admin-socket', admin, '--ip', fresh.ip]);
  t.not(again.code, 0);
  t.match(again.stderr, /no endpoint/);
});

t.test('a pod\'s init container: `meshid-agent api wait-ready` inside the pod holds it until its pairs are authenticated; a pod that cannot authenticate is never ready', async (t) => {
  const fresh = await cluster.addPod('frontend3', 'n1', 'frontend3');
  const workload = state.agentSockets['n1']!.workload;
  const waitReady = (namespace: string, timeout: number) => spawnSync('nsenter', [`--net=/run/netns/${namespace}`, process.execPath, bin('meshid-agent'), 'api', 'wait-ready', '--socket', workload, '--timeout', String(timeout)], { encoding: 'utf8', timeout: (timeout + 20) * 1000 });

  // before the CNI has told the agent: the caller's namespace is no endpoint yet
  const early = waitReady(fresh.namespace, 0);
  t.equal(early.status, 1, 'not ready');
  t.match(early.stdout, /no endpoint of this node has an address of the caller's network namespace yet \(.*10\./);

  const added = run('meshid-agent', ['endpoint', 'add', '--admin-socket', state.agentSockets['n1']!.admin, '--name', 'frontend3', '--service-account', 'frontend3',
    '--label', 'app=frontend', '--ip', fresh.ip, '--interface', fresh.hostVeth]);
  t.equal(added.code, 0, added.stderr);
  const before = tcpRetransmits(fresh.namespace);
  const ready = waitReady(fresh.namespace, 30);
  t.equal(ready.status, 0, ready.stdout + ready.stderr);
  t.match(ready.stdout, new RegExp(`^ready: endpoint\\(s\\) ${fresh.ip.replace(/\./g, '\\.')}`));
  const r = httpFromNamespace(fresh.namespace, backendUrl);
  const retransmitted = tcpRetransmits(fresh.namespace) - before;
  const why = r.ok && retransmitted === 0 ? '' : `\n${diagnosis()}`;
  t.ok(r.ok, `frontend3 reached backend at once: ${r.body}${why}`);
  t.equal(retransmitted, 0, `its first SYN was not dropped${why}`);

  // legacy (labelled app=frontend, no SVID): backend's policy requires a pair it can never authenticate
  const legacy = waitReady(pod('legacy').namespace, 2);
  t.equal(legacy.status, 1, 'legacy is not ready');
  t.match(legacy.stdout, /waiting for: .*pair .*legacy.*not authenticated yet/);
});

t.test('`meshid demo add-pod`: the walkthrough of a new pod, held until ready, its first request answered with no retransmitted SYN', async (t) => {
  const r = run('meshid', ['demo', 'add-pod', 'frontend4', '--label', 'app=frontend', '--prefix', prefix, '--state-dir', cluster.stateDir]);
  t.equal(r.code, 0, r.stdout + r.stderr + (r.code === 0 ? '' : `\n${diagnosis()}`));
  t.match(r.stdout, /Pod frontend4 on n1 at 10\.\d+\.1\.\d+ \(ServiceAccount frontend4/);
  t.match(r.stdout, /held the pod \d+ ms, until it was ready/);
  t.match(r.stdout, /frontend4 → backend: answered in \d+ ms, 0 SYNs retransmitted/);
  const bad = run('meshid', ['demo', 'add-pod', 'Bad_Name', '--prefix', prefix, '--state-dir', cluster.stateDir]);
  t.not(bad.code, 0);
  t.match(bad.stderr, /pod name "Bad_Name"/);
});

t.test('killing the agent on node 2 keeps established flows and new ones', async (t) => {
  // one long-lived TCP connection from frontend to backend (HTTP keep-alive), request before and after the kill
  const script = `const http=require('node:http');const a=new http.Agent({keepAlive:true,maxSockets:1});
const get=()=>new Promise((res,rej)=>http.get(process.argv[1],{agent:a,timeout:3000},r=>{const port=r.socket.localPort;let b='';r.on('data',d=>b+=d);r.on('end',()=>res({body:b,port}))}).on('error',rej).on('timeout',function(){this.destroy(new Error('timeout'))}));
(async()=>{const one=await get();process.stdout.write(JSON.stringify(one)+'\\n');await new Promise(r=>process.stdin.once('data',r));const two=await get();process.stdout.write(JSON.stringify(two)+'\\n');a.destroy();})().catch(e=>{process.stdout.write(JSON.stringify({error:e.message})+'\\n')});`;
  const child = spawn('nsenter', [`--net=/run/netns/${pod('frontend').namespace}`, process.execPath, '-e', script, backendUrl], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Record<string, unknown>[] = [];
  child.stdout!.on('data', (d: Buffer) => { for (const l of d.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l)); });
  await until('the first request', async () => lines.length >= 1);
  t.match(lines[0], { body: /hello from backend/ });
  const agent = state.pids.find((p) => p.name === 'agent-n2')!;
  process.kill(agent.pid, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 500));
  child.stdin!.write('go\n');
  await until('the second request', async () => lines.length >= 2);
  t.match(lines[1], { body: /hello from backend/ }, 'established connection still works');
  t.equal(lines[1]!['port'], lines[0]!['port'], 'on the same TCP connection');
  const fresh = httpFromNamespace(pod('frontend').namespace, backendUrl);
  t.ok(fresh.ok, 'a new connection works too: the pinned maps and programs outlive the agent');
});

t.test('the server names the node whose agent is dead: observe starts with NODE_UNAVAILABLE, auth list says so, and its flows stay in the history', async (t) => {
  const admin = ['--server', state.adminUrl, '--token-file', state.tokenFile];
  // n2's agent was SIGKILLed by the test before
  await until('n2 unavailable', async () => /NODE_UNAVAILABLE/.test(run('meshid', [...admin, 'observe', '--last', '1']).stdout));
  const r = run('meshid', [...admin, 'observe', '--last', '100']);
  t.match(r.stdout, /^NODE_UNAVAILABLE: no flows from n2/, 'the first line names it');
  t.match(r.stdout, /\[n2\]: /, 'what n2 relayed before is still there');
  t.match(run('meshid', [...admin, 'auth', 'list']).stdout, /unavailable \(no current answer\): n2/);
});

t.test('deleting the policy removes the auth entries on the remaining agent', async (t) => {
  const token = readFileSync(state.tokenFile, 'utf8').trim();
  const res = await fetch(new URL('/v1/policies:delete', state.adminUrl), {
    method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ namespace: 'default', name: 'backend-requires-auth' }),
  });
  t.equal(res.status, 200);
  await until('n1 to drop its auth entry', async () => !hasPair(await cluster.authEntries('n1'), 'frontend', 'backend'));
  t.notOk(hasPair(await cluster.authEntries('n1'), 'frontend', 'backend'), 'entry removed on n1');
});

t.test('demo down removes the namespaces, pinned maps, sockets and processes', async (t) => {
  const pids = cluster.state().pids.map((p) => p.pid);
  await cluster.down();
  t.notOk(existsSync(`/run/netns/${prefix}-n1`), 'no node namespace left');
  t.notOk(existsSync(`/run/netns/${prefix}-frontend`), 'no pod namespace left');
  t.notOk(existsSync(`/sys/fs/bpf/meshid-${prefix}-n1`), 'no pinned maps left');
  t.notOk(existsSync(`/run/meshid/${prefix}-n1`), 'no agent sockets left');
  const alive = pids.filter((pid) => { try { process.kill(pid, 0); return true; } catch { return false; } });
  t.same(alive, [], 'no process left');
});
