import t from 'tap';
import { status } from '@grpc/grpc-js';
import { connect, constants, type ClientHttp2Stream } from 'node:http2';
import { createConnection } from 'node:net';
import { loadWorkloadProto, type WorkloadApiServer, type X509SVIDResponseMessage } from '../../../agent/workloadapi/index.js';
import { waitFor } from './client.js';
import { FakeWorkloadSource } from './fake-source.js';
import { newClient, startServer } from './helpers.js';

const uid = process.getuid!();
const decode = loadWorkloadProto().service['FetchX509SVID']!.responseDeserialize as (b: Buffer) => X509SVIDResponseMessage;

/** A FetchX509SVID stream over raw HTTP/2 whose reading the test controls: the client that stops reading. */
function rawStream(server: WorkloadApiServer) {
  const session = connect('http://localhost', { createConnection: () => createConnection(server.socketPath) });
  session.on('error', () => {});
  const req: ClientHttp2Stream = session.request({
    ':method': 'POST', ':path': '/SpiffeWorkloadAPI/FetchX509SVID', 'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true',
  });
  req.on('error', () => {});
  req.end(Buffer.from([0, 0, 0, 0, 0])); // one empty request message
  req.pause();
  const messages: X509SVIDResponseMessage[] = [];
  let buf = Buffer.alloc(0);
  req.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
      const n = buf.readUInt32BE(1);
      messages.push(decode(buf.subarray(5, 5 + n)));
      buf = buf.subarray(5 + n);
    }
  });
  req.pause();
  return { req, session, messages, close: () => { req.close(); session.destroy(); } };
}

async function bigSource(entries: number): Promise<FakeWorkloadSource> {
  const source = await FakeWorkloadSource.create();
  for (let i = 0; i < entries; i++) await source.setEntry(`/ns/default/sa/w${i}`, [`unix:uid:${uid}`]);
  return source;
}

t.test('streams whose clients stop reading hold at most two answers each however many changes come; a resumed reader ends on the current one', async (tt) => {
  const source = await bigSource(150);
  const server = await startServer(tt, source, { slowReaderDeadlineMs: 120_000 });
  const readers = Array.from({ length: 20 }, () => rawStream(server));
  tt.teardown(() => { for (const r of readers) r.close(); });
  await waitFor(() => server.metrics.openStreams === 20, 10_000, 'the 20 streams to open');
  let last = '';
  for (let i = 0; i < 30; i++) {
    const svid = await source.rotate('/ns/default/sa/w0'); // each rotation is a new ~200 KB answer for every stream
    last = svid.certChainDer[0]!.toString('hex');
    await new Promise((r) => setTimeout(r, 20));
  }
  const answerBytes = 150 * 1000; // an answer is well over 1 KB per SVID
  const held = server.bufferedBytes();
  tt.ok(held > 0, `the server does hold unread answers (${held} bytes)`);
  tt.ok(held <= 20 * 2 * 3 * answerBytes, `${held} bytes held for 20 streams after 30 changes: at most two answers a stream`);
  tt.ok(held < 20 * 10 * answerBytes, 'far below what 30 queued answers a stream would be');

  const r = readers[0]!;
  const before = r.messages.length;
  r.req.resume();
  await waitFor(() => r.messages.some((m) => m.svids[0]!.x509_svid.subarray(0, last.length / 2).toString('hex') === last), 20_000, 'the current answer to arrive');
  const after = r.messages.slice(before);
  tt.ok(after.length <= 2, `the resumed reader got ${after.length} message(s): the one being written and the newest, not 30`);
  tt.equal(after[after.length - 1]!.svids[0]!.x509_svid.subarray(0, last.length / 2).toString('hex'), last, 'its last message is the current answer');
});

