/**
 * Several meshid-servers on one PostgreSQL database (a real PostgreSQL server,
 * real gRPC over TLS on loopback): each has its own CA, the bundle is the
 * union, agents are accepted by every server, a write through one reaches Sync
 * streams on another, one-time tokens stay one-time, numbers stay unique, and
 * one leader runs the maintenance jobs.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientReadableStream } from '@grpc/grpc-js';
import t from 'tap';
import type { SyncUpdateMsg } from '../../api/agentproto.js';
import { systemClock } from '../../common/clock.js';
import { JsonLogger, MemoryLogSink } from '../../common/log.js';
import { serverConfigSchema } from '../../server/config.js';
import { MeshidServer } from '../../server/server.js';
import { encodeName, generateKeyPair, issuerFromKey, keyIdentifier, mintCertificate, parseCertificate, pemFromDer, privateKeyPem, SpiffeId, spkiDer, TrustDomain, verifyX509Svid } from '../../spiffe/index.js';
import { agentClient, call, csrFor } from '../helpers/server.js';
import { PostgresCluster } from '../helpers/postgres.js';
import { Daemon } from '../helpers/process.js';
import { rawQuery } from './datastore/fixtures/tempdb.js';

const td = TrustDomain.parse('example.org');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const cluster = await PostgresCluster.start();
t.teardown(() => cluster.destroy());
let databases = 0;

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function startServers(tt: { teardown(fn: () => unknown): void }, n: number, extra: Record<string, unknown> = {}): Promise<{ servers: MeshidServer[]; url: string }> {
  const url = await cluster.createDatabase(`ha_${++databases}`);
  const servers: MeshidServer[] = [];
  for (let i = 0; i < n; i++) {
    const dir = mkdtempSync(join(tmpdir(), `meshid-ha-${i}-`));
    tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const config = serverConfigSchema.parse({
      data_dir: dir, trust_domain: td.name, bind: '127.0.0.1:0', admin: '127.0.0.1:0', key_manager: 'memory', datastore: { url }, ...extra,
    });
    const server = new MeshidServer(config, { clock: systemClock, logger: new JsonLogger(new MemoryLogSink(), 'debug') });
    await server.start();
    tt.teardown(() => server.stop());
    servers.push(server);
  }
  // every server has read the others' authorities (with an upstream CA: its root, and every server's intermediate)
  await until('every server to trust every authority', async () => {
    await Promise.all(servers.map((s) => s.authorities.refresh()));
    return extra['upstream_authority']
      ? servers.every((s) => s.authorities.intermediates().length >= n)
      : servers.every((s) => s.authorities.bundle().x509Authorities.length === n);
  });
  return { servers, url };
}

const trustOf = (s: MeshidServer) => ({ port: s.agentPort, td, ca: { bundle: () => s.authorities.bundle() } });

async function attestOn(s: MeshidServer, token: string) {
  const key = generateKeyPair();
  const anon = agentClient(trustOf(s) as never);
  try {
    const res = await call<{ svid: { spiffe_id: string; cert_chain: Buffer[] } }>(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from(token) }, csr: csrFor(key) });
    return { agentId: SpiffeId.parse(res.svid.spiffe_id), chain: res.svid.cert_chain, key };
  } finally {
    anon.close();
  }
}

t.test('three servers on one PostgreSQL: own CAs, one bundle of all three, agents accepted everywhere, writes through A reach Sync on B', async (tt) => {
  const { servers, url } = await startServers(tt, 3);
  const [a, b, c] = servers as [MeshidServer, MeshidServer, MeshidServer];
  const rows = await a.store.listServers();
  tt.same(rows.map((r) => r.serverId).sort(), servers.map((s) => s.serverId).sort(), 'each server registered itself');
  const roots = new Set(servers.map((s) => s.ca.bundle().x509Authorities[0]!.toString('base64')));
  tt.equal(roots.size, 3, 'three different CA certificates: each server signs with its own key');
  const union = new Set(a.authorities.bundle().x509Authorities.map((d) => d.toString('base64')));
  tt.same([...roots].filter((r) => !union.has(r)), [], 'the bundle holds every server\'s CA');
  tt.equal(new Set(a.authorities.bundle().jwtAuthorities.map((j) => j.kid)).size, 3, 'and every server\'s JWT key');

  // an agent attested through A (its SVID signed by A's key) is accepted by B and C
  const token = 'ha-token-0001';
  await a.store.createJoinToken({ token, expiresAt: a.store.nowSeconds() + 600 });
  const agent = await attestOn(a, token);
  const issuer = parseCertificate(agent.chain[0]!).issuer.toString('hex');
  tt.equal(issuer, parseCertificate(a.ca.bundle().x509Authorities[0]!).subject.toString('hex'), 'signed by A');
  for (const s of [a, b, c]) {
    const client = agentClient(trustOf(s) as never, { chain: agent.chain, key: agent.key });
    const renewed = await call<{ svid: { cert_chain: Buffer[] } }>(client, 'RenewAgent', { csr: csrFor(agent.key) });
    tt.ok(renewed.svid.cert_chain.length > 0, `server ${s.serverId} renews an agent SVID that A signed`);
    client.close();
  }

  // Sync on B; an entry created through A's admin path reaches it
  const client = agentClient(trustOf(b) as never, { chain: agent.chain, key: agent.key });
  tt.teardown(() => client.close());
  const updates: SyncUpdateMsg[] = [];
  const stream = (client as unknown as { Sync(req: unknown): ClientReadableStream<SyncUpdateMsg> }).Sync({});
  stream.on('data', (m: SyncUpdateMsg) => updates.push(m));
  stream.on('error', () => undefined);
  tt.teardown(() => stream.cancel());
  await until('the snapshot from B', () => updates.length >= 1);
  const started = performance.now();
  const entry = await a.registration.createEntry({ spiffe_id: 'spiffe://example.org/ns/default/sa/web', parent_id: agent.agentId.toString(), selectors: ['unix:uid:1000'] });
  await until('the entry on B\'s stream', () => updates.some((u) => u.entries.some((e) => e.id === entry.id)));
  const ms = performance.now() - started;
  tt.ok(ms < 2000, `a write through A reached the agent on B in ${ms.toFixed(0)} ms`);
  await a.registration.deleteEntry(entry.id);
  await until('the removal on B\'s stream', () => updates.some((u) => u.removed_entries.includes(entry.id)));

  // the bundle revision in the database is the union, as every agent gets it through Sync
  const stored = await rawQuery(url, `SELECT document FROM bundles WHERE trust_domain = '${td.name}'`);
  const keys = (JSON.parse(String(stored[0]!.document)) as { keys: { use: string }[] }).keys;
  tt.equal(keys.filter((k) => k.use === 'x509-svid').length, 3);
});

/** An upstream CA in PEM files, as an operator's PKI hands it over: a self-signed root and its key. */
function upstreamFiles(tt: { teardown(fn: () => unknown): void }): { cert_file: string; key_file: string; root: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-upstream-'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const keys = generateKeyPair();
  const spki = spkiDer(keys.publicKey);
  const subject = encodeName([['O', 'meshid ha test'], ['CN', `upstream root ${process.pid}`]]);
  const now = Date.now();
  const root = mintCertificate({ subject, notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 30 * 86_400_000), publicKeySpki: spki, ca: {} },
    issuerFromKey(subject, keyIdentifier(spki), keys.privateKey));
  writeFileSync(join(dir, 'root.pem'), pemFromDer(root));
  writeFileSync(join(dir, 'root.key'), privateKeyPem(keys.privateKey), { mode: 0o600 });
  return { cert_file: join(dir, 'root.pem'), key_file: join(dir, 'root.key'), root };
}

