import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import t from 'tap';
import { status, type ServiceError } from '@grpc/grpc-js';
import { SpiffeId } from '../../../spiffe/index.js';
import { MetricsRegistry } from '../../../common/metrics.js';
import {
  fromStruct,
  WorkloadApiServer,
  type JWTBundlesResponseMessage,
  type JWTSVIDResponseMessage,
  type ValidateJWTSVIDResponseMessage,
  type X509BundlesResponseMessage,
  type X509SVIDResponseMessage,
} from '../../../agent/workloadapi/index.js';
import { UnixAttestor } from '../../../agent/workloadattestor/index.js';
import { headerMetadata, sleep, waitFor } from './client.js';
import { FakeWorkloadSource } from './fake-source.js';
import { newClient, startServer, tempDir } from './helpers.js';

const uid = process.getuid!();
const exe = realpathSync(process.execPath);

/** Splits concatenated DER certificates. */
function splitDer(buf: Buffer): X509Certificate[] {
  const out: X509Certificate[] = [];
  let off = 0;
  while (off < buf.length) {
    // SEQUENCE with a long-form length (certificates are > 127 bytes)
    const lenBytes = buf[off + 1]! & 0x7f;
    let len = 0;
    for (let i = 0; i < lenBytes; i++) len = len * 256 + buf[off + 2 + i]!;
    const end = off + 2 + lenBytes + len;
    out.push(new X509Certificate(buf.subarray(off, end)));
    off = end;
  }
  return out;
}

async function expectCode(p: Promise<unknown>, code: status): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    const e = err as ServiceError;
    if (e.code !== code) throw new Error(`expected ${status[code]}, got ${status[e.code]}: ${e.details}`);
    return e;
  }
  throw new Error(`expected ${status[code]}, the call succeeded`);
}

t.test('FetchX509SVID returns every matching SVID with its DER chain, PKCS#8 key, bundle, hint and the federated bundles', async (t) => {
  const source = await FakeWorkloadSource.create();
  const a = await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  await source.setEntry('/ns/default/sa/b', [`unix:uid:${uid}`, `unix:path:${exe}`], 'internal');
  await source.setEntry('/ns/default/sa/other', ['unix:uid:4242']);
  const server = await startServer(t, source);
  const stream = newClient(t, server).stream<X509SVIDResponseMessage>('FetchX509SVID');
  const msg = await stream.message(0);
  t.same(msg.svids.map((s) => s.spiffe_id).sort(), ['spiffe://example.test/ns/default/sa/a', 'spiffe://example.test/ns/default/sa/b']);
  const svidA = msg.svids.find((s) => s.spiffe_id.endsWith('/a'))!;
  const svidB = msg.svids.find((s) => s.spiffe_id.endsWith('/b'))!;
  t.equal(svidA.hint, '');
  t.equal(svidB.hint, 'internal');
  const chain = splitDer(svidA.x509_svid);
  t.equal(chain.length, 2, 'leaf and CA, concatenated DER');
  t.ok(chain[0]!.raw.equals(a.certChainDer[0]!), 'the leaf comes first');
  t.equal(chain[0]!.subjectAltName, 'URI:spiffe://example.test/ns/default/sa/a');
  const key = createPrivateKey({ key: svidA.x509_svid_key, format: 'der', type: 'pkcs8' });
  t.ok(chain[0]!.checkPrivateKey(key), 'the PKCS#8 key belongs to the leaf');
  t.ok(chain[0]!.verify(splitDer(svidA.bundle)[0]!.publicKey), 'the bundle holds the issuing CA');
  t.same(Object.keys(msg.federated_bundles), ['spiffe://federated.test'], 'federated bundles keyed by trust domain ID, own trust domain left out');
  t.ok(splitDer(msg.federated_bundles['spiffe://federated.test']!)[0]!.raw.equals(source.federatedCa.der));
  stream.cancel();
  t.equal((await stream.status).code, status.CANCELLED);
});

