import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import * as core from 'kubernetes-models/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as rbac from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import * as apiext from 'kubernetes-models/apiextensions.k8s.io/v1';
import * as policy from 'kubernetes-models/policy/v1';
import { packageRoot } from '../../../api/assets.js';
import { agentConfigSchema } from '../../../agent/config.js';
import { kubernetesAgentConfigSchema } from '../../../agent/workloadattestor/k8s.js';
import { serverConfigSchema } from '../../../server/config.js';
import { kubernetesConfigSchema } from '../../../server/k8s/index.js';
import { parsePolicyObject } from '../../../server/policy/index.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const root = join(packageRoot, 'deploy', 'kubernetes');

function render(dir: string): Obj[] {
  const r = spawnSync('kubectl', ['kustomize', join(root, dir)], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${r.stderr || r.error}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj).filter(Boolean);
}

/** The kubernetes-models class of a built-in kind (offline OpenAPI schema validation). */
const MODELS: Record<string, new (o: any) => { validate(): void }> = { // eslint-disable-line @typescript-eslint/no-explicit-any
  'v1/Namespace': core.Namespace, 'v1/ServiceAccount': core.ServiceAccount, 'v1/ConfigMap': core.ConfigMap, 'v1/Service': core.Service,
  'apps/v1/StatefulSet': apps.StatefulSet, 'apps/v1/DaemonSet': apps.DaemonSet, 'apps/v1/Deployment': apps.Deployment,
  'policy/v1/PodDisruptionBudget': policy.PodDisruptionBudget,
  'rbac.authorization.k8s.io/v1/ClusterRole': rbac.ClusterRole, 'rbac.authorization.k8s.io/v1/ClusterRoleBinding': rbac.ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': rbac.Role, 'rbac.authorization.k8s.io/v1/RoleBinding': rbac.RoleBinding,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': apiext.CustomResourceDefinition,
};

/** Paths present in `a` but not in `b` (fields the typed model does not know: typos, wrong nesting). */
function droppedPaths(a: unknown, b: unknown, path = ''): string[] {
  if (a === null || typeof a !== 'object') return [];
  if (b === null || typeof b !== 'object') return [path || '/'];
  if (Array.isArray(a)) return a.flatMap((v, i) => droppedPaths(v, (b as unknown[])[i], `${path}[${i}]`));
  return Object.entries(a as Obj).flatMap(([k, v]) => (k in (b as Obj) ? droppedPaths(v, (b as Obj)[k], `${path}.${k}`) : [`${path}.${k}`]));
}

/** Strict validation as `kubectl apply --validate=strict` does it: schema, then no unknown fields. */
function validateBuiltin(t: Test, o: Obj): void {
  const key = `${o.apiVersion}/${o.kind}`;
  const Model = MODELS[key];
  if (!Model) { t.fail(`${key} ${o.metadata?.name}: no model to validate against`); return; }
  t.doesNotThrow(() => new Model(o).validate(), `${key} ${o.metadata.name} is valid against the Kubernetes OpenAPI schema`);
  const typeName = `V1${o.kind}`;
  const roundTrip = ObjectSerializer.serialize(ObjectSerializer.deserialize(JSON.parse(JSON.stringify(o)), typeName, ''), typeName, '');
  t.same(droppedPaths(o, roundTrip), [], `${key} ${o.metadata.name} has no unknown fields`);
}

/** The ServiceMonitor CRD is not at hand offline: check the fields the Prometheus Operator needs, and no others. */
function validateServiceMonitor(t: Test, o: Obj): void {
  t.equal(o.apiVersion, 'monitoring.coreos.com/v1');
  t.same(Object.keys(o).sort(), ['apiVersion', 'kind', 'metadata', 'spec']);
  t.same(Object.keys(o.spec).sort(), ['endpoints', 'namespaceSelector', 'selector']);
  t.ok(Array.isArray(o.spec.endpoints) && o.spec.endpoints.length > 0, 'ServiceMonitor has endpoints');
  for (const e of o.spec.endpoints) {
    for (const k of Object.keys(e)) t.ok(['port', 'path', 'interval', 'scrapeTimeout', 'relabelings', 'scheme'].includes(k), `ServiceMonitor endpoint field ${k} is known`);
    t.match(e.interval, /^\d+[smh]$/);
  }
}