t.test('two servers under one upstream CA: each signs with an intermediate of its own, the bundle is the upstream root, and what one signs verifies and is accepted at the other', async (tt) => {
  const upstream = upstreamFiles(tt);
  const { servers } = await startServers(tt, 2, { upstream_authority: { cert_file: upstream.cert_file, key_file: upstream.key_file } });
  const [a, b] = servers as [MeshidServer, MeshidServer];
  for (const s of servers) {
    tt.same(s.authorities.bundle().x509Authorities.map((d) => d.toString('base64')), [upstream.root.toString('base64')], `server ${s.serverId}'s bundle is the upstream root alone`);
  }
  const own = servers.map((s) => s.ca.intermediates()[0]!);
  tt.not(own[0]!.toString('base64'), own[1]!.toString('base64'), 'two different signing certificates');
  for (const der of own) tt.equal(parseCertificate(der).issuer.toString('hex'), parseCertificate(upstream.root).subject.toString('hex'), 'each issued by the upstream CA');
  tt.equal(new Set(b.authorities.intermediates().map((d) => d.toString('base64'))).size, 2, 'every server knows both intermediates');

  // an agent attested through A: its chain runs through A's intermediate to the root, and B renews it
  const token = 'upstream-token-0001';
  await a.store.createJoinToken({ token, expiresAt: a.store.nowSeconds() + 600 });
  const agent = await attestOn(a, token);
  tt.equal(parseCertificate(agent.chain[0]!).issuer.toString('hex'), parseCertificate(own[0]!).subject.toString('hex'), 'the agent SVID is signed by A\'s intermediate');
  const bundles = (x: MeshidServer) => () => x.authorities.bundle().x509Authorities;
  tt.equal(verifyX509Svid(agent.chain, bundles(b), new Date()).spiffeId.toString(), agent.agentId.toString(), 'and verifies against B\'s bundle');
  const onB = agentClient(trustOf(b) as never, { chain: agent.chain, key: agent.key });
  tt.teardown(() => onB.close());
  const renewed = await call<{ svid: { cert_chain: Buffer[] } }>(onB, 'RenewAgent', { csr: csrFor(agent.key) });
  tt.equal(parseCertificate(renewed.svid.cert_chain[0]!).issuer.toString('hex'), parseCertificate(own[1]!).subject.toString('hex'), 'B renews it under its own intermediate');
  tt.equal(verifyX509Svid(renewed.svid.cert_chain, bundles(a), new Date()).spiffeId.toString(), agent.agentId.toString(), 'which A\'s bundle accepts');

  // a workload SVID from B verifies with A's bundle
  const entry = await a.registration.createEntry({ spiffe_id: 'spiffe://example.org/ns/default/sa/web', parent_id: agent.agentId.toString(), selectors: ['unix:uid:1000'] });
  const res = await until('B to know the entry', async () => {
    const r = await call<{ results: { svid: { cert_chain: Buffer[] } | null }[] }>(onB, 'BatchNewX509SVID', { params: [{ entry_id: entry.id, csr: csrFor(generateKeyPair()) }] }).catch(() => undefined);
    return r?.results[0]?.svid ? r : undefined;
  });
  const chain = res.results[0]!.svid!.cert_chain;
  tt.equal(verifyX509Svid(chain, bundles(a), new Date()).spiffeId.toString(), 'spiffe://example.org/ns/default/sa/web', 'a workload SVID signed by B verifies against A\'s bundle');
});

