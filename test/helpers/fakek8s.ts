/**
 * An in-process fake Kubernetes API server that speaks the real REST and
 * watch protocol over HTTP on 127.0.0.1, so that @kubernetes/client-node talks
 * to it unchanged:
 *
 * - list (`GET /api/v1/pods`, `/apis/G/V/namespaces/NS/R`) answers with the
 *   collection's current resourceVersion; field selectors (`spec.nodeName=`,
 *   `metadata.name=`, `metadata.namespace=`) and simple label selectors work;
 * - `?watch=1&resourceVersion=N` streams JSON lines of {type, object} from N
 *   on (history first, then live); a resourceVersion older than the retained
 *   history gets 410 Gone, as an HTTP status or as an ERROR event (both occur
 *   in real clusters); `timeoutSeconds` and server-side closes end a watch;
 * - create/replace/delete with uid, resourceVersion and 409 on conflicts
 *   (used for coordination.k8s.io/v1 Leases);
 * - TokenReview (authentication.k8s.io/v1) for tokens issued by the fake,
 *   filling `extra` the way Kubernetes does for bound ServiceAccount tokens;
 * - discovery (`/api`, `/apis`, `/apis/G/V`) that reflects installed CRDs;
 * - a kubelet-style read-only `/pods` under `/kubelet/<node>/pods`.
 *
 * Tests change cluster state directly (`put`, `remove`) and inject faults
 * (`compact`, `closeWatches`, `fault`).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { writeFileSync } from 'node:fs';

export interface ResourceType {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  verbs?: string[];
}

export type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string>; creationTimestamp?: string; [k: string]: unknown };
  [k: string]: unknown;
};

export const BUILTIN_RESOURCES: ResourceType[] = [
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true },
  { group: '', version: 'v1', plural: 'serviceaccounts', kind: 'ServiceAccount', namespaced: true },
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false },
  { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false },
  { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true },
  { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease', namespaced: true },
  { group: 'authentication.k8s.io', version: 'v1', plural: 'tokenreviews', kind: 'TokenReview', namespaced: false, verbs: ['create'] },
];

export const AUTHPOLICY_CRD: ResourceType = { group: 'meshid.io', version: 'v1alpha1', plural: 'authpolicies', kind: 'AuthPolicy', namespaced: true };
export const CNP_CRD: ResourceType = { group: 'cilium.io', version: 'v2', plural: 'ciliumnetworkpolicies', kind: 'CiliumNetworkPolicy', namespaced: true };
export const CCNP_CRD: ResourceType = { group: 'cilium.io', version: 'v2', plural: 'ciliumclusterwidenetworkpolicies', kind: 'CiliumClusterwideNetworkPolicy', namespaced: false };

export interface IssuedToken {
  namespace: string;
  serviceAccount: string;
  audiences: string[];
  podName?: string;
  podUid?: string;
  nodeName?: string;
  nodeUid?: string;
}

export interface RequestRecord { method: string; path: string; query: Record<string, string>; bearer: string | undefined; status?: number }

interface HistoryEvent { rv: number; type: 'ADDED' | 'MODIFIED' | 'DELETED'; resource: string; object: KubeObject }

interface OpenWatch {
  resource: string;
  namespace: string | undefined;
  matches: (o: KubeObject) => boolean;
  res: ServerResponse;
  bookmarks: boolean;
  timer: NodeJS.Timeout | undefined;
}

type Obj = Record<string, unknown>;

const groupVersion = (r: ResourceType): string => (r.group ? `${r.group}/${r.version}` : r.version);
const resourceKey = (r: ResourceType): string => `${r.group}/${r.plural}`;

export class FakeKubeApiServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly types = new Map<string, ResourceType>();
  /** resource key → "ns/name" → object */
  private readonly objects = new Map<string, Map<string, KubeObject>>();
  private history: HistoryEvent[] = [];
  /** Every event with rv > historyStart is in `history`. */
  private historyStart = 0;
  private rv = 100;
  private readonly watches = new Set<OpenWatch>();
  private readonly tokens = new Map<string, IssuedToken>();
  readonly requests: RequestRecord[] = [];
  url = '';
  /** How a watch from a compacted resourceVersion is refused. */
  goneMode: 'status' | 'event' = 'status';
  /** TokenReview that ignores spec.audiences (and returns none), as API servers without audience support did. */
  tokenReviewIgnoresAudiences = false;
  /** Returns an HTTP status to fail a request with (e.g. 503 for a partitioned client), or undefined to serve it. */
  fault: ((r: RequestRecord) => number | undefined) | undefined;

  constructor(readonly options: { bearerToken?: string; historyLimit?: number } = {}) {
    for (const r of BUILTIN_RESOURCES) this.types.set(resourceKey(r), r);
  }

  async start(): Promise<string> {
    const server = createServer((req, res) => { void this.handle(req, res); });
    server.on('connection', (s) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)); });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.closeWatches();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** A kubeconfig (as the object KubeConfig.loadFromOptions takes) for this server. */
  kubeconfigOptions(token = this.options.bearerToken ?? 'fake-token') {
    return {
      clusters: [{ name: 'fake', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'fake-user', token }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'fake-user' }],
      currentContext: 'fake',
    };
  }

  /** Writes a kubeconfig file for this server and returns its path. */
  writeKubeconfig(path: string, token = this.options.bearerToken ?? 'fake-token'): string {
    const text = [
      'apiVersion: v1', 'kind: Config', 'current-context: fake',
      'clusters:', '- name: fake', '  cluster:', `    server: ${this.url}`, '    insecure-skip-tls-verify: true',
      'users:', '- name: fake-user', '  user:', `    token: ${token}`,
      'contexts:', '- name: fake', '  context:', '    cluster: fake', '    user: fake-user',
    ].join('\n') + '\n';
    writeFileSync(path, text, { mode: 0o600 });
    return path;
  }

  // --- cluster state, changed directly by tests ---

  get resourceVersion(): number { return this.rv; }
  get openWatchCount(): number { return this.watches.size; }

  installCrd(r: ResourceType): void {
    this.types.set(resourceKey(r), r);
  }

  removeCrd(r: ResourceType): void {
    for (const o of [...(this.objects.get(resourceKey(r))?.values() ?? [])]) this.remove(r, o.metadata.namespace, o.metadata.name);
    this.types.delete(resourceKey(r));
    for (const w of [...this.watches]) if (w.resource === resourceKey(r)) this.endWatch(w);
  }

  /** Creates or replaces an object (kind and apiVersion pick its resource); returns the stored copy. */
  put(obj: KubeObject): KubeObject {
    const type = this.typeOfObject(obj);
    return this.store(type, structuredClone(obj));
  }

  get(r: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined {
    const o = this.objects.get(resourceKey(r))?.get(`${namespace ?? ''}/${name}`);
    return o && structuredClone(o);
  }

  list(r: ResourceType): KubeObject[] {
    return [...(this.objects.get(resourceKey(r))?.values() ?? [])].map((o) => structuredClone(o));
  }

  remove(r: ResourceType, namespace: string | undefined, name: string): boolean {
    const key = resourceKey(r);
    const byName = this.objects.get(key);
    const id = `${r.namespaced ? namespace ?? '' : ''}/${name}`;
    const cur = byName?.get(id);
    if (!byName || !cur) return false;
    byName.delete(id);
    this.rv += 1;
    const gone = structuredClone(cur);
    gone.metadata.resourceVersion = String(this.rv);
    this.record({ rv: this.rv, type: 'DELETED', resource: key, object: gone });
    return true;
  }

  /** Forgets the event history: watches from any resourceVersion before now get 410 Gone. */
  compact(): void {
    this.history = [];
    this.historyStart = this.rv;
  }

  /** Ends every open watch from the server side (as an API server restart or a load balancer would). */
  closeWatches(): void {
    for (const w of [...this.watches]) this.endWatch(w);
  }

  /** Sends a BOOKMARK with the current resourceVersion to the watches that asked for bookmarks. */
  bookmark(): void {
    for (const w of this.watches) {
      if (!w.bookmarks) continue;
      const type = this.types.get(w.resource)!;
      this.send(w, { type: 'BOOKMARK', object: { apiVersion: groupVersion(type), kind: type.kind, metadata: { resourceVersion: String(this.rv) } } });
    }
  }

  /** Issues a bound ServiceAccount token that TokenReview accepts (JWT-shaped; the fake checks it by lookup, not signature). */
  issueToken(t: IssuedToken): string {
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      aud: t.audiences, exp: now + 3600, iat: now, nbf: now, iss: 'https://kubernetes.default.svc.cluster.local',
      sub: `system:serviceaccount:${t.namespace}:${t.serviceAccount}`,
      'kubernetes.io': {
        namespace: t.namespace,
        serviceaccount: { name: t.serviceAccount, uid: randomUUID() },
        ...(t.podName ? { pod: { name: t.podName, uid: t.podUid } } : {}),
        ...(t.nodeName ? { node: { name: t.nodeName, uid: t.nodeUid } } : {}),
      },
    };
    const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
    const token = `${b64({ alg: 'RS256', kid: 'fake' })}.${b64(claims)}.${randomBytes(32).toString('base64url')}`;
    this.tokens.set(token, structuredClone(t));
    return token;
  }

  revokeToken(token: string): void { this.tokens.delete(token); }

  /** Requests whose path (and query) match, in order. */
  requestsTo(pathRe: RegExp, filter: (r: RequestRecord) => boolean = () => true): RequestRecord[] {
    return this.requests.filter((r) => pathRe.test(r.path) && filter(r));
  }

  // --- HTTP ---

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const auth = req.headers.authorization;
    const record: RequestRecord = {
      method: req.method ?? 'GET', path: url.pathname, query: Object.fromEntries(url.searchParams),
      bearer: auth?.startsWith('Bearer ') ? auth.slice(7) : undefined,
    };
    this.requests.push(record);
    try {
      const body = req.method === 'POST' || req.method === 'PUT' ? await readBody(req) : undefined;
      if (this.options.bearerToken && record.bearer !== this.options.bearerToken) {
        return this.status(res, 401, 'Unauthorized', 'Unauthorized');
      }
      const injected = this.fault?.(record);
      if (injected !== undefined) return this.status(res, injected, 'ServiceUnavailable', `injected fault ${injected}`);
      this.route(record, body, res);
    } catch (err) {
      this.status(res, 500, 'InternalError', (err as Error).message);
    } finally {
      record.status = res.statusCode;
    }
  }

  private route(r: RequestRecord, body: Obj | undefined, res: ServerResponse): void {
    const seg = r.path.split('/').filter(Boolean);
    if (seg[0] === 'kubelet' && seg.length === 3 && seg[2] === 'pods') return this.kubeletPods(seg[1]!, res);
    if (r.path === '/api') return this.json(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] });
    if (r.path === '/apis') return this.json(res, 200, this.groupList());
    let group: string;
    let version: string;
    let rest: string[];
    if (seg[0] === 'api' && seg[1] === 'v1') { group = ''; version = 'v1'; rest = seg.slice(2); }
    else if (seg[0] === 'apis' && seg.length >= 3) { group = seg[1]!; version = seg[2]!; rest = seg.slice(3); }
    else return this.status(res, 404, 'NotFound', `the server could not find the requested resource (${r.path})`);
    if (rest.length === 0) return this.resourceList(group, version, res);
    // /namespaces/NS/PLURAL[/NAME] unless PLURAL is itself "namespaces"' object path
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) { namespace = rest[1]; rest = rest.slice(2); }
    const type = this.types.get(`${group}/${rest[0]}`);
    if (!type || type.version !== version) return this.status(res, 404, 'NotFound', `the server could not find the requested resource (${r.path})`);
    const name = rest[1];
    if (rest.length > 2) return this.status(res, 404, 'NotFound', `no subresource ${rest.slice(2).join('/')}`);
    if (type.kind === 'TokenReview') {
      if (r.method !== 'POST' || name) return this.status(res, 405, 'MethodNotAllowed', 'tokenreviews only support create');
      return this.json(res, 201, this.tokenReview(body ?? {}));
    }
    if (!type.namespaced && namespace !== undefined) return this.status(res, 404, 'NotFound', `${type.plural} is not namespaced`);
    switch (r.method) {
      case 'GET':
        if (name) {
          const o = this.objects.get(resourceKey(type))?.get(`${namespace ?? ''}/${name}`);
          return o ? this.json(res, 200, o) : this.status(res, 404, 'NotFound', `${type.plural} "${name}" not found`, { name, kind: type.plural });
        }
        if (r.query.watch === '1' || r.query.watch === 'true') return this.watch(type, namespace, r.query, res);
        return this.listResponse(type, namespace, r.query, res);
      case 'POST': {
        if (name || !body) return this.status(res, 405, 'MethodNotAllowed', 'create on a collection only');
        const o = body as KubeObject;
        if (!o.metadata?.name) return this.status(res, 422, 'Invalid', 'metadata.name: Required value');
        if (type.namespaced) o.metadata.namespace = namespace ?? o.metadata.namespace ?? 'default';
        if (this.objects.get(resourceKey(type))?.has(`${o.metadata.namespace ?? ''}/${o.metadata.name}`)) {
          return this.status(res, 409, 'AlreadyExists', `${type.plural} "${o.metadata.name}" already exists`, { name: o.metadata.name, kind: type.plural });
        }
        delete o.metadata.resourceVersion;
        delete o.metadata.uid;
        return this.json(res, 201, this.store(type, o));
      }
      case 'PUT': {
        if (!name || !body) return this.status(res, 405, 'MethodNotAllowed', 'replace needs a name and a body');
        const o = body as KubeObject;
        const cur = this.objects.get(resourceKey(type))?.get(`${namespace ?? ''}/${name}`);
        if (!cur) return this.status(res, 404, 'NotFound', `${type.plural} "${name}" not found`, { name, kind: type.plural });
        const want = o.metadata?.resourceVersion;
        if (want !== undefined && want !== cur.metadata.resourceVersion) {
          return this.status(res, 409, 'Conflict', `Operation cannot be fulfilled on ${type.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, kind: type.plural });
        }
        o.metadata = { ...o.metadata, name, ...(type.namespaced ? { namespace } : {}), uid: cur.metadata.uid };
        return this.json(res, 200, this.store(type, o));
      }
      case 'DELETE':
        if (!name) return this.status(res, 405, 'MethodNotAllowed', 'delete needs a name');
        if (!this.remove(type, namespace, name)) return this.status(res, 404, 'NotFound', `${type.plural} "${name}" not found`);
        return this.json(res, 200, { kind: 'Status', apiVersion: 'v1', status: 'Success' });
      default:
        return this.status(res, 405, 'MethodNotAllowed', `${r.method} is not supported`);
    }
  }

  private listResponse(type: ResourceType, namespace: string | undefined, query: Record<string, string>, res: ServerResponse): void {
    const matches = this.matcher(query, namespace);
    const items = [...(this.objects.get(resourceKey(type))?.values() ?? [])].filter(matches);
    this.json(res, 200, { kind: `${type.kind}List`, apiVersion: groupVersion(type), metadata: { resourceVersion: String(this.rv) }, items });
  }

  private watch(type: ResourceType, namespace: string | undefined, query: Record<string, string>, res: ServerResponse): void {
    const key = resourceKey(type);
    const from = query.resourceVersion;
    const matches = this.matcher(query, namespace);
    if (from !== undefined && from !== '' && from !== '0') {
      const n = Number(from);
      if (!Number.isInteger(n)) return this.status(res, 400, 'BadRequest', `invalid resourceVersion "${from}"`);
      if (n < this.historyStart) {
        const message = `too old resource version: ${n} (${this.historyStart})`;
        if (this.goneMode === 'status') return this.status(res, 410, 'Expired', message);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason: 'Expired', code: 410 } }) + '\n');
        return;
      }
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: OpenWatch = { resource: key, namespace, matches, res, bookmarks: query.allowWatchBookmarks === 'true', timer: undefined };
    this.watches.add(w);
    res.on('close', () => this.endWatch(w));
    const timeout = Number(query.timeoutSeconds);
    if (timeout > 0) w.timer = setTimeout(() => this.endWatch(w), timeout * 1000);
    if (from === undefined || from === '' || from === '0') {
      for (const o of this.objects.get(key)?.values() ?? []) if (matches(o)) this.send(w, { type: 'ADDED', object: o });
    } else {
      for (const e of this.history) if (e.rv > Number(from) && e.resource === key && matches(e.object)) this.send(w, { type: e.type, object: e.object });
    }
  }

  private endWatch(w: OpenWatch): void {
    if (!this.watches.delete(w)) return;
    if (w.timer) clearTimeout(w.timer);
    w.res.end();
  }

  private send(w: OpenWatch, event: { type: string; object: unknown }): void {
    w.res.write(JSON.stringify(event) + '\n');
  }

  private store(type: ResourceType, o: KubeObject): KubeObject {
    const key = resourceKey(type);
    let byName = this.objects.get(key);
    if (!byName) this.objects.set(key, byName = new Map());
    if (!type.namespaced) delete o.metadata.namespace;
    else o.metadata.namespace ??= 'default';
    const id = `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    const cur = byName.get(id);
    this.rv += 1;
    o.apiVersion = groupVersion(type);
    o.kind = type.kind;
    o.metadata.uid = cur?.metadata.uid ?? o.metadata.uid ?? randomUUID();
    o.metadata.creationTimestamp = cur?.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    o.metadata.resourceVersion = String(this.rv);
    byName.set(id, o);
    this.record({ rv: this.rv, type: cur ? 'MODIFIED' : 'ADDED', resource: key, object: structuredClone(o) });
    return structuredClone(o);
  }

  private record(e: HistoryEvent): void {
    this.history.push(e);
    const limit = this.options.historyLimit ?? 10_000;
    while (this.history.length > limit) this.historyStart = this.history.shift()!.rv;
    for (const w of this.watches) if (w.resource === e.resource && w.matches(e.object)) this.send(w, { type: e.type, object: e.object });
  }

  private typeOfObject(obj: KubeObject): ResourceType {
    for (const t of this.types.values()) if (t.kind === obj.kind && groupVersion(t) === obj.apiVersion) return t;
    throw new Error(`the fake API server has no resource for ${obj.apiVersion} ${obj.kind}`);
  }

  private matcher(query: Record<string, string>, namespace: string | undefined): (o: KubeObject) => boolean {
    const fields = parseSelector(query.fieldSelector);
    const labels = parseSelector(query.labelSelector);
    return (o) => {
      if (namespace !== undefined && o.metadata.namespace !== namespace) return false;
      for (const f of fields) {
        const v = fieldValue(o, f.key);
        if (f.op === '=' ? v !== f.value : f.op === '!=' ? v === f.value : false) return false;
      }
      for (const l of labels) {
        const v = o.metadata.labels?.[l.key];
        if (l.op === '=' && v !== l.value) return false;
        if (l.op === '!=' && v === l.value) return false;
        if (l.op === 'exists' && v === undefined) return false;
        if (l.op === '!exists' && v !== undefined) return false;
      }
      return true;
    };
  }

  private tokenReview(body: Obj): Obj {
    const spec = (body.spec ?? {}) as { token?: string; audiences?: string[] };
    const out = { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', metadata: { creationTimestamp: null }, spec };
    const t = spec.token ? this.tokens.get(spec.token) : undefined;
    if (!t) return { ...out, status: { authenticated: false, error: '[invalid bearer token, service account token has been invalidated]' } };
    let audiences: string[] | undefined;
    if (!this.tokenReviewIgnoresAudiences) {
      const wanted = spec.audiences && spec.audiences.length > 0 ? spec.audiences : ['https://kubernetes.default.svc.cluster.local'];
      audiences = t.audiences.filter((a) => wanted.includes(a));
      if (audiences.length === 0) {
        return { ...out, status: { authenticated: false, error: `[invalid bearer token, token audiences ${JSON.stringify(t.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]` } };
      }
    }
    const extra: Record<string, string[]> = { 'authentication.kubernetes.io/credential-id': [`JTI=${randomUUID()}`] };
    if (t.podName) extra['authentication.kubernetes.io/pod-name'] = [t.podName];
    if (t.podUid) extra['authentication.kubernetes.io/pod-uid'] = [t.podUid];
    if (t.nodeName) extra['authentication.kubernetes.io/node-name'] = [t.nodeName];
    if (t.nodeUid) extra['authentication.kubernetes.io/node-uid'] = [t.nodeUid];
    return {
      ...out,
      status: {
        authenticated: true,
        user: {
          username: `system:serviceaccount:${t.namespace}:${t.serviceAccount}`, uid: randomUUID(),
          groups: ['system:serviceaccounts', `system:serviceaccounts:${t.namespace}`, 'system:authenticated'], extra,
        },
        ...(audiences ? { audiences } : {}),
      },
    };
  }

  private groupList(): Obj {
    const groups = new Map<string, Set<string>>();
    for (const t of this.types.values()) {
      if (!t.group) continue;
      if (!groups.has(t.group)) groups.set(t.group, new Set());
      groups.get(t.group)!.add(t.version);
    }
    return {
      kind: 'APIGroupList', apiVersion: 'v1',
      groups: [...groups].map(([name, versions]) => {
        const vs = [...versions].map((v) => ({ groupVersion: `${name}/${v}`, version: v }));
        return { name, versions: vs, preferredVersion: vs[0] };
      }),
    };
  }

  private resourceList(group: string, version: string, res: ServerResponse): void {
    const resources = [...this.types.values()].filter((t) => t.group === group && t.version === version);
    if (resources.length === 0) return this.status(res, 404, 'NotFound', 'the server could not find the requested resource');
    this.json(res, 200, {
      kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version,
      resources: resources.map((t) => ({
        name: t.plural, singularName: t.kind.toLowerCase(), namespaced: t.namespaced, kind: t.kind,
        verbs: t.verbs ?? ['create', 'delete', 'get', 'list', 'update', 'watch'],
      })),
    });
  }

  private kubeletPods(node: string, res: ServerResponse): void {
    const items = [...(this.objects.get('/pods')?.values() ?? [])].filter((p) => (p.spec as Obj | undefined)?.nodeName === node);
    this.json(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: {}, items });
  }

  private json(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private status(res: ServerResponse, code: number, reason: string, message: string, details?: Obj): void {
    this.json(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code, ...(details ? { details } : {}) });
  }
}

function readBody(req: IncomingMessage): Promise<Obj> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', reject);
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try { resolve(text ? JSON.parse(text) as Obj : {}); } catch (err) { reject(err); }
    });
  });
}

