/** What the admin API calls to apply and delete policies: parse everything, check everything, then write. */
import type { Datastore, Policy } from '../datastore/index.js';
import { FailedPrecondition, NotFound } from '../../spiffe/errors.js';
import type { ParsedPolicy, PolicyKind } from './model.js';
import { parsePolicyDocuments } from './parse.js';

export type PolicyStorePort = Pick<Datastore, 'upsertPolicy' | 'getPolicy' | 'listPolicies' | 'deletePolicy'>;

export interface AppliedPolicy {
  namespace: string;
  name: string;
  kind: PolicyKind;
  revision: number;
  result: 'created' | 'updated' | 'unchanged';
}

export interface PolicyRef {
  /** "" for cluster-wide policies. */
  namespace: string;
  name: string;
  /** When given, the stored policy must be of this kind. */
  kind?: PolicyKind;
}

function find(store: PolicyStorePort, namespace: string, name: string): Policy | undefined {
  try {
    return store.getPolicy(namespace, name);
  } catch (err) {
    if (err instanceof NotFound) return undefined;
    throw err;
  }
}

const label = (p: { namespace: string; name: string }): string => (p.namespace ? `${p.namespace}/${p.name}` : p.name);

/**
 * Stores every policy of `yamlText` (one or many documents). Nothing is
 * written unless every document parses and none would replace a policy of
 * another kind under the same name.
 */
export function applyPolicies(store: PolicyStorePort, yamlText: string): AppliedPolicy[] {
  return applyParsedPolicies(store, parsePolicyDocuments(yamlText));
}

export function applyParsedPolicies(store: PolicyStorePort, policies: readonly ParsedPolicy[]): AppliedPolicy[] {
  const before = policies.map((p) => find(store, p.namespace, p.name));
  policies.forEach((p, i) => {
    const old = before[i];
    if (old && old.kind !== p.kind) {
      throw new FailedPrecondition(`policy ${label(p)} exists as a ${old.kind}; delete it before applying a ${p.kind} of that name`, 'kind');
    }
  });
  return policies.map((p, i) => {
    const stored = store.upsertPolicy({ namespace: p.namespace, name: p.name, kind: p.kind, spec: p.spec });
    const old = before[i];
    const result = !old ? 'created' : old.revision === stored.revision ? 'unchanged' : 'updated';
    return { namespace: p.namespace, name: p.name, kind: p.kind, revision: stored.revision, result };
  });
}

/** Deletes one policy and returns it; NotFound when absent (or of another kind than `ref.kind`). */
export function deletePolicy(store: PolicyStorePort, ref: PolicyRef): Policy {
  const old = find(store, ref.namespace, ref.name);
  if (!old || (ref.kind !== undefined && old.kind !== ref.kind)) {
    throw new NotFound(`${ref.kind ?? 'policy'} ${label(ref)} not found`, 'name');
  }
  store.deletePolicy(ref.namespace, ref.name);
  return old;
}

/** `kubectl delete -f`: deletes the policies that `yamlText` names; those already absent are reported, not errors. */
export function deletePolicyDocuments(store: PolicyStorePort, yamlText: string): Array<PolicyRef & { deleted: boolean }> {
  return parsePolicyDocuments(yamlText).map((p) => {
    const old = find(store, p.namespace, p.name);
    if (!old || old.kind !== p.kind) return { namespace: p.namespace, name: p.name, kind: p.kind, deleted: false };
    store.deletePolicy(p.namespace, p.name);
    return { namespace: p.namespace, name: p.name, kind: p.kind, deleted: true };
  });
}
