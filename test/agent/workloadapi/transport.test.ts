// The gRPC wire protocol of the Workload API socket (grpc/PROTOCOL-HTTP2.md),
// spoken by a raw node:http2 client so that every header, frame and trailer is
// seen as a client would receive it.
import type { IncomingHttpHeaders } from 'node:http2';
import t from 'tap';
import { status } from '@grpc/grpc-js';
import { loadWorkloadProto, type X509SVIDResponseMessage } from '../../../agent/workloadapi/index.js';
import { encodeGrpcMessage, grpcFrame, parseGrpcTimeout } from '../../../agent/workloadapi/transport.js';
import { FakeWorkloadSource } from './fake-source.js';
import { rawCall, rawSession, type Teardown } from './raw.js';
import { startServer } from './helpers.js';

const uid = process.getuid!();
const proto = loadWorkloadProto();
const emptyRequest = grpcFrame(Buffer.alloc(0));

async function started(t: Teardown) {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  const server = await startServer(t, source);
  return { server, session: rawSession(t, server.socketPath) };
}

t.test('a FetchX509SVID answer is HTTP 200 application/grpc with one length-prefixed message, whatever gRPC content-type suffix the client used', async (t) => {
  const { session } = await started(t);
  for (const contentType of ['application/grpc', 'application/grpc+proto']) {
    const answer = await rawCall(session, '/SpiffeWorkloadAPI/FetchX509SVID', emptyRequest, { 'content-type': contentType }, 200);
    t.equal(answer.headers[':status'], 200);
    t.equal(answer.headers['content-type'], 'application/grpc');
    t.equal(answer.messages.length, 1, 'the first answer, then nothing until a change');
    const message = proto.service['FetchX509SVID']!.responseDeserialize(answer.messages[0]!) as X509SVIDResponseMessage;
    t.equal(message.svids[0]!.spiffe_id, 'spiffe://example.test/ns/default/sa/a');
  }
});

t.test('an unknown method is UNIMPLEMENTED as a Trailers-Only response naming the path, counted as method "unknown"', async (t) => {
  const { server, session } = await started(t);
  const answer = await rawCall(session, '/SpiffeWorkloadAPI/FetchEverything', emptyRequest);
  t.equal(answer.headers[':status'], 200);
  t.equal(answer.status['grpc-status'], String(status.UNIMPLEMENTED));
  t.equal(answer.status['grpc-message'], 'unknown method /SpiffeWorkloadAPI/FetchEverything');
  t.equal(answer.messages.length, 0);
  const otherService = await rawCall(session, '/spire.api.agent.delegatedidentity.v1.DelegatedIdentity/SubscribeToX509SVIDs', emptyRequest);
  t.equal(otherService.status['grpc-status'], String(status.UNIMPLEMENTED));
  t.equal(server.metrics.count('unknown', 'UNIMPLEMENTED'), 2);
});

t.test('a request that is not gRPC gets an HTTP error: 415 for another content-type, 405 for another method', async (t) => {
  const { session } = await started(t);
  const json = await rawCall(session, '/SpiffeWorkloadAPI/FetchX509SVID', Buffer.from('{}'), { 'content-type': 'application/json' });
  t.equal(json.headers[':status'], 415);
  const get = await new Promise<IncomingHttpHeaders>((resolve, reject) => {
    const s = session.request({ ':method': 'GET', ':path': '/SpiffeWorkloadAPI/FetchX509SVID' });
    s.on('response', resolve);
    s.on('error', reject);
    s.resume();
  });
  t.equal(get[':status'], 405);
});

t.test('grpc-timeout ends an open stream with DEADLINE_EXCEEDED after its first message; a malformed one is refused naming the header', async (t) => {
  const { server, session } = await started(t);
  const answer = await rawCall(session, '/SpiffeWorkloadAPI/FetchX509SVID', emptyRequest, { 'grpc-timeout': '150m' });
  t.equal(answer.messages.length, 1, 'the first answer came before the deadline');
  t.equal(answer.status['grpc-status'], String(status.DEADLINE_EXCEEDED));
  t.equal(server.metrics.count('FetchX509SVID', 'DEADLINE_EXCEEDED'), 1);
  t.equal(server.metrics.openStreams, 0, 'the stream is no longer pushed to');
  const bad = await rawCall(session, '/SpiffeWorkloadAPI/FetchX509SVID', emptyRequest, { 'grpc-timeout': '1 second' });
  t.equal(bad.status['grpc-status'], String(status.INTERNAL));
  t.match(bad.status['grpc-message'], /grpc-timeout "1 second" is malformed/);
});