interface Requirement { key: string; op: '=' | '!=' | 'exists' | '!exists'; value: string }

function parseSelector(text: string | undefined): Requirement[] {
  if (!text) return [];
  return text.split(',').filter(Boolean).map((part): Requirement => {
    const ne = part.indexOf('!=');
    if (ne >= 0) return { key: part.slice(0, ne), op: '!=', value: part.slice(ne + 2) };
    const eq = part.indexOf('=');
    if (eq >= 0) return { key: part.slice(0, eq), op: '=', value: part.slice(part[eq + 1] === '=' ? eq + 2 : eq + 1) };
    return part.startsWith('!') ? { key: part.slice(1), op: '!exists', value: '' } : { key: part, op: 'exists', value: '' };
  });
}

function fieldValue(o: KubeObject, path: string): string | undefined {
  let cur: unknown = o;
  for (const p of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Obj)[p];
  }
  return cur === undefined || cur === null ? undefined : String(cur);
}

// --- object builders for tests ---

export function namespaceObject(name: string, labels: Record<string, string> = {}, annotations: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels }, annotations } };
}

export function serviceAccountObject(namespace: string, name: string, annotations: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace, annotations } };
}

export function nodeObject(name: string, opts: { uid?: string; address?: string; podCidr?: string; labels?: Record<string, string> } = {}): KubeObject {
  return {
    apiVersion: 'v1', kind: 'Node',
    metadata: { name, ...(opts.uid ? { uid: opts.uid } : {}), labels: { 'kubernetes.io/hostname': name, ...(opts.labels ?? {}) } },
    spec: { ...(opts.podCidr ? { podCIDR: opts.podCidr, podCIDRs: [opts.podCidr] } : {}) },
    status: { addresses: [{ type: 'Hostname', address: name }, ...(opts.address ? [{ type: 'InternalIP', address: opts.address }] : [])] },
  };
}

