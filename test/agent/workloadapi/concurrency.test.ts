import t from 'tap';
import { status } from '@grpc/grpc-js';
import type { X509SVIDResponseMessage } from '../../../agent/workloadapi/index.js';
import { waitFor, type StreamRecorder } from './client.js';
import { FakeWorkloadSource } from './fake-source.js';
import { newClient, startServer } from './helpers.js';

const uid = process.getuid!();

t.test('1,000 concurrent FetchX509SVID streams on 10 connections are all served, all get the rotation, and all close cleanly', async (t) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  const server = await startServer(t, source);
  const clients = Array.from({ length: 10 }, () => newClient(t, server, true));
  const streams: StreamRecorder<X509SVIDResponseMessage>[] = [];
  for (const client of clients) for (let i = 0; i < 100; i++) streams.push(client.stream('FetchX509SVID'));
  const firsts = await Promise.all(streams.map((s) => s.message(0, 30_000)));
  t.equal(firsts.length, 1000);
  t.ok(firsts.every((m) => m.svids[0]?.spiffe_id === 'spiffe://example.test/ns/default/sa/a'), 'every stream got the SVID');
  t.equal(server.metrics.openStreams, 1000);
  t.equal(server.metrics.openConnections, 10);

  const rotated = await source.rotate('/ns/default/sa/a');
  const seconds = await Promise.all(streams.map((s) => s.message(1, 30_000)));
  t.ok(seconds.every((m) => m.svids[0]!.x509_svid.subarray(0, rotated.certChainDer[0]!.length).equals(rotated.certChainDer[0]!)), 'every stream got the rotated SVID');
  t.ok(streams.every((s) => s.messages.length === 2), 'and exactly one push each');

  for (const s of streams) s.cancel();
  const statuses = await Promise.all(streams.map((s) => s.status));
  t.ok(statuses.every((s) => s.code === status.CANCELLED), 'no stream ended with an error');
  await waitFor(() => server.metrics.openStreams === 0, 10_000, 'server forgot the streams');
  t.equal(server.metrics.count('FetchX509SVID', 'CANCELLED'), 1000);
  t.equal(server.metrics.count('FetchX509SVID', 'OK'), 0);
});
