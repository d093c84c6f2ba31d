// Independent gRPC implementations against the Workload API socket, each from
// Debian, each with messages from api/proto/workload.proto through protoc:
// grpcio (gRPC C-core, the stack py-spiffe uses) and grpc-go (the stack of
// go-spiffe and spire-agent), the latter reading SVIDs as go-spiffe does with
// crypto/x509. They must get the same answers as the grpc-js client.
import { createHash } from 'node:crypto';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { packageRoot, protoDir } from '../../../api/assets.js';
import type { JWTBundlesResponseMessage, X509BundlesResponseMessage, X509SVIDResponseMessage } from '../../../agent/workloadapi/index.js';
import { FakeWorkloadSource } from './fake-source.js';
import { newClient, startServer, tempDir } from './helpers.js';

const uid = process.getuid!();
const PYTHON = '/usr/bin/python3';
const fixture = join(packageRoot, 'test', 'agent', 'workloadapi', 'fixtures', 'workload_client.py');
const AUDIENCE = 'spiffe://example.test/db';

interface Line { step: string; [field: string]: unknown }
interface X509Json { svids: { spiffe_id: string; x509_svid: string; x509_svid_key: string; bundle: string; hint: string }[]; federated_bundles: Record<string, string> }

const b64 = (b: Buffer): string => b.toString('base64');
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A client process that prints one JSON line per step and moves past "ready" on a line from stdin. */
function stepClient(t: { teardown(fn: () => unknown): void }, command: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const child: ChildProcessWithoutNullStreams = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
  t.teardown(() => { child.kill('SIGKILL'); });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  return {
    stderr: () => stderr,
    exited,
    proceed: () => { child.stdin.write('go\n'); },
    next: async (step: string): Promise<Line> => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const { value, done } = await lines.next();
      clearTimeout(timer);
      if (done) throw new Error(`${command} ended before "${step}": ${stderr}`);
      const line = JSON.parse(value as string) as Line;
      if (line.step !== step) throw new Error(`expected step ${step}, got ${line.step}`);
      return line;
    },
  };
}

/** A server with two identities for this uid, and what a grpc-js client gets from it. */
async function serverWithAnswers(t: { teardown(fn: () => unknown): void }) {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  await source.setEntry('/ns/default/sa/b', [`unix:uid:${uid}`], 'internal');
  const server = await startServer(t, source);
  const client = newClient(t, server);
  const x509 = client.stream<X509SVIDResponseMessage>('FetchX509SVID');
  const expected = await x509.message(0);
  const expectedBundles = await client.stream<X509BundlesResponseMessage>('FetchX509Bundles').message(0);
  const expectedJwtBundles = await client.stream<JWTBundlesResponseMessage>('FetchJWTBundles').message(0);
  return { source, server, x509, expected, expectedBundles, expectedJwtBundles };
}