t.test('a stream whose client reads nothing past the deadline is reset, and a gRPC client sees RESOURCE_EXHAUSTED', async (tt) => {
  const source = await bigSource(150);
  const server = await startServer(tt, source, { slowReaderDeadlineMs: 400 });
  const raw = rawStream(server);
  tt.teardown(() => raw.close());
  const rst = new Promise<number>((resolve) => raw.req.once('close', () => resolve(raw.req.rstCode ?? -1)));
  await waitFor(() => server.metrics.openStreams === 1, 10_000, 'the stream to open');
  await source.rotate('/ns/default/sa/w0');
  tt.equal(await rst, constants.NGHTTP2_ENHANCE_YOUR_CALM, 'reset with ENHANCE_YOUR_CALM');
  tt.equal(server.metrics.slowReadersClosed, 1);
  tt.equal(server.metrics.count('FetchX509SVID', 'RESOURCE_EXHAUSTED'), 1);
  await waitFor(() => server.metrics.openStreams === 0, 5000, 'the stream to be forgotten');

  // the same through grpc-js, which maps the reset to a status
  const client = newClient(tt, server, true);
  const s = client.stream<X509SVIDResponseMessage>('FetchX509SVID');
  s.call.pause();
  // grpc-js buffers up to 16 messages before it stops reading the HTTP/2 stream
  for (let i = 0; i < 40 && server.metrics.slowReadersClosed < 2; i++) { await source.rotate('/ns/default/sa/w0'); await new Promise((r) => setTimeout(r, 30)); }
  const st = await Promise.race([s.status, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the paused grpc-js stream was not reset')), 20_000))]);
  tt.equal(st.code, status.RESOURCE_EXHAUSTED, `grpc-js reports ${status[st.code]}: ${st.details}`);

  // a reader that keeps up is never reset
  const good = client.stream<X509SVIDResponseMessage>('FetchX509SVID');
  await good.message(0, 10_000);
  for (let i = 0; i < 5; i++) { await source.rotate('/ns/default/sa/w0'); await new Promise((r) => setTimeout(r, 200)); }
  await good.message(5, 10_000);
  tt.equal(server.metrics.openStreams, 1, 'the reading stream is still open');
  good.cancel();
});

t.test('one process holds at most 64 connections on the socket; the rest are closed at accept and counted', async (tt) => {
  const source = await bigSource(1);
  const server = await startServer(tt, source);
  const socks = Array.from({ length: 80 }, () => { const s = createConnection(server.socketPath); s.on('error', () => {}); return s; });
  tt.teardown(() => { for (const s of socks) s.destroy(); });
  await waitFor(() => server.metrics.openConnections + server.metrics.connectionsRefused === 80, 10_000, 'every connection accepted or refused');
  tt.equal(server.metrics.openConnections, 64);
  tt.equal(server.metrics.connectionsRefused, 16);
  for (const s of socks) s.destroy();
  await waitFor(() => server.metrics.openConnections === 0, 5000, 'the connections to close');
  const client = newClient(tt, server, true);
  const st = client.stream<X509SVIDResponseMessage>('FetchX509SVID');
  tt.equal((await st.message(0, 10_000)).svids.length, 1, 'and once they are closed the process is served again');
  st.cancel();
});

t.test('`meshid-agent api watch --write` stalled (a disk that blocks it) catches up on the current SVID, not on every one it missed', async (tt) => {
  const { spawn } = await import('node:child_process');
  const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { bin } = await import('../../helpers/process.js');
  const { pemFromDer } = await import('../../../spiffe/index.js');
  const source = await bigSource(150);
  const server = await startServer(tt, source, { slowReaderDeadlineMs: 120_000 });
  const dir = mkdtempSync(join(tmpdir(), 'meshid-watch-'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const watcher = spawn(process.execPath, [bin('meshid-agent'), 'api', 'watch', '--socket', server.socketPath, '--write', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  tt.teardown(() => { watcher.kill('SIGCONT'); watcher.kill('SIGKILL'); });
  let out = '';
  watcher.stdout.on('data', (d: Buffer) => { out += d; });
  watcher.stderr.on('data', (d: Buffer) => { out += `[stderr] ${d}`; });
  const received = () => (out.match(/^Received /gm) ?? []).length;
  await waitFor(() => received() >= 1, 20_000, 'the first answer to be written');
  watcher.kill('SIGSTOP'); // as if its write to a slow disk blocked it
  let latest = '';
  for (let i = 0; i < 20; i++) {
    latest = pemFromDer((await source.rotate('/ns/default/sa/w0')).certChainDer[0]!);
    await new Promise((r) => setTimeout(r, 50));
  }
  await waitFor(() => server.bufferedBytes() > 0, 10_000, 'the agent to hold what the stalled watcher does not read');
  const before = received();
  watcher.kill('SIGCONT');
  await waitFor(() => { try { return readFileSync(join(dir, 'svid.pem'), 'utf8').startsWith(latest); } catch { return false; } }, 20_000, 'svid.pem to hold the current SVID')
    .catch((err: Error) => { throw new Error(`${err.message}; received ${before} then ${received()}, ${server.bufferedBytes()} bytes held, ${server.metrics.openStreams} streams; out: ${out.slice(-300)}`); });
  tt.ok(received() - before <= 3, `after the stall it wrote ${received() - before} update(s), not the 20 it missed`);
  tt.equal(readFileSync(join(dir, 'svid.pem'), 'utf8').split('-----BEGIN CERTIFICATE-----')[1], latest.split('-----BEGIN CERTIFICATE-----')[1], 'svid.pem is the current SVID');
  // the federated bundle is named by trust domain (it crashed the watcher when named by trust domain ID, "spiffe://…")
  tt.match(readFileSync(join(dir, 'federated_bundle.federated.test.pem'), 'utf8'), /BEGIN CERTIFICATE/);
});
