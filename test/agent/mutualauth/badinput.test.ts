import t from 'tap';
import { encodeFrame } from '../../../agent/mutualauth/protocol.js';
import { mutateBytes, mutateJson, prng } from '../../helpers/mutate.js';
import { clientMessage, cluster, entryKeys, rawClient, saId, type RawClient } from './fixtures.js';

// Mutated and truncated mutual-auth frames, and replays, from a registered peer agent over real TLS:
// the server answers or closes the session, never crashes or hangs, writes no auth entry but the one pair
// this peer can prove (a mutation that leaves the proof intact, an unknown field added, still proves it),
// and still authenticates a good batch afterwards.
const CASES = 900;

t.test(`${CASES} mutated frames and replays: no auth entry but the provable pair, the listener keeps serving`, async (tt) => {
  const c = await cluster(tt);
  const port = c.b.auth.port;
  const web = c.a.workloads.get(saId('a', 'web'))!;
  const rnd = prng(2026);
  let raw: RawClient = await rawClient(port, c.a.agent);
  let batch = 1;
  let closedSessions = 0;
  let answered = 0;
  for (let i = 0; i < CASES; i++) {
    if (!raw.session.isOpen) { closedSessions++; await raw.close(); raw = await rawClient(port, c.a.agent); batch = 1; }
    const good = clientMessage(raw.session.ekm, batch++, [[101, 201]], new Map([[101, web]]));
    let bytes: Buffer;
    switch (i % 3) {
      case 0: bytes = mutateBytes(encodeFrame(good), rnd); break; // the frame, prefix included
      case 1: { const m = mutateJson(good, rnd); bytes = typeof m === 'string' ? Buffer.concat([Buffer.from([0, 0, 0, Buffer.byteLength(m)]), Buffer.from(m)]) : encodeFrame(m ?? null); break; }
      default: bytes = encodeFrame(good).subarray(0, 1 + Math.floor(rnd() * 40)); // truncated, then the next frame runs into it
    }
    raw.session.socket.write(bytes);
    const reply = await Promise.race([
      new Promise((resolve) => { raw.session.socket.once('data', () => resolve('data')); void raw.session.closed.then(() => resolve('closed')); }),
      new Promise((resolve) => setTimeout(() => resolve('quiet'), 15)),
    ]);
    if (reply === 'data') answered++;
  }
  await raw.close();
  const provable = new Set(['201/101/1']);
  tt.same(entryKeys(c.b.map).filter((k) => !provable.has(k)), [], `no auth entry but the provable pair (${entryKeys(c.b.map).join(', ') || 'none'})`);
  tt.ok(closedSessions > 0 && answered > 0, `the server refused ${answered} frames with an answer and closed ${closedSessions} broken sessions`);

  // a replay within one session: the same batch id again is refused
  const peer = await rawClient(port, c.a.agent);
  tt.teardown(() => peer.close());
  const first = await peer.request(clientMessage(peer.session.ekm, 7, [[101, 201]], new Map([[101, web]]))) as { verdicts?: unknown[] };
  tt.same(first.verdicts, [0], 'a good batch is authenticated');
  const again = await peer.request(clientMessage(peer.session.ekm, 7, [[101, 201]], new Map([[101, web]]))) as { type: string; verdicts?: unknown[] };
  tt.not(JSON.stringify(again.verdicts), '[0]', `the same batch id again is not (${JSON.stringify(again)})`);
  tt.ok(entryKeys(c.b.map).includes('201/101/1'), 'the good batch wrote its entry');
});
