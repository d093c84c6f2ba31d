import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCsr, generateKeyPair, Selector, SelectorSet, SpiffeId } from '../../../spiffe/index.js';
import { Datastore } from '../../../server/datastore/index.js';
import { httpStatus } from '../../../common/httpstatus.js';
import { startAdminApi, td } from './fixtures/adminapi.js';

// The smaller findings of the attack on the admin API (issue 14, item 8).

t.test('a path that is not valid percent-encoding answers 400 naming the path, not 500', async (tt) => {
  const f = await startAdminApi(tt, 'pct');
  for (const path of ['/v1/entries/%ff', '/v1/agents/%E0%A4%A', '/v1/entries/%']) {
    const res = await f.call('GET', path);
    tt.equal(res.status, 400, path);
    tt.equal(res.json?.error?.code, 'invalid_argument');
    tt.equal(res.json?.error?.field, 'path');
  }
  tt.notOk(f.logs.lines.some((l) => l['level'] === 'error'), 'nothing logged as a server error');
});

t.test('x509 and jwt minting refuse IDs under /meshid/ (the server\'s and agents\' own), as entry creation does', async (tt) => {
  const f = await startAdminApi(tt, 'reserved');
  const k = generateKeyPair();
  const csr = createCsr(k.privateKey, k.publicKey).toString('base64');
  for (const id of ['spiffe://example.org/meshid/server', 'spiffe://example.org/meshid/agent/join_token/n1']) {
    const x = await f.call('POST', '/v1/svids/x509', { spiffe_id: id, csr });
    tt.equal(x.status, 400, `x509 ${id}`);
    tt.match(x.json?.error?.message, /reserved for the server and agents/);
    const j = await f.call('POST', '/v1/svids/jwt', { spiffe_id: id, audience: ['a'] });
    tt.equal(j.status, 400, `jwt ${id}`);
  }
  const ok = await f.call('POST', '/v1/svids/x509', { spiffe_id: 'spiffe://example.org/ns/default/sa/web', csr });
  tt.equal(ok.status, 200, 'a workload ID is still minted');
});

t.test('JWT-SVIDs carry at most 32 audiences of at most 256 characters', async (tt) => {
  const f = await startAdminApi(tt, 'aud');
  const many = await f.call('POST', '/v1/svids/jwt', { spiffe_id: 'spiffe://example.org/ns/a/sa/b', audience: Array.from({ length: 100 }, (_, i) => `${"a".repeat(200)}${i}`) });
  tt.equal(many.status, 400);
  tt.match(many.json?.error?.message, /100 audiences; a JWT-SVID carries at most 32/);
  const long = await f.call('POST', '/v1/svids/jwt', { spiffe_id: 'spiffe://example.org/ns/a/sa/b', audience: ['x'.repeat(300)] });
  tt.equal(long.status, 400);
  tt.equal(long.json?.error?.field, 'audience[0]');
  const fine = await f.call('POST', '/v1/svids/jwt', { spiffe_id: 'spiffe://example.org/ns/a/sa/b', audience: Array.from({ length: 32 }, (_, i) => `aud-${i}`) });
  tt.equal(fine.status, 200);
});

t.test('a join token for an agent ID that is attested needs reattest: true', async (tt) => {
  const f = await startAdminApi(tt, 'reattest');
  const agentId = 'spiffe://example.org/meshid/agent/join_token/node-1';
  await f.store.createAttestedNode({ spiffeId: SpiffeId.parse(agentId), attestationType: 'join_token', certSerial: 'aa', certNotAfter: 2_000_000_000, selectors: SelectorSet.of([]), canReattest: false });
  const refused = await f.call('POST', '/v1/tokens', { agent_id: agentId });
  tt.equal(refused.status, 409);
  tt.match(refused.json?.error?.message, /is attested already .*reattest/);
  const bad = await f.call('POST', '/v1/tokens', { agent_id: agentId, reattest: 'yes' });
  tt.equal(bad.status, 400);
  const meant = await f.call('POST', '/v1/tokens', { agent_id: agentId, reattest: true });
  tt.equal(meant.status, 201);
  const fresh = await f.call('POST', '/v1/tokens', { agent_id: 'spiffe://example.org/meshid/agent/join_token/node-2' });
  tt.equal(fresh.status, 201, 'an agent not attested yet needs no flag');
});

t.test('selector values are checked per type and types are lowercase', async (tt) => {
  const f = await startAdminApi(tt, 'sel');
  const entry = (selectors: string[]) => f.call('POST', '/v1/entries', { spiffe_id: 'spiffe://example.org/ns/a/sa/b', parent_id: 'spiffe://example.org/meshid/agent/join_token/n', selectors });
  for (const [sel, why] of [['unix:uid:root', /uid must be a numeric uid/], ['unix:gid:-1', /gid must be a numeric gid/], ['k8s:ns:Prod', /ns must be a Kubernetes namespace name/],
    ['k8s:sa:web_app', /sa must be a Kubernetes ServiceAccount name/], ['K8S:ns:prod', /must be lowercase/], ['unix:uid:99999999999', /numeric uid/]] as const) {
    const res = await entry([sel]);
    tt.equal(res.status, 400, sel);
    tt.match(res.json?.error?.message, why, sel);
    tt.equal(res.json?.error?.field, 'selectors[0]');
  }
  tt.equal((await entry(['unix:uid:1000', 'k8s:ns:prod', 'k8s:sa:web.v1'])).status, 201, 'good values pass');
  tt.equal((await f.store.listEntries()).items.length, 1, 'nothing refused was written');
  tt.throws(() => Selector.parse('unix:sha256:XYZ'), { message: /64 lowercase hex/ });
});

t.test('a full disk answers storage_exhausted (507 on HTTP, RESOURCE_EXHAUSTED on gRPC) and writes nothing', { skip: process.getuid?.() !== 0 ? 'mounts a small tmpfs' : false }, async (tt) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=400k', 'tmpfs', dir]);
  tt.teardown(() => { try { execFileSync('umount', [dir]); } catch { /* gone */ } rmSync(dir, { recursive: true, force: true }); });
  const store = await Datastore.open({ path: join(dir, 'ds.sqlite3'), trustDomain: td });
  tt.teardown(async () => { try { await store.close(); } catch { /* closing a store on a full disk */ } });
  let err: unknown;
  let written = 0;
  for (let i = 0; i < 100_000 && !err; i++) {
    try {
      await store.createEntry({ spiffeId: SpiffeId.parse(`spiffe://example.org/ns/full/sa/w${i}`), parentId: SpiffeId.parse('spiffe://example.org/meshid/agent/x/n'), selectors: SelectorSet.of([Selector.of('unix', `uid:${i}`)]), dnsNames: ['x'.repeat(200)] });
      written++;
    } catch (e) { err = e; }
  }
  tt.ok(written > 0, `${written} entries fit`);
  tt.equal((err as { code?: string }).code, 'storage_exhausted');
  tt.match((err as Error).message, /the disk is full .*nothing was written/);
  tt.equal(httpStatus('storage_exhausted'), 507);
  let stored = 0;
  let page = await store.listEntries({ pageSize: 500 });
  for (;;) { stored += page.items.length; if (!page.nextPageToken) break; page = await store.listEntries({ pageSize: 500, pageToken: page.nextPageToken }); }
  tt.equal(stored, written, 'every acknowledged entry is there, and the refused one is not');
});
