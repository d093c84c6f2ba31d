import t from 'tap';
import { createCsr, generateKeyPair } from '../../../spiffe/index.js';
import { mutateJson, prng } from '../../helpers/mutate.js';
import { startAdminApi } from './fixtures/adminapi.js';

// Seeded mutations of a valid body for every admin route that takes one: the answer is 2xx or 4xx with an
// error body naming a code, never 5xx; a 4xx writes nothing; the server answers a good call afterwards.
const CASES_PER_ROUTE = 250;
const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: p1, namespace: default }
spec:
  endpointSelector: { matchLabels: { app: backend } }
  ingress:
    - fromEndpoints: [ { matchLabels: { app: frontend } } ]
      authentication: { mode: required }
`;

t.test(`${CASES_PER_ROUTE} mutated bodies per admin route: never 5xx, nothing written on 4xx`, async (tt) => {
  const f = await startAdminApi(tt, 'fuzz');
  const k = generateKeyPair();
  const csr = createCsr(k.privateKey, k.publicKey).toString('base64');
  const entry = { spiffe_id: 'spiffe://example.org/ns/default/sa/web', parent_id: 'spiffe://example.org/meshid/agent/join_token/n1', selectors: ['unix:uid:1000', 'k8s:ns:default'], x509_svid_ttl: 600, dns_names: ['web.default'] };
  const created = await f.call('POST', '/v1/entries', { ...entry, spiffe_id: 'spiffe://example.org/ns/default/sa/base' });
  tt.equal(created.status, 201);
  const routes: [string, string, unknown][] = [
    ['POST', '/v1/entries', entry],
    ['POST', '/v1/entries:batchCreate', { entries: [entry, { ...entry, spiffe_id: 'spiffe://example.org/ns/default/sa/two' }] }],
    ['PATCH', `/v1/entries/${created.json.id}`, { x509_svid_ttl: 900, selectors: ['unix:uid:1001'] }],
    ['POST', '/v1/entries:batchDelete', { ids: ['no-such-entry'] }],
    ['POST', '/v1/tokens', { ttl: 600, agent_id: 'spiffe://example.org/meshid/agent/join_token/fuzz' }],
    ['PUT', '/v1/bundles/partner.example', f.ca.bundle().toJwks()],
    ['POST', '/v1/svids/x509', { spiffe_id: 'spiffe://example.org/ns/default/sa/web', csr, ttl: 600 }],
    ['POST', '/v1/svids/jwt', { spiffe_id: 'spiffe://example.org/ns/default/sa/web', audience: ['db'], ttl: 60 }],
    ['POST', '/v1/policies:apply', { yaml: POLICY }],
    ['POST', '/v1/policies:delete', { namespace: 'default', name: 'nope', kind: 'CiliumNetworkPolicy' }],
  ];
  const rnd = prng(14);
  let cases = 0;
  for (const [method, path, body] of routes) {
    const statuses = new Map<number, number>();
    for (let i = 0; i < CASES_PER_ROUTE; i++) {
      const mutated = mutateJson(body, rnd);
      const before = { revision: (await f.store.currentRevision()), entries: (await f.store.listEntries({ pageSize: 1000 })).items.length };
      const res = await f.call(method, path, typeof mutated === 'string' ? mutated : JSON.stringify(mutated ?? null), { 'content-type': 'application/json' });
      cases++;
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status >= 500) { tt.fail(`${method} ${path} answered ${res.status} to ${JSON.stringify(mutated).slice(0, 300)}: ${res.text.slice(0, 300)}`); continue; }
      if (res.status >= 400) {
        if (typeof res.json?.error?.code !== 'string' || typeof res.json?.error?.message !== 'string') tt.fail(`${method} ${path} ${res.status} without an error body: ${res.text.slice(0, 200)}`);
        const after = { revision: (await f.store.currentRevision()), entries: (await f.store.listEntries({ pageSize: 1000 })).items.length };
        if (after.revision !== before.revision || after.entries !== before.entries) tt.fail(`${method} ${path} ${res.status} but the store changed (${JSON.stringify(before)} → ${JSON.stringify(after)})`);
      }
    }
    tt.ok(![...statuses.keys()].some((s) => s >= 500), `${method} ${path}: ${[...statuses].sort().map(([s, n]) => `${n}×${s}`).join(', ')}`);
  }
  tt.equal(cases, routes.length * CASES_PER_ROUTE);
  tt.equal((await f.call('GET', '/v1/entries')).status, 200, 'the server still answers');
  tt.notOk(f.logs.lines.some((l) => l['msg'] === 'admin request failed'), 'no request failed inside the server');
});
