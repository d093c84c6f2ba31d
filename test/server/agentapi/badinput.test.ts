import t from 'tap';
import { status, type Client, type ServiceError } from '@grpc/grpc-js';
import { Metadata } from '@grpc/grpc-js';
import { loadAgentProto } from '../../../api/agentproto.js';
import { generateKeyPair, SelectorSet, SpiffeId } from '../../../spiffe/index.js';
import { agentClient, attestAgent, call, csrFor, startServerParts } from '../../helpers/server.js';
import { mutateBytes, prng } from '../../helpers/mutate.js';

// Seeded mutations of a valid encoded request for every unary RPC, sent as raw bytes over the real TLS
// gRPC port: each answer is a status the API names, a refused call writes nothing, and the server answers a
// good call afterwards. INTERNAL only for bytes that are no protobuf message at all ("Error deserializing
// request"), as every gRPC stack answers those; an INTERNAL from a handler would be a bug.
const CASES_PER_RPC = 300;
const ALLOWED = new Set([status.OK, status.INVALID_ARGUMENT, status.PERMISSION_DENIED, status.NOT_FOUND, status.UNAUTHENTICATED,
  status.RESOURCE_EXHAUSTED, status.FAILED_PRECONDITION, status.ALREADY_EXISTS]);

function raw(client: Client, method: string, bytes: Buffer): Promise<{ code: number; details: string }> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(`/meshid.agent.v1.Agent/${method}`, (b: Buffer) => b, (b: Buffer) => b, bytes, new Metadata(), { deadline: Date.now() + 10_000 },
      (err: ServiceError | null) => resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: '' }));
  });
}

t.test(`${CASES_PER_RPC} mutated requests per agent API RPC: only named statuses, nothing written when refused, the server keeps serving`, async (tt) => {
  const parts = await startServerParts({ agentApi: { attestPerSourcePerMinute: 1_000_000 } });
  tt.teardown(() => parts.stop());
  const a = await attestAgent(parts);
  tt.teardown(() => a.client.close());
  const entry = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/a/sa/b'), parentId: a.agentId, selectors: SelectorSet.parse(['unix:uid:1']) });
  await call(a.client, 'PublishNode', { name: 'fuzz-node', address: '10.99.0.1', pod_cidr: '10.201.1.0/24', wireguard_public_key: Buffer.alloc(32, 3).toString('base64') });
  const svc = loadAgentProto().service as unknown as Record<string, { requestSerialize(m: unknown): Buffer }>;
  const anon = agentClient(parts);
  tt.teardown(() => anon.close());
  await parts.store.createJoinToken({ token: 'fuzz-join-token-1', expiresAt: Math.floor(Date.now() / 1000) + 600 });
  const rpcs: [string, Client, unknown][] = [
    ['AttestAgent', anon, { attestation: { type: 'join_token', payload: Buffer.from('fuzz-join-token-1') }, csr: csrFor(generateKeyPair()) }],
    ['RenewAgent', a.client, { csr: csrFor(generateKeyPair()) }],
    ['BatchNewX509SVID', a.client, { params: [{ entry_id: entry.id, csr: csrFor(generateKeyPair()) }] }],
    ['NewJWTSVID', a.client, { entry_id: entry.id, audience: ['db', 'cache'] }],
    ['PublishNode', a.client, { name: 'fuzz-node', address: '10.99.0.1', pod_cidr: '10.201.1.0/24', wireguard_public_key: Buffer.alloc(32, 3).toString('base64') }],
    ['RegisterEndpoints', a.client, { endpoints: [{ ip: '10.201.1.7', namespace: 'default', name: 'p', service_account: 'default', labels: { app: 'x' } }] }],
  ];
  const rnd = prng(1414);
  for (const [method, client, good] of rpcs) {
    const encoded = svc[method]!.requestSerialize(good);
    const seen = new Map<string, number>();
    for (let i = 0; i < CASES_PER_RPC; i++) {
      const bytes = mutateBytes(encoded, rnd);
      const revision = await parts.store.currentRevision();
      const nodes = (await parts.store.listNodes()).length;
      const r = await raw(client, method, bytes);
      const name = status[r.code] ?? String(r.code);
      seen.set(name, (seen.get(name) ?? 0) + 1);
      const undecodable = r.code === status.INTERNAL && r.details === 'Error deserializing request';
      if (undecodable) seen.set('INTERNAL (not a message)', (seen.get('INTERNAL (not a message)') ?? 0) + 1);
      if (undecodable) seen.set(name, seen.get(name)! - 1);
      if (!ALLOWED.has(r.code) && !undecodable) tt.fail(`${method} answered ${name} (${r.details}) to ${bytes.toString('hex').slice(0, 200)}`);
      if (r.code !== status.OK && method !== 'AttestAgent' && method !== 'RenewAgent' && (await parts.store.currentRevision()) !== revision) tt.fail(`${method} refused (${name}) but the store changed`);
      if ((await parts.store.listNodes()).length !== nodes && method !== 'PublishNode') tt.fail(`${method} made a node record`);
    }
    for (const [k, n] of seen) if (n === 0) seen.delete(k);
    tt.notOk(seen.has('INTERNAL') || seen.has('UNKNOWN'), `${method}: ${[...seen].sort().map(([c, n]) => `${n}×${c}`).join(', ')}`);
  }
  tt.equal((await parts.store.listNodes()).filter((n) => n.agentId === a.agentId.toString()).length, 1, 'the agent still has exactly one node');
  tt.same(parts.logs.lines.filter((l) => l['msg'] === 'agent API call failed' || l['msg'] === 'signing failed').map((l) => l['err']), [], 'no handler failed inside the server');
  const ok = await call<{ svid: { token: string } }>(a.client, 'NewJWTSVID', { entry_id: entry.id, audience: ['db'] });
  tt.ok(ok.svid.token.length > 0, 'the server still signs for the agent');
});

t.test('a request over the 4 MiB limit is RESOURCE_EXHAUSTED and the connection goes on', async (tt) => {
  const parts = await startServerParts();
  tt.teardown(() => parts.stop());
  const a = await attestAgent(parts);
  tt.teardown(() => a.client.close());
  const r = await raw(a.client, 'RenewAgent', Buffer.alloc(4 * 1024 * 1024 + 10, 0x0a));
  tt.equal(r.code, status.RESOURCE_EXHAUSTED);
  const again = await call<{ svid: { spiffe_id: string } }>(a.client, 'RenewAgent', { csr: csrFor(generateKeyPair()) });
  tt.equal(again.svid.spiffe_id, a.agentId.toString());
});
