/**
 * The Kubernetes controller: keeps the datastore in line with the cluster.
 *
 * - ServiceAccounts → one registration entry each, spiffe://<td>/ns/<ns>/sa/<sa>
 *   with k8s:ns and k8s:sa selectors, parented by the cluster's node alias
 *   (spiffe://<td>/meshid/k8s/<cluster>/nodes), whose own entry (parent: the
 *   server, selector k8s_psat:cluster:<cluster>) makes every PSAT agent of the
 *   cluster receive every ServiceAccount entry (SPIRE's node alias pattern).
 *   A namespace or ServiceAccount labelled or annotated
 *   `meshid.io/auto-register: "false"` gets none.
 * - Nodes → the node registry (name, InternalIP, podCIDR).
 * - Pods → endpoints (pod IPs) with security identities of their labels.
 * - AuthPolicy / CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy objects,
 *   for whichever of these CRDs the API serves (asked again periodically) →
 *   policies in server/policy's normalised form. While a CRD is served, the
 *   cluster is the source of truth for that kind: stored policies of the kind
 *   that the cluster does not hold are deleted.
 *
 * The watches run on every server (warm caches); only the leader writes. On
 * becoming leader, once every watch has listed, it reconciles everything and
 * removes what the cluster no longer has.
 */
import { isIP } from 'node:net';
import type { CoreV1Api, CustomObjectsApi, V1Namespace, V1Node, V1Pod, V1ServiceAccount, Watch } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';
import { DuplicateEntry, type Datastore, type Endpoint, type RegistrationEntry } from '../datastore/index.js';
import { IdentityAllocator, labelsKey, securityLabels } from '../identity/index.js';
import { applyParsedPolicies, deletePolicy, parsePolicyObject } from '../policy/index.js';
import { entryForServiceAccount } from '../registration/index.js';
import { InvalidArgument, MeshidError, NotFound, Selector, SelectorSet, serverId, type SpiffeId, type TrustDomain } from '../../spiffe/index.js';
import { apiMessage, apiStatus } from './client.js';
import { Reflector, type KubeObject, type ObjectList, type ReflectorHandler, type ReflectorOptions } from './reflector.js';
import { createHash } from 'node:crypto';

/** Label or annotation that opts a namespace or ServiceAccount out of automatic registration. */
export const AUTO_REGISTER_KEY = 'meshid.io/auto-register';

export interface PolicyResource {
  group: string;
  version: string;
  plural: string;
  kind: 'AuthPolicy' | 'CiliumNetworkPolicy' | 'CiliumClusterwideNetworkPolicy';
  namespaced: boolean;
}

export const POLICY_RESOURCES: readonly PolicyResource[] = [
  { group: 'meshid.io', version: 'v1alpha1', plural: 'authpolicies', kind: 'AuthPolicy', namespaced: true },
  { group: 'cilium.io', version: 'v2', plural: 'ciliumnetworkpolicies', kind: 'CiliumNetworkPolicy', namespaced: true },
  { group: 'cilium.io', version: 'v2', plural: 'ciliumclusterwidenetworkpolicies', kind: 'CiliumClusterwideNetworkPolicy', namespaced: false },
];

type PolicyObject = KubeObject & { apiVersion?: string; kind?: string; spec?: unknown; specs?: unknown };

/** The node alias of a cluster: the parent of its ServiceAccount entries. */
export function nodeAliasId(td: TrustDomain, cluster: string): SpiffeId {
  return td.child('meshid', 'k8s', cluster, 'nodes');
}

export const nodeAliasEntryId = (cluster: string): string => `k8s:${cluster}:nodes`;

/** A stable entry id per ServiceAccount, so that restarts and other servers find the same entry. */
export function serviceAccountEntryId(cluster: string, namespace: string, name: string): string {
  const id = `k8s:${cluster}:sa:${namespace}:${name}`;
  return id.length <= 255 ? id : `k8s:${cluster}:sa:sha256:${createHash('sha256').update(`${namespace}/${name}`).digest('hex').slice(0, 40)}`;
}