t.test('a grpcio (gRPC C-core) client gets the same answers as grpc-js on every RPC, the same refusals, and the rotation push', async (t) => {
  // scripts/setup.sh installs these; their absence is a failure, not a skip
  const probe = spawnSync(PYTHON, ['-c', 'import grpc, google.protobuf; print(grpc.__version__)'], { encoding: 'utf8' });
  t.equal(probe.status, 0, `python3-grpcio and python3-protobuf are installed (run scripts/setup.sh): ${probe.stderr}`);
  const pb2Dir = tempDir(t, 'pb2');
  const protoc = spawnSync('protoc', [`-I${protoDir}`, '-I/usr/include', `--python_out=${pb2Dir}`, 'workload.proto'], { encoding: 'utf8' });
  t.equal(protoc.status, 0, `protoc generated workload_pb2.py: ${protoc.stderr ?? protoc.error?.message}`);
  if (probe.status !== 0 || protoc.status !== 0) return;

  const { source, server, x509, expected, expectedBundles, expectedJwtBundles } = await serverWithAnswers(t);
  const py = stepClient(t, PYTHON, [fixture, server.socketPath, pb2Dir, AUDIENCE]);
  const next = py.next;

  const asJson = (m: X509SVIDResponseMessage): X509Json => ({
    svids: m.svids.map((s) => ({ spiffe_id: s.spiffe_id, x509_svid: b64(s.x509_svid), x509_svid_key: b64(s.x509_svid_key), bundle: b64(s.bundle), hint: s.hint })),
    federated_bundles: Object.fromEntries(Object.entries(m.federated_bundles).map(([td, v]) => [td, b64(v)])),
  });
  const gotX509 = await next('x509');
  t.same({ svids: gotX509['svids'], federated_bundles: gotX509['federated_bundles'] }, asJson(expected), 'FetchX509SVID: the same SVIDs, keys, bundles, hints and federated bundles');
  t.equal((gotX509['svids'] as unknown[]).length, 2);

  const gotBundles = await next('x509_bundles');
  t.same(gotBundles['bundles'], Object.fromEntries(Object.entries(expectedBundles.bundles).map(([td, v]) => [td, b64(v)])), 'FetchX509Bundles');
  const gotJwtBundles = await next('jwt_bundles');
  t.same(gotJwtBundles['bundles'], Object.fromEntries(Object.entries(expectedJwtBundles.bundles).map(([td, v]) => [td, v.toString()])), 'FetchJWTBundles');

  const gotJwt = await next('jwt');
  const svids = gotJwt['svids'] as { spiffe_id: string; svid: string; hint: string }[];
  t.same(svids.map((s) => [s.spiffe_id, s.hint]).sort(), [['spiffe://example.test/ns/default/sa/a', ''], ['spiffe://example.test/ns/default/sa/b', 'internal']], 'FetchJWTSVID: one JWT-SVID per identity');
  const verified = source.validateJwtSvid(svids[0]!.svid, AUDIENCE);
  t.equal(verified.spiffeId.toString(), svids[0]!.spiffe_id, 'the token verifies against the JWT bundle for the audience');

  const gotValidate = await next('validate');
  t.equal(gotValidate['spiffe_id'], svids[0]!.spiffe_id, 'ValidateJWTSVID: the subject');
  const claims = gotValidate['claims'] as Record<string, unknown>;
  t.equal(claims['sub'], svids[0]!.spiffe_id);
  t.same(claims['aud'], [AUDIENCE]);

  const refusals = await next('refusals');
  t.same(refusals['no_header'], { code: 'INVALID_ARGUMENT', details: 'security header missing from request' }, 'no security header');
  t.same(refusals['no_audience'], { code: 'INVALID_ARGUMENT', details: 'audience must be specified' }, 'FetchJWTSVID without audience');
  t.match(refusals['wrong_audience'], { code: 'INVALID_ARGUMENT' }, 'ValidateJWTSVID for another audience');

  await next('ready');
  const rotated = await source.rotate('/ns/default/sa/a');
  py.proceed();
  const expectedRotated = await x509.message(1);
  const gotRotated = await next('x509_rotated');
  t.same({ svids: gotRotated['svids'], federated_bundles: gotRotated['federated_bundles'] }, asJson(expectedRotated), 'the open stream pushed the rotated SVID, the same as to grpc-js');
  const leafA = (gotRotated['svids'] as X509Json['svids']).find((s) => s.spiffe_id.endsWith('/a'))!;
  t.ok(Buffer.from(leafA.x509_svid, 'base64').subarray(0, rotated.certChainDer[0]!.length).equals(rotated.certChainDer[0]!), 'the new leaf');
  x509.cancel();
  t.equal(await py.exited, 0, `the grpcio client exited cleanly: ${py.stderr()}`);
});

