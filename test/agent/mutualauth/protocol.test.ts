import t from 'tap';
import { generateKeyPair } from '../../../spiffe/index.js';
import {
  decodeAuthenticate, decodeServerMsg, encodeFrame, FrameDecoder, MAX_BATCH_PAIRS, MAX_CHAIN_CERTS, MAX_FRAME_BYTES, pairsOf, proofInput,
  ProtocolError, signProof, verifyProof, type WirePair,
} from '../../../agent/mutualauth/protocol.js';
import { planBatches } from '../../../agent/mutualauth/client.js';
import { cluster, rawClient } from './fixtures.js';

t.test('frames split and joined at any byte boundary decode to the same messages', async (t) => {
  const msgs = [{ a: 1 }, { b: 'x'.repeat(10_000) }, [1, 2, 3]];
  const bytes = Buffer.concat(msgs.map(encodeFrame));
  for (const step of [1, 3, 7, 4096, bytes.length]) {
    const d = new FrameDecoder();
    const out: unknown[] = [];
    for (let i = 0; i < bytes.length; i += step) out.push(...d.push(bytes.subarray(i, i + step)));
    t.same(out, msgs, `chunks of ${step}`);
  }
});

t.test('a length prefix above the frame limit is refused before its body is buffered', async (t) => {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(MAX_FRAME_BYTES + 1);
  t.throws(() => new FrameDecoder().push(head), ProtocolError);
  t.throws(() => new FrameDecoder(10).push(encodeFrame({ long: 'enough to pass ten bytes' })), ProtocolError);
  t.throws(() => new FrameDecoder().push(Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')])), /not JSON/);
});

t.test('the proof input is EKM ‖ side ‖ batch ‖ identity ‖ sorted pairs: changing any of them breaks the signature', async (t) => {
  const { privateKey, publicKey } = generateKeyPair();
  const ekm = Buffer.alloc(32, 7);
  const pairs: WirePair[] = [[101, 202], [101, 201]];
  const mine = pairsOf('client', 101, pairs);
  t.same(mine, [[101, 201], [101, 202]], 'sorted');
  const sig = signProof(privateKey, proofInput(ekm, 'client', 5, 101, mine));
  t.ok(verifyProof(publicKey, proofInput(ekm, 'client', 5, 101, mine), sig));
  t.notOk(verifyProof(publicKey, proofInput(Buffer.alloc(32, 8), 'client', 5, 101, mine), sig), 'other EKM');
  t.notOk(verifyProof(publicKey, proofInput(ekm, 'server', 5, 101, mine), sig), 'other side');
  t.notOk(verifyProof(publicKey, proofInput(ekm, 'client', 6, 101, mine), sig), 'other batch');
  t.notOk(verifyProof(publicKey, proofInput(ekm, 'client', 5, 102, mine), sig), 'other identity');
  t.notOk(verifyProof(publicKey, proofInput(ekm, 'client', 5, 101, [[101, 201]]), sig), 'fewer pairs');
  t.notOk(verifyProof(publicKey, sig, Buffer.from('garbage')), 'a garbage signature is false, not an exception');
  t.same(pairsOf('server', 201, [[101, 201], [102, 201], [101, 202]]), [[101, 201], [102, 201]]);
});

t.test('decoding bounds batches, proofs and certificates and rejects malformed fields', async (t) => {
  const proof = { identity: 1, chain: ['AAAA'], signature: 'AAAA' };
  const ok = { type: 'authenticate', batch: 1, pairs: [[1, 2]], proofs: [proof] };
  t.equal(decodeAuthenticate(ok).pairs.length, 1);
  const bad: [string, unknown][] = [
    ['too many pairs', { ...ok, pairs: Array.from({ length: MAX_BATCH_PAIRS + 1 }, (_, i) => [i, 1]) }],
    ['more proofs than pairs', { ...ok, proofs: [proof, { ...proof, identity: 2 }] }],
    ['duplicate proofs', { ...ok, pairs: [[1, 2], [1, 3]], proofs: [proof, proof] }],
    ['a long chain', { ...ok, proofs: [{ ...proof, chain: Array(MAX_CHAIN_CERTS + 1).fill('AAAA') }] }],
    ['an empty chain', { ...ok, proofs: [{ ...proof, chain: [] }] }],
    ['a huge certificate', { ...ok, proofs: [{ ...proof, chain: ['A'.repeat(20_000)] }] }],
    ['non-base64', { ...ok, proofs: [{ ...proof, signature: '!!' }] }],
    ['a negative identity', { ...ok, pairs: [[-1, 2]] }],
    ['a fractional batch', { ...ok, batch: 1.5 }],
    ['a pair of three', { ...ok, pairs: [[1, 2, 3]] }],
    ['another type', { ...ok, type: 'result' }],
  ];
  for (const [what, m] of bad) t.throws(() => decodeAuthenticate(m), ProtocolError, what);
  t.same(decodeServerMsg({ type: 'refused', reason: 'x'.repeat(500) }), { sessionRefused: 'x'.repeat(200) }, 'reasons are truncated');
  t.throws(() => decodeServerMsg({ type: 'result', batch: 1, verdicts: [0, 1], proofs: [] }), ProtocolError, 'a verdict is 0 or a reason');
  t.throws(() => decodeServerMsg({ type: 'result', batch: 1, verdicts: ['x'], proofs: [{ identity: 1, chain: ['AAAA'], signature: 'AAAA' }] }), ProtocolError, 'no more proofs than accepted pairs');
  t.same(decodeServerMsg({ type: 'result', batch: 1, verdicts: [0, 'no'], proofs: [] }), { batch: 1, verdicts: [0, 'no'], proofs: [] });
});

t.test('batches are square-ish tiles of (local × remote) identities, so each needs about 2·√n proofs', async (t) => {
  const grid = (locals: number, remotes: number) => {
    const items = [];
    for (let l = 0; l < locals; l++) for (let r = 0; r < remotes; r++) items.push({ wire: [1000 + l, 5000 + r] as WirePair });
    return items;
  };
  const identities = (b: { wire: WirePair }[]): number => new Set(b.map((i) => i.wire[0])).size + new Set(b.map((i) => i.wire[1])).size;
  for (const [l, r] of [[100, 100], [200, 200], [500, 3], [3, 500], [1, 1]] as const) {
    const batches = planBatches(grid(l, r), 1024);
    t.equal(batches.reduce((n, b) => n + b.length, 0), l * r, `${l}×${r}: every pair once`);
    t.equal(new Set(batches.flat().map((i) => i.wire.join())).size, l * r);
    t.ok(batches.every((b) => b.length <= 1024));
    const worst = Math.max(...batches.map(identities));
    t.ok(worst <= Math.max(70, Math.min(l, r) + 1024 / Math.min(l, r) + 2), `${l}×${r}: at most ${worst} distinct identities in a batch`);
  }
  // Sparse input: a diagonal still fills batches.
  const diagonal = Array.from({ length: 3000 }, (_, i) => ({ wire: [i, 10_000 + i] as WirePair }));
  t.equal(planBatches(diagonal, 1024).length, 3);
  t.same(planBatches([], 10), []);
});

t.test('the server ends a session that sends an oversized frame or a malformed batch', async (t) => {
  const c = await cluster(t);
  const raw = await rawClient(c.b.auth.port, c.a.agent);
  const reply = await raw.request({ type: 'authenticate', batch: 1, pairs: 'all of them', proofs: [] });
  t.same(reply, { type: 'refused', reason: 'malformed' });
  await raw.session.closed;
  const raw2 = await rawClient(c.b.auth.port, c.a.agent);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(MAX_FRAME_BYTES + 1);
  raw2.session.socket.write(head);
  await raw2.session.closed;
  t.equal(c.b.auth.stats().failures['malformed'], 2);
  t.equal(c.b.auth.stats().sessions.server, 0);
});