export interface KubernetesControllerOptions {
  core: Pick<CoreV1Api, 'listNamespace' | 'listServiceAccountForAllNamespaces' | 'listNode' | 'listPodForAllNamespaces'>;
  custom: Pick<CustomObjectsApi, 'getAPIResources' | 'listClusterCustomObject'>;
  watch: Watch;
  store: Datastore;
  trustDomain: TrustDomain;
  cluster: string;
  logger: Logger;
  autoRegister: boolean;
  endpoints: boolean;
  policies: boolean;
  crdDiscoveryIntervalMs: number;
  /** Reflector timing (tests shorten it). */
  reflectorTiming?: Pick<ReflectorOptions<KubeObject>, 'initialBackoffMs' | 'maxBackoffMs' | 'watchTimeoutSeconds'>;
}

export interface ControllerStats {
  /** Reconciliations that failed (logged; retried at the next event or resync). */
  errors: number;
  /** Policy objects refused by the parser. */
  refusedPolicies: number;
  resyncs: number;
}

const isOptedOut = (o: KubeObject | undefined): boolean =>
  o?.metadata?.labels?.[AUTO_REGISTER_KEY] === 'false' || o?.metadata?.annotations?.[AUTO_REGISTER_KEY] === 'false';

export class KubernetesController {
  readonly stats: ControllerStats = { errors: 0, refusedPolicies: 0, resyncs: 0 };
  readonly namespaces: Reflector<V1Namespace> | undefined;
  readonly serviceAccounts: Reflector<V1ServiceAccount> | undefined;
  readonly nodes: Reflector<V1Node> | undefined;
  readonly pods: Reflector<V1Pod> | undefined;
  readonly policyReflectors = new Map<string, { resource: PolicyResource; reflector: Reflector<PolicyObject> }>();
  private readonly identities: IdentityAllocator;
  private readonly alias: SpiffeId;
  /** The endpoint IPs this controller wrote per pod ("ns/name"). */
  private readonly podIps = new Map<string, string[]>();
  private leader = false;
  /** Leader and the first full resync is done: events are written as they come. */
  private active = false;
  private leadership = 0;
  private discoveryTimer: NodeJS.Timeout | undefined;
  private discovering: Promise<void> | undefined;
  private started = false;

  constructor(private readonly opts: KubernetesControllerOptions) {
    this.identities = new IdentityAllocator(opts.store);
    this.alias = nodeAliasId(opts.trustDomain, opts.cluster);
    const { core } = opts;
    if (opts.autoRegister) {
      this.namespaces = this.reflector('namespaces', '/api/v1/namespaces', () => core.listNamespace(), {
        upsert: (ns) => this.whenActive(() => this.reconcileNamespace(ns.metadata?.name ?? '')),
        remove: (ns) => this.whenActive(() => this.reconcileNamespace(ns.metadata?.name ?? '')),
      });
      this.serviceAccounts = this.reflector('serviceaccounts', '/api/v1/serviceaccounts', () => core.listServiceAccountForAllNamespaces(), {
        upsert: (sa) => this.whenActive(() => this.reconcileServiceAccount(sa.metadata?.namespace ?? '', sa.metadata?.name ?? '')),
        remove: (sa) => this.whenActive(() => this.reconcileServiceAccount(sa.metadata?.namespace ?? '', sa.metadata?.name ?? '')),
        listed: () => this.whenActive(() => this.collectServiceAccountEntries()),
      });
    }
    if (opts.endpoints) {
      this.nodes = this.reflector('nodes', '/api/v1/nodes', () => core.listNode(), {
        upsert: (node) => this.whenActive(() => this.reconcileNode(node)),
        remove: (node) => this.whenActive(() => this.removeNode(node.metadata?.name ?? '')),
      });
      this.pods = this.reflector('pods', '/api/v1/pods', () => core.listPodForAllNamespaces(), {
        upsert: (pod) => this.whenActive(() => this.reconcilePod(pod)),
        remove: (pod) => this.whenActive(() => this.removePod(pod)),
        listed: () => this.whenActive(() => this.collectEndpoints()),
      });
    }
  }

  get isActive(): boolean { return this.active; }

  /** Starts the watches and the CRD discovery; resolves after the first discovery. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    for (const r of this.coreReflectors()) r.start();
    if (this.opts.policies) {
      await this.discoverPolicyResources();
      this.scheduleDiscovery();
    }
  }

  async stop(): Promise<void> {
    this.started = false;
    this.leader = false;
    this.active = false;
    if (this.discoveryTimer) clearTimeout(this.discoveryTimer);
    this.discoveryTimer = undefined;
    await this.discovering;
    await Promise.all([...this.coreReflectors(), ...[...this.policyReflectors.values()].map((p) => p.reflector)].map((r) => r.stop()));
    this.policyReflectors.clear();
  }

  /** Leadership from the elector (or true when leader election is off). */
  setLeader(leader: boolean): void {
    if (leader === this.leader) return;
    this.leader = leader;
    this.active = false;
    this.leadership += 1;
    if (leader) void this.resyncWhenSynced(this.leadership);
  }

