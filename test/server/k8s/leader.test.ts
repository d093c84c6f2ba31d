import t, { type Test } from 'tap';
import { CoordinationV1Api } from '@kubernetes/client-node';
import { systemClock } from '../../../common/clock.js';
import { silentLogger } from '../../../common/log.js';
import { LeaderElector } from '../../../server/k8s/leader.js';
import { BUILTIN_RESOURCES, type FakeKubeApiServer } from '../../helpers/fakek8s.js';
import { kubeConfigFor, sleep, startFake, until } from './helpers.js';

const LEASE = BUILTIN_RESOURCES.find((r) => r.kind === 'Lease')!;

interface Candidate { elector: LeaderElector; history: { leading: boolean; at: number }[] }

function candidate(t: Test, fake: FakeKubeApiServer, identity: string, timing = { lease: 1000, renew: 600, retry: 100 }): Candidate {
  const history: Candidate['history'] = [];
  const elector = new LeaderElector({
    coordination: kubeConfigFor(fake, `token-${identity}`).makeApiClient(CoordinationV1Api),
    namespace: 'meshid', name: 'meshid-server-controller', identity,
    leaseDurationMs: timing.lease, renewDeadlineMs: timing.renew, retryPeriodMs: timing.retry,
    clock: systemClock, logger: silentLogger,
    onStartedLeading: () => history.push({ leading: true, at: Date.now() }),
    onStoppedLeading: () => history.push({ leading: false, at: Date.now() }),
  });
  t.teardown(() => elector.stop());
  return { elector, history };
}

const lease = (fake: FakeKubeApiServer) => fake.get(LEASE, 'meshid', 'meshid-server-controller') as { spec: Record<string, unknown>; metadata: { resourceVersion: string } } | undefined;

t.test('leader election: one of two servers leads, renewals keep the Lease, and stop() hands it over at once, against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  const slow = { lease: 2000, renew: 1000, retry: 100 };
  const a = candidate(t, fake, 'server-a', slow);
  const b = candidate(t, fake, 'server-b', slow);
  a.elector.start();
  await until(() => a.elector.isLeader, 'server-a to lead');
  b.elector.start();
  const rvBefore = Number(lease(fake)!.metadata.resourceVersion);
  await sleep(2500); // longer than the lease duration: only renewals keep server-b out
  t.ok(a.elector.isLeader, 'server-a still leads');
  t.notOk(b.elector.isLeader, 'server-b waits');
  const l = lease(fake)!;
  t.equal(l.spec.holderIdentity, 'server-a');
  t.equal(l.spec.leaseDurationSeconds, 2);
  t.equal(l.spec.leaseTransitions, 0);
  t.ok(Number(l.metadata.resourceVersion) > rvBefore + 5, 'server-a renewed the Lease repeatedly');
  t.match(String(l.spec.renewTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'renewTime is a MicroTime');

  const stoppedAt = Date.now();
  await a.elector.stop();
  t.notOk(a.elector.isLeader);
  t.same(a.history.map((h) => h.leading), [true, false], 'server-a was told it stopped leading');
  await until(() => b.elector.isLeader, 'server-b to take over');
  t.ok(Date.now() - stoppedAt < 1500, 'the released Lease is taken without waiting for it to expire (2 s)');
  const after = lease(fake)!;
  t.equal(after.spec.holderIdentity, 'server-b');
  t.equal(after.spec.leaseTransitions, 1);
});

t.test('leader election: a leader that cannot renew stops leading within the renew deadline, and the other takes over only after the lease duration, against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  const a = candidate(t, fake, 'server-a');
  const b = candidate(t, fake, 'server-b');
  a.elector.start();
  await until(() => a.elector.isLeader, 'server-a to lead');
  b.elector.start();
  await sleep(300);
  // server-a loses the API server
  let cutAt = 0;
  fake.fault = (req) => (req.bearer === 'token-server-a' ? 503 : undefined);
  cutAt = Date.now();
  await until(() => b.elector.isLeader, 'server-b to take over', 5000);
  const aStopped = a.history.find((h) => !h.leading)!;
  const bStarted = b.history.find((h) => h.leading)!;
  t.ok(aStopped, 'server-a stepped down');
  t.ok(aStopped.at - cutAt <= 600 + 400, `server-a stepped down near its renew deadline (${aStopped.at - cutAt} ms)`);
  t.ok(aStopped.at < bStarted.at, 'never two leaders: server-a stopped before server-b started');
  t.ok(bStarted.at - cutAt >= 1000 - 150, `server-b waited for the lease to expire (${bStarted.at - cutAt} ms)`);

  // server-a is back: it does not take the lease from a live leader
  fake.fault = undefined;
  await sleep(1500);
  t.notOk(a.elector.isLeader, 'server-a stays a follower');
  t.ok(b.elector.isLeader);
  t.equal(lease(fake)!.spec.holderIdentity, 'server-b');
});

t.test('leader election: candidates racing for a missing Lease get one leader (the other gets 409), against the fake Kubernetes API server', async (t) => {
  const { fake } = await startFake(t);
  const cs = ['s1', 's2', 's3'].map((id) => candidate(t, fake, id));
  for (const c of cs) c.elector.start();
  await until(() => cs.some((c) => c.elector.isLeader), 'a leader');
  for (let i = 0; i < 10; i++) {
    t.equal(cs.filter((c) => c.elector.isLeader).length, 1, 'exactly one leader');
    await sleep(100);
  }
  const creates = fake.requestsTo(/\/leases$/, (r) => r.method === 'POST');
  t.equal(creates.filter((r) => r.status === 201).length, 1, 'one create succeeded');
  t.ok(creates.filter((r) => r.status === 409).length >= 1, 'the other racing creates got 409 Conflict');
  const holder = lease(fake)!.spec.holderIdentity;
  t.equal(cs.find((c) => c.elector.isLeader)!.elector.identity, holder);
});