/** A structural-schema validator for the subset the AuthPolicy CRD uses; unknown fields fail (strict field validation). */
function schemaErrors(schema: Obj, v: unknown, path = ''): string[] {
  if (schema['x-kubernetes-int-or-string']) return Number.isInteger(v) || typeof v === 'string' ? [] : [`${path}: must be an integer or a string`];
  switch (schema.type) {
    case 'string':
      if (typeof v !== 'string') return [`${path}: must be a string`];
      if (schema.enum && !schema.enum.includes(v)) return [`${path}: must be one of ${schema.enum.join(', ')}`];
      if (schema.maxLength !== undefined && v.length > schema.maxLength) return [`${path}: too long`];
      return [];
    case 'boolean': return typeof v === 'boolean' ? [] : [`${path}: must be a boolean`];
    case 'integer': return Number.isInteger(v) ? [] : [`${path}: must be an integer`];
    case 'array':
      if (!Array.isArray(v)) return [`${path}: must be an array`];
      if (schema.minItems !== undefined && v.length < schema.minItems) return [`${path}: needs ${schema.minItems} items`];
      return v.flatMap((x, i) => schemaErrors(schema.items, x, `${path}[${i}]`));
    case 'object': {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return [`${path}: must be an object`];
      const errs: string[] = (schema.required ?? []).filter((r: string) => !(r in (v as Obj))).map((r: string) => `${path}.${r}: required`);
      for (const [k, x] of Object.entries(v as Obj)) {
        const sub = schema.properties?.[k] ?? schema.additionalProperties;
        if (sub) errs.push(...schemaErrors(sub, x, `${path}.${k}`));
        else if (schema.properties) errs.push(`${path}.${k}: unknown field`);
      }
      return errs;
    }
    default: return [`${path}: schema without a type`];
  }
}

/** Kubernetes' structural schema rules that bite most: a type everywhere, no $ref. */
function structuralProblems(schema: Obj, path = ''): string[] {
  const out: string[] = [];
  if ('$ref' in schema) out.push(`${path}: $ref is not allowed`);
  if (!schema.type && !schema['x-kubernetes-int-or-string'] && !schema['x-kubernetes-preserve-unknown-fields']) out.push(`${path}: no type`);
  for (const [k, sub] of Object.entries(schema.properties ?? {})) out.push(...structuralProblems(sub as Obj, `${path}.${k}`));
  if (schema.items) out.push(...structuralProblems(schema.items, `${path}[]`));
  if (typeof schema.additionalProperties === 'object') out.push(...structuralProblems(schema.additionalProperties, `${path}{}`));
  return out;
}

const find = (objs: Obj[], kind: string, name: string): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o;
};
const findPrefix = (objs: Obj[], kind: string, prefix: string): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name.startsWith(prefix));
  if (!o) throw new Error(`no ${kind} ${prefix}*`);
  return o;
};