  /** Resolves when every watch has listed once. */
  async synced(): Promise<void> {
    await Promise.all([...this.coreReflectors(), ...[...this.policyReflectors.values()].map((p) => p.reflector)].map((r) => r.whenSynced()));
  }

  private async resyncWhenSynced(term: number): Promise<void> {
    await this.synced();
    if (term !== this.leadership || !this.leader) return;
    await this.resync();
    if (term === this.leadership && this.leader) this.active = true;
  }

  /** Everything from the caches: creates and updates what is missing, removes what the cluster no longer has. */
  resync(): Promise<void> {
    return this.enqueue(() => this.resyncNow());
  }

  private async resyncNow(): Promise<void> {
    this.stats.resyncs += 1;
    if (this.opts.autoRegister) {
      await this.guard('node alias entry', () => this.ensureNodeAlias());
      for (const sa of this.serviceAccounts!.cache.values()) {
        await this.guard('service account', () => this.reconcileServiceAccount(sa.metadata?.namespace ?? '', sa.metadata?.name ?? ''));
      }
      await this.guard('service account entries', () => this.collectServiceAccountEntries());
    }
    if (this.opts.endpoints) {
      for (const node of this.nodes!.cache.values()) await this.guard('node', () => this.reconcileNode(node));
      this.podIps.clear();
      for (const pod of this.pods!.cache.values()) await this.guard('pod', () => this.reconcilePod(pod));
      await this.guard('endpoints', () => this.collectEndpoints());
    }
    for (const { resource, reflector } of this.policyReflectors.values()) {
      for (const obj of reflector.cache.values()) await this.guard('policy', () => this.applyPolicy(resource, obj));
      await this.guard('policies', () => this.collectPolicies(resource, reflector.cache));
    }
  }

  // --- ServiceAccounts → entries ---

  private async ensureNodeAlias(): Promise<void> {
    const { store, trustDomain, cluster } = this.opts;
    const id = nodeAliasEntryId(cluster);
    const selectors = SelectorSet.of([Selector.of('k8s_psat', `cluster:${cluster}`)]);
    const parentId = serverId(trustDomain);
    const existing = await this.findEntry(id);
    if (!existing) {
      await this.createEntry({ id, spiffeId: this.alias, parentId, selectors });
    } else if (!existing.spiffeId.equals(this.alias) || !existing.parentId.equals(parentId) || existing.selectors.key() !== selectors.key()) {
      await store.updateEntry(id, { spiffeId: this.alias, parentId, selectors });
    }
  }

  private wantsEntry(namespace: string, name: string): boolean {
    const sa = this.serviceAccounts!.cache.get(`${namespace}/${name}`);
    if (!sa || isOptedOut(sa)) return false;
    return !isOptedOut(this.namespaces!.cache.get(`/${namespace}`));
  }

  private async reconcileServiceAccount(namespace: string, name: string): Promise<void> {
    const { store, trustDomain, cluster } = this.opts;
    const id = serviceAccountEntryId(cluster, namespace, name);
    const existing = await this.findEntry(id);
    if (!this.wantsEntry(namespace, name)) {
      if (existing) {
        await store.deleteEntry(id);
        this.opts.logger.info('kubernetes: service account entry deleted', { namespace, service_account: name, spiffe_id: existing.spiffeId.toString() });
      }
      return;
    }
    const spec = entryForServiceAccount(trustDomain, namespace, name, this.alias);
    if (!existing) {
      if (await this.createEntry({ ...spec, id })) {
        this.opts.logger.info('kubernetes: service account entry created', { namespace, service_account: name, spiffe_id: spec.spiffeId.toString() });
      }
    } else if (!existing.spiffeId.equals(spec.spiffeId) || !existing.parentId.equals(spec.parentId) || existing.selectors.key() !== spec.selectors.key()) {
      await store.updateEntry(id, { spiffeId: spec.spiffeId, parentId: spec.parentId, selectors: spec.selectors });
    }
  }

