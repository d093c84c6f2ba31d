import t, { type Test } from 'tap';
import { status, type ServiceError } from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentClient, attestAgent, call, csrFor, startServerParts, type ServerParts } from '../../helpers/server.js';
import { createCsr, generateKeyPair, parseCsr, pemFromDer, SelectorSet, serverId, SpiffeId, spkiDer, verifyJwtSvid, verifyX509Svid } from '../../../spiffe/index.js';
import type { BatchNewX509SvidResponseMsg, SyncUpdateMsg } from '../../../api/agentproto.js';

let parts: ServerParts;
t.before(async () => { parts = await startServerParts(); });
t.teardown(async () => { await parts.stop(); });

const bundleOf = (p: ServerParts) => (td: { name: string }) => (td.name === p.td.name ? p.ca.bundle().x509Authorities : undefined);
const code = (err: unknown): number => (err as ServiceError).code;

t.test('AttestAgent with a join token answers an agent X509-SVID that chains to the bundle', async (t) => {
  const a = await attestAgent(parts, 'join-token-0001');
  t.teardown(() => a.client.close());
  t.equal(a.agentId.toString(), 'spiffe://example.org/meshid/agent/join_token/join-token-0001');
  const v = verifyX509Svid(a.chain, bundleOf(parts) as never, new Date());
  t.equal(v.spiffeId.toString(), a.agentId.toString());
  const node = await parts.store.getAttestedNode(a.agentId);
  t.equal(node.certSerial, v.leaf.serialHex, 'the attested node records the SVID serial');
  t.equal(node.attestationType, 'join_token');
  // openssl agrees
  writeFileSync(join(parts.dir, 'b.pem'), parts.ca.bundle().x509Pem());
  writeFileSync(join(parts.dir, 'a.pem'), pemFromDer(a.chain[0]!));
  t.match(execFileSync('openssl', ['verify', '-CAfile', join(parts.dir, 'b.pem'), join(parts.dir, 'a.pem')]).toString(), /OK/);
});

t.test('a join token works once: the second use is refused', async (t) => {
  const a = await attestAgent(parts, 'join-token-once');
  a.client.close();
  const anon = agentClient(parts);
  t.teardown(() => anon.close());
  const err = await call(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from('join-token-once') }, csr: csrFor(generateKeyPair()) }).catch((e) => e);
  t.equal(code(err), status.PERMISSION_DENIED);
});

t.test('an expired or unknown join token is refused', async (t) => {
  await parts.store.createJoinToken({ token: 'join-token-expired', expiresAt: Math.floor(Date.now() / 1000) - 1 });
  const anon = agentClient(parts);
  t.teardown(() => anon.close());
  for (const tok of ['join-token-expired', 'join-token-never-made']) {
    const err = await call(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from(tok) }, csr: csrFor(generateKeyPair()) }).catch((e) => e);
    t.equal(code(err), status.PERMISSION_DENIED, tok);
  }
  const bad = await call(anon, 'AttestAgent', { attestation: { type: 'tpm', payload: Buffer.from('x') }, csr: csrFor(generateKeyPair()) }).catch((e) => e);
  t.equal(code(bad), status.INVALID_ARGUMENT, 'unknown attestation type');
  t.match((bad as Error).message, /attestation type/);
});

t.test('a malformed CSR at attestation does not spend the token', async (t) => {
  await parts.store.createJoinToken({ token: 'join-token-keepme', expiresAt: Math.floor(Date.now() / 1000) + 600 });
  const anon = agentClient(parts);
  t.teardown(() => anon.close());
  const err = await call(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from('join-token-keepme') }, csr: Buffer.from('not a csr') }).catch((e) => e);
  t.equal(code(err), status.INVALID_ARGUMENT);
  const ok = await call<{ svid: { spiffe_id: string } }>(anon, 'AttestAgent', { attestation: { type: 'join_token', payload: Buffer.from('join-token-keepme') }, csr: csrFor(generateKeyPair()) });
  t.match(ok.svid.spiffe_id, /join-token-keepme$/);
});

t.test('calls other than AttestAgent need an agent SVID', async (t) => {
  const anon = agentClient(parts);
  t.teardown(() => anon.close());
  const err = await call(anon, 'BatchNewX509SVID', { params: [{ entry_id: 'x', csr: csrFor(generateKeyPair()) }] }).catch((e) => e);
  t.equal(code(err), status.UNAUTHENTICATED);
});

t.test('an SVID of this trust domain that is not an agent ID gets PermissionDenied naming it', async (t) => {
  const key = generateKeyPair();
  const id = SpiffeId.parse(`spiffe://${parts.td.name}/ns/default/sa/web`);
  const svid = parts.ca.signX509Svid(id, spkiDer(key.publicKey), 600);
  const workload = agentClient(parts, { chain: svid.certChainDer, key });
  t.teardown(() => workload.close());
  const err = await call(workload, 'BatchNewX509SVID', { params: [{ entry_id: 'x', csr: csrFor(generateKeyPair()) }] }).catch((e) => e);
  t.equal(code(err), status.PERMISSION_DENIED);
  t.match((err as ServiceError).details, `${id} is not an agent of trust domain ${parts.td.name}`);
});

