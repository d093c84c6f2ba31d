import t from 'tap';
import { Datastore } from '../../../server/datastore/index.js';
import { agentId, MeshidError, SelectorSet } from '../../../spiffe/index.js';
import { openTemp, rawQuery, td } from './fixtures/tempdb.js';
import { startWorker } from './fixtures/workers.js';

const agent = agentId(td, 'join_token', 'node-1');

async function codeOf(fn: () => unknown): Promise<{ code: string; field: string | undefined }> {
  try { await fn(); } catch (err) { if (err instanceof MeshidError) return { code: err.code, field: err.field }; throw err; }
  throw new Error('expected an error');
}

t.test('an attested node is created with its selectors and read back', async (t) => {
  const { ds, clock } = await openTemp(t, 'node');
  const node = await ds.createAttestedNode({
    spiffeId: agent, attestationType: 'join_token', certSerial: '01ab', certNotAfter: clock.seconds() + 3600,
    canReattest: false, selectors: SelectorSet.parse(['join_token:node-1']),
  });
  t.same(await ds.getAttestedNode(agent), node);
  t.ok(node.spiffeId.equals(agent));
  t.equal(node.attestationType, 'join_token');
  t.equal(node.certSerial, '01ab');
  t.equal(node.newCertSerial, '');
  t.equal(node.banned, false);
  t.equal(node.canReattest, false);
  t.same(node.selectors.toStrings(), ['join_token:node-1']);
  t.same(await codeOf(() => ds.createAttestedNode({ spiffeId: agent, attestationType: 'x', certSerial: '1', certNotAfter: 0 })),
    { code: 'already_exists', field: 'spiffe_id' });
  t.equal(await ds.findAttestedNode(agentId(td, 'x', 'y')), undefined);
  t.same(await codeOf(() => ds.getAttestedNode(agentId(td, 'x', 'y'))), { code: 'not_found', field: 'spiffe_id' });
  t.same((await ds.changesSince(0)).map((c) => [c.kind, c.id, c.op]), [['agent', agent.toString(), 'upsert']]);
});

t.test('update rotates the certificate serials and replaces the node selectors', async (t) => {
  const { ds } = await openTemp(t, 'nodeupd');
  await ds.createAttestedNode({ spiffeId: agent, attestationType: 'k8s_psat', certSerial: 'a', certNotAfter: 100, selectors: SelectorSet.parse(['k8s_psat:cluster:c1']) });
  const mid = await ds.updateAttestedNode(agent, { newCertSerial: 'b', newCertNotAfter: 200 });
  t.equal(mid.certSerial, 'a');
  t.equal(mid.newCertSerial, 'b');
  const done = await ds.updateAttestedNode(agent, { certSerial: 'b', certNotAfter: 200, newCertSerial: '', newCertNotAfter: 0, canReattest: true,
    selectors: SelectorSet.parse(['k8s_psat:cluster:c2', 'k8s_psat:node:n1']) });
  t.equal(done.certSerial, 'b');
  t.equal(done.certNotAfter, 200);
  t.equal(done.newCertSerial, '');
  t.equal(done.canReattest, true);
  t.same(done.selectors.toStrings(), ['k8s_psat:cluster:c2', 'k8s_psat:node:n1']);
  t.same(await codeOf(() => ds.updateAttestedNode(agentId(td, 'x', 'y'), { certSerial: 'c' })), { code: 'not_found', field: 'spiffe_id' });
});

t.test('ban keeps the agent with banned set and no valid serial; evict forgets it', async (t) => {
  const { ds } = await openTemp(t, 'ban');
  const other = agentId(td, 'join_token', 'node-2');
  await ds.createAttestedNode({ spiffeId: agent, attestationType: 'join_token', certSerial: 'a', certNotAfter: 100 });
  await ds.createAttestedNode({ spiffeId: other, attestationType: 'join_token', certSerial: 'b', certNotAfter: 100, selectors: SelectorSet.parse(['x:y']) });
  const banned = await ds.banAttestedNode(agent);
  t.equal(banned.banned, true);
  t.equal(banned.certSerial, '');
  t.equal(banned.newCertSerial, '');
  t.same((await ds.listAttestedNodes({ banned: true })).items.map((n) => n.spiffeId.toString()), [agent.toString()]);
  t.same((await ds.listAttestedNodes({ banned: false })).items.map((n) => n.spiffeId.toString()), [other.toString()]);
  const evicted = await ds.evictAttestedNode(other);
  t.ok(evicted.spiffeId.equals(other));
  t.equal(await ds.findAttestedNode(other), undefined);
  t.same(await codeOf(() => ds.evictAttestedNode(other)), { code: 'not_found', field: 'spiffe_id' });
  t.same((await ds.changesSince(2)).map((c) => [c.id, c.op]), [[agent.toString(), 'upsert'], [other.toString(), 'delete']]);
});

