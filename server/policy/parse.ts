/**
 * CiliumNetworkPolicy-shaped documents → normalised policies. Fields meshid
 * does not enforce are refused with their path (`spec.ingress[0].toFQDNs`),
 * never dropped: a policy that reads stricter than it is enforced is worse
 * than one that does not apply.
 */
import { parseAllDocuments } from 'yaml';
import { InvalidArgument, isK8sName, isLabelKey, isLabelValue, k8sNameRule } from '../../spiffe/index.js';
import { NAMESPACE_LABEL } from '../identity/index.js';
import {
  POLICY_FORMAT,
  type LabelRequirement, type LabelSelector, type NormalisedPolicySpec, type NormalisedRule, type ParsedPolicy,
  type PeerRule, type PolicyKind, type PortProtocol, type PortSpec, type SelectorOperator,
} from './model.js';

/** Larger inputs are refused before YAML parsing. */
export const MAX_POLICY_INPUT_BYTES = 1024 * 1024;

const KINDS: Record<string, { apiVersion: string; namespaced: boolean }> = {
  CiliumNetworkPolicy: { apiVersion: 'cilium.io/v2', namespaced: true },
  CiliumClusterwideNetworkPolicy: { apiVersion: 'cilium.io/v2', namespaced: false },
  AuthPolicy: { apiVersion: 'meshid.io/v1alpha1', namespaced: true },
};

const PEERS_BY_IDENTITY = 'meshid selects peers by security identity only (fromEndpoints/toEndpoints)';
const UNSUPPORTED_RULE_FIELDS: Record<string, string> = {
  fromCIDR: PEERS_BY_IDENTITY, fromCIDRSet: PEERS_BY_IDENTITY, fromEntities: PEERS_BY_IDENTITY,
  fromRequires: PEERS_BY_IDENTITY, fromGroups: PEERS_BY_IDENTITY, fromNodes: PEERS_BY_IDENTITY,
  toCIDR: PEERS_BY_IDENTITY, toCIDRSet: PEERS_BY_IDENTITY, toEntities: PEERS_BY_IDENTITY,
  toRequires: PEERS_BY_IDENTITY, toGroups: PEERS_BY_IDENTITY, toNodes: PEERS_BY_IDENTITY,
  toServices: PEERS_BY_IDENTITY, toFQDNs: PEERS_BY_IDENTITY,
  icmps: 'ICMP type rules are not enforced by the meshid datapath',
};
const UNSUPPORTED_PORT_RULE_FIELDS: Record<string, string> = {
  rules: 'L7 rules are not enforced: meshid enforces L3/L4 only',
  terminatingTLS: 'TLS interception is not supported', originatingTLS: 'TLS interception is not supported',
  serverNames: 'SNI matching is not supported', listener: 'L7 listeners are not supported',
};
const UNSUPPORTED_SPEC_FIELDS: Record<string, string> = {
  nodeSelector: 'host policies are not supported',
  labels: 'rule labels are not supported',
};
const UNSUPPORTED_PROTOCOLS = new Set(['ICMP', 'ICMPv6', 'VRRP', 'IGMP']);

const NAMESPACE_LABELS_PREFIX = 'io.cilium.k8s.namespace.labels.';

type Obj = Record<string, unknown>;

function bad(path: string, problem: string): never {
  throw new InvalidArgument(`${path} ${problem}`, path);
}

function mapping(v: unknown, path: string): Obj {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) bad(path, 'must be a mapping');
  return v as Obj;
}

function list(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) bad(path, 'must be a list');
  return v;
}

function string(v: unknown, path: string): string {
  if (typeof v !== 'string') bad(path, 'must be a string');
  return v;
}

/** Refuses any key outside `known`; `unsupported` gives the reason for the ones meshid knows but does not enforce. */
function onlyKeys(o: Obj, path: string, what: string, known: readonly string[], unsupported: Record<string, string> = {}): void {
  for (const key of Object.keys(o)) {
    if (known.includes(key)) continue;
    const at = `${path}.${key}`;
    const reason = unsupported[key];
    if (reason !== undefined) bad(at, `is not supported: ${reason}`);
    bad(at, `is not a field of ${what}`);
  }
}

/** `k8s:app` and `any:app` are `app`; other sources (reserved:, cidr:, ...) name nothing meshid labels. */
function labelKey(raw: string, path: string): string {
  let key = raw;
  const colon = raw.indexOf(':');
  if (colon >= 0) {
    const source = raw.slice(0, colon);
    if (source !== 'k8s' && source !== 'any') bad(path, `uses label source "${source}:", which is not supported (only k8s: and any:)`);
    key = raw.slice(colon + 1);
  }
  if (!isLabelKey(key)) bad(path, `has an invalid label key "${raw}"`);
  if (key.startsWith(NAMESPACE_LABELS_PREFIX)) bad(path, `selects on namespace labels ("${raw}"), which meshid does not know`);
  return key;
}

