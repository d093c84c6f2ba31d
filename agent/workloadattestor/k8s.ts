/**
 * The `k8s` workload attestor (spire-agent's k8s WorkloadAttestor): reads the
 * caller's /proc/<pid>/cgroup, finds the pod UID and container ID that
 * kubelet and the container runtime put into the cgroup path, looks the pod
 * up among this node's pods, and answers with k8s:ns, k8s:sa, k8s:pod-name,
 * k8s:pod-uid, k8s:pod-label, k8s:node-name, k8s:container-name and
 * k8s:container-image selectors.
 *
 * A process outside any pod gets no k8s selectors. A pod or container the pod
 * list does not show yet (just started) is looked up again for a bounded
 * time, then the attestation fails: never an answer from a stale or wrong pod.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CoreV1Api, V1ContainerStatus, V1Pod } from '@kubernetes/client-node';
import { z } from 'zod';
import { durationField } from '../../common/config.js';
import { isDnsLabel, Selector, Unavailable } from '../../spiffe/index.js';
import { DEFAULT_PSAT_TOKEN_PATH, K8sPsatPlugin } from '../attestation/index.js';
import type { WorkloadAttestor } from './attestor.js';

/** The pods on this node, as fresh as the source can tell. */
export interface PodSource {
  readonly name: string;
  listPods(): Promise<V1Pod[]>;
}

/** The API server, asked for this node's pods (`spec.nodeName=<node>`); needs pods list RBAC. */
export class ApiServerPodSource implements PodSource {
  readonly name = 'apiserver';
  constructor(private readonly opts: { core: Pick<CoreV1Api, 'listPodForAllNamespaces'>; nodeName: string }) {}

  async listPods(): Promise<V1Pod[]> {
    const list = await this.opts.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${this.opts.nodeName}` });
    return list.items ?? [];
  }
}

export interface KubeletPodSourceOptions {
  /** e.g. https://127.0.0.1:10250 (or the read-only http://127.0.0.1:10255); GET <url>/pods. */
  url: string;
  /** A bearer token file (the agent's ServiceAccount token), read on each request. */
  tokenPath?: string;
  /** CA bundle that signed the kubelet's serving certificate. */
  caPath?: string;
  /** Kubelet serving certificates are often self-signed; SPIRE's skip_kubelet_verification. */
  insecureSkipVerify?: boolean;
  timeoutMs?: number;
}

/** The kubelet's /pods endpoint: this node's pods, without the API server. */
export class KubeletPodSource implements PodSource {
  readonly name = 'kubelet';
  constructor(private readonly opts: KubeletPodSourceOptions) {}

  listPods(): Promise<V1Pod[]> {
    const url = new URL('pods', this.opts.url.endsWith('/') ? this.opts.url : `${this.opts.url}/`);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.tokenPath) headers.authorization = `Bearer ${readFileSync(this.opts.tokenPath, 'utf8').trim()}`;
    const https = url.protocol === 'https:';
    const send = https ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(url, {
        method: 'GET', headers, timeout: this.opts.timeoutMs ?? 5000,
        ...(https ? { rejectUnauthorized: !this.opts.insecureSkipVerify, ...(this.opts.caPath ? { ca: readFileSync(this.opts.caPath) } : {}) } : {}),
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`kubelet ${url.href} answered ${res.statusCode}`));
          try {
            const list = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { items?: V1Pod[] };
            resolve(list.items ?? []);
          } catch (err) {
            reject(new Error(`kubelet ${url.href} sent invalid JSON: ${(err as Error).message}`));
          }
        });
      });
      req.on('timeout', () => req.destroy(new Error(`kubelet ${url.href} did not answer in time`)));
      req.on('error', reject);
      req.end();
    });
  }
}

export interface PodContainer {
  /** The pod's UID as in the API (dashes), or a static pod's 32-hex config hash. */
  podUid: string;
  /** The container ID (64 hex) when the process is in a container's cgroup. */
  containerId: string | undefined;
}

const UUID = '[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}';
/** `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd), with or without a QoS level. */
const POD_SEGMENT = new RegExp(`^(?:[a-z]+-)*pod(${UUID}|[0-9a-f]{32})(?:\\.slice)?$`);
/** `<id>` (cgroupfs), `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`. */
const CONTAINER_SEGMENT = /^(?:(?:cri-containerd|crio|cri-o|docker|containerd)-)?([0-9a-f]{64})(?:\.scope)?$/;

/**
 * The pod and container of a /proc/<pid>/cgroup text (cgroup v1: one line per
 * hierarchy; v2: the single `0::` line). Undefined for a process outside any
 * pod, and for CRI-O's conmon monitor, which runs in the pod but is no workload.
 */
export function podContainerFromCgroup(text: string): PodContainer | undefined {
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    const segments = line.slice(second + 1).split('/').filter(Boolean);
    const at = segments.findIndex((s) => POD_SEGMENT.test(s));
    if (at < 0) continue;
    const podUid = POD_SEGMENT.exec(segments[at]!)![1]!.replaceAll('_', '-');
    const next = segments[at + 1];
    if (next === undefined) return { podUid, containerId: undefined };
    if (next.startsWith('crio-conmon-')) return undefined;
    const container = CONTAINER_SEGMENT.exec(next);
    return { podUid, containerId: container ? container[1] : undefined };
  }
  return undefined;
}

