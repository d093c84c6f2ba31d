/**
 * Kubernetes object-name rules, in one place. They live in the SPIFFE core
 * because the core checks the values of `k8s:ns:` and `k8s:sa:` selectors;
 * every other part of meshid that takes a Kubernetes name asks here.
 *
 * Kubernetes (apimachinery's validation) names namespaces with a DNS-1123
 * label and ServiceAccounts, nodes, pods, ConfigMaps, Leases and most other
 * objects with a DNS-1123 subdomain. Label values have their own rule.
 */

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** A DNS-1123 label: 1-63 lowercase letters, digits and inner "-". */
export const isDnsLabel = (s: string): boolean => typeof s === 'string' && DNS_LABEL.test(s);

/** A DNS-1123 subdomain: at most 253 characters, DNS-1123 labels joined by ".". */
export function isDnsSubdomain(s: string): boolean {
  if (typeof s !== 'string' || s.length === 0 || s.length > 253) return false;
  for (const label of s.split('.')) if (!DNS_LABEL.test(label)) return false;
  return true;
}

/** The objects meshid names, each with the rule Kubernetes applies to its name. */
export type K8sKind = 'namespace' | 'serviceaccount' | 'node' | 'pod' | 'configmap' | 'lease' | 'policy';

const KINDS: Record<K8sKind, { noun: string; label: boolean }> = {
  namespace: { noun: 'namespace', label: true },
  serviceaccount: { noun: 'ServiceAccount', label: false },
  node: { noun: 'node', label: false },
  pod: { noun: 'pod', label: false },
  configmap: { noun: 'ConfigMap', label: false },
  lease: { noun: 'Lease', label: false },
  policy: { noun: 'policy', label: false },
};

const LABEL_RULE = 'a DNS-1123 label: 1-63 lowercase letters, digits and inner "-"';
const SUBDOMAIN_RULE = 'a DNS-1123 subdomain: at most 253 lowercase letters, digits, inner "-" and "."';

/** Whether `name` is a valid name for a Kubernetes object of this kind. */
export function isK8sName(kind: K8sKind, name: string): boolean {
  return KINDS[kind].label ? isDnsLabel(name) : isDnsSubdomain(name);
}

/** What is wrong with `name` as the name of this kind of object, or undefined when it is valid. */
export function k8sNameProblem(kind: K8sKind, name: unknown): string | undefined {
  if (typeof name === 'string' && isK8sName(kind, name)) return undefined;
  const k = KINDS[kind];
  return `${JSON.stringify(name)} is not a Kubernetes ${k.noun} name (${k.label ? LABEL_RULE : SUBDOMAIN_RULE})`;
}

/** The rule of a kind's names, in words, for help texts and schema messages. */
export const k8sNameRule = (kind: K8sKind): string => (KINDS[kind].label ? LABEL_RULE : SUBDOMAIN_RULE);

/** A label value: empty, or at most 63 letters, digits, "-", "_" and ".", starting and ending alphanumeric. */
export const isLabelValue = (s: string): boolean => typeof s === 'string' && LABEL_VALUE.test(s);

/** A label key: a name as a label value (not empty), with an optional DNS subdomain prefix and "/". */
export function isLabelKey(s: string): boolean {
  if (typeof s !== 'string') return false;
  const slash = s.indexOf('/');
  if (slash < 0) return LABEL_NAME.test(s);
  return isDnsSubdomain(s.slice(0, slash)) && LABEL_NAME.test(s.slice(slash + 1));
}