for (const overlay of ['overlays/dev', 'overlays/production']) {
  t.test(`${overlay}: kubectl kustomize renders objects that are valid against the Kubernetes OpenAPI schemas, with no unknown fields`, async (t) => {
    const objs = render(overlay);
    t.ok(objs.length >= 15);
    for (const o of objs) {
      if (o.kind === 'ServiceMonitor') validateServiceMonitor(t, o);
      else validateBuiltin(t, o);
    }
    const monitors = objs.filter((o) => o.kind === 'ServiceMonitor');
    t.equal(monitors.length, overlay.endsWith('production') ? 1 : 0, 'the ServiceMonitor only where the Prometheus Operator is expected');
    for (const o of objs) if (o.kind !== 'Namespace' && o.kind !== 'CustomResourceDefinition' && !o.kind.startsWith('Cluster')) t.equal(o.metadata.namespace, 'meshid', `${o.kind} ${o.metadata.name} is in meshid`);
  });

  t.test(`${overlay}: the configs parse with meshid's own schemas and agree with the manifests (cluster, audience, token path, bundle, Lease, data dir, ports)`, async (t) => {
    const objs = render(overlay);
    const ns = 'meshid';
    const serverYaml = parseYaml(findPrefix(objs, 'ConfigMap', 'meshid-server-').data['server.yaml']) as Obj;
    const agentYaml = parseYaml(findPrefix(objs, 'ConfigMap', 'meshid-agent-').data['agent.yaml']) as Obj;
    const { kubernetes: serverK8sRaw, ...serverRest } = serverYaml;
    const { kubernetes: agentK8sRaw, ...agentRest } = agentYaml;
    const server = serverConfigSchema.parse(serverRest);
    const serverK8s = kubernetesConfigSchema.parse(serverK8sRaw);
    const agent = agentConfigSchema.parse({ ...agentRest, node_name: 'n', health: '127.0.0.1:8082' });
    const agentK8s = kubernetesAgentConfigSchema.parse(agentK8sRaw);
    t.equal(serverK8s.enabled && agentK8s.enabled, true);
    t.equal(agentK8s.cluster, serverK8s.cluster, 'agent and server name the same cluster');
    t.equal(agent.trust_domain.name, server.trust_domain.name);
    t.equal(serverK8s.cluster, overlay.endsWith('dev') ? 'dev' : 'production');

    const ds = find(objs, 'DaemonSet', 'meshid-agent');
    const pod = ds.spec.template.spec;
    const c = pod.containers[0];
    const volume = (name: string): Obj => pod.volumes.find((v: Obj) => v.name === name);
    const mountOf = (name: string): Obj => c.volumeMounts.find((m: Obj) => m.name === name);
    const token = pod.volumes.flatMap((v: Obj) => v.projected?.sources ?? []).find((s: Obj) => s.serviceAccountToken)?.serviceAccountToken;
    const tokenVolume = pod.volumes.find((v: Obj) => v.projected?.sources?.some((s: Obj) => s.serviceAccountToken));
    t.equal(token.audience, serverK8s.psat_audience, 'the projected token carries the server\'s audience');
    t.equal(`${mountOf(tokenVolume.name).mountPath}/${token.path}`, agentK8s.token_path, 'the agent reads the token where it is mounted');
    t.ok(token.expirationSeconds >= 600);
    t.ok(serverK8s.allowed_agent_service_accounts.includes(`${ns}:${pod.serviceAccountName}`), 'the agent\'s ServiceAccount may attest');
    t.equal(volume('bundle').configMap.name, serverK8s.bundle_configmap.name, 'agents mount the ConfigMap the server publishes');
    t.equal(serverK8s.bundle_configmap.namespace, ns);
    t.equal(agent.trust_bundle, `${mountOf('bundle').mountPath}/bundle.spiffe`);
    t.equal(mountOf('run-meshid').mountPath, '/run/meshid');
    t.ok(agent.socket.startsWith('/run/meshid/'), 'the Workload API socket is on the shared host path');
    t.equal(agent.datapath.pin_dir.startsWith(mountOf('bpffs').mountPath), true, 'BPF maps are pinned on the host\'s bpffs');
    t.equal(mountOf('data').mountPath, agent.data_dir);
    t.match(agent.server, new RegExp(`^meshid-server\\.${ns}\\.svc:\\d+$`));
    const svc = find(objs, 'Service', 'meshid-server');
    t.equal(Number(agent.server.split(':')[1]), svc.spec.ports.find((p: Obj) => p.name === 'agent-api').port, 'agents dial the Service\'s agent API port');

    const sts = find(objs, 'StatefulSet', 'meshid-server');
    const sc = sts.spec.template.spec.containers[0];
    t.equal(sc.volumeMounts.find((m: Obj) => m.name === 'data').mountPath, server.data_dir, 'the datastore lives on the PVC');
    t.equal(sts.spec.volumeClaimTemplates[0].metadata.name, 'data');
    t.equal(sts.spec.replicas, 1, 'one server on SQLite');
    t.equal(sc.ports.find((p: Obj) => p.name === 'agent-api').containerPort, Number(server.bind.split(':')[1]));
    t.equal(sc.ports.find((p: Obj) => p.name === 'admin').containerPort, Number(server.admin.split(':')[1]));
    t.equal(serverK8s.leader_election.namespace, ns);
    const role = find(objs, 'Role', 'meshid-server');
    const named = role.rules.flatMap((r: Obj) => r.resourceNames ?? []);
    t.ok(named.includes(serverK8s.leader_election.lease_name) && named.includes(serverK8s.bundle_configmap.name), 'the Role names the Lease and the ConfigMap');
  });

  t.test(`${overlay}: RBAC is least privilege, the agent runs with named capabilities only, and Services select their pods`, async (t) => {
    const objs = render(overlay);
    for (const o of objs.filter((x) => x.kind === 'ClusterRole' || x.kind === 'Role')) {
      for (const r of o.rules) {
        for (const f of ['apiGroups', 'resources', 'verbs']) t.notOk(r[f].includes('*'), `${o.kind} ${o.metadata.name} has no wildcard ${f}`);
        t.notOk(r.resources.includes('secrets'), 'no access to Secrets');
      }
    }
    const rules = (o: Obj): string[] => o.rules.flatMap((r: Obj) => r.apiGroups.flatMap((g: string) => r.resources.flatMap((res: string) => r.verbs.map((v: string) =>
      `${g || 'core'}/${res}${r.resourceNames ? `(${r.resourceNames.join(',')})` : ''}:${v}`)))).sort();
    t.same(rules(find(objs, 'ClusterRole', 'meshid-server')), [
      'authentication.k8s.io/tokenreviews:create',
      ...['ciliumclusterwidenetworkpolicies', 'ciliumnetworkpolicies'].flatMap((r) => ['get', 'list', 'watch'].map((v) => `cilium.io/${r}:${v}`)),
      ...['namespaces', 'nodes', 'pods', 'serviceaccounts'].flatMap((r) => ['get', 'list', 'watch'].map((v) => `core/${r}:${v}`)),
      ...['get', 'list', 'watch'].map((v) => `meshid.io/authpolicies:${v}`),
    ].sort());
    t.same(rules(find(objs, 'Role', 'meshid-server')), [
      'coordination.k8s.io/leases(meshid-server-controller):get', 'coordination.k8s.io/leases(meshid-server-controller):update', 'coordination.k8s.io/leases:create',
      'core/configmaps(meshid-bundle):get', 'core/configmaps(meshid-bundle):update', 'core/configmaps:create',
    ].sort());
    t.same(rules(find(objs, 'ClusterRole', 'meshid-agent')), ['core/pods:get', 'core/pods:list', 'core/pods:watch']);
    for (const b of objs.filter((x) => x.kind === 'ClusterRoleBinding' || x.kind === 'RoleBinding')) {
      for (const s of b.subjects) {
        t.equal(s.namespace, 'meshid', `${b.kind} ${b.metadata.name} binds a ServiceAccount of meshid`);
        t.ok(objs.some((o) => o.kind === 'ServiceAccount' && o.metadata.name === s.name), `${s.name} exists`);
      }
      t.ok(objs.some((o) => o.kind === b.roleRef.kind && o.metadata.name === b.roleRef.name), `${b.metadata.name}'s role exists`);
    }

    const ds = find(objs, 'DaemonSet', 'meshid-agent');
    const pod = ds.spec.template.spec;
    const sc = pod.containers[0].securityContext;
    t.equal(pod.hostNetwork, true);
    t.equal(pod.hostPID, true);
    t.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet', 'the agent resolves the server\'s Service from the host network');
    t.not(sc.privileged, true, 'not privileged');
    t.same(sc.capabilities.drop, ['ALL']);
    t.ok(sc.capabilities.add.every((cap: string) => ['BPF', 'PERFMON', 'NET_ADMIN', 'SYS_PTRACE'].includes(cap)), `only named capabilities: ${sc.capabilities.add.join(', ')}`);
    t.notOk(sc.capabilities.add.includes('SYS_ADMIN'), 'no CAP_SYS_ADMIN');
    t.ok(['BPF', 'NET_ADMIN', 'PERFMON'].every((cap) => sc.capabilities.add.includes(cap)));
    const hostPaths = pod.volumes.filter((v: Obj) => v.hostPath).map((v: Obj) => v.hostPath.path).sort();
    t.same(hostPaths, ['/run/meshid', '/sys/fs/bpf', '/var/lib/meshid/agent']);
    t.ok(pod.tolerations.some((x: Obj) => x.operator === 'Exists' && !x.key), 'runs on every node, tainted ones too');
    const server = find(objs, 'StatefulSet', 'meshid-server').spec.template.spec;
    t.equal(server.securityContext.runAsNonRoot, true, 'the server runs as non-root');
    t.same(server.containers[0].securityContext.capabilities.drop, ['ALL']);

    for (const svc of objs.filter((o) => o.kind === 'Service')) {
      const workload = objs.find((o) => (o.kind === 'StatefulSet' || o.kind === 'DaemonSet') &&
        Object.entries(svc.spec.selector).every(([k, v]) => o.spec.template.metadata.labels[k] === v));
      if (!workload) { t.fail(`Service ${svc.metadata.name} selects no workload`); continue; }
      const names = workload.spec.template.spec.containers.flatMap((c: Obj) => c.ports.map((p: Obj) => p.name));
      for (const p of svc.spec.ports) t.ok(names.includes(p.targetPort), `Service ${svc.metadata.name} port ${p.name} targets a named container port`);
    }
    for (const m of objs.filter((o) => o.kind === 'ServiceMonitor')) {
      const selected = objs.filter((o) => o.kind === 'Service' && m.spec.selector.matchExpressions.every((e: Obj) => e.values.includes(o.metadata.labels?.[e.key])));
      t.same(selected.map((s) => s.metadata.name).sort(), ['meshid-agent-metrics', 'meshid-server-metrics'], 'the ServiceMonitor selects both metrics Services');
      for (const s of selected) t.ok(s.spec.ports.some((p: Obj) => p.name === m.spec.endpoints[0].port), `${s.metadata.name} has the scraped port`);
      t.same(m.spec.namespaceSelector.matchNames, ['meshid']);
    }
  });
}