t.test('each call takes exactly one well-formed, uncompressed request message', async (t) => {
  const { server, session } = await started(t);
  const cases: [string, Buffer | null, Record<string, string>, status, RegExp][] = [
    ['no message', null, {}, status.INTERNAL, /carried no message/],
    ['a truncated prefix', Buffer.from([0, 0, 0]), {}, status.INTERNAL, /truncated/],
    ['a length beyond the body', Buffer.from([0, 0, 0, 0, 9, 1, 2]), {}, status.INTERNAL, /truncated/],
    ['two messages', Buffer.concat([emptyRequest, emptyRequest]), {}, status.INTERNAL, /exactly one request message/],
    ['bytes that are not the request message', grpcFrame(Buffer.from([0x0f])), {}, status.INTERNAL, /not a valid FetchJWTSVID request message/],
    ['a gzip-compressed message', Buffer.from([1, 0, 0, 0, 0]), { 'grpc-encoding': 'gzip' }, status.UNIMPLEMENTED, /compression "gzip" is not supported/],
    ['the compressed flag without an encoding', Buffer.from([1, 0, 0, 0, 0]), {}, status.INTERNAL, /flagged compressed without a grpc-encoding/],
  ];
  for (const [what, body, headers, code, message] of cases) {
    const answer = await rawCall(session, '/SpiffeWorkloadAPI/FetchJWTSVID', body, headers);
    t.equal(answer.status['grpc-status'], String(code), `${what}: ${status[code]}`);
    t.match(answer.status['grpc-message'], message, `${what}: the message says what was wrong`);
    if (code === status.UNIMPLEMENTED) t.equal(answer.status['grpc-accept-encoding'], 'identity', 'the server names the encoding it accepts');
  }
  t.equal(server.metrics.openStreams, 0);
  // the connection survives all of it
  const ok = await rawCall(session, '/SpiffeWorkloadAPI/FetchJWTSVID', grpcFrame(proto.service['FetchJWTSVID']!.requestSerialize({ audience: ['x'], spiffe_id: '' })));
  t.equal(ok.status['grpc-status'], '0');
  t.equal(ok.messages.length, 1);
});

t.test('what one connection can make the agent hold is bounded: requests over 64 KiB are RESOURCE_EXHAUSTED, and at most 1,000 streams are open at once', async (t) => {
  const { session } = await started(t);
  const huge = Buffer.alloc(5 * 1024 * 1024);
  huge.writeUInt32BE(huge.length - 5, 1);
  const answer = await rawCall(session, '/SpiffeWorkloadAPI/FetchJWTSVID', huge);
  t.equal(answer.status['grpc-status'], String(status.RESOURCE_EXHAUSTED));
  t.match(answer.status['grpc-message'], /larger than the limit of 65536 bytes/);
  const justOver = grpcFrame(proto.service['FetchJWTSVID']!.requestSerialize({ audience: ['a'.repeat(64 * 1024)], spiffe_id: '' }));
  t.equal((await rawCall(session, '/SpiffeWorkloadAPI/FetchJWTSVID', justOver)).status['grpc-status'], String(status.RESOURCE_EXHAUSTED), 'a request message just over the limit');
  const fits = grpcFrame(proto.service['FetchJWTSVID']!.requestSerialize({ audience: ['a'.repeat(60 * 1024)], spiffe_id: '' }));
  // one under it passes the transport and reaches the handler, which refuses an audience that long for itself
  const under = (await rawCall(session, '/SpiffeWorkloadAPI/FetchJWTSVID', fits)).status;
  t.equal(under['grpc-status'], String(status.INVALID_ARGUMENT), 'one under it gets past the size limit');
  t.match(under['grpc-message'], /audience of 61440 characters; at most 256/);
  t.equal(session.remoteSettings.maxConcurrentStreams, 1000, 'the server\'s SETTINGS cap the streams of a connection');
});

t.test('the security header must be sent once with exactly "true"', async (t) => {
  const { session } = await started(t);
  for (const value of [['true', 'true'], 'TRUE', 'true ']) {
    const answer = await rawCall(session, '/SpiffeWorkloadAPI/FetchX509SVID', emptyRequest, { 'workload.spiffe.io': value });
    t.equal(answer.status['grpc-status'], String(status.INVALID_ARGUMENT), `${JSON.stringify(value)} is refused`);
    t.equal(answer.status['grpc-message'], 'security header missing from request');
  }
});

t.test('grpc-message is percent-encoded: non-ASCII, control characters and "%"', async (t) => {
  t.equal(encodeGrpcMessage('plain text: ok'), 'plain text: ok');
  t.equal(encodeGrpcMessage('100% é\n'), '100%25 %C3%A9%0A');
  t.equal(decodeURIComponent(encodeGrpcMessage('naïve 50% ✓')), 'naïve 50% ✓', 'a client decoding percent-escapes gets the text back');
});

t.test('grpc-timeout units H M S m u n convert to milliseconds; more than 8 digits or no unit is malformed', async (t) => {
  t.equal(parseGrpcTimeout(undefined), undefined);
  t.equal(parseGrpcTimeout('2H'), 7_200_000);
  t.equal(parseGrpcTimeout('3M'), 180_000);
  t.equal(parseGrpcTimeout('5S'), 5000);
  t.equal(parseGrpcTimeout('250m'), 250);
  t.equal(parseGrpcTimeout('1500u'), 1.5);
  t.equal(parseGrpcTimeout('99999999n'), 99.999999);
  t.throws(() => parseGrpcTimeout('123456789S'), /malformed/);
  t.throws(() => parseGrpcTimeout('10'), /malformed/);
  t.throws(() => parseGrpcTimeout('-1S'), /malformed/);
});
