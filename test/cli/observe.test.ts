/**
 * `meshid observe`, `meshid auth list` and `meshid explain` through the server
 * (the compiled CLI as a child process, against a real relay on loopback):
 * Hubble's flags and formats, follow, and refusals that name the flag.
 */
import t from 'tap';
import type { FlowResponse } from '../../api/flow.js';
import { RELAY_TOKEN, startRelay, testFlow as flow, until, type RelayFixture } from '../helpers/relay.js';
import { meshid } from './fixtures/run.js';

let fx: RelayFixture;
let env: Record<string, string>;
t.before(async () => {
  fx = await startRelay();
  env = { MESHID_SERVER: fx.url, MESHID_ADMIN_TOKEN: RELAY_TOKEN };
  const a = await fx.agent('n1', '10.1.0.0/24', [flow('n1', { ms: 0 }), flow('n1', { ms: 10, verdict: 'DROPPED', pod: 'legacy' })], (q) => ({
    applies: true, node: 'n1', explanations: [{ verdict: 'allow' }], text: `ingress of backend from ${q.get('from')}: ALLOW (allowed-by-rule)`,
  }));
  const b = await fx.agent('n2', '10.2.0.0/24', [flow('n2', { ms: 5, ns: 'prod', pod: 'web' })]);
  t.teardown(() => { a.stop(); b.stop(); });
  await until('the histories', () => fx.hub.history({}, 10).length === 3);
});
t.teardown(() => fx.stop());

t.test('observe --verdict DROPPED --last 10 prints Hubble\'s compact line, naming the node and the policy that asked for authentication', async (t) => {
  const r = await meshid(['observe', '--verdict', 'DROPPED', '--last', '10'], env);
  t.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  t.equal(lines.length, 1);
  t.match(lines[0], /^Dec  5 12:00:00\.010 \[n1\]: demo\/legacy:\d+ \(ID:1001\) -> demo\/backend:8080 \(ID:1002\) ingress Authentication required by demo\/backend-mtls DROPPED \(TCP\) auth=SPIRE$/);
});

t.test('-o json prints one GetFlowsResponse a line, so Hubble\'s jq recipes work; filters narrow it', async (t) => {
  const r = await meshid(['-o', 'json', 'observe', '--last', '10'], env);
  t.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as FlowResponse);
  t.same(lines.map((l) => l.node_name), ['n1', 'n2', 'n1'], 'oldest first, both nodes');
  t.same(lines.filter((l) => l.flow.drop_reason_desc === 'AUTH_REQUIRED').map((l) => l.flow.source.pod_name), ['legacy'], '.flow.drop_reason_desc');
  t.equal((await meshid(['-o', 'jsonpb', 'observe', '--namespace', 'prod'], env)).stdout.trim().split('\n').length, 1, '--namespace');
  t.equal((await meshid(['-o', 'json', 'observe', '--pod', 'demo/leg'], env)).stdout.trim().split('\n').length, 1, '--pod');
  t.equal((await meshid(['-o', 'json', 'observe', '--node', 'n2'], env)).stdout.trim().split('\n').length, 1, '--node');
  t.equal((await meshid(['-o', 'json', 'observe', '--type', 'trace', '--port', '8080'], env)).stdout.trim().split('\n').length, 2, '--type trace --port');
  const dict = await meshid(['-o', 'dict', 'observe', '--last', '1'], env);
  t.match(dict.stdout, /^  TIMESTAMP: 2026-12-05T12:00:00\.010Z\n     SOURCE: demo\/legacy:\d+ \(ID:1001\)\n/m, '-o dict');
  t.match(dict.stdout, /    VERDICT: DROPPED/);
  const table = await meshid(['-o', 'table', 'observe', '--last', '10'], env);
  t.match(table.stdout, /^TIMESTAMP +NODE +SOURCE +DESTINATION +TYPE +VERDICT +SUMMARY\n/, '-o table: Hubble\'s columns');
  t.match(table.stdout, /\n2026-12-05T12:00:00\.010Z +n1 +demo\/legacy:\d+ +demo\/backend:8080 +Authentication required by demo\/backend-mtls +DROPPED +TCP\n/);
  t.equal(table.stdout.trim().split('\n').length, 4, 'a header and the three flows');
});

t.test('observe --follow prints flows as they come, until --timeout', async (t) => {
  const run = meshid(['observe', '--follow', '--verdict', 'DROPPED', '--timeout', '3'], env);
  await new Promise((r) => setTimeout(r, 1000));
  const agents = fx.hub.nodes().filter((n) => n.node === 'n2');
  t.equal(agents.length, 1);
  // a new drop on n2, relayed while the command follows
  const n2 = await fx.agent('n3', '10.3.0.0/24', []);
  t.teardown(() => n2.stop());
  await until('n3 connected', () => fx.hub.nodes().some((n) => n.node === 'n3' && n.state === 'connected'));
  n2.relay.push(flow('n3', { ms: 50, verdict: 'DROPPED', pod: 'late' }));
  const r = await run;
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /\[n3\]: demo\/late:\d+ .* DROPPED/, 'the new drop arrived');
  t.notMatch(r.stdout, /FORWARDED/, 'the filter holds');
});

t.test('auth list and explain go through the server', async (t) => {
  await until('observations', () => fx.hub.auth().nodes.every((n) => n.entries.length > 0));
  const list = await meshid(['auth', 'list'], env);
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, /^NODE +LOCAL +REMOTE +REMOTE NODE +TYPE +EXPIRES\n/);
  t.match(list.stdout, /\nn1 +1002 spiffe:\/\/example\.org\/ns\/demo\/sa\/backend +1001 spiffe:\/\/example\.org\/ns\/demo\/sa\/frontend +other +mutual/);
  const json = JSON.parse((await meshid(['-o', 'json', 'auth', 'list'], env)).stdout) as { nodes: Array<{ node: string }> };
  t.ok(json.nodes.some((n) => n.node === 'n2'));
  const ex = await meshid(['explain', '--from', 'demo/frontend', '--to', 'demo/backend', '--port', '8080'], env);
  t.equal(ex.code, 0, ex.stderr);
  t.match(ex.stdout, /\[n1\]\ningress of backend from demo\/frontend: ALLOW \(allowed-by-rule\)/);
});

t.test('bad flags are refused naming them (exit 2); a server that is not there is named (exit 1)', async (t) => {
  for (const [args, pattern] of [
    [['observe', '--port', '70000'], /--port "70000" must be a whole number up to 65535/],
    [['observe', '--since', 'yesterday'], /--since: since must be a duration such as 5m or an RFC 3339 time/],
    [['observe', '--last', 'ten'], /--last "ten" must be a whole number/],
    [['observe', '--verdict', 'MAYBE'], /argument 'MAYBE' is invalid/],
  ] as const) {
    const r = await meshid([...args], env);
    t.equal(r.code, 2, `${args.join(' ')} exits 2`);
    t.match(r.stderr, pattern);
  }
  const away = await meshid(['observe'], { MESHID_SERVER: 'http://127.0.0.1:9', MESHID_ADMIN_TOKEN: RELAY_TOKEN });
  t.equal(away.code, 1);
  t.match(away.stderr, /cannot reach meshid-server at http:\/\/127\.0\.0\.1:9/);
  const badToken = await meshid(['observe'], { MESHID_SERVER: fx.url, MESHID_ADMIN_TOKEN: 'x'.repeat(40) });
  t.equal(badToken.code, 1);
  t.match(badToken.stderr, /bearer token/);
  t.notMatch(badToken.stdout, /n1|demo/, 'nothing of the cluster');
});
