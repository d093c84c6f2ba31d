import t from 'tap';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../common/clock.js';
import { JsonLogger, MemoryLogSink } from '../../common/log.js';
import { MeshidAgent } from '../../agent/agent.js';
import { agentConfigSchema } from '../../agent/config.js';
import { loadWorkloadProto, workloadCallMetadata, type JWTSVIDResponseMessage, type X509SVIDResponseMessage } from '../../agent/workloadapi/index.js';
import { parseCertificate, SelectorSet, SpiffeId, splitConcatenatedDer } from '../../spiffe/index.js';
import { startServerParts } from '../helpers/server.js';

// The server goes away for longer than an SVID lives: the Workload API must never hand out an expired SVID.
const uid = process.getuid!();
const TTL = 6;

function client(dir: string) {
  const proto = loadWorkloadProto();
  return new proto.Client(`unix:${join(dir, 'agent.sock')}`, credentials.createInsecure()) as unknown as Record<string, Function> & { close(): void };
}
const firstOrError = (c: Record<string, Function>) => new Promise<X509SVIDResponseMessage | ServiceError>((resolve) => {
  const s = c['FetchX509SVID']!({}, workloadCallMetadata()) as NodeJS.EventEmitter & { cancel(): void };
  s.once('data', (m: X509SVIDResponseMessage) => { s.removeAllListeners(); s.on('error', () => {}); s.cancel(); resolve(m); });
  s.once('error', (e: ServiceError) => resolve(e));
});
const jwt = (c: Record<string, Function>) => new Promise<JWTSVIDResponseMessage | ServiceError>((resolve) => {
  c['FetchJWTSVID']!({ audience: ['db'], spiffe_id: '' }, workloadCallMetadata(), (err: ServiceError | null, r: JWTSVIDResponseMessage) => resolve(err ?? r));
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('past an SVID TTL without the server: no expired SVID or JWT-SVID is served, streams end UNAVAILABLE saying since when, readiness goes false', async (tt) => {
  const parts = await startServerParts();
  const dir = mkdtempSync(join(tmpdir(), 'meshid-expiry-'));
  tt.teardown(async () => { await parts.stop().catch(() => {}); rmSync(dir, { recursive: true, force: true }); });
  const agentId = SpiffeId.parse('spiffe://example.org/meshid/agent/join_token/node-exp');
  await parts.store.createJoinToken({ token: 'expiry-token-1', expiresAt: Math.floor(Date.now() / 1000) + 600, agentId });
  await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/default/sa/web'), parentId: agentId, selectors: SelectorSet.parse([`unix:uid:${uid}`]), x509SvidTtl: TTL, jwtSvidTtl: TTL });
  const bundleFile = join(dir, 'bootstrap.pem');
  writeFileSync(bundleFile, parts.ca.bundle().x509Pem());
  const config = agentConfigSchema.parse({
    server: `127.0.0.1:${parts.port}`, trust_bundle: bundleFile, socket: join(dir, 'agent.sock'), data_dir: join(dir, 'data'),
    health: '127.0.0.1:0', node_name: 'node-exp', join_token: 'expiry-token-1',
  });
  const agent = new MeshidAgent(config, { clock: systemClock, logger: new JsonLogger(new MemoryLogSink(), 'debug') });
  await agent.start();
  tt.teardown(() => agent.stop());
  await agent.sync.synced();
  await agent.cache.settled();
  const c = client(dir);
  tt.teardown(() => c.close());

  const before = await firstOrError(c) as X509SVIDResponseMessage;
  tt.equal(before.svids.length, 1);
  const token = (await jwt(c) as JWTSVIDResponseMessage).svids[0]!.svid;
  const open = c['FetchX509SVID']!({}, workloadCallMetadata()) as NodeJS.EventEmitter & { cancel(): void };
  const received: X509SVIDResponseMessage[] = [];
  const ended = new Promise<ServiceError>((resolve) => { open.on('data', (m: X509SVIDResponseMessage) => received.push(m)); open.once('error', resolve); });

  await parts.api.stop(); // the server is gone from here on
  const outageAt = Date.now();
  // while the token is valid but past half life, the agent cannot renew it and serves the one it holds
  await sleep((TTL / 2) * 1000 + 300);
  const held = await jwt(c);
  tt.equal((held as JWTSVIDResponseMessage).svids?.[0]?.svid, token, 'a still-valid JWT-SVID is served while the server is away');

  const status1 = await ended;
  tt.equal(status1.code, status.UNAVAILABLE, 'the open stream ends UNAVAILABLE when its last SVID expires');
  tt.match(status1.details, /server has been unreachable since \d{4}-\d\d-\d\dT/);
  const expiry = parseCertificate(splitConcatenatedDer(before.svids[0]!.x509_svid)[0]!).notAfter.getTime();
  for (const m of received) {
    const leaf = parseCertificate(splitConcatenatedDer(m.svids[0]!.x509_svid)[0]!);
    tt.ok(leaf.notAfter.getTime() > outageAt, 'nothing the stream sent was expired when sent');
  }
  tt.ok(Date.now() >= expiry - 1000, 'the stream ended around the expiry');

  const after = await firstOrError(c) as ServiceError;
  tt.equal(after.code, status.UNAVAILABLE, 'a new stream gets UNAVAILABLE, not the expired SVID');
  tt.match(after.details, /no valid SVID for this workload: the server has been unreachable since/);
  // the JWT-SVID has its own exp (whole seconds, signed a moment after the X509-SVID): wait past that one
  const jwtExp = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000;
  await sleep(Math.max(0, jwtExp + 300 - Date.now()));
  const jwtExpired = await jwt(c) as ServiceError;
  tt.equal(jwtExpired.code, status.UNAVAILABLE, 'an expired JWT-SVID is not served either');

  const ready = await fetch(`http://127.0.0.1:${agent.healthPort}/ready`);
  tt.equal(ready.status, 503, 'not ready while only expired SVIDs are held');
  tt.match(await ready.text(), /all 1 X509-SVIDs held have expired; the server has been unreachable since/);
  const metrics = await (await fetch(`http://127.0.0.1:${agent.healthPort}/metrics`)).text();
  tt.match(metrics, /meshid_agent_x509_svids_by_lifetime\{state="expired"\} 1/);
  tt.match(metrics, /meshid_agent_x509_svid_min_remaining_seconds -\d+/);
});