t.test('two servers racing for one join token: exactly one agent attests; numbers are allocated once across servers', async (tt) => {
  const { servers } = await startServers(tt, 2);
  const [a, b] = servers as [MeshidServer, MeshidServer];
  for (let round = 0; round < 5; round++) {
    const token = `race-token-${round}-abcdef`;
    await a.store.createJoinToken({ token, expiresAt: a.store.nowSeconds() + 600 });
    const results = await Promise.allSettled([attestOn(a, token), attestOn(b, token)]);
    tt.equal(results.filter((r) => r.status === 'fulfilled').length, 1, `round ${round}: one winner`);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    tt.match(String(lost.reason), /PERMISSION_DENIED|join token refused/);
  }
  // the same label set through both servers at once: one identity number
  const labels = { app: 'web', 'io.kubernetes.pod.namespace': 'shop' };
  const [ia, ib] = await Promise.all([
    a.store.allocateIdentity('app=web;ns=shop', labels, { namespace: 'shop', name: 'web' }),
    b.store.allocateIdentity('app=web;ns=shop', labels, { namespace: 'shop', name: 'web' }),
  ]);
  tt.equal(ia.id, ib.id, 'the same label set gets the same number on both servers');
  const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).store.allocateIdentity(`k${i}`, { k: String(i) }, { namespace: 'shop', name: 'web' })));
  tt.equal(new Set(ids.map((x) => x.id)).size, 20, 'different label sets never share a number');
  const nodes = await Promise.all(['n1', 'n1', 'n2', 'n2', 'n3'].map((n, i) => (i % 2 ? a : b).store.allocateNodeId(n)));
  tt.same(nodes.slice(0, 2)[0], nodes[1]);
  tt.equal(new Set(nodes).size, 3, 'one node id per name');
});