function labelValue(v: unknown, path: string): string {
  if (typeof v !== 'string') bad(path, 'must be a string (quote numbers and booleans)');
  if (!isLabelValue(v)) bad(path, `is not a valid label value ("${v}")`);
  return v;
}

const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

function parseSelector(v: unknown, path: string): LabelSelector {
  const o = mapping(v, path);
  onlyKeys(o, path, 'a label selector', ['matchLabels', 'matchExpressions']);
  const requirements: LabelRequirement[] = [];
  if (o.matchLabels !== undefined && o.matchLabels !== null) {
    const labels = mapping(o.matchLabels, `${path}.matchLabels`);
    for (const [k, value] of Object.entries(labels)) {
      const at = `${path}.matchLabels.${k}`;
      requirements.push({ key: labelKey(k, at), operator: 'In', values: [labelValue(value, at)] });
    }
  }
  if (o.matchExpressions !== undefined && o.matchExpressions !== null) {
    list(o.matchExpressions, `${path}.matchExpressions`).forEach((item, i) => {
      const at = `${path}.matchExpressions[${i}]`;
      const e = mapping(item, at);
      onlyKeys(e, at, 'a label selector requirement', ['key', 'operator', 'values']);
      const key = labelKey(string(e.key, `${at}.key`), `${at}.key`);
      const operator = string(e.operator, `${at}.operator`);
      if (!OPERATORS.includes(operator as SelectorOperator)) bad(`${at}.operator`, `must be one of ${OPERATORS.join(', ')} (got "${operator}")`);
      const rawValues = e.values === undefined || e.values === null ? [] : list(e.values, `${at}.values`);
      const values = rawValues.map((x, j) => labelValue(x, `${at}.values[${j}]`));
      if ((operator === 'In' || operator === 'NotIn') && values.length === 0) bad(`${at}.values`, `must not be empty for ${operator}`);
      if ((operator === 'Exists' || operator === 'DoesNotExist') && values.length > 0) bad(`${at}.values`, `must be empty for ${operator}`);
      requirements.push({ key, operator: operator as SelectorOperator, values: [...new Set(values)].sort() });
    });
  }
  return { requirements: sortRequirements(requirements) };
}

function sortRequirements(rs: LabelRequirement[]): LabelRequirement[] {
  const text = (r: LabelRequirement): string => `${r.key}\u0000${r.operator}\u0000${r.values.join('\u0000')}`;
  const unique = new Map(rs.map((r) => [text(r), r]));
  return [...unique.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r);
}

/** In a namespaced policy, a selector that does not name the namespace selects in the policy's namespace only. */
function restrictToNamespace(sel: LabelSelector, namespace: string | undefined, force: boolean): LabelSelector {
  if (namespace === undefined) return sel;
  if (!force && sel.requirements.some((r) => r.key === NAMESPACE_LABEL)) return sel;
  return { requirements: sortRequirements([...sel.requirements, { key: NAMESPACE_LABEL, operator: 'In', values: [namespace] }]) };
}

function parsePort(v: unknown, path: string): number {
  if (v === undefined || v === null) return 0;
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string') {
    if (/^\d+-\d+$/.test(v)) bad(path, `must be one port number; port ranges ("${v}") are not supported`);
    if (!/^\d+$/.test(v)) bad(path, `must be a port number; named ports ("${v}") are not supported`);
    n = Number(v);
  } else bad(path, 'must be a port number');
  if (!Number.isInteger(n) || n < 0 || n > 65535) bad(path, `must be an integer in [0, 65535] (got ${String(v)})`);
  return n;
}

function parseProtocol(v: unknown, path: string): PortProtocol[] {
  if (v === undefined || v === null) return ['TCP', 'UDP', 'SCTP'];
  const p = string(v, path);
  if (p === 'ANY') return ['TCP', 'UDP', 'SCTP'];
  if (p === 'TCP' || p === 'UDP' || p === 'SCTP') return [p];
  if (UNSUPPORTED_PROTOCOLS.has(p)) bad(path, `is not supported: protocol ${p}`);
  bad(path, `must be one of TCP, UDP, SCTP, ANY (got "${p}")`);
}