t.test('FetchX509Bundles and FetchJWTBundles return the own and federated bundles keyed by trust domain ID', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  const server = await startServer(t, source);
  const client = newClient(t, server);
  const x = await client.stream<X509BundlesResponseMessage>('FetchX509Bundles').message(0);
  t.same(Object.keys(x.bundles).sort(), ['spiffe://example.test', 'spiffe://federated.test']);
  t.ok(splitDer(x.bundles['spiffe://example.test']!)[0]!.raw.equals(source.ca.der));
  const j = await client.stream<JWTBundlesResponseMessage>('FetchJWTBundles').message(0);
  t.same(Object.keys(j.bundles).sort(), ['spiffe://example.test', 'spiffe://federated.test']);
  const jwks = JSON.parse(j.bundles['spiffe://example.test']!.toString()) as { keys: { kid: string; use: string; kty: string }[] };
  t.equal(jwks.keys[0]!.kid, 'example.test-key-1');
  t.equal(jwks.keys[0]!.kty, 'EC');
});

t.test('FetchJWTSVID returns a JWT-SVID per identity for the audience, or only the requested SPIFFE ID', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  await source.setEntry('/ns/default/sa/b', [`unix:uid:${uid}`], 'external');
  const server = await startServer(t, source);
  const client = newClient(t, server);
  const all = await client.unary<JWTSVIDResponseMessage>('FetchJWTSVID', { audience: ['spiffe://example.test/db', 'other'] });
  t.same(all.svids.map((s) => s.spiffe_id).sort(), ['spiffe://example.test/ns/default/sa/a', 'spiffe://example.test/ns/default/sa/b']);
  t.equal(all.svids.find((s) => s.spiffe_id.endsWith('/b'))!.hint, 'external');
  const payload = JSON.parse(Buffer.from(all.svids[0]!.svid.split('.')[1]!, 'base64url').toString()) as { aud: string[]; sub: string };
  t.same(payload.aud, ['spiffe://example.test/db', 'other']);
  t.equal(payload.sub, all.svids[0]!.spiffe_id);

  const one = await client.unary<JWTSVIDResponseMessage>('FetchJWTSVID', { audience: ['x'], spiffe_id: 'spiffe://example.test/ns/default/sa/b' });
  t.same(one.svids.map((s) => s.spiffe_id), ['spiffe://example.test/ns/default/sa/b']);

  await expectCode(client.unary('FetchJWTSVID', { audience: [] }), status.INVALID_ARGUMENT);
  await expectCode(client.unary('FetchJWTSVID', { audience: ['x'], spiffe_id: 'not a spiffe id' }), status.INVALID_ARGUMENT);
  const denied = await expectCode(client.unary('FetchJWTSVID', { audience: ['x'], spiffe_id: 'spiffe://example.test/ns/default/sa/nobody' }), status.PERMISSION_DENIED);
  t.match(denied.details, /no identity issued/);
});

t.test('ValidateJWTSVID returns the SPIFFE ID and claims, and rejects bad signature, wrong audience, expired and malformed tokens with InvalidArgument', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  const server = await startServer(t, source);
  const client = newClient(t, server);
  const id = SpiffeId.parse('spiffe://example.test/ns/default/sa/a');
  const good = source.mintJwt(id, ['db']);
  const res = await client.unary<ValidateJWTSVIDResponseMessage>('ValidateJWTSVID', { audience: 'db', svid: good });
  t.equal(res.spiffe_id, id.toString());
  const claims = fromStruct(res.claims);
  t.equal(claims['sub'], id.toString());
  t.same(claims['aud'], ['db']);
  t.type(claims['exp'], 'number');

  const foreignKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey; // not in any bundle
  for (const [name, token, audience] of [
    ['wrong audience', good, 'web'],
    ['bad signature', source.mintJwt(id, ['db'], { key: foreignKey }), 'db'],
    ['expired', source.mintJwt(id, ['db'], { expSecondsFromNow: -10 }), 'db'],
    ['malformed', 'not.a.jwt', 'db'],
    ['not three parts', 'garbage', 'db'],
  ] as const) {
    const err = await expectCode(client.unary('ValidateJWTSVID', { audience, svid: token }), status.INVALID_ARGUMENT);
    t.ok(err.details.length > 0, `${name}: rejected with a reason (${err.details})`);
  }
  const noAud = await expectCode(client.unary('ValidateJWTSVID', { audience: '', svid: good }), status.INVALID_ARGUMENT);
  t.match(noAud.details, /audience/);
  const noSvid = await expectCode(client.unary('ValidateJWTSVID', { audience: 'db', svid: '' }), status.INVALID_ARGUMENT);
  t.match(noSvid.details, /svid/);
});