async function batchSignsOnlyAuthorised(t: Test, parts: ServerParts): Promise<void> {
  const a = await attestAgent(parts);
  t.teardown(() => a.client.close());
  const mine = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/default/sa/web'), parentId: a.agentId, selectors: SelectorSet.parse(['unix:uid:1000']), dnsNames: ['web.default.svc'] });
  const other = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/default/sa/db'), parentId: SpiffeId.parse('spiffe://example.org/meshid/agent/join_token/someone-else'), selectors: SelectorSet.parse(['unix:uid:1001']) });
  const key = generateKeyPair();
  const other2 = generateKeyPair();
  const goodCsr = csrFor(key);
  // a CSR whose signature was made by another key than the one it carries
  const forged = createCsr(other2.privateKey, key.publicKey);
  const res = await call<BatchNewX509SvidResponseMsg>(a.client, 'BatchNewX509SVID', { params: [
    { entry_id: mine.id, csr: goodCsr },
    { entry_id: other.id, csr: goodCsr },
    { entry_id: mine.id, csr: Buffer.from([0x30, 0x03, 0x02, 0x01]) },
    { entry_id: mine.id, csr: forged },
    { entry_id: 'no-such-entry', csr: goodCsr },
  ] });
  t.equal(res.results.length, 5);
  t.equal(res.results[0]!.status!.code, status.OK);
  const v = verifyX509Svid(res.results[0]!.svid!.cert_chain, bundleOf(parts) as never, new Date());
  t.equal(v.spiffeId.toString(), 'spiffe://example.org/ns/default/sa/web');
  t.same(v.leaf.dnsNames, ['web.default.svc']);
  t.ok(v.leaf.spki.equals(parseCsr(goodCsr).publicKeySpki), 'the SVID carries the CSR public key');
  t.equal(res.results[1]!.status!.code, status.PERMISSION_DENIED, 'entry of another agent');
  t.equal(res.results[2]!.status!.code, status.INVALID_ARGUMENT, 'malformed CSR');
  t.equal(res.results[3]!.status!.code, status.INVALID_ARGUMENT, 'CSR signed by another key');
  t.match(res.results[3]!.status!.message, /signature/);
  t.equal(res.results[4]!.status!.code, status.PERMISSION_DENIED, 'unknown entry');
  t.equal(parts.metrics.svidsSigned.get({ type: 'x509' }) >= 1, true);
}

t.test('BatchNewX509SVID signs only entries the agent may have, and refuses bad CSRs per item', (t) => batchSignsOnlyAuthorised(t, parts));

t.test('the same through a pool of 2 signing workers (signing.workers: 2): the same answers, item by item', async (t) => {
  const pooled = await startServerParts({ signingWorkers: 2 });
  t.teardown(() => pooled.stop());
  await batchSignsOnlyAuthorised(t, pooled);
});

t.test('entries reached through the agent node selectors (node alias) are signed', async (t) => {
  const a = await attestAgent(parts);
  t.teardown(() => a.client.close());
  const node = await parts.store.getAttestedNode(a.agentId);
  const alias = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/meshid/nodes/all'), parentId: serverId(parts.td), selectors: SelectorSet.of([node.selectors.items[0]!]) });
  const child = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/shared/sa/any'), parentId: alias.spiffeId, selectors: SelectorSet.parse(['unix:uid:5']) });
  const res = await call<BatchNewX509SvidResponseMsg>(a.client, 'BatchNewX509SVID', { params: [{ entry_id: child.id, csr: csrFor(generateKeyPair()) }] });
  t.equal(res.results[0]!.status!.code, status.OK);
});

t.test('an oversized request is refused', async (t) => {
  const small = await startServerParts({ maxMessageBytes: 64 * 1024 });
  t.teardown(() => small.stop());
  const a = await attestAgent(small);
  t.teardown(() => a.client.close());
  const err = await call(a.client, 'BatchNewX509SVID', { params: [{ entry_id: 'x', csr: Buffer.alloc(100 * 1024, 1) }] }).catch((e) => e);
  t.equal(code(err), status.RESOURCE_EXHAUSTED);
});

t.test('too many CSRs in one batch are refused', async (t) => {
  const a = await attestAgent(parts);
  t.teardown(() => a.client.close());
  const csr = csrFor(generateKeyPair());
  const err = await call(a.client, 'BatchNewX509SVID', { params: Array.from({ length: 1001 }, () => ({ entry_id: 'x', csr })) }).catch((e) => e);
  t.equal(code(err), status.RESOURCE_EXHAUSTED);
  t.match((err as Error).message, /limit is 1000/);
});

