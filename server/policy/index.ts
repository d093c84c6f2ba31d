/**
 * Network and authentication policies, CiliumNetworkPolicy-shaped: parsing and
 * validation into the normalised form that the datastore keeps and agents
 * compile (agent/policy), and the apply/delete operations of the admin API.
 */
export {
  POLICY_FORMAT,
  type LabelRequirement, type LabelSelector, type NormalisedPolicySpec, type NormalisedRule, type ParsedPolicy,
  type PeerRule, type PolicyKind, type PortProtocol, type PortSpec, type SelectorOperator,
} from './model.js';
export { MAX_POLICY_INPUT_BYTES, parsePolicyDocuments, parsePolicyObject } from './parse.js';
export {
  applyParsedPolicies, applyPolicies, deletePolicy, deletePolicyDocuments,
  type AppliedPolicy, type PolicyRef, type PolicyStorePort,
} from './store.js';