export interface PodOptions {
  uid?: string;
  node: string;
  serviceAccount?: string;
  ip?: string;
  labels?: Record<string, string>;
  hostNetwork?: boolean;
  phase?: string;
  containers?: { name: string; image: string; id?: string }[];
}

export function podObject(namespace: string, name: string, o: PodOptions): KubeObject {
  const containers = o.containers ?? [{ name: 'app', image: 'registry.example/app:1.0' }];
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace, ...(o.uid ? { uid: o.uid } : {}), labels: o.labels ?? {} },
    spec: {
      nodeName: o.node, serviceAccountName: o.serviceAccount ?? 'default', ...(o.hostNetwork ? { hostNetwork: true } : {}),
      containers: containers.map((c) => ({ name: c.name, image: c.image })),
    },
    status: {
      phase: o.phase ?? 'Running',
      ...(o.ip ? { podIP: o.ip, podIPs: [{ ip: o.ip }] } : {}),
      containerStatuses: containers.filter((c) => c.id).map((c) => ({
        name: c.name, image: c.image, imageID: `${c.image}@sha256:${'ab'.repeat(32)}`, containerID: `containerd://${c.id}`, ready: true, restartCount: 0,
        started: true, state: { running: { startedAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z') } },
      })),
    },
  };
}