function parseToPorts(v: unknown, path: string): 'all' | PortSpec[] {
  const rules = list(v, path);
  if (rules.length === 0) return 'all';
  const specs = new Map<string, PortSpec>();
  rules.forEach((item, i) => {
    const at = `${path}[${i}]`;
    const rule = mapping(item, at);
    onlyKeys(rule, at, 'a port rule', ['ports'], UNSUPPORTED_PORT_RULE_FIELDS);
    const ports = rule.ports === undefined || rule.ports === null ? [] : list(rule.ports, `${at}.ports`);
    if (ports.length === 0) bad(`${at}.ports`, 'must list at least one port');
    ports.forEach((p, j) => {
      const pat = `${at}.ports[${j}]`;
      const po = mapping(p, pat);
      onlyKeys(po, pat, 'a port', ['port', 'protocol'], { endPort: 'port ranges are not supported; list each port' });
      const port = parsePort(po.port, `${pat}.port`);
      for (const protocol of parseProtocol(po.protocol, `${pat}.protocol`)) specs.set(`${protocol}/${port}`, { port, protocol });
    });
  });
  const order: Record<PortProtocol, number> = { TCP: 0, UDP: 1, SCTP: 2 };
  return [...specs.values()].sort((a, b) => order[a.protocol] - order[b.protocol] || a.port - b.port);
}

function parseAuthentication(v: unknown, path: string): boolean {
  if (v === undefined || v === null) return false;
  const o = mapping(v, path);
  onlyKeys(o, path, 'authentication', ['mode']);
  const mode = string(o.mode, `${path}.mode`);
  if (mode === 'required') return true;
  if (mode === 'disabled') return false;
  bad(`${path}.mode`, `must be required or disabled (got "${mode}")`);
}

type Section = 'ingress' | 'ingressDeny' | 'egress' | 'egressDeny';

function parsePeerRule(v: unknown, path: string, section: Section, namespace: string | undefined): PeerRule {
  const o = mapping(v, path);
  const peerField = section.startsWith('ingress') ? 'fromEndpoints' : 'toEndpoints';
  const isDeny = section.endsWith('Deny');
  const known = isDeny ? [peerField, 'toPorts'] : [peerField, 'toPorts', 'authentication'];
  const unsupported = isDeny ? { ...UNSUPPORTED_RULE_FIELDS, authentication: 'deny rules cannot require authentication' } : UNSUPPORTED_RULE_FIELDS;
  onlyKeys(o, path, `an ${section} rule`, known, unsupported);
  const rawPeers = o[peerField] === undefined || o[peerField] === null ? [] : list(o[peerField], `${path}.${peerField}`);
  const selectors = rawPeers.map((s, i) => restrictToNamespace(parseSelector(s, `${path}.${peerField}[${i}]`), namespace, false));
  const ports = o.toPorts === undefined || o.toPorts === null ? 'all' : parseToPorts(o.toPorts, `${path}.toPorts`);
  // Cilium: no L3 selector but ports is an L4-only rule for every peer; neither is a rule that allows nothing.
  const l4Only = selectors.length === 0 && ports !== 'all';
  return { peers: l4Only ? 'all' : selectors, ports, auth: isDeny ? false : parseAuthentication(o.authentication, `${path}.authentication`) };
}

function parseDefaultDeny(v: unknown, path: string): { ingress: boolean; egress: boolean } {
  if (v === undefined || v === null) return { ingress: true, egress: true };
  const o = mapping(v, path);
  onlyKeys(o, path, 'enableDefaultDeny', ['ingress', 'egress']);
  const flag = (x: unknown, at: string): boolean => {
    if (x === undefined || x === null) return true;
    if (typeof x !== 'boolean') bad(at, 'must be true or false');
    return x;
  };
  return { ingress: flag(o.ingress, `${path}.ingress`), egress: flag(o.egress, `${path}.egress`) };
}

function parseRule(v: unknown, path: string, namespace: string | undefined): NormalisedRule {
  const o = mapping(v, path);
  onlyKeys(o, path, 'a policy rule',
    ['endpointSelector', 'ingress', 'ingressDeny', 'egress', 'egressDeny', 'description', 'enableDefaultDeny'], UNSUPPORTED_SPEC_FIELDS);
  if (o.endpointSelector === undefined || o.endpointSelector === null) bad(`${path}.endpointSelector`, 'is required');
  const rule: NormalisedRule = {
    subject: restrictToNamespace(parseSelector(o.endpointSelector, `${path}.endpointSelector`), namespace, true),
    defaultDeny: parseDefaultDeny(o.enableDefaultDeny, `${path}.enableDefaultDeny`),
  };
  if (o.description !== undefined && o.description !== null) rule.description = string(o.description, `${path}.description`);
  for (const section of ['ingress', 'ingressDeny', 'egress', 'egressDeny'] as const) {
    if (o[section] === undefined || o[section] === null) continue;
    const items = list(o[section], `${path}.${section}`).map((x, i) => parsePeerRule(x, `${path}.${section}[${i}]`, section, namespace));
    // As in Cilium, an empty section is no section: it neither selects nor allows.
    if (items.length > 0) rule[section] = items;
  }
  return rule;
}