t.test('attested nodes list by type and expiry, in pages that cover every node once', async (t) => {
  const { ds } = await openTemp(t, 'nodelist');
  for (let i = 0; i < 9; i++) {
    await ds.createAttestedNode({ spiffeId: agentId(td, i % 3 === 0 ? 'k8s_psat' : 'join_token', `n${i}`),
      attestationType: i % 3 === 0 ? 'k8s_psat' : 'join_token', certSerial: String(i), certNotAfter: 100 * i });
  }
  t.equal((await ds.listAttestedNodes({ attestationType: 'k8s_psat' })).items.length, 3);
  t.same((await ds.listAttestedNodes({ expiresBefore: 250 })).items.map((n) => n.certSerial).sort(), ['0', '1', '2']);
  const seen: string[] = [];
  let token = '';
  do {
    const page = await ds.listAttestedNodes({ pageSize: 2, pageToken: token });
    seen.push(...page.items.map((n) => n.spiffeId.toString()));
    token = page.nextPageToken;
  } while (token);
  t.equal(seen.length, 9);
  t.equal(new Set(seen).size, 9);
  t.same(seen, [...seen].sort());
});

t.test('a join token is consumed once; a second use is NotFound', async (t) => {
  const { ds, clock, url } = await openTemp(t, 'token');
  const fixed = agentId(td, 'join_token', 'fixed');
  await ds.createJoinToken({ token: 'secret-1', expiresAt: clock.seconds() + 600, agentId: fixed });
  await ds.createJoinToken({ token: 'secret-2', expiresAt: clock.seconds() + 600 });
  t.same(await codeOf(() => ds.createJoinToken({ token: 'secret-1', expiresAt: clock.seconds() + 600 })), { code: 'already_exists', field: 'token' });
  const used = await ds.consumeJoinToken('secret-1');
  t.ok(used.agentId?.equals(fixed));
  t.equal(used.expiresAt, clock.seconds() + 600);
  t.same(await codeOf(() => ds.consumeJoinToken('secret-1')), { code: 'not_found', field: 'join_token' });
  t.equal((await ds.consumeJoinToken('secret-2')).agentId, undefined);
  t.same(await codeOf(() => ds.consumeJoinToken('never-issued')), { code: 'not_found', field: 'join_token' });
  // the file holds only hashes
  await ds.createJoinToken({ token: 'plain-text-token', expiresAt: clock.seconds() + 600 });
  const stored = (await rawQuery(url, 'SELECT token_hash FROM join_tokens')).map((r) => r.token_hash);
  t.equal(stored.length, 1);
  t.not(stored[0], 'plain-text-token');
  t.match(stored[0], /^[0-9a-f]{64}$/);
});

t.test('an expired join token is refused and gone; pruning deletes expired tokens only', async (t) => {
  const { ds, clock } = await openTemp(t, 'expired');
  await ds.createJoinToken({ token: 'short', expiresAt: clock.seconds() + 10 });
  await ds.createJoinToken({ token: 'long', expiresAt: clock.seconds() + 1000 });
  await ds.createJoinToken({ token: 'short-2', expiresAt: clock.seconds() + 10 });
  clock.advance(10);
  t.same(await codeOf(() => ds.consumeJoinToken('short')), { code: 'failed_precondition', field: 'join_token' });
  t.same(await codeOf(() => ds.consumeJoinToken('short')), { code: 'not_found', field: 'join_token' });
  t.equal(await ds.pruneExpiredJoinTokens(), 1);
  t.equal((await ds.consumeJoinToken('long')).expiresAt, clock.seconds() + 990);
});

t.test('join tokens used by several processes at once: each token is won by exactly one', async (t) => {
  const { ds, url } = await openTemp(t, 'race', { now: Date.now });
  const tokens = Array.from({ length: 20 }, (_, i) => `race-${process.pid}-${i}`);
  for (const token of tokens) await ds.createJoinToken({ token, expiresAt: Math.floor(Date.now() / 1000) + 3600 });
  const workers = Array.from({ length: 4 }, () => startWorker(t, ['consume-tokens', url, ...tokens]));
  await Promise.all(workers.map((w) => w.waitForLine((l) => l === 'ready')));
  for (const w of workers) w.send('go');
  await Promise.all(workers.map((w) => w.succeeded()));
  const tally = tokens.map((token) => {
    const outcomes = workers.map((w) => w.lines.find((l) => l.split(' ')[1] === token));
    return {
      won: outcomes.filter((l) => l === `won ${token}`).length,
      notFound: outcomes.filter((l) => l === `lost ${token} not_found`).length,
    };
  });
  t.same(tally, tokens.map(() => ({ won: 1, notFound: workers.length - 1 })),
    'every token: exactly one winner, every other process told not_found');
  t.same(await codeOf(() => ds.consumeJoinToken(tokens[0]!)), { code: 'not_found', field: 'join_token' });
});

t.test('two Datastore connections in one process see each other\'s one-time token use', async (t) => {
  const { ds, url } = await openTemp(t, 'twoconn', { now: Date.now });
  const second = await Datastore.open({ url, trustDomain: td });
  t.teardown(() => second.close());
  await ds.createJoinToken({ token: 'shared', expiresAt: Math.floor(Date.now() / 1000) + 60 });
  await second.consumeJoinToken('shared');
  t.same(await codeOf(() => ds.consumeJoinToken('shared')), { code: 'not_found', field: 'join_token' });
});