t.test('a banned agent gets nothing; an evicted agent must attest again', async (t) => {
  const banned = await attestAgent(parts);
  const evicted = await attestAgent(parts);
  t.teardown(() => { banned.client.close(); evicted.client.close(); });
  await parts.store.banAttestedNode(banned.agentId);
  await parts.store.evictAttestedNode(evicted.agentId);
  const e1 = await call(banned.client, 'NewJWTSVID', { entry_id: 'x', audience: ['a'] }).catch((e) => e);
  t.equal(code(e1), status.PERMISSION_DENIED);
  t.match((e1 as Error).message, /banned/);
  const e2 = await call(evicted.client, 'NewJWTSVID', { entry_id: 'x', audience: ['a'] }).catch((e) => e);
  t.equal(code(e2), status.UNAUTHENTICATED);
  t.match((e2 as Error).message, /attest again/);
});

t.test('NewJWTSVID signs for an authorised entry and needs an audience', async (t) => {
  const a = await attestAgent(parts);
  t.teardown(() => a.client.close());
  const e = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/jwt/sa/api'), parentId: a.agentId, selectors: SelectorSet.parse(['unix:uid:7']) });
  const res = await call<{ svid: { token: string; spiffe_id: string } }>(a.client, 'NewJWTSVID', { entry_id: e.id, audience: ['backend'] });
  const v = verifyJwtSvid(res.svid.token, (td) => (td.name === 'example.org' ? parts.ca.bundle().jwtKeys() : undefined), 'backend', new Date());
  t.equal(v.spiffeId.toString(), 'spiffe://example.org/ns/jwt/sa/api');
  const err = await call(a.client, 'NewJWTSVID', { entry_id: e.id, audience: [] }).catch((x) => x);
  t.equal(code(err), status.INVALID_ARGUMENT);
});

t.test('RenewAgent issues a new SVID; the new one works and the old one stops working once the new one is used', async (t) => {
  const a = await attestAgent(parts);
  t.teardown(() => a.client.close());
  const key2 = generateKeyPair();
  const res = await call<{ svid: { cert_chain: Buffer[] } }>(a.client, 'RenewAgent', { csr: csrFor(key2) });
  const renewed = agentClient(parts, { chain: res.svid.cert_chain, key: key2 });
  t.teardown(() => renewed.close());
  const again = await call<{ svid: { spiffe_id: string } }>(renewed, 'RenewAgent', { csr: csrFor(generateKeyPair()) });
  t.equal(again.svid.spiffe_id, a.agentId.toString(), 'the renewed SVID authenticates the agent');
  const old = agentClient(parts, { chain: a.chain, key: a.key });
  t.teardown(() => old.close());
  const err = await call(old, 'RenewAgent', { csr: csrFor(generateKeyPair()) }).catch((e) => e);
  t.equal(code(err), status.UNAUTHENTICATED, 'superseded SVID refused');
});

function nextMessage(stream: NodeJS.EventEmitter): Promise<SyncUpdateMsg> {
  return new Promise((resolve, reject) => {
    const onData = (m: SyncUpdateMsg) => { stream.off('error', onErr); resolve(m); };
    const onErr = (e: Error) => { stream.off('data', onData); reject(e); };
    stream.once('data', onData);
    stream.once('error', onErr);
  });
}

t.test('Sync sends a snapshot, then the entries that change, and ends when the agent is banned', async (t) => {
  const a = await attestAgent(parts);
  t.teardown(() => a.client.close());
  const e1 = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/sync/sa/one'), parentId: a.agentId, selectors: SelectorSet.parse(['unix:uid:11']) });
  const stream = (a.client['Sync'] as Function)({}) as NodeJS.EventEmitter & { cancel(): void };
  t.teardown(() => stream.cancel());
  const snap = await nextMessage(stream);
  t.equal(snap.snapshot, true);
  t.same(snap.entries.map((e) => e.id), [e1.id]);
  t.equal(snap.bundles[0]!.trust_domain, 'example.org');
  const e2p = nextMessage(stream);
  const e2 = await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/sync/sa/two'), parentId: a.agentId, selectors: SelectorSet.parse(['unix:uid:12']) });
  const d1 = await e2p;
  t.equal(d1.snapshot, false);
  t.same(d1.entries.map((e) => e.id), [e2.id], 'only the new entry');
  const delp = nextMessage(stream);
  await parts.store.deleteEntry(e1.id);
  t.same((await delp).removed_entries, [e1.id]);
  // another agent's entry changes nothing for this stream
  await parts.store.createEntry({ spiffeId: SpiffeId.parse('spiffe://example.org/ns/sync/sa/three'), parentId: SpiffeId.parse('spiffe://example.org/meshid/agent/x/y'), selectors: SelectorSet.parse(['unix:uid:13']) });
  const endp = nextMessage(stream).then(() => 'message', (e: ServiceError) => e.code);
  await parts.store.banAttestedNode(a.agentId);
  t.equal(await endp, status.PERMISSION_DENIED);
});
