import t from 'tap';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../common/clock.js';
import { JsonLogger, MemoryLogSink } from '../../common/log.js';
import { MeshidAgent } from '../../agent/agent.js';
import { agentConfigSchema } from '../../agent/config.js';
import { loadWorkloadProto, workloadCallMetadata, type X509SVIDResponseMessage } from '../../agent/workloadapi/index.js';
import { AgentApiServer } from '../../server/agentapi/server.js';
import { AttestorRegistry, JoinTokenAttestor } from '../../server/attestation/index.js';
import { IdentityAllocator } from '../../server/identity/index.js';
import { SelectorSet, SpiffeId, splitConcatenatedDer, verifyX509Svid } from '../../spiffe/index.js';
import { startServerParts, type ServerParts } from '../helpers/server.js';

const uid = process.getuid!();

async function startAgent(parts: ServerParts, dir: string, token: string | undefined, onFatal?: (e: Error) => void): Promise<{ agent: MeshidAgent; logs: MemoryLogSink }> {
  const bundleFile = join(dir, 'bootstrap.pem');
  writeFileSync(bundleFile, parts.ca.bundle().x509Pem());
  const config = agentConfigSchema.parse({
    server: `127.0.0.1:${parts.port}`, trust_bundle: bundleFile, socket: join(dir, 'agent.sock'), data_dir: join(dir, 'data'),
    health: '127.0.0.1:0', node_name: 'node-test', ...(token ? { join_token: token } : {}),
  });
  const logs = new MemoryLogSink();
  const agent = new MeshidAgent(config, { clock: systemClock, logger: new JsonLogger(logs, 'debug'), ...(onFatal ? { onFatal } : {}) });
  await agent.start();
  return { agent, logs };
}

function workloadClient(dir: string) {
  const proto = loadWorkloadProto();
  return new proto.Client(`unix:${join(dir, 'agent.sock')}`, credentials.createInsecure()) as unknown as Record<string, Function> & { close(): void };
}

function x509Stream(c: Record<string, Function>) {
  return c['FetchX509SVID']!({}, workloadCallMetadata()) as NodeJS.EventEmitter & { cancel(): void };
}