export interface K8sAttestorOptions {
  source: PodSource;
  /** Default /proc. */
  procRoot?: string;
  /** How long a pod list is reused while it answers the lookups. Default 5 s. */
  cacheTtlMs?: number;
  /** How long a pod or container missing from the list is looked up again. Default 500 ms. */
  retryTimeoutMs?: number;
  /** Pause between those lookups (and the least time between two pod lists). Default 100 ms. */
  retryIntervalMs?: number;
  now?: () => number;
}

interface Found { pod: V1Pod; status: V1ContainerStatus | undefined; specImage: string | undefined }

export class K8sAttestor implements WorkloadAttestor {
  private readonly procRoot: string;
  private readonly now: () => number;
  private list: { at: number; pods: Promise<V1Pod[]> } | undefined;
  /** Pod lists fetched (for tests and metrics). */
  fetches = 0;

  constructor(private readonly opts: K8sAttestorOptions) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.now = opts.now ?? Date.now;
  }

  async attest(pid: number): Promise<Selector[]> {
    const cgroup = await readFile(join(this.procRoot, String(pid), 'cgroup'), 'utf8');
    const where = podContainerFromCgroup(cgroup);
    if (!where) return [];
    const found = await this.lookup(where);
    return selectorsOf(found);
  }

  private async lookup(where: PodContainer): Promise<Found> {
    const retryTimeout = this.opts.retryTimeoutMs ?? 500;
    const interval = this.opts.retryIntervalMs ?? 100;
    const deadline = this.now() + retryTimeout;
    let pods = await this.pods(false);
    for (;;) {
      const pod = pods.find((p) => p.metadata?.uid === where.podUid || p.metadata?.annotations?.['kubernetes.io/config.mirror'] === where.podUid);
      if (pod) {
        if (where.containerId === undefined) return { pod, status: undefined, specImage: undefined };
        const status = containerStatuses(pod).find((s) => containerIdOf(s) === where.containerId);
        if (status) return { pod, status, specImage: specImage(pod, status.name) };
      }
      if (this.now() >= deadline) {
        const what = pod ? `container ${where.containerId} of pod ${pod.metadata?.namespace}/${pod.metadata?.name}` : `pod ${where.podUid}`;
        throw new Unavailable(`k8s workload attestation: ${what} is not in the ${this.opts.source.name} pod list yet`);
      }
      await new Promise((r) => setTimeout(r, interval));
      pods = await this.pods(true);
    }
  }

  /** The cached pod list; `refresh` fetches a new one unless the cached one is younger than the retry interval. */
  private async pods(refresh: boolean): Promise<V1Pod[]> {
    const now = this.now();
    const age = this.list ? now - this.list.at : Infinity;
    const maxAge = refresh ? (this.opts.retryIntervalMs ?? 100) : (this.opts.cacheTtlMs ?? 5000);
    if (!this.list || age >= maxAge) {
      this.fetches += 1;
      const entry = { at: now, pods: this.opts.source.listPods() };
      this.list = entry;
      // a failed fetch is not reused
      entry.pods.catch(() => { if (this.list === entry) this.list = undefined; });
    }
    try {
      return await this.list.pods;
    } catch (err) {
      throw new Unavailable(`k8s workload attestation: listing this node's pods from the ${this.opts.source.name} failed: ${(err as Error).message}`);
    }
  }
}

function containerStatuses(pod: V1Pod): V1ContainerStatus[] {
  const s = pod.status;
  return [...(s?.containerStatuses ?? []), ...(s?.initContainerStatuses ?? []), ...(s?.ephemeralContainerStatuses ?? [])];
}

/** `containerd://<id>` → `<id>`. */
function containerIdOf(s: V1ContainerStatus): string | undefined {
  const id = s.containerID;
  if (!id) return undefined;
  const sep = id.indexOf('://');
  return sep >= 0 ? id.slice(sep + 3) : id;
}