t.test('a grpc-go client reading SVIDs as go-spiffe does gets the same bytes as grpc-js, a chain crypto/x509 verifies, the same refusals, and the rotation push', async (t) => {
  const work = tempDir(t, 'go');
  const descriptors = join(work, 'workload.pb');
  const protoc = spawnSync('protoc', [`-I${protoDir}`, '-I/usr/include', '--include_imports', `--descriptor_set_out=${descriptors}`, 'workload.proto'], { encoding: 'utf8' });
  t.equal(protoc.status, 0, `protoc wrote the descriptor set: ${protoc.stderr ?? protoc.error?.message}`);
  // Debian's golang-go and golang-google-grpc-dev (scripts/setup.sh), in GOPATH mode: nothing is downloaded
  const binary = join(work, 'wlclient');
  const build = spawnSync('go', ['build', '-o', binary, join(packageRoot, 'test', 'agent', 'workloadapi', 'fixtures', 'goclient', 'main.go')],
    { encoding: 'utf8', env: { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOFLAGS: '', GOPROXY: 'off', GOCACHE: process.env['GOCACHE'] ?? join(tmpdir(), 'meshid-go-build-cache') }, timeout: 300_000 });
  t.equal(build.status, 0, `the grpc-go client builds (run scripts/setup.sh): ${build.stderr ?? build.error?.message}`);
  if (protoc.status !== 0 || build.status !== 0) return;

  const { source, server, x509, expected, expectedBundles } = await serverWithAnswers(t);
  const go = stepClient(t, binary, [server.socketPath, descriptors, AUDIENCE]);

  const facts = (m: X509SVIDResponseMessage) => m.svids.map((s) => ({
    spiffe_id: s.spiffe_id, hint: s.hint, x509_svid: sha256(s.x509_svid), x509_svid_key: sha256(s.x509_svid_key), bundle: sha256(s.bundle),
    chain_length: 2, uri_san: s.spiffe_id, key_matches_leaf: true, chain_verifies: true,
  })).sort((a, b) => a.spiffe_id.localeCompare(b.spiffe_id));
  const digests = (m: Record<string, Buffer>) => Object.fromEntries(Object.entries(m).map(([td, v]) => [td, sha256(v)]));

  const gotX509 = await go.next('x509');
  t.same(gotX509['svids'], facts(expected), 'FetchX509SVID: the same bytes; x509.ParseCertificates reads the chain, the PKCS#8 key is the leaf\'s, and crypto/x509 verifies the chain to the bundle');
  t.same(gotX509['federated_bundles'], digests(expected.federated_bundles), 'federated bundles');
  t.same((await go.next('x509_bundles'))['bundles'], digests(expectedBundles.bundles), 'FetchX509Bundles');

  const svids = (await go.next('jwt'))['svids'] as { spiffe_id: string; svid: string; hint: string }[];
  t.same(svids.map((s) => [s.spiffe_id, s.hint]).sort(), [['spiffe://example.test/ns/default/sa/a', ''], ['spiffe://example.test/ns/default/sa/b', 'internal']], 'FetchJWTSVID');
  t.equal(source.validateJwtSvid(svids[0]!.svid, AUDIENCE).spiffeId.toString(), svids[0]!.spiffe_id, 'the JWT-SVID verifies for the audience');
  const validated = await go.next('validate');
  t.same([validated['spiffe_id'], validated['sub']], [svids[0]!.spiffe_id, svids[0]!.spiffe_id], 'ValidateJWTSVID: the SPIFFE ID and the sub claim through google.protobuf.Struct');

  const refusals = await go.next('refusals');
  t.same(refusals['no_header'], { code: 'InvalidArgument', details: 'security header missing from request' }, 'no security header');
  t.same(refusals['no_audience'], { code: 'InvalidArgument', details: 'audience must be specified' }, 'FetchJWTSVID without audience');

  await go.next('ready');
  await source.rotate('/ns/default/sa/a');
  go.proceed();
  const expectedRotated = await x509.message(1);
  t.same((await go.next('x509_rotated'))['svids'], facts(expectedRotated), 'the open stream pushed the rotated SVID, the same as to grpc-js');
  x509.cancel();
  t.equal(await go.exited, 0, `the grpc-go client exited cleanly: ${go.stderr()}`);
});