t.test('one leader at a time; when it stops another takes over; a dead server leaves the bundle', async (tt) => {
  const { servers, url } = await startServers(tt, 3);
  const leaders = await until('a leader', () => {
    const l = servers.filter((s) => s.leader?.isLeader);
    return l.length > 0 && l;
  });
  tt.equal(leaders.length, 1, 'exactly one server leads');
  const first = leaders[0]!;
  await sleep(3500);
  tt.equal(servers.filter((s) => s.leader?.isLeader).length, 1, 'still one after the lease is renewed');

  // a server that stopped beating longer ago than its CA lifetime is pruned by the leader, and its keys leave the bundle
  const victim = servers.find((s) => s !== first)!;
  await victim.stop();
  const victimRoot = victim.ca.bundle().x509Authorities[0]!.toString('base64');
  await rawQuery(url, `UPDATE servers SET heartbeat_at = heartbeat_at - 2 * ca_ttl WHERE server_id = '${victim.serverId}'`);
  await first.leader!.runJobs();
  tt.notOk((await first.store.listServers()).some((s) => s.serverId === victim.serverId), 'the dead server is gone');
  await first.authorities.refresh();
  tt.notOk(first.authorities.bundle().x509Authorities.some((d) => d.toString('base64') === victimRoot), 'and so is its CA');

  // the leader stops: the remaining server takes the lease
  const started = Date.now();
  await first.stop();
  const next = await until('a new leader', () => servers.find((s) => s !== first && s !== victim && s.leader?.isLeader), 15_000);
  tt.ok(next, `server ${next.serverId} took over in ${Date.now() - started} ms`);
});

t.test('server processes started at the same moment on a new database agree on one installation', async (tt) => {
  const url = await cluster.createDatabase(`ha_${++databases}`);
  // processes, not servers in this process: their start-ups interleave as they do in a rollout
  const daemons = Array.from({ length: 3 }, (_, i) => {
    const dir = mkdtempSync(join(tmpdir(), `meshid-ha-race-${i}-`));
    tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const d = new Daemon('meshid-server', ['run', '--data-dir', dir, '--trust-domain', td.name, '--bind', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--datastore', url]);
    tt.teardown(() => d.stop());
    return { d, dir };
  });
  await Promise.all(daemons.map(({ d }) => d.waitFor(/meshid-server started/, 60_000)));
  const ids = daemons.map(({ dir }) => (JSON.parse(readFileSync(join(dir, 'installation.json'), 'utf8')) as { installation_id: string }).installation_id);
  tt.equal(new Set(ids).size, 1, 'all three data dirs name one installation');
  const rows = await rawQuery(url, 'SELECT installation_id FROM installation');
  tt.same(rows.map((r) => r.installation_id), [ids[0]], 'the one in the database');
});
