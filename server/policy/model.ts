/**
 * A policy as the server parsed it. The normalised spec and its types are the
 * shared schema in api/policy.ts, which agents decode with too.
 */
import type { NormalisedPolicySpec, PolicyKind } from '../../api/policy.js';

export {
  POLICY_FORMAT, type LabelRequirement, type LabelSelector, type NormalisedPolicySpec, type NormalisedRule, type PeerRule,
  type PolicyKind, type PortProtocol, type PortSpec, type SelectorOperator,
} from '../../api/policy.js';

/** A parsed document: what `upsertPolicy` stores. Cluster-wide policies have namespace "". */
export interface ParsedPolicy {
  namespace: string;
  name: string;
  kind: PolicyKind;
  spec: NormalisedPolicySpec;
}
