import t from 'tap';
import { AuthType, SignalReader, type AuthPair } from '../../bpf/index.js';
import { encodeAuthKey } from '../../bpf/layouts.js';
import type { NativeBpf, RingHandle } from '../../bpf/native.js';
import { ringBatch, ringRecords } from '../../bpf/readers.js';

/** The two ring calls of the addon, played by the test: it holds the callback and hands it records, each in a batch of its own (as the addon packs them). */
function fakeRings(): { native: Pick<NativeBpf, 'ringOpen' | 'ringClose'>; push: (b: Buffer) => void; opened: string[]; closed: number } {
  let cb: ((b: Buffer) => void) | undefined;
  const out = {
    opened: [] as string[], closed: 0,
    push: (b: Buffer) => cb?.(ringBatch([b])),
    native: {
      ringOpen: (path: string, onRecord: (b: Buffer) => void) => { out.opened.push(path); cb = onRecord; return {} as RingHandle; },
      ringClose: () => { out.closed++; cb = undefined; },
    },
  };
  return out;
}

t.test('a reader reaches the kernel through the calls it is given: records decoded, a bad one reported, none after stop', async (t) => {
  const rings = fakeRings();
  const got: AuthPair[] = [];
  const errors: Error[] = [];
  const reader = new SignalReader({ pinDir: '/sys/fs/bpf/test-pins', native: rings.native, onError: (e) => errors.push(e) }, (p) => got.push(p));
  reader.start();
  t.same(rings.opened, ['/sys/fs/bpf/test-pins/meshid_signals'], 'the pinned signals ring was opened');
  const pair: AuthPair = { localIdentity: 1001, remoteIdentity: 1002, remoteNodeId: 2, authType: AuthType.mutual };
  rings.push(encodeAuthKey(pair));
  rings.push(Buffer.alloc(3));
  t.same(got, [pair], 'the record decoded');
  t.equal(errors.length, 1, 'the short record went to onError, not up the stack');
  t.match(errors[0]!.message, /signal record of 3 bytes/);
  reader.stop();
  t.equal(rings.closed, 1, 'stop closed the ring');
  t.notOk(reader.running);
  reader.stop();
  t.equal(rings.closed, 1, 'a second stop closes nothing');
});

t.test('a batch holds records of any length, each padded to 4 bytes; a record that runs past its batch is refused', async (t) => {
  const records = [Buffer.from([1]), Buffer.alloc(0), Buffer.from('twelve bytes'), Buffer.alloc(72, 7)];
  const batch = ringBatch(records);
  t.equal(batch.length, (4 + 4) + 4 + (4 + 12) + (4 + 72));
  t.same([...ringRecords(batch)].map((r) => r.toString('hex')), records.map((r) => r.toString('hex')));
  const cut = batch.subarray(0, batch.length - 1);
  t.throws(() => [...ringRecords(cut)], /runs past the batch/);
});