  private async reconcileNamespace(namespace: string): Promise<void> {
    for (const sa of this.serviceAccounts!.cache.values()) {
      if (sa.metadata?.namespace === namespace) await this.reconcileServiceAccount(namespace, sa.metadata.name ?? '');
    }
  }

  /** Deletes this cluster's ServiceAccount entries whose ServiceAccount is gone or opted out. */
  private async collectServiceAccountEntries(): Promise<void> {
    const prefix = `k8s:${this.opts.cluster}:sa:`;
    for (const e of (await this.opts.store.listEntries({ byParentId: this.alias })).items) {
      if (!e.id.startsWith(prefix)) continue;
      const s = e.spiffeId.segments;
      const owned = s.length === 4 && s[0] === 'ns' && s[2] === 'sa';
      if (!owned || !this.wantsEntry(s[1]!, s[3]!)) {
        await this.opts.store.deleteEntry(e.id);
        this.opts.logger.info('kubernetes: stale service account entry deleted', { spiffe_id: e.spiffeId.toString() });
      }
    }
  }

  private async findEntry(id: string): Promise<RegistrationEntry | undefined> {
    try {
      return await this.opts.store.getEntry(id);
    } catch (err) {
      if (err instanceof NotFound) return undefined;
      throw err;
    }
  }

  private async createEntry(spec: Parameters<Datastore['createEntry']>[0]): Promise<boolean> {
    try {
      await this.opts.store.createEntry(spec);
      return true;
    } catch (err) {
      // an operator made the same entry by hand; it serves the same workloads
      if (err instanceof DuplicateEntry) return false;
      throw err;
    }
  }

  // --- Nodes → node registry ---

  private async reconcileNode(node: V1Node): Promise<number> {
    const name = node.metadata?.name ?? '';
    const addresses = node.status?.addresses ?? [];
    const internal = addresses.filter((a) => a.type === 'InternalIP' && isIP(a.address));
    const address = (internal.find((a) => isIP(a.address) === 4) ?? internal[0])?.address;
    const podCidr = node.spec?.podCIDR;
    return (await this.opts.store.upsertNode({ name, ...(address ? { address } : {}), ...(podCidr ? { podCidr } : {}) })).id;
  }

  private async nodeId(name: string): Promise<number> {
    const known = await this.opts.store.findNodeByName(name);
    if (known) return known.id;
    const node = this.nodes!.cache.get(`/${name}`);
    return node ? await this.reconcileNode(node) : await this.opts.store.allocateNodeId(name);
  }

  private async removeNode(name: string): Promise<void> {
    const node = await this.opts.store.findNodeByName(name);
    if (!node) return;
    for (const ep of await this.opts.store.listEndpoints({ nodeId: node.id })) await this.opts.store.deleteEndpoint(ep.ip);
    await this.identities.collectUnusedIdentities();
    await this.opts.store.deleteNode(node.id);
    this.opts.logger.info('kubernetes: node removed from the registry', { node: name, node_id: node.id });
  }

  // --- Pods → endpoints and identities ---

  private endpointIps(pod: V1Pod): string[] {
    if (pod.spec?.hostNetwork || !pod.spec?.nodeName) return [];
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return [];
    const ips = (pod.status?.podIPs ?? []).map((p) => p.ip).filter((ip): ip is string => typeof ip === 'string');
    if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
    return [...new Set(ips.filter((ip) => isIP(ip) !== 0))];
  }

  private async reconcilePod(pod: V1Pod): Promise<void> {
    const { store } = this.opts;
    const namespace = pod.metadata?.namespace ?? '';
    const name = pod.metadata?.name ?? '';
    const key = `${namespace}/${name}`;
    const want = this.endpointIps(pod);
    let orphaned = await this.dropEndpoints(namespace, name, (this.podIps.get(key) ?? []).filter((ip) => !want.includes(ip)));
    if (want.length === 0) {
      this.podIps.delete(key);
    } else {
      const nodeId = await this.nodeId(pod.spec!.nodeName!);
      const serviceAccount = pod.spec?.serviceAccountName || 'default';
      const labels = securityLabels(namespace, serviceAccount, pod.metadata?.labels ?? {});
      const identity = await store.allocateIdentity(labelsKey(labels), labels, { namespace, name: serviceAccount });
      for (const ip of want) {
        const before = await this.endpointAt(ip);
        if (before && before.identity !== identity.id) orphaned = true;
        await store.upsertEndpoint({ ip, identity: identity.id, nodeId, namespace, name, labels });
      }
      this.podIps.set(key, want);
    }
    if (orphaned) await this.identities.collectUnusedIdentities();
  }