t.test('every RPC without the workload.spiffe.io: true header fails with InvalidArgument', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  const server = await startServer(t, source);
  const client = newClient(t, server);
  for (const md of [headerMetadata(null), headerMetadata('false')]) {
    for (const method of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles'] as const) {
      const s = await client.stream(method, md).status;
      t.equal(s.code, status.INVALID_ARGUMENT, method);
      t.equal(s.details, 'security header missing from request');
    }
    const e1 = await expectCode(client.unary('FetchJWTSVID', { audience: ['x'] }, md), status.INVALID_ARGUMENT);
    t.equal(e1.details, 'security header missing from request');
    const token = source.mintJwt(SpiffeId.parse('spiffe://example.test/ns/default/sa/a'), ['db']);
    const e2 = await expectCode(client.unary('ValidateJWTSVID', { audience: 'db', svid: token }, md), status.INVALID_ARGUMENT);
    t.equal(e2.details, 'security header missing from request');
  }
});

t.test('a caller that matches no entry gets PermissionDenied "no identity issued" on every RPC but ValidateJWTSVID, which it may use as with spire-agent', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/other', ['unix:uid:4242']);
  const server = await startServer(t, source);
  const client = newClient(t, server);
  for (const method of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles'] as const) {
    const s = await client.stream(method).status;
    t.equal(s.code, status.PERMISSION_DENIED, method);
    t.equal(s.details, 'no identity issued');
  }
  await expectCode(client.unary('FetchJWTSVID', { audience: ['x'] }), status.PERMISSION_DENIED);
  const token = source.mintJwt(SpiffeId.parse('spiffe://example.test/ns/default/sa/other'), ['db']);
  // spire-agent validates for any attested caller, against its own trust domain's bundle (public keys)
  const v = await client.unary<ValidateJWTSVIDResponseMessage>('ValidateJWTSVID', { audience: 'db', svid: token });
  t.equal(v.spiffe_id, 'spiffe://example.test/ns/default/sa/other');
  t.ok(source.callers.some((c) => c.has(`unix:uid:${uid}`) && c.has(`unix:path:${exe}`)), 'the caller was attested from the connection: its uid and executable');
});

t.test('allowUnauthenticatedVerifiers serves bundles and validation to an unregistered caller but still no SVIDs', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/other', ['unix:uid:4242']);
  const server = await startServer(t, source, { allowUnauthenticatedVerifiers: true });
  const client = newClient(t, server);
  const b = await client.stream<X509BundlesResponseMessage>('FetchX509Bundles').message(0);
  t.same(Object.keys(b.bundles).sort(), ['spiffe://example.test', 'spiffe://federated.test']);
  const token = source.mintJwt(SpiffeId.parse('spiffe://example.test/ns/default/sa/other'), ['db']);
  const v = await client.unary<ValidateJWTSVIDResponseMessage>('ValidateJWTSVID', { audience: 'db', svid: token });
  t.equal(v.spiffe_id, 'spiffe://example.test/ns/default/sa/other');
  t.equal((await client.stream('FetchX509SVID').status).code, status.PERMISSION_DENIED);
});