function specImage(pod: V1Pod, name: string): string | undefined {
  const all = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? []), ...(pod.spec?.ephemeralContainers ?? [])];
  return all.find((c) => c.name === name)?.image;
}

function selectorsOf({ pod, status, specImage }: Found): Selector[] {
  const k8s = (value: string): Selector => Selector.of('k8s', value);
  const meta = pod.metadata ?? {};
  const out = [
    k8s(`ns:${meta.namespace ?? 'default'}`),
    k8s(`sa:${pod.spec?.serviceAccountName || 'default'}`),
    k8s(`pod-name:${meta.name ?? ''}`),
    k8s(`pod-uid:${meta.uid ?? ''}`),
  ];
  if (pod.spec?.nodeName) out.push(k8s(`node-name:${pod.spec.nodeName}`));
  for (const [key, value] of Object.entries(meta.labels ?? {})) out.push(k8s(`pod-label:${key}:${value}`));
  if (status) {
    out.push(k8s(`container-name:${status.name}`));
    const images = new Set([status.image, specImage].filter((i): i is string => typeof i === 'string' && i !== ''));
    for (const image of images) out.push(k8s(`container-image:${image}`));
  }
  return out;
}

const duration = (field: string, dflt: string) => durationField(field, dflt);

/** The `kubernetes:` section of meshid-agent's config (agent/config.ts embeds it). */
export const kubernetesAgentConfigSchema = z.object({
  /** k8s_psat node attestation and the k8s workload attestor. */
  enabled: z.boolean().default(false),
  /** The cluster's name; must be the server's kubernetes.cluster. */
  cluster: z.string().refine(isDnsLabel, 'must be a DNS label').default('kubernetes'),
  /** The projected ServiceAccount token (audience: the server's psat_audience). */
  token_path: z.string().min(1).default(DEFAULT_PSAT_TOKEN_PATH),
  /** For the apiserver pod source; default the pod's in-cluster ServiceAccount. */
  kubeconfig: z.string().min(1).optional(),
  /** Where this node's pods are read: the API server (spec.nodeName field selector) or the kubelet's /pods. */
  pod_source: z.enum(['apiserver', 'kubelet']).default('apiserver'),
  kubelet: z.object({
    url: z.string().url().default('https://127.0.0.1:10250'),
    token_path: z.string().min(1).default('/var/run/secrets/kubernetes.io/serviceaccount/token'),
    ca_path: z.string().min(1).optional(),
    insecure_skip_verify: z.boolean().default(false),
  }).strict().default({ url: 'https://127.0.0.1:10250', token_path: '/var/run/secrets/kubernetes.io/serviceaccount/token', insecure_skip_verify: false }),
  /** How long a pod list is reused. */
  pod_cache_ttl: duration('kubernetes.pod_cache_ttl', '5s'),
  /** How long a pod or container missing from the list is looked up again before the attestation fails. */
  pending_retry: duration('kubernetes.pending_retry', '500ms'),
}).strict();

export type KubernetesAgentConfig = z.infer<typeof kubernetesAgentConfigSchema>;

/**
 * The agent's Kubernetes parts from its config: MeshidAgentDeps.attestor and
 * one of workloadAttestors. @kubernetes/client-node is loaded here, not at
 * startup: it costs ~60 MB of RSS, which an agent outside Kubernetes (or one
 * reading pods from the kubelet) should not carry.
 */
export async function kubernetesAgentParts(config: KubernetesAgentConfig, nodeName: string, procRoot?: string): Promise<{ attestor: K8sPsatPlugin; workloadAttestor: K8sAttestor }> {
  let source: PodSource;
  if (config.pod_source === 'kubelet') {
    source = new KubeletPodSource({
      url: config.kubelet.url, tokenPath: config.kubelet.token_path, insecureSkipVerify: config.kubelet.insecure_skip_verify,
      ...(config.kubelet.ca_path ? { caPath: config.kubelet.ca_path } : {}),
    });
  } else {
    const { CoreV1Api, KubeConfig } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    if (config.kubeconfig) kc.loadFromFile(config.kubeconfig);
    else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
    else kc.loadFromDefault();
    source = new ApiServerPodSource({ core: kc.makeApiClient(CoreV1Api), nodeName });
  }
  return {
    attestor: new K8sPsatPlugin({ cluster: config.cluster, tokenPath: config.token_path }),
    workloadAttestor: new K8sAttestor({
      source, cacheTtlMs: config.pod_cache_ttl * 1000, retryTimeoutMs: config.pending_retry * 1000, ...(procRoot ? { procRoot } : {}),
    }),
  };
}