  private async removePod(pod: V1Pod): Promise<void> {
    const namespace = pod.metadata?.namespace ?? '';
    const name = pod.metadata?.name ?? '';
    const key = `${namespace}/${name}`;
    const ips = this.podIps.get(key) ?? this.endpointIps(pod);
    this.podIps.delete(key);
    if (await this.dropEndpoints(namespace, name, ips)) await this.identities.collectUnusedIdentities();
  }

  /** Deletes the endpoints at `ips` that still belong to this pod; true when any was deleted. */
  private async dropEndpoints(namespace: string, name: string, ips: readonly string[]): Promise<boolean> {
    let dropped = false;
    for (const ip of ips) {
      const ep = await this.endpointAt(ip);
      if (ep && ep.namespace === namespace && ep.name === name) {
        await this.opts.store.deleteEndpoint(ip);
        dropped = true;
      }
    }
    return dropped;
  }

  private async endpointAt(ip: string): Promise<Endpoint | undefined> {
    try {
      return await this.opts.store.getEndpoint(ip);
    } catch (err) {
      if (err instanceof NotFound) return undefined;
      throw err;
    }
  }

  /** Deletes endpoints on Kubernetes nodes that no pod holds any more. */
  private async collectEndpoints(): Promise<void> {
    const { store } = this.opts;
    const wanted = new Set<string>();
    for (const ips of this.podIps.values()) for (const ip of ips) wanted.add(ip);
    const k8sNodes = new Set<number>();
    for (const node of this.nodes!.cache.values()) {
      const known = await store.findNodeByName(node.metadata?.name ?? '');
      if (known) k8sNodes.add(known.id);
    }
    let dropped = false;
    for (const ep of await store.listEndpoints()) {
      if (k8sNodes.has(ep.nodeId) && !wanted.has(ep.ip)) {
        await store.deleteEndpoint(ep.ip);
        dropped = true;
      }
    }
    if (dropped) await this.identities.collectUnusedIdentities();
  }

  // --- policy CRDs → policies ---

  private async applyPolicy(resource: PolicyResource, obj: PolicyObject): Promise<void> {
    const meta = obj.metadata ?? {};
    const doc: Record<string, unknown> = {
      apiVersion: obj.apiVersion ?? `${resource.group}/${resource.version}`,
      kind: obj.kind ?? resource.kind,
      metadata: { name: meta.name, ...(resource.namespaced ? { namespace: meta.namespace } : {}) },
    };
    if (obj.spec !== undefined) doc.spec = obj.spec;
    if (obj.specs !== undefined) doc.specs = obj.specs;
    let parsed;
    try {
      parsed = parsePolicyObject(doc);
    } catch (err) {
      if (!(err instanceof InvalidArgument)) throw err;
      this.stats.refusedPolicies += 1;
      this.opts.logger.warn('kubernetes: policy refused; the stored version (if any) stays', {
        kind: resource.kind, namespace: meta.namespace ?? '', name: meta.name, field: err.field, reason: err.message,
      });
      return;
    }
    const [applied] = await applyParsedPolicies(this.opts.store, [parsed]);
    if (applied && applied.result !== 'unchanged') {
      this.opts.logger.info(`kubernetes: policy ${applied.result}`, { kind: applied.kind, namespace: applied.namespace, name: applied.name, revision: applied.revision });
    }
  }

  private async removePolicy(resource: PolicyResource, obj: PolicyObject): Promise<void> {
    const namespace = resource.namespaced ? obj.metadata?.namespace ?? '' : '';
    try {
      await deletePolicy(this.opts.store, { namespace, name: obj.metadata?.name ?? '', kind: resource.kind });
      this.opts.logger.info('kubernetes: policy deleted', { kind: resource.kind, namespace, name: obj.metadata?.name });
    } catch (err) {
      if (!(err instanceof NotFound)) throw err;
    }
  }

