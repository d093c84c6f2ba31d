import t from 'tap';
import { fromStruct, loadWorkloadProto, toStruct } from '../../../agent/workloadapi/index.js';

/** Top-level field numbers of an encoded message, in wire order (all fields here are length-delimited). */
function fieldNumbers(buf: Buffer): number[] {
  const out: number[] = [];
  let off = 0;
  const varint = (): number => {
    let v = 0;
    let shift = 0;
    for (;;) {
      const b = buf[off++]!;
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
      shift += 7;
    }
  };
  while (off < buf.length) {
    const tag = varint();
    if ((tag & 7) !== 2) throw new Error(`field ${tag >> 3} has wire type ${tag & 7}`);
    out.push(tag >> 3);
    const length = varint();
    off += length;
  }
  return out;
}

const proto = loadWorkloadProto();
const method = (name: string) => proto.service[name]!;
const b = Buffer.from([1]);

t.test('the service is SpiffeWorkloadAPI without a package, with the standard five RPCs and their streaming kinds', async (t) => {
  t.same(Object.keys(proto.service).sort(), ['FetchJWTBundles', 'FetchJWTSVID', 'FetchX509Bundles', 'FetchX509SVID', 'ValidateJWTSVID']);
  t.equal(method('FetchX509SVID').path, '/SpiffeWorkloadAPI/FetchX509SVID');
  for (const m of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles']) t.ok(method(m).responseStream && !method(m).requestStream, `${m} is a server stream`);
  for (const m of ['FetchJWTSVID', 'ValidateJWTSVID']) t.ok(!method(m).responseStream && !method(m).requestStream, `${m} is unary`);
});

t.test('messages use the field numbers of the SPIFFE Workload API standard', async (t) => {
  const x509 = method('FetchX509SVID').responseSerialize({ svids: [], crl: [b], federated_bundles: { 'spiffe://a': b } });
  t.same(fieldNumbers(x509), [2, 3], 'X509SVIDResponse crl=2 federated_bundles=3');
  const svid = method('FetchX509SVID').responseSerialize({ svids: [{ spiffe_id: 's', x509_svid: b, x509_svid_key: b, bundle: b, hint: 'h' }] });
  t.same(fieldNumbers(svid), [1], 'X509SVIDResponse svids=1');
  t.same(fieldNumbers(svid.subarray(2)), [1, 2, 3, 4, 5], 'X509SVID spiffe_id=1 x509_svid=2 x509_svid_key=3 bundle=4 hint=5');
  t.same(fieldNumbers(method('FetchX509Bundles').responseSerialize({ crl: [b], bundles: { 'spiffe://a': b } })), [1, 2], 'X509BundlesResponse crl=1 bundles=2');
  t.same(fieldNumbers(method('FetchJWTSVID').requestSerialize({ audience: ['a'], spiffe_id: 's' })), [1, 2], 'JWTSVIDRequest audience=1 spiffe_id=2');
  const jwt = method('FetchJWTSVID').responseSerialize({ svids: [{ spiffe_id: 's', svid: 't', hint: 'h' }] });
  t.same(fieldNumbers(jwt.subarray(2)), [1, 2, 3], 'JWTSVID spiffe_id=1 svid=2 hint=3');
  t.same(fieldNumbers(method('FetchJWTBundles').responseSerialize({ bundles: { 'spiffe://a': b } })), [1], 'JWTBundlesResponse bundles=1');
  t.same(fieldNumbers(method('ValidateJWTSVID').requestSerialize({ audience: 'a', svid: 't' })), [1, 2], 'ValidateJWTSVIDRequest audience=1 svid=2');
  t.same(fieldNumbers(method('ValidateJWTSVID').responseSerialize({ spiffe_id: 's', claims: toStruct({ a: 1 }) })), [1, 2], 'ValidateJWTSVIDResponse spiffe_id=1 claims=2');
});

t.test('claims survive the round trip through google.protobuf.Struct', async (t) => {
  const claims = { sub: 'spiffe://example.test/a', aud: ['x', 'y'], exp: 1700000000, nested: { ok: true, none: null }, skipped: undefined };
  const wire = method('ValidateJWTSVID').responseSerialize({ spiffe_id: claims.sub, claims: toStruct(claims) });
  const decoded = method('ValidateJWTSVID').responseDeserialize(wire) as { claims: Parameters<typeof fromStruct>[0] };
  t.same(fromStruct(decoded.claims), { sub: claims.sub, aud: ['x', 'y'], exp: 1700000000, nested: { ok: true, none: null } });
});