t.test('the AuthPolicy CRD has a structural schema that admits what server/policy accepts and refuses what it does not enforce', async (t) => {
  const crd = find(render('base'), 'CustomResourceDefinition', 'authpolicies.meshid.io');
  t.equal(crd.spec.group, 'meshid.io');
  t.equal(crd.spec.names.kind, 'AuthPolicy');
  t.equal(crd.spec.scope, 'Namespaced');
  const version = crd.spec.versions.find((v: Obj) => v.name === 'v1alpha1');
  t.ok(version.served && version.storage);
  const schema = version.schema.openAPIV3Schema;
  t.same(structuralProblems(schema), [], 'structural: a type at every level, no $ref');
  const policy = (spec: Obj): Obj => ({ apiVersion: 'meshid.io/v1alpha1', kind: 'AuthPolicy', metadata: { name: 'p', namespace: 'shop' }, spec });
  const accepted = [
    { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { 'k8s:app': 'web' } }], toPorts: [{ ports: [{ port: '5432', protocol: 'TCP' }] }], authentication: { mode: 'required' } }] },
    { endpointSelector: {}, ingress: [{ fromEndpoints: [{}], authentication: { mode: 'required' } }], egress: [{ toEndpoints: [{ matchExpressions: [{ key: 'tier', operator: 'In', values: ['back'] }] }], toPorts: [{ ports: [{ port: 443 }] }] }] },
    { endpointSelector: { matchLabels: { app: 'x' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: 'bad' } }] }], egressDeny: [{ toPorts: [{ ports: [{ port: 25, protocol: 'ANY' }] }] }], enableDefaultDeny: { egress: false }, description: 'd' },
  ];
  for (const spec of accepted) {
    t.doesNotThrow(() => parsePolicyObject(policy(spec)), 'server/policy accepts it');
    t.same(schemaErrors(schema, policy(spec)), [], 'and so does the CRD schema');
  }
  const specs = { apiVersion: 'meshid.io/v1alpha1', kind: 'AuthPolicy', metadata: { name: 'p' }, specs: accepted };
  t.same(schemaErrors(schema, specs), [], 'a list of rules under specs');
  const refused: [Obj, RegExp][] = [
    [{ endpointSelector: {}, ingress: [{ toFQDNs: [{ matchName: 'example.com' }] }] }, /toFQDNs: unknown field/],
    [{ endpointSelector: {}, ingress: [{ fromEndpoints: [{}], toPorts: [{ ports: [{ port: 80 }], rules: { http: [{}] } }] }] }, /rules: unknown field/],
    [{ endpointSelector: {}, ingress: [{ fromEndpoints: [{}], authentication: { mode: 'sometimes' } }] }, /mode: must be one of required, disabled/],
    [{ endpointSelector: {}, ingressDeny: [{ fromEndpoints: [{}], authentication: { mode: 'required' } }] }, /authentication: unknown field/],
    [{ ingress: [] }, /endpointSelector: required/],
  ];
  for (const [spec, why] of refused) {
    t.throws(() => parsePolicyObject(policy(spec)), 'server/policy refuses it');
    t.match(schemaErrors(schema, policy(spec)).join('; '), why, 'and the CRD schema refuses it too');
  }
});