/** One Kubernetes-style object (already decoded from YAML or JSON) → a normalised policy. */
export function parsePolicyObject(doc: unknown): ParsedPolicy {
  const o = mapping(doc, 'document');
  onlyKeys(o, 'document', 'a policy document', ['apiVersion', 'kind', 'metadata', 'spec', 'specs']);
  const kind = string(o.kind, 'kind');
  const known = KINDS[kind];
  if (!known) bad('kind', `must be one of ${Object.keys(KINDS).join(', ')} (got "${kind}")`);
  const apiVersion = string(o.apiVersion, 'apiVersion');
  if (apiVersion !== known.apiVersion) bad('apiVersion', `must be ${known.apiVersion} for ${kind} (got "${apiVersion}")`);
  // Other metadata (labels, annotations, uid, ...) is object bookkeeping with no effect on enforcement.
  const meta = mapping(o.metadata, 'metadata');
  const name = string(meta.name, 'metadata.name');
  if (!isK8sName('policy', name)) bad('metadata.name', `must be ${k8sNameRule('policy')} (got "${name}")`);
  let namespace = '';
  if (known.namespaced) {
    namespace = meta.namespace === undefined || meta.namespace === null ? 'default' : string(meta.namespace, 'metadata.namespace');
    if (!isK8sName('namespace', namespace)) bad('metadata.namespace', `must be ${k8sNameRule('namespace')} (got "${namespace}")`);
  } else if (meta.namespace !== undefined && meta.namespace !== null) {
    bad('metadata.namespace', `must not be set: a ${kind} is cluster-wide`);
  }
  const scope = known.namespaced ? namespace : undefined;
  const rules: NormalisedRule[] = [];
  if (o.spec !== undefined && o.spec !== null) rules.push(parseRule(o.spec, 'spec', scope));
  if (o.specs !== undefined && o.specs !== null) {
    list(o.specs, 'specs').forEach((r, i) => rules.push(parseRule(r, `specs[${i}]`, scope)));
  }
  if (rules.length === 0) bad('spec', 'is required (or a non-empty specs list)');
  const spec: NormalisedPolicySpec = { format: POLICY_FORMAT, rules };
  return { namespace, name, kind: kind as PolicyKind, spec };
}

/**
 * Parses one or many YAML documents (separated by `---`; JSON is YAML too).
 * Empty documents are skipped; every other one must be a supported policy, or
 * the whole input is refused with an InvalidArgument naming the document and
 * the field.
 */
export function parsePolicyDocuments(yamlText: string): ParsedPolicy[] {
  if (Buffer.byteLength(yamlText, 'utf8') > MAX_POLICY_INPUT_BYTES) {
    throw new InvalidArgument(`policy input is larger than ${MAX_POLICY_INPUT_BYTES} bytes`, 'policy');
  }
  const out: ParsedPolicy[] = [];
  const seen = new Map<string, number>();
  parseAllDocuments(yamlText, { uniqueKeys: true }).forEach((doc, i) => {
    const where = `document ${i + 1}`;
    const yamlError = doc.errors[0];
    if (yamlError) throw new InvalidArgument(`${where}: invalid YAML: ${yamlError.message}`, 'yaml');
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      throw new InvalidArgument(`${where}: invalid YAML: ${(err as Error).message}`, 'yaml');
    }
    if (value === null || value === undefined) return;
    let parsed: ParsedPolicy;
    try {
      parsed = parsePolicyObject(value);
    } catch (err) {
      if (!(err instanceof InvalidArgument)) throw err;
      const name = describe(value);
      throw new InvalidArgument(`${where}${name ? ` (${name})` : ''}: ${err.message}`, err.field);
    }
    const id = `${parsed.namespace}/${parsed.name}`;
    const first = seen.get(id);
    if (first !== undefined) {
      throw new InvalidArgument(`${where}: policy ${id} is also document ${first}`, 'metadata.name');
    }
    seen.set(id, i + 1);
    out.push(parsed);
  });
  if (out.length === 0) throw new InvalidArgument('no policy documents in the input', 'policy');
  return out;
}

/** `kind ns/name` of a document that failed, as far as it can be read. */
function describe(value: unknown): string {
  if (value === null || typeof value !== 'object') return '';
  const o = value as Obj;
  const meta = (o.metadata !== null && typeof o.metadata === 'object' ? o.metadata : {}) as Obj;
  const name = typeof meta.name === 'string' ? meta.name : undefined;
  if (!name) return '';
  const ns = typeof meta.namespace === 'string' ? `${meta.namespace}/` : '';
  return `${typeof o.kind === 'string' ? `${o.kind} ` : ''}${ns}${name}`;
}
