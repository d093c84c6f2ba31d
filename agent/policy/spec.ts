/**
 * The policy as the compiler reads it: the shared schema's types (api/policy.ts),
 * decoded once by agent/sync, and Kubernetes label-selector matching.
 */
import type { MeshPolicy } from '../sync/index.js';
import type { LabelSelector, NormalisedPolicySpec, NormalisedRule, PeerRule, PortSpec } from '../../api/policy.js';

export type PolicySpec = NormalisedPolicySpec;
export type PolicyRule = NormalisedRule;
export type PolicyPeerRule = PeerRule;
export type PolicySelector = LabelSelector;
export type PolicyPortSpec = PortSpec;

/** A policy that decoded (agent/sync's MeshPolicy with its spec). */
export type DecodedPolicy = MeshPolicy & { readonly spec: PolicySpec };

/** Kubernetes label-selector semantics: NotIn and DoesNotExist match a label that is absent. */
export function selectorMatches(sel: PolicySelector, labels: Readonly<Record<string, string>>): boolean {
  for (const r of sel.requirements) {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const value = has ? labels[r.key] : undefined;
    switch (r.operator) {
      case 'In': if (!has || !r.values.includes(value!)) return false; break;
      case 'NotIn': if (has && r.values.includes(value!)) return false; break;
      case 'Exists': if (!has) return false; break;
      case 'DoesNotExist': if (has) return false; break;
    }
  }
  return true;
}