t.test('FetchX509SVID pushes a new message on rotation and none when a change leaves the answer as it was', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  await source.setEntry('/ns/default/sa/other', ['unix:uid:4242']);
  const server = await startServer(t, source);
  const client = newClient(t, server);
  const x509 = client.stream<X509SVIDResponseMessage>('FetchX509SVID');
  const bundles = client.stream<X509BundlesResponseMessage>('FetchX509Bundles');
  const jwt = client.stream<JWTBundlesResponseMessage>('FetchJWTBundles');
  const first = await x509.message(0);
  await bundles.message(0);
  await jwt.message(0);

  source.touch();
  await source.rotate('/ns/default/sa/other'); // another workload's SVID: not this caller's answer
  await sleep(300);
  t.equal(x509.messages.length, 1, 'no message for changes that leave the answer unchanged');
  t.equal(bundles.messages.length, 1);
  t.equal(jwt.messages.length, 1);

  const rotated = await source.rotate('/ns/default/sa/a');
  const second = await x509.message(1);
  t.ok(second.svids[0]!.x509_svid.subarray(0, rotated.certChainDer[0]!.length).equals(rotated.certChainDer[0]!), 'the new SVID is pushed');
  t.notOk(second.svids[0]!.x509_svid.equals(first.svids[0]!.x509_svid));
  await sleep(200);
  t.equal(x509.messages.length, 2, 'exactly one message per rotation');
  t.equal(bundles.messages.length, 1, 'bundles did not change with the rotation and were not resent');
  t.equal(jwt.messages.length, 1);

  await source.setEntry('/ns/default/sa/c', [`unix:uid:${uid}`]);
  const third = await x509.message(2);
  t.equal(third.svids.length, 2, 'a new entry for the caller is pushed');
});

t.test('streams end with PermissionDenied when the caller loses its last identity', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  await source.setEntry('/ns/default/sa/b', [`unix:uid:${uid}`]);
  const server = await startServer(t, source);
  const client = newClient(t, server);
  const streams = (['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles'] as const).map((m) => client.stream(m));
  for (const s of streams) await s.message(0);
  source.deleteEntry('/ns/default/sa/a');
  const x509 = streams[0]!;
  const afterFirstDelete = (await x509.message(1)) as X509SVIDResponseMessage;
  t.same(afterFirstDelete.svids.map((s) => s.spiffe_id), ['spiffe://example.test/ns/default/sa/b'], 'one identity left: pushed without the deleted one');
  source.deleteEntry('/ns/default/sa/b');
  for (const s of streams) {
    const st = await s.status;
    t.equal(st.code, status.PERMISSION_DENIED);
    t.equal(st.details, 'no identity issued');
  }
  await waitFor(() => server.metrics.openStreams === 0, 2000, 'streams forgotten');
});

t.test('metrics count calls by method and final status, also in the agent Prometheus registry', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  const registry = new MetricsRegistry();
  const server = await startServer(t, source, { metricsRegistry: registry });
  const client = newClient(t, server);
  await client.unary('FetchJWTSVID', { audience: ['x'] });
  await client.unary('FetchJWTSVID', { audience: ['x'] });
  await client.unary('FetchJWTSVID', { audience: [] }).catch(() => undefined);
  await client.stream('FetchX509SVID', headerMetadata(null)).status;
  const s = client.stream('FetchX509SVID');
  await s.message(0);
  t.equal(server.metrics.openStreams, 1);
  s.cancel();
  await waitFor(() => server.metrics.count('FetchX509SVID', 'CANCELLED') === 1, 2000, 'cancel counted');
  t.equal(server.metrics.count('FetchJWTSVID', 'OK'), 2);
  t.equal(server.metrics.count('FetchJWTSVID', 'INVALID_ARGUMENT'), 1);
  t.equal(server.metrics.count('FetchX509SVID', 'INVALID_ARGUMENT'), 1);
  t.equal(server.metrics.openStreams, 0);
  t.ok(server.metrics.callCounts().some((c) => c.method === 'FetchJWTSVID' && c.code === 'OK' && c.count === 2));
  const text = registry.render();
  t.match(text, /^meshid_workload_api_calls_total\{code="OK",method="FetchJWTSVID"\} 2$/m);
  t.match(text, /^meshid_workload_api_calls_total\{code="CANCELLED",method="FetchX509SVID"\} 1$/m);
  t.match(text, /^meshid_workload_api_streams 0$/m);
  t.match(text, /^meshid_workload_api_connections 1$/m);
});

