import t from 'tap';
import { status, type ServiceError } from '@grpc/grpc-js';
import { connect, type Socket } from 'node:net';
import { agentClient, attestAgent, call, csrFor, startServerParts } from '../../helpers/server.js';
import { generateKeyPair } from '../../../spiffe/index.js';

const code = (err: unknown): number => (err as ServiceError).code;
const until = async (cond: () => boolean, ms: number): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) { if (Date.now() > end) throw new Error('timed out'); await new Promise((r) => setTimeout(r, 20)); }
};

t.test('AttestAgent is rate limited per source address: past the limit a minute, RESOURCE_EXHAUSTED without trying the token', async (tt) => {
  const parts = await startServerParts({ agentApi: { attestPerSourcePerMinute: 5 } });
  tt.teardown(() => parts.stop());
  const anon = agentClient(parts);
  tt.teardown(() => anon.close());
  const guess = (i: number) => call(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from(`guess-${i}-token`) }, csr: csrFor(generateKeyPair()) }).catch((e: unknown) => e);
  for (let i = 0; i < 5; i++) tt.not(code(await guess(i)), status.RESOURCE_EXHAUSTED, `guess ${i + 1} is answered`);
  const limited = await guess(6);
  tt.equal(code(limited), status.RESOURCE_EXHAUSTED);
  tt.match((limited as ServiceError).details, /more than 5 AttestAgent calls from 127.0.0.1 in a minute/);
  // a real token is refused too now: the limit comes before the attestor
  await parts.store.createJoinToken({ token: 'real-token-after-limit', expiresAt: Math.floor(Date.now() / 1000) + 600 });
  const real = await call(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from('real-token-after-limit') }, csr: csrFor(generateKeyPair()) }).catch((e: unknown) => e);
  tt.equal(code(real), status.RESOURCE_EXHAUSTED);
});

t.test('the agent API caps connections per source and closes ones that send no ClientHello', async (tt) => {
  const parts = await startServerParts({ agentApi: { maxConnectionsPerSource: 8, helloTimeoutMs: 1000 } });
  tt.teardown(() => parts.stop());
  const closed: number[] = [];
  const opened = Date.now();
  const socks: Socket[] = Array.from({ length: 12 }, () => {
    const s = connect({ host: '127.0.0.1', port: parts.port });
    s.on('error', () => {});
    s.on('close', () => closed.push(Date.now() - opened));
    return s;
  });
  tt.teardown(() => { for (const s of socks) s.destroy(); });
  await until(() => closed.length === 12, 5000);
  const early = closed.filter((ms) => ms < 800).length;
  tt.equal(early, 4, '12 - 8 closed at once');
  tt.equal(closed.filter((ms) => ms >= 800).length, 8, 'the 8 admitted idle ones closed at the ClientHello deadline');
  tt.match(parts.metrics.registry.render(), /meshid_server_agent_api_connections_refused_total\{reason="source_limit"\} 4/);
  tt.match(parts.metrics.registry.render(), /meshid_server_agent_api_connections_refused_total\{reason="hello_timeout"\} 8/);
  const a = await attestAgent(parts);
  tt.teardown(() => a.client.close());
  const res = await call<{ svid: { spiffe_id: string } }>(a.client, 'RenewAgent', { csr: csrFor(generateKeyPair()) });
  tt.equal(res.svid.spiffe_id, a.agentId.toString(), 'a real agent is served once the slots are free');
});

t.test('NewJWTSVID refuses 10,000 audiences (it signed a 4 MB token before) and over-long ones, naming the field', async (tt) => {
  const parts = await startServerParts();
  tt.teardown(() => parts.stop());
  const a = await attestAgent(parts);
  tt.teardown(() => a.client.close());
  const { SpiffeId } = await import('../../../spiffe/index.js');
  const { SelectorSet } = await import('../../../spiffe/index.js');
  const entry = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/a/sa/b'), parentId: a.agentId, selectors: SelectorSet.parse(['unix:uid:1']) });
  const many = await call(a.client, 'NewJWTSVID', { entry_id: entry.id, audience: Array.from({ length: 10_000 }, (_, i) => `${'a'.repeat(290)}${i}`) }).catch((e: unknown) => e);
  tt.equal(code(many), status.INVALID_ARGUMENT);
  tt.match((many as ServiceError).details, /10000 audiences; a JWT-SVID carries at most 32/);
  const long = await call(a.client, 'NewJWTSVID', { entry_id: entry.id, audience: ['y'.repeat(257)] }).catch((e: unknown) => e);
  tt.equal(code(long), status.INVALID_ARGUMENT);
  const ok = await call<{ svid: { token: string } }>(a.client, 'NewJWTSVID', { entry_id: entry.id, audience: ['db'] });
  tt.ok(ok.svid.token.length < 2000, 'one audience: a token of ordinary size');
});