t.test('overlays/ha: three stateless servers on PostgreSQL, a disruption budget, agents on the headless Service; valid objects', async (t) => {
  const objs = render('overlays/ha');
  for (const o of objs) {
    if (o.kind === 'ServiceMonitor') validateServiceMonitor(t, o);
    else validateBuiltin(t, o);
  }
  t.notOk(objs.some((o) => o.kind === 'StatefulSet'), 'no StatefulSet (and so no PVC)');
  const dep = find(objs, 'Deployment', 'meshid-server');
  t.equal(dep.spec.replicas, 3);
  const pod = dep.spec.template.spec;
  t.ok(pod.volumes.find((v: Obj) => v.name === 'data').emptyDir, 'the data dir is an emptyDir');
  const serverYaml = parseYaml(findPrefix(objs, 'ConfigMap', 'meshid-server-').data['server.yaml']) as Obj;
  const { kubernetes: serverK8sRaw, ...serverRest } = serverYaml;
  const server = serverConfigSchema.parse(serverRest);
  kubernetesConfigSchema.parse(serverK8sRaw);
  t.match(server.datastore.url ?? '', /^postgres:\/\/[^:@]+@/, 'a PostgreSQL URL with no password in it');
  t.equal(server.key_manager, 'memory');
  const mountOf = (name: string): Obj => pod.containers[0].volumeMounts.find((m: Obj) => m.name === name);
  const secretVolume = (path: string): Obj => {
    const m = pod.containers[0].volumeMounts.find((x: Obj) => path.startsWith(`${x.mountPath}/`));
    return pod.volumes.find((v: Obj) => v.name === m?.name);
  };
  t.equal(secretVolume(server.datastore.password_file!)?.secret?.secretName, 'meshid-datastore', 'the password file comes from the meshid-datastore Secret');
  t.equal(secretVolume(server.admin_token_file!)?.secret?.secretName, 'meshid-admin', 'one admin token for every replica, from a Secret');
  t.equal(mountOf('data').mountPath, server.data_dir);
  const pdb = find(objs, 'PodDisruptionBudget', 'meshid-server');
  t.equal(pdb.spec.minAvailable, 2);
  t.same(pdb.spec.selector.matchLabels, { 'app.kubernetes.io/name': dep.spec.template.metadata.labels['app.kubernetes.io/name'] }, 'the budget covers the server pods');
  const agentYaml = parseYaml(findPrefix(objs, 'ConfigMap', 'meshid-agent-').data['agent.yaml']) as Obj;
  const { kubernetes: agentK8sRaw, ...agentRest } = agentYaml;
  const agent = agentConfigSchema.parse({ ...agentRest, node_name: 'n', health: '127.0.0.1:8082' });
  kubernetesAgentConfigSchema.parse(agentK8sRaw);
  const headless = find(objs, 'Service', 'meshid-server-headless');
  t.equal(headless.spec.clusterIP, 'None');
  t.equal(agent.server, `meshid-server-headless.meshid.svc:${headless.spec.ports[0].port}`, 'agents resolve every server pod through the headless Service');
  t.ok(agent.availability_target > 0 && agent.availability_target < server.x509_svid_ttl, 'availability_target is shorter than the SVID lifetime');
  for (const svc of objs.filter((o) => o.kind === 'Service' && o.metadata.name.startsWith('meshid-server'))) {
    t.ok(Object.entries(svc.spec.selector).every(([k, v]) => dep.spec.template.metadata.labels[k] === v), `Service ${svc.metadata.name} selects the Deployment's pods`);
  }
});
