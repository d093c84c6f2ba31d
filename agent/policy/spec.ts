/**
 * Decodes PolicyMsg.spec_json, the normalised policy the server produced, at
 * the agent's door: whatever arrives is checked against the shared schema
 * (api/policy.ts) before the compiler trusts it.
 */
import type { PolicyMsg } from '../../api/agentproto.js';
import { decodePolicySpec, type LabelSelector, type NormalisedPolicySpec, type NormalisedRule, type PeerRule, type PortSpec } from '../../api/policy.js';

export type PolicySpec = NormalisedPolicySpec;
export type PolicyRule = NormalisedRule;
export type PolicyPeerRule = PeerRule;
export type PolicySelector = LabelSelector;
export type PolicyPortSpec = PortSpec;

/** A policy as the compiler uses it. */
export interface DecodedPolicy {
  /** "namespace/name" ("/name" for cluster-wide ones), as AgentState keys them. */
  id: string;
  namespace: string;
  name: string;
  kind: string;
  spec: PolicySpec;
}

/** Throws an Error naming the first bad field. */
export function decodePolicy(msg: PolicyMsg): DecodedPolicy {
  const spec = decodePolicySpec(msg.spec_json, `policy ${msg.namespace}/${msg.name}`);
  return { id: `${msg.namespace}/${msg.name}`, namespace: msg.namespace, name: msg.name, kind: msg.kind, spec };
}

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
