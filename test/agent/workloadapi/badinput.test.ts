import t from 'tap';
import { status } from '@grpc/grpc-js';
import { loadReadinessProto, loadWorkloadProto } from '../../../agent/workloadapi/index.js';
import { grpcFrame } from '../../../agent/workloadapi/transport.js';
import { mutateBytes, prng } from '../../helpers/mutate.js';
import { SpiffeId } from '../../../spiffe/index.js';
import { FakeWorkloadSource } from './fake-source.js';
import { startServer } from './helpers.js';
import { rawCall, rawSession } from './raw.js';

// Seeded mutations of valid request frames (the gRPC length prefix and the message together) for every
// Workload API method, over the real socket: each answer ends with a status the API names, never a broken
// stream, and the agent still serves a good call on the same connection afterwards.
const CASES_PER_METHOD = 300;
const uid = process.getuid!();

t.test(`${CASES_PER_METHOD} mutated request frames per Workload API method: named statuses only, the connection survives`, async (tt) => {
  const source = await FakeWorkloadSource.create();
  await source.setEntry('/ns/default/sa/a', [`unix:uid:${uid}`]);
  const server = await startServer(tt, source, {
    readiness: async () => ({ ready: true, endpoints: ['10.0.0.1'], waiting_for: [] }),
  });
  const session = rawSession(tt, server.socketPath);
  const svc = loadWorkloadProto().service;
  const ready = loadReadinessProto().service;
  const token = source.mintJwt(SpiffeId.parse('spiffe://example.test/ns/default/sa/a'), ['db']);
  const methods: [string, Buffer][] = [
    ['/SpiffeWorkloadAPI/FetchX509SVID', grpcFrame(svc['FetchX509SVID']!.requestSerialize({}))],
    ['/SpiffeWorkloadAPI/FetchX509Bundles', grpcFrame(svc['FetchX509Bundles']!.requestSerialize({}))],
    ['/SpiffeWorkloadAPI/FetchJWTBundles', grpcFrame(svc['FetchJWTBundles']!.requestSerialize({}))],
    ['/SpiffeWorkloadAPI/FetchJWTSVID', grpcFrame(svc['FetchJWTSVID']!.requestSerialize({ audience: ['db', 'cache'], spiffe_id: 'spiffe://example.test/ns/default/sa/a' }))],
    ['/SpiffeWorkloadAPI/ValidateJWTSVID', grpcFrame(svc['ValidateJWTSVID']!.requestSerialize({ audience: 'db', svid: token }))],
    ['/meshid.agent.v1.Readiness/WaitReady', grpcFrame(ready['WaitReady']!.requestSerialize({ timeout_seconds: 0 }))],
  ];
  const known = new Set([status.OK, status.INVALID_ARGUMENT, status.PERMISSION_DENIED, status.INTERNAL, status.UNIMPLEMENTED, status.RESOURCE_EXHAUSTED, status.CANCELLED]);
  const rnd = prng(4250);
  for (const [path, frame] of methods) {
    const seen = new Map<string, number>();
    for (let i = 0; i < CASES_PER_METHOD; i++) {
      const bytes = mutateBytes(frame, rnd);
      const answer = await rawCall(session, path, bytes, {}, path.includes('Fetch') && !path.endsWith('JWTSVID') ? 100 : undefined);
      const code = answer.status['grpc-status'] === undefined ? status.CANCELLED : Number(answer.status['grpc-status']);
      const name = status[code] ?? String(code);
      seen.set(name, (seen.get(name) ?? 0) + 1);
      if (!known.has(code)) tt.fail(`${path}: ${name} for ${bytes.toString('hex').slice(0, 120)}`);
      if (code === status.INTERNAL && !/truncated|exactly one request message|carried no message|not a valid .* request message|flagged compressed/.test(String(answer.status['grpc-message']))) {
        tt.fail(`${path}: INTERNAL that is not about the frame: ${answer.status['grpc-message']}`);
      }
    }
    tt.ok(seen.size > 0, `${path}: ${[...seen].sort().map(([c, n]) => `${n}×${c}`).join(', ')}`);
  }
  const ok = await rawCall(session, '/SpiffeWorkloadAPI/FetchJWTSVID', grpcFrame(svc['FetchJWTSVID']!.requestSerialize({ audience: ['db'], spiffe_id: '' })));
  tt.equal(ok.status['grpc-status'], '0', 'the same connection still gets a JWT-SVID');
  tt.equal(ok.messages.length, 1);
  tt.equal(server.metrics.openStreams, 0, 'no stream was left open');
});