function next<T>(s: NodeJS.EventEmitter, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message in time')), timeoutMs);
    s.once('data', (m: T) => { clearTimeout(timer); resolve(m); });
    s.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('agent attests with a join token, serves its SVIDs on the Workload API, pushes changes, and survives a server outage and its own restart', async (t) => {
  const parts = await startServerParts({ x509Ttl: 3600 });
  const dir = mkdtempSync(join(tmpdir(), 'meshid-agent-'));
  t.teardown(async () => { await parts.stop(); rmSync(dir, { recursive: true, force: true }); });
  const agentId = SpiffeId.parse('spiffe://example.org/meshid/agent/join_token/node-test');
  await parts.store.createJoinToken({ token: 'agent-test-token-1', expiresAt: Math.floor(Date.now() / 1000) + 600, agentId });
  const entry = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/default/sa/web'), parentId: agentId, selectors: SelectorSet.parse([`unix:uid:${uid}`]) });
  let { agent } = await startAgent(parts, dir, 'agent-test-token-1');
  t.teardown(() => agent.stop());
  t.equal(agent.identity.current().spiffeId.toString(), agentId.toString());
  t.equal(statSync(join(dir, 'data', 'agent-key.pem')).mode & 0o777, 0o600, 'agent key kept with mode 0600');
  await agent.sync.synced();
  await agent.cache.settled();

  const c = workloadClient(dir);
  t.teardown(() => c.close());
  const stream = x509Stream(c);
  t.teardown(() => { stream.removeAllListeners(); stream.on('error', () => {}); stream.cancel(); });
  const first = await next<X509SVIDResponseMessage>(stream);
  t.equal(first.svids.length, 1);
  t.equal(first.svids[0]!.spiffe_id, 'spiffe://example.org/ns/default/sa/web');
  const v = verifyX509Svid(splitConcatenatedDer(first.svids[0]!.x509_svid), () => splitConcatenatedDer(first.svids[0]!.bundle), new Date());
  t.equal(v.spiffeId.toString(), 'spiffe://example.org/ns/default/sa/web');

  // a new entry for the same caller is pushed on the open stream
  const pushed = next<X509SVIDResponseMessage>(stream);
  await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/default/sa/extra'), parentId: agentId, selectors: SelectorSet.parse([`unix:uid:${uid}`]) });
  let msg = await pushed;
  while (msg.svids.length < 2) msg = await next<X509SVIDResponseMessage>(stream);
  t.same(msg.svids.map((s) => s.spiffe_id).sort(), ['spiffe://example.org/ns/default/sa/extra', 'spiffe://example.org/ns/default/sa/web']);

  // server outage: the Workload API keeps serving from the cache
  await parts.api.stop();
  await until(() => agent.sync.status !== 'synced', 'the agent to notice the outage');
  const c2 = workloadClient(dir);
  const during = await next<X509SVIDResponseMessage>(x509Stream(c2));
  c2.close();
  t.equal(during.svids.length, 2, 'cached SVIDs served while the server is down');

  // the server returns on the same port: Sync resumes without an agent restart
  const again = new AgentApiServer({
    bind: `127.0.0.1:${parts.port}`, ca: parts.ca, store: parts.store, attestors: new AttestorRegistry([new JoinTokenAttestor(parts.store, parts.td)]),
    clock: systemClock, logger: new JsonLogger(new MemoryLogSink()), metrics: parts.metrics, agentSvidTtlSeconds: 3600, endpoints: new IdentityAllocator(parts.store),
  });
  await again.start();
  t.teardown(() => again.stop());
  const syncedBefore = agent.sync.lastSyncAt!.getTime();
  await until(() => agent.sync.status === 'synced' && agent.sync.lastSyncAt!.getTime() > syncedBefore, 'Sync to resume', 20_000);
  const removedPush = next<X509SVIDResponseMessage>(stream);
  await parts.store.deleteEntry(entry.id);
  msg = await removedPush;
  t.same(msg.svids.map((s) => s.spiffe_id), ['spiffe://example.org/ns/default/sa/extra'], 'deleted entry is gone from the stream');

  // agent restart: the stored SVID is reused without a token, and workloads get their SVIDs again
  await agent.stop();
  ({ agent } = await startAgent(parts, dir, undefined));
  t.equal(agent.identity.current().spiffeId.toString(), agentId.toString(), 'restarted without a token');
  await agent.sync.synced();
  await agent.cache.settled();
  const c3 = workloadClient(dir);
  t.teardown(() => c3.close());
  const after = await next<X509SVIDResponseMessage>(x509Stream(c3));
  t.same(after.svids.map((s) => s.spiffe_id), ['spiffe://example.org/ns/default/sa/extra']);
});

t.test('a caller that matches no entry gets PermissionDenied', async (t) => {
  const parts = await startServerParts();
  const dir = mkdtempSync(join(tmpdir(), 'meshid-agent-'));
  t.teardown(async () => { await parts.stop(); rmSync(dir, { recursive: true, force: true }); });
  const agentId = SpiffeId.parse('spiffe://example.org/meshid/agent/join_token/node-test');
  await parts.store.createJoinToken({ token: 'agent-test-token-2', expiresAt: Math.floor(Date.now() / 1000) + 600, agentId });
  await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/other/sa/x'), parentId: agentId, selectors: SelectorSet.parse([`unix:uid:${uid + 4242}`]) });
  const { agent } = await startAgent(parts, dir, 'agent-test-token-2');
  t.teardown(() => agent.stop());
  await agent.sync.synced();
  const c = workloadClient(dir);
  t.teardown(() => c.close());
  const err = await next(x509Stream(c)).catch((e: ServiceError) => e);
  t.equal((err as ServiceError).code, status.PERMISSION_DENIED);
});

t.test('a banned agent stops with a clear error', async (t) => {
  const parts = await startServerParts();
  const dir = mkdtempSync(join(tmpdir(), 'meshid-agent-'));
  t.teardown(async () => { await parts.stop(); rmSync(dir, { recursive: true, force: true }); });
  const agentId = SpiffeId.parse('spiffe://example.org/meshid/agent/join_token/node-banned');
  await parts.store.createJoinToken({ token: 'agent-test-token-3', expiresAt: Math.floor(Date.now() / 1000) + 600, agentId });
  let fatal: Error | undefined;
  const { agent } = await startAgent(parts, dir, 'agent-test-token-3', (e) => { fatal = e; });
  t.teardown(() => agent.stop());
  await agent.sync.synced();
  await parts.store.banAttestedNode(agentId);
  await until(() => fatal !== undefined, 'the agent to see its ban');
  t.match(fatal!.message, /banned/);
});