t.test('the socket is mode 0777 in a created folder, and a stale socket file is replaced but a live one is not', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  const dir = tempDir(t, 'stale');
  const socketPath = `${dir}/nested/agent.sock`;
  // a process that dies holding the socket leaves the file behind
  const holder = spawn(process.execPath, ['-e', `require('fs').mkdirSync(${JSON.stringify(dir + '/nested')});require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  await once(holder, 'exit');
  t.ok(existsSync(socketPath), 'a stale socket file exists');
  const server = new WorkloadApiServer({ socketPath, source, attestors: [new UnixAttestor()] });
  t.teardown(() => server.stop());
  await server.start();
  const { statSync } = await import('node:fs');
  t.equal(statSync(socketPath).mode & 0o777, 0o777);
  const client = newClient(t, server);
  t.ok((await client.stream<X509SVIDResponseMessage>('FetchX509SVID').message(0)).svids.length > 0, 'serving on the replaced socket');

  const second = new WorkloadApiServer({ socketPath, source, attestors: [new UnixAttestor()] });
  await t.rejects(second.start(), { code: 'failed_precondition' }, 'a socket something still serves is not taken over');
  await second.stop();
  t.ok(existsSync(socketPath), 'the failed second server did not remove the live socket');
  t.ok((await client.unary<JWTSVIDResponseMessage>('FetchJWTSVID', { audience: ['x'] })).svids.length > 0, 'the first server still serves');
});

t.test('stop() ends open streams with UNAVAILABLE, removes the socket file, unsubscribes and leaves no open handles', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  await sleep(50);
  const before = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout').sort();
  const server = new WorkloadApiServer({ socketPath: `${tempDir(t, 'stop')}/agent.sock`, source, attestors: [new UnixAttestor()] });
  await server.start();
  t.equal(source.listenerCount(), 1);
  const client = newClient(t, server);
  const streams = [client.stream('FetchX509SVID'), client.stream('FetchJWTBundles')];
  for (const s of streams) await s.message(0);
  await server.stop();
  for (const s of streams) t.equal((await s.status).code, status.UNAVAILABLE);
  t.notOk(existsSync(server.socketPath), 'no socket file');
  t.equal(source.listenerCount(), 0, 'unsubscribed from the source');
  t.equal(server.metrics.openConnections, 0);
  client.close();
  await sleep(100);
  const after = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout').sort();
  t.same(after, before, 'the same handles as before start()');
  await server.stop(); // idempotent
});

t.test('closed connections leave no file descriptors behind: neither the socket nor the pidfd that pins the caller', async (t) => {
  const { readdirSync, readlinkSync } = await import('node:fs');
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  const server = await startServer(t, source);
  const pidfds = (): number => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[pidfd]'; } catch { return false; } }).length;
  const before = pidfds();
  const clients = Array.from({ length: 20 }, () => newClient(t, server, true));
  const streams = clients.map((c) => c.stream('FetchX509SVID'));
  for (const s of streams) await s.message(0);
  t.equal(server.metrics.openConnections, 20);
  t.equal(pidfds(), before + 20, 'one pidfd per open connection pins its caller');
  // a grpc-js channel closes its connection once its last call is over
  for (const s of streams) s.cancel();
  for (const c of clients) c.close();
  await waitFor(() => server.metrics.openConnections === 0, 5000, 'connections closed');
  t.equal(pidfds(), before, 'every pidfd closed with its connection');
});
