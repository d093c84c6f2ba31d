/**
 * Policy on the agent: compiles the normalised policies (server/policy) that
 * select this node's endpoints into `meshid_policy`, keeps the map in step
 * with the Sync state, tells mutual auth which identity pairs need
 * authenticating, and explains single flows.
 */
export {
  compilePolicies, compileState, decideFlow, localIdentitiesOf, lookupPolicy, policyForLabels, policyKeyText, usablePolicies,
  type AuthRequirement, type CompiledPolicies, type CompileInput, type DirectionPolicy, type PolicyError, type PolicyInputs,
  type PolicyMapEntry, type ResolvedItem, type RuleOrigin, type RuleRef, type RuleSection,
} from './compile.js';
export { selectorMatches, type DecodedPolicy, type PolicySpec } from './spec.js';
export {
  MemoryPolicyMap, PolicyMapSync,
  type AuthPairsChange, type PolicyMapSyncOptions, type PolicyMapWriter, type PolicyStateSource, type PolicySyncResult,
} from './sync.js';
export { explainFlow, explainQuery, type Explanation, type ExplainReason, type FlowQuery } from './explain.js';
