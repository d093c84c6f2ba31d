/** What the admin API calls to apply and delete policies: parse everything, check everything, then write. */
import type { Datastore, Policy } from '../datastore/index.js';
import { FailedPrecondition, InvalidArgument, NotFound } from '../../spiffe/index.js';
import { checkPolicySpec } from '../../api/policy.js';
import type { ParsedPolicy, PolicyKind } from './model.js';
import { parsePolicyDocuments } from './parse.js';

export type PolicyStorePort = Pick<Datastore, 'upsertPolicy' | 'getPolicy' | 'listPolicies' | 'deletePolicy' | 'transaction'>;

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

async function find(store: Pick<Datastore, 'getPolicy'>, namespace: string, name: string): Promise<Policy | undefined> {
  try {
    return await store.getPolicy(namespace, name);
  } catch (err) {
    if (err instanceof NotFound) return undefined;
    throw err;
  }
}

const label = (p: { namespace: string; name: string }): string => (p.namespace ? `${p.namespace}/${p.name}` : p.name);

/**
 * Stores every policy of `yamlText` (one or many documents). Nothing is
 * written unless every document parses and none would replace a policy of
 * another kind under the same name; the checks and the writes are one transaction.
 */
export function applyPolicies(store: PolicyStorePort, yamlText: string): Promise<AppliedPolicy[]> {
  return applyParsedPolicies(store, parsePolicyDocuments(yamlText));
}

export function applyParsedPolicies(store: PolicyStorePort, policies: readonly ParsedPolicy[]): Promise<AppliedPolicy[]> {
  // what agents will decode: checked here, before anything is written
  for (const p of policies) {
    try { checkPolicySpec(p.spec, `policy ${label(p)}`); } catch (err) { return Promise.reject(new InvalidArgument((err as Error).message, 'spec')); }
  }
  return store.transaction(async (tx) => {
    const before: (Policy | undefined)[] = [];
    for (const p of policies) before.push(await find(tx, p.namespace, p.name));
    policies.forEach((p, i) => {
      const old = before[i];
      if (old && old.kind !== p.kind) {
        throw new FailedPrecondition(`policy ${label(p)} exists as a ${old.kind}; delete it before applying a ${p.kind} of that name`, 'kind');
      }
    });
    const out: AppliedPolicy[] = [];
    for (const [i, p] of policies.entries()) {
      const stored = await tx.upsertPolicy({ namespace: p.namespace, name: p.name, kind: p.kind, spec: p.spec });
      const old = before[i];
      const result = !old ? 'created' : old.revision === stored.revision ? 'unchanged' : 'updated';
      out.push({ namespace: p.namespace, name: p.name, kind: p.kind, revision: stored.revision, result });
    }
    return out;
  });
}

/** Deletes one policy and returns it; NotFound when absent (or of another kind than `ref.kind`). */
export function deletePolicy(store: PolicyStorePort, ref: PolicyRef): Promise<Policy> {
  return store.transaction(async (tx) => {
    const old = await find(tx, ref.namespace, ref.name);
    if (!old || (ref.kind !== undefined && old.kind !== ref.kind)) {
      throw new NotFound(`${ref.kind ?? 'policy'} ${label(ref)} not found`, 'name');
    }
    await tx.deletePolicy(ref.namespace, ref.name);
    return old;
  });
}

/** `kubectl delete -f`: deletes the policies that `yamlText` names; those already absent are reported, not errors. */
export function deletePolicyDocuments(store: PolicyStorePort, yamlText: string): Promise<Array<PolicyRef & { deleted: boolean }>> {
  const docs = parsePolicyDocuments(yamlText);
  return store.transaction(async (tx) => {
    const out: Array<PolicyRef & { deleted: boolean }> = [];
    for (const p of docs) {
      const old = await find(tx, p.namespace, p.name);
      if (!old || old.kind !== p.kind) { out.push({ namespace: p.namespace, name: p.name, kind: p.kind, deleted: false }); continue; }
      await tx.deletePolicy(p.namespace, p.name);
      out.push({ namespace: p.namespace, name: p.name, kind: p.kind, deleted: true });
    }
    return out;
  });
}
