import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import {
  ApiServerPodSource, K8sAttestor, KubeletPodSource, podContainerFromCgroup, type PodSource,
} from '../../../agent/workloadattestor/k8s.js';
import { MeshidError } from '../../../spiffe/index.js';
import { FakeKubeApiServer, podObject } from '../../helpers/fakek8s.js';

const UID = '3f9a1c2e-7b4d-4e8f-9a0b-1c2d3e4f5a6b';
const UID_ = UID.replaceAll('-', '_');
const CID = 'a'.repeat(12) + '0123456789abcdef'.repeat(3) + 'b'.repeat(4);
const CID2 = 'c'.repeat(64);

t.test('cgroup paths of kubelet, containerd, CRI-O and docker (cgroup v1 and v2, cgroupfs and systemd drivers) give the pod UID and container ID', async (t) => {
  const cases: [string, string, { podUid: string; containerId: string | undefined } | undefined][] = [
    ['v2, systemd, containerd, burstable', `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${CID}.scope\n`, { podUid: UID, containerId: CID }],
    ['v2, systemd, CRI-O, besteffort', `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/crio-${CID}.scope\n`, { podUid: UID, containerId: CID }],
    ['v2, systemd, guaranteed QoS', `0::/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${CID}.scope\n`, { podUid: UID, containerId: CID }],
    ['v2, systemd, docker', `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/docker-${CID}.scope\n`, { podUid: UID, containerId: CID }],
    ['v1, cgroupfs, burstable', `12:pids:/kubepods/burstable/pod${UID}/${CID}\n11:memory:/kubepods/burstable/pod${UID}/${CID}\n0::/\n`, { podUid: UID, containerId: CID }],
    ['v1, cgroupfs, guaranteed QoS', `4:cpu,cpuacct:/kubepods/pod${UID}/${CID}\n`, { podUid: UID, containerId: CID }],
    ['v1, systemd, first hierarchy without a pod', `13:rdma:/\n12:cpuset:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${CID2}.scope\n`, { podUid: UID, containerId: CID2 }],
    ['kind / nested kubelet', `0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope\n`, { podUid: UID, containerId: CID }],
    ['cgroup namespace of the agent (relative path)', `0::/../../kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope\n`, { podUid: UID, containerId: CID }],
    ['static pod (config hash as UID)', `0::/kubepods/besteffort/pod${'0123456789abcdef'.repeat(2)}/${CID}\n`, { podUid: '0123456789abcdef'.repeat(2), containerId: CID }],
    ['in the pod but in no container', `0::/kubepods.slice/kubepods-pod${UID_}.slice\n`, { podUid: UID, containerId: undefined }],
    ['CRI-O conmon is no workload', `0::/kubepods.slice/kubepods-pod${UID_}.slice/crio-conmon-${CID}.scope\n`, undefined],
    ['a login session', '0::/user.slice/user-1000.slice/session-3.scope\n', undefined],
    ['a system service', '0::/system.slice/containerd.service\n', undefined],
    ['a docker container outside Kubernetes', `0::/system.slice/docker-${CID}.scope\n`, undefined],
    ['empty', '', undefined],
  ];
  for (const [what, text, want] of cases) t.same(podContainerFromCgroup(text), want, what);
});

async function setup(t: Test, opts: { retryTimeoutMs?: number } = {}) {
  const fake = new FakeKubeApiServer();
  await fake.start();
  t.teardown(() => fake.stop());
  const kc = new KubeConfig();
  kc.loadFromOptions(fake.kubeconfigOptions());
  const proc = mkdtempSync(join(tmpdir(), `meshid-k8s-proc-${process.pid}-`));
  t.teardown(() => rmSync(proc, { recursive: true, force: true }));
  const processIn = (pid: number, cgroup: string) => {
    mkdirSync(join(proc, String(pid)), { recursive: true });
    writeFileSync(join(proc, String(pid), 'cgroup'), cgroup);
  };
  const source = new ApiServerPodSource({ core: kc.makeApiClient(CoreV1Api), nodeName: 'node-a' });
  const attestor = new K8sAttestor({ source, procRoot: proc, retryTimeoutMs: opts.retryTimeoutMs ?? 500, retryIntervalMs: 50 });
  return { fake, attestor, processIn, proc };
}

const cgroupOf = (uid: string, cid: string) => `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replaceAll('-', '_')}.slice/cri-containerd-${cid}.scope\n`;

t.test('k8s workload attestor: a pod\'s process gets its namespace, ServiceAccount, pod and container selectors from this node\'s pods, against the fake Kubernetes API server', async (t) => {
  const { fake, attestor, processIn } = await setup(t);
  fake.put(podObject('shop', 'web-1', {
    uid: UID, node: 'node-a', serviceAccount: 'web', ip: '10.244.1.5', labels: { app: 'web', tier: 'front' },
    containers: [{ name: 'app', image: 'registry.example/web:1.2', id: CID }, { name: 'sidecar', image: 'registry.example/log:3', id: CID2 }],
  }));
  processIn(4242, cgroupOf(UID, CID));
  const selectors = (await attestor.attest(4242)).map(String).sort();
  t.same(selectors, [
    'k8s:container-image:registry.example/web:1.2', 'k8s:container-name:app', 'k8s:node-name:node-a', 'k8s:ns:shop',
    'k8s:pod-label:app:web', 'k8s:pod-label:tier:front', 'k8s:pod-name:web-1', `k8s:pod-uid:${UID}`, 'k8s:sa:web',
  ]);
  processIn(4243, cgroupOf(UID, CID2));
  t.ok((await attestor.attest(4243)).map(String).includes('k8s:container-name:sidecar'), 'the second container is told apart');
  const lists = fake.requestsTo(/^\/api\/v1\/pods$/);
  t.equal(lists.length, 1, 'the pod list is cached');
  t.equal(lists[0]!.query.fieldSelector, 'spec.nodeName=node-a', 'only this node\'s pods are listed');

  processIn(4244, '0::/user.slice/user-0.slice/session-1.scope\n');
  t.same(await attestor.attest(4244), [], 'a process outside any pod gets no k8s selectors');
  await t.rejects(attestor.attest(99999), 'a process that is gone fails the attestation');
});

