import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { bpfObjectDir } from '../../api/assets.js';
import {
  AUTH_KEY_SIZE, EVENT_SIZE, Reason, decodeAuthKey, decodeEvent, decodePolicyKey, decodePolicyValue,
  decodeSignal, encodeAuthKey, encodeAuthValue, encodeIpcacheValue, encodePolicyKey, encodePolicyValue, reasonName,
} from '../../bpf/layouts.js';

/** Member name -> byte offset of a struct, from the DWARF of the compiled object. */
function structOffsets(name: string): { size: number; members: Map<string, number> } {
  const text = execFileSync('llvm-dwarfdump', ['--name=' + name, '--show-children', join(bpfObjectDir, 'meshid.o')], { encoding: 'utf8' });
  const size = Number(/DW_AT_byte_size\s+\((0x[0-9a-f]+)\)/.exec(text)![1]);
  const members = new Map<string, number>();
  for (const m of text.matchAll(/DW_TAG_member\s+DW_AT_name\s+\("(\w+)"\)[\s\S]*?DW_AT_data_member_location\s+\((0x[0-9a-f]+)\)/g)) {
    members.set(m[1]!, Number(m[2]));
  }
  return { size, members };
}

t.test('event records decode at the offsets the compiled C struct has', async (t) => {
  const { size, members } = structOffsets('meshid_event');
  t.equal(size, EVENT_SIZE);
  const buf = Buffer.alloc(size);
  const at = (m: string): number => members.get(m)!;
  buf.writeBigUInt64LE(123456789012345n, at('timestamp'));
  buf.writeUInt32LE(1001, at('local_identity'));
  buf.writeUInt32LE(1002, at('remote_identity'));
  buf.writeUInt16LE(7, at('remote_node_id'));
  buf.writeUInt8(1, at('direction'));
  buf.writeUInt8(Reason.authRequired, at('reason'));
  buf.writeUInt8(10, at('family'));
  buf.writeUInt8(6, at('proto'));
  buf.writeUInt8(1, at('auth_type'));
  buf.writeUInt16LE(40000, at('sport'));
  buf.writeUInt16LE(443, at('dport'));
  buf.writeUInt32LE(12, at('ifindex'));
  Buffer.from([0xfd, 0, 0, 1, ...Array(11).fill(0), 2]).copy(buf, at('saddr'));
  Buffer.from([0xfd, 0, 0, 2, ...Array(11).fill(0), 2]).copy(buf, at('daddr'));
  buf.writeUInt32LE(1500, at('length'));
  t.same(decodeEvent(buf), {
    timestampBootNs: 123456789012345n, localIdentity: 1001, remoteIdentity: 1002, remoteNodeId: 7,
    direction: 'egress', reasonCode: 2, reason: 'auth required', dropped: true, family: 6, proto: 6, authType: 1,
    srcPort: 40000, dstPort: 443, ifindex: 12, srcIp: 'fd00:1::2', dstIp: 'fd00:2::2', length: 1500,
  });
  t.throws(() => decodeEvent(Buffer.alloc(10)), { code: 'invalid_argument' });
});

t.test('signal records are the auth key of the compiled C struct', async (t) => {
  const { size, members } = structOffsets('auth_key');
  t.equal(size, AUTH_KEY_SIZE);
  const buf = Buffer.alloc(size);
  buf.writeUInt32LE(11, members.get('local_identity')!);
  buf.writeUInt32LE(22, members.get('remote_identity')!);
  buf.writeUInt16LE(3, members.get('remote_node_id')!);
  buf.writeUInt8(1, members.get('auth_type')!);
  t.same(decodeSignal(buf), { localIdentity: 11, remoteIdentity: 22, remoteNodeId: 3, authType: 1 });
  t.same(encodeAuthKey(decodeSignal(buf)), buf);
});

t.test('keys and values round-trip, and out-of-range fields are refused by name', async (t) => {
  const pair = { localIdentity: 0xffffffff, remoteIdentity: 0, remoteNodeId: 0xffff, authType: 255 };
  t.same(decodeAuthKey(encodeAuthKey(pair)), pair);
  const key = { localIdentity: 1, remoteIdentity: 2, port: 65535, proto: 17, direction: 'ingress' as const };
  t.same(decodePolicyKey(encodePolicyKey(key)), key);
  t.same(decodePolicyValue(encodePolicyValue({ verdict: 'deny', authType: 1 })), { verdict: 'deny', authType: 1 });
  t.same(decodePolicyValue(Buffer.from([0, 0, 0, 0])), { verdict: 'deny', authType: 0 }, 'anything but allow is a deny');
  t.throws(() => encodeAuthKey({ ...pair, remoteNodeId: 65536 }), { code: 'invalid_argument', field: 'remoteNodeId' });
  t.throws(() => encodeAuthKey({ ...pair, localIdentity: -1 }), { code: 'invalid_argument', field: 'localIdentity' });
  t.throws(() => encodeAuthValue(-1n), { code: 'invalid_argument', field: 'expiresAtBootNs' });
  t.throws(() => encodeAuthValue(2n ** 64n), { code: 'invalid_argument', field: 'expiresAtBootNs' });
  t.throws(() => encodeIpcacheValue({ identity: 1.5, nodeId: 0 }), { code: 'invalid_argument', field: 'identity' });
  t.throws(() => encodePolicyKey({ ...key, direction: 'sideways' as 'ingress' }), { code: 'invalid_argument', field: 'direction' });
  t.throws(() => encodePolicyValue({ verdict: 'maybe' as 'allow', authType: 0 }), { code: 'invalid_argument', field: 'verdict' });
});

t.test('every reason code has a name', async (t) => {
  t.same(Object.values(Reason).map(reasonName),
    ['forwarded', 'policy denied', 'auth required', 'wireguard required', 'invalid packet']);
  t.equal(reasonName(200), 'reason 200');
});
