/**
 * `meshid-server datastore migrate`: a server on SQLite, with agents, entries,
 * tokens and its CA, moved onto PostgreSQL (a real server); started again on
 * the copy with its data dir, it serves the same agent without re-attestation.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientReadableStream } from '@grpc/grpc-js';
import t from 'tap';
import type { SyncUpdateMsg } from '../../api/agentproto.js';
import { systemClock } from '../../common/clock.js';
import { JsonLogger, MemoryLogSink } from '../../common/log.js';
import { serverConfigSchema } from '../../server/config.js';
import { copyDatastore } from '../../server/datastore/copy.js';
import { MeshidServer } from '../../server/server.js';
import { generateKeyPair, SpiffeId, TrustDomain } from '../../spiffe/index.js';
import { agentClient, call, csrFor } from '../helpers/server.js';
import { PostgresCluster } from '../helpers/postgres.js';
import { run } from '../helpers/process.js';

const td = TrustDomain.parse('example.org');
const pg = await PostgresCluster.start();
t.teardown(() => pg.destroy());

function serverOn(dir: string, datastore?: string): MeshidServer {
  const config = serverConfigSchema.parse({
    data_dir: dir, trust_domain: td.name, bind: '127.0.0.1:0', admin: '127.0.0.1:0', key_manager: 'disk', ...(datastore ? { datastore: { url: datastore } } : {}),
  });
  return new MeshidServer(config, { clock: systemClock, logger: new JsonLogger(new MemoryLogSink(), 'debug') });
}

t.test('SQLite to PostgreSQL: everything copied, the same agent served on the copy without attesting again', async (tt) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshid-migrate-'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const one = serverOn(dir);
  await one.start();
  await one.store.createJoinToken({ token: 'migrate-token-01', expiresAt: one.store.nowSeconds() + 600 });
  await one.store.createJoinToken({ token: 'migrate-token-unused', expiresAt: one.store.nowSeconds() + 600 });
  const key = generateKeyPair();
  const trust = (s: MeshidServer) => ({ port: s.agentPort, td, ca: { bundle: () => s.authorities.bundle() } }) as never;
  const anon = agentClient(trust(one));
  const attested = await call<{ svid: { spiffe_id: string; cert_chain: Buffer[] } }>(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from('migrate-token-01') }, csr: csrFor(key) });
  anon.close();
  const agentId = SpiffeId.parse(attested.svid.spiffe_id);
  for (let i = 0; i < 25; i++) {
    await one.registration.createEntry({ spiffe_id: `spiffe://example.org/ns/app/sa/w${i}`, parent_id: agentId.toString(), selectors: [`unix:uid:${1000 + i}`], dns_names: [`w${i}.app`] });
  }
  await one.store.upsertNode({ name: 'node-1', address: '10.0.0.1', podCidr: '10.1.0.0/24', agentId: agentId.toString() });
  const identity = await one.store.allocateIdentity('app=web', { app: 'web' }, { namespace: 'app', name: 'web' });
  await one.store.upsertEndpoint({ ip: '10.1.0.5', identity: identity.id, nodeId: (await one.store.findNodeByName('node-1'))!.id, namespace: 'app', name: 'web-1', labels: { app: 'web' } });
  await one.store.upsertPolicy({ namespace: 'app', name: 'allow', kind: 'CiliumNetworkPolicy', spec: { endpointSelector: {} } });
  const before = {
    revision: await one.store.currentRevision(), entries: (await one.store.listEntries()).items.map((e) => [e.id, e.revision]),
    bundle: (await one.store.getBundle(td)).document, serverId: one.serverId,
  };
  await one.stop();

  const url = await pg.createDatabase('migrated');
  const sqlite = `sqlite:${join(dir, 'datastore.sqlite3')}`;
  // through the binary, as an operator runs it
  const r = run('meshid-server', ['datastore', 'migrate', '--from', sqlite, '--to', url]);
  tt.equal(r.code, 0, r.stderr);
  tt.match(r.stdout, /Copied \d+ rows .* at revision \d+: 25 entries, 1 agents, 1 servers/);
  // a second time: the target is not empty any more
  const again = run('meshid-server', ['datastore', 'migrate', '--from', sqlite, '--to', url]);
  tt.equal(again.code, 1);
  tt.match(again.stderr, /is not empty; migrate into a new, empty database/);
  await tt.rejects(() => copyDatastore(sqlite, url, td), { code: 'failed_precondition' });

  const two = serverOn(dir, url);
  await two.start();
  tt.teardown(() => two.stop());
  tt.equal(two.store.engine, 'postgres');
  tt.equal(two.serverId, before.serverId, 'the same server (its data dir kept its id)');
  tt.equal(await two.store.currentRevision(), before.revision, 'the revision carries on where it was');
  tt.same((await two.store.listEntries()).items.map((e) => [e.id, e.revision]), before.entries, 'every entry, with its revision');
  tt.same((await two.store.getEntry(before.entries[3]![0] as string)).dnsNames, ['w3.app']);
  tt.equal((await two.store.getEndpoint('10.1.0.5')).identity, identity.id);
  tt.equal((await two.store.getPolicy('app', 'allow')).kind, 'CiliumNetworkPolicy');
  tt.same((await two.store.getBundle(td)).document.keys, before.bundle.keys, 'the same CA: the bundle did not change');
  tt.equal((await two.store.consumeJoinToken('migrate-token-unused')).expiresAt > 0, true, 'an unused token still works, once');
  // the agent goes on with the SVID server one gave it
  const client = agentClient(trust(two), { chain: attested.svid.cert_chain, key });
  tt.teardown(() => client.close());
  const renewed = await call<{ svid: { spiffe_id: string } }>(client, 'RenewAgent', { csr: csrFor(key) });
  tt.equal(renewed.svid.spiffe_id, agentId.toString(), 'RenewAgent without attesting again');
  const updates: SyncUpdateMsg[] = [];
  const stream = (client as unknown as { Sync(req: unknown): ClientReadableStream<SyncUpdateMsg> }).Sync({});
  stream.on('data', (m: SyncUpdateMsg) => updates.push(m));
  stream.on('error', () => undefined);
  tt.teardown(() => stream.cancel());
  for (let i = 0; i < 200 && updates.length === 0; i++) await new Promise((res) => setTimeout(res, 20));
  tt.equal(updates[0]?.entries.length, 25, 'Sync gives it its 25 entries');
  // new entries get new keys after the copied ones (the identity sequence moved on)
  const fresh = await two.registration.createEntry({ spiffe_id: 'spiffe://example.org/ns/app/sa/new', parent_id: agentId.toString(), selectors: ['unix:uid:9'] });
  tt.ok((await two.store.getEntry(fresh.id)).revision > before.revision);
});