t.test('k8s workload attestor: a container not yet in the pod status is looked up again briefly, and then refused rather than answered wrongly, against the fake Kubernetes API server', async (t) => {
  const { fake, attestor, processIn } = await setup(t, { retryTimeoutMs: 600 });
  // the pod is scheduled and its container is starting: no containerStatuses yet
  fake.put(podObject('shop', 'web-2', { uid: UID, node: 'node-a', serviceAccount: 'web', containers: [{ name: 'app', image: 'registry.example/web:1.2' }] }));
  processIn(5000, cgroupOf(UID, CID));
  const started = Date.now();
  const pending = attestor.attest(5000);
  setTimeout(() => fake.put(podObject('shop', 'web-2', { uid: UID, node: 'node-a', serviceAccount: 'web', containers: [{ name: 'app', image: 'registry.example/web:1.2', id: CID }] })), 200);
  const selectors = (await pending).map(String);
  t.ok(selectors.includes('k8s:container-name:app') && selectors.includes('k8s:sa:web'), 'answered once the container shows up');
  t.ok(Date.now() - started >= 190, 'after waiting for it');

  // a container that never shows up: refused after the retry window
  processIn(5001, cgroupOf(UID, CID2));
  const t0 = Date.now();
  try {
    await attestor.attest(5001);
    t.fail('attested a container the pod does not have');
  } catch (err) {
    const elapsed = Date.now() - t0;
    t.equal((err as MeshidError).code, 'unavailable');
    t.match((err as Error).message, /container c+ of pod shop\/web-2 is not in the apiserver pod list yet/);
    t.ok(elapsed >= 550 && elapsed < 2000, `bounded wait (${elapsed} ms)`);
  }
  // a pod on another node (or unknown) is never matched
  fake.put(podObject('shop', 'elsewhere', { uid: '11111111-2222-4333-8444-555555555555', node: 'node-b', containers: [{ name: 'app', image: 'x', id: 'd'.repeat(64) }] }));
  processIn(5002, cgroupOf('11111111-2222-4333-8444-555555555555', 'd'.repeat(64)));
  await t.rejects(attestor.attest(5002), /pod 11111111-2222-4333-8444-555555555555 is not in the apiserver pod list yet/);
});

t.test('k8s workload attestor: a static pod is found by its mirror pod\'s config hash, against the fake Kubernetes API server', async (t) => {
  const { fake, attestor, processIn } = await setup(t);
  const hash = '0123456789abcdef'.repeat(2);
  const mirror = podObject('kube-system', 'etcd-node-a', { node: 'node-a', serviceAccount: 'default', containers: [{ name: 'etcd', image: 'registry.k8s.io/etcd:3.5', id: CID }] });
  mirror.metadata.annotations = { 'kubernetes.io/config.mirror': hash, 'kubernetes.io/config.hash': hash };
  fake.put(mirror);
  processIn(6000, `0::/kubepods/besteffort/pod${hash}/${CID}\n`);
  t.ok((await attestor.attest(6000)).map(String).includes('k8s:pod-name:etcd-node-a'));
});

t.test('k8s workload attestor reads the kubelet\'s /pods endpoint when configured so, against the fake Kubernetes API server', async (t) => {
  const { fake, proc, processIn } = await setup(t);
  fake.put(podObject('shop', 'web-1', { uid: UID, node: 'node-a', serviceAccount: 'web', containers: [{ name: 'app', image: 'img:1', id: CID }] }));
  const tokenFile = join(proc, 'token');
  writeFileSync(tokenFile, 'kubelet-reader-token\n');
  const source: PodSource = new KubeletPodSource({ url: `${fake.url}/kubelet/node-a`, tokenPath: tokenFile });
  const attestor = new K8sAttestor({ source, procRoot: proc, retryTimeoutMs: 100, retryIntervalMs: 20 });
  processIn(7000, cgroupOf(UID, CID));
  t.ok((await attestor.attest(7000)).map(String).includes('k8s:sa:web'));
  const req = fake.requestsTo(/^\/kubelet\/node-a\/pods$/)[0]!;
  t.equal(req.bearer, 'kubelet-reader-token', 'the bearer token from the file is sent');
  const broken = new K8sAttestor({ source: new KubeletPodSource({ url: `${fake.url}/nothing-here` }), procRoot: proc, retryTimeoutMs: 50, retryIntervalMs: 20 });
  await t.rejects(broken.attest(7000), /listing this node's pods from the kubelet failed/);
});