  /** Deletes stored policies of this kind that `cache` (the cluster's objects) does not hold; no cache: all of the kind. */
  private async collectPolicies(resource: PolicyResource, cache?: Map<string, PolicyObject>): Promise<void> {
    for (const p of await this.opts.store.listPolicies()) {
      if (p.kind !== resource.kind || cache?.has(`${p.namespace}/${p.name}`)) continue;
      await this.opts.store.deletePolicy(p.namespace, p.name);
      this.opts.logger.info('kubernetes: stale policy deleted', { kind: p.kind, namespace: p.namespace, name: p.name });
    }
  }

  private scheduleDiscovery(): void {
    if (!this.started) return;
    this.discoveryTimer = setTimeout(() => {
      this.discovering = this.discoverPolicyResources().finally(() => { this.discovering = undefined; this.scheduleDiscovery(); });
    }, this.opts.crdDiscoveryIntervalMs);
  }

  /** Starts a watch for each policy CRD the API serves, and stops those whose CRD went away. */
  async discoverPolicyResources(): Promise<void> {
    const versions = new Map<string, PolicyResource[]>();
    for (const r of POLICY_RESOURCES) versions.set(`${r.group}/${r.version}`, [...(versions.get(`${r.group}/${r.version}`) ?? []), r]);
    for (const resources of versions.values()) {
      const { group, version } = resources[0]!;
      let served: Set<string>;
      try {
        const list = await this.opts.custom.getAPIResources({ group, version });
        served = new Set((list.resources ?? []).map((r) => r.name));
      } catch (err) {
        if (apiStatus(err) !== 404) {
          this.opts.logger.warn('kubernetes: API discovery failed; will ask again', { group_version: `${group}/${version}`, error: apiMessage(err) });
          continue;
        }
        served = new Set();
      }
      if (!this.started) return;
      for (const resource of resources) {
        const running = this.policyReflectors.get(resource.plural);
        if (served.has(resource.plural) && !running) this.startPolicyReflector(resource);
        if (!served.has(resource.plural) && running) {
          this.policyReflectors.delete(resource.plural);
          await running.reflector.stop();
          this.opts.logger.info('kubernetes: policy CRD is no longer served; its policies are removed', { kind: resource.kind });
          this.whenActive(() => this.collectPolicies(resource));
        }
      }
    }
  }

  private startPolicyReflector(resource: PolicyResource): void {
    const { group, version, plural } = resource;
    const reflector: Reflector<PolicyObject> = this.reflector(plural, `/apis/${group}/${version}/${plural}`,
      () => this.opts.custom.listClusterCustomObject({ group, version, plural }) as Promise<ObjectList<PolicyObject>>, {
        upsert: (obj) => this.whenActive(() => this.applyPolicy(resource, obj)),
        remove: (obj) => this.whenActive(() => this.removePolicy(resource, obj)),
        listed: () => this.whenActive(() => this.collectPolicies(resource, reflector.cache)),
      });
    this.policyReflectors.set(plural, { resource, reflector });
    this.opts.logger.info('kubernetes: watching policy CRD', { kind: resource.kind, group_version: `${group}/${version}` });
    reflector.start();
  }

  // --- plumbing ---

  private reflector<T extends KubeObject>(name: string, path: string, list: () => Promise<ObjectList<T>>, handler: ReflectorHandler<T>): Reflector<T> {
    return new Reflector<T>({
      name, path, list, handler, watch: this.opts.watch, logger: this.opts.logger, ...this.opts.reflectorTiming,
    });
  }

  private coreReflectors(): Reflector<KubeObject>[] {
    return [this.namespaces, this.serviceAccounts, this.nodes, this.pods].filter((r): r is Reflector<never> => r !== undefined) as Reflector<KubeObject>[];
  }

  /** Events are handled one at a time, in the order they came. */
  private whenActive(fn: () => Promise<unknown>): void {
    if (this.active) void this.enqueue(() => this.guard('event', fn));
  }

  private queue: Promise<void> = Promise.resolve();

  private enqueue(job: () => Promise<void>): Promise<void> {
    const run = this.queue.then(job);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Resolves when every event handled so far has been written. */
  async settled(): Promise<void> {
    for (let q = this.queue; ; q = this.queue) {
      await q;
      if (q === this.queue) return;
    }
  }

  private async guard(what: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.stats.errors += 1;
      this.opts.logger.warn(`kubernetes: reconciling ${what} failed`, {
        error: err instanceof MeshidError ? `${err.code}: ${err.message}` : (err as Error).message,
      });
    }
  }
}
