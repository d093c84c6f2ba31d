/**
 * The normalised form of a policy: what the server stores as Policy.spec and
 * sends to agents as PolicyMsg.spec_json. Everything that depends on where the
 * policy was written is already resolved here (source prefixes stripped,
 * namespace requirements made explicit, ports parsed, ANY expanded), so the
 * agent's compiler needs no Kubernetes knowledge. The agent decodes it with
 * its own schema (agent/policy/spec.ts).
 */

export const POLICY_FORMAT = 'meshid.policy/v1';

export type PolicyKind = 'CiliumNetworkPolicy' | 'CiliumClusterwideNetworkPolicy' | 'AuthPolicy';

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

/** One label requirement, with Kubernetes semantics (NotIn and DoesNotExist match an absent key). */
export interface LabelRequirement {
  key: string;
  operator: SelectorOperator;
  /** Sorted, without duplicates; empty for Exists and DoesNotExist. */
  values: string[];
}

/** All requirements must hold; no requirements selects every identity. */
export interface LabelSelector {
  requirements: LabelRequirement[];
}

export type PortProtocol = 'TCP' | 'UDP' | 'SCTP';

export interface PortSpec {
  /** 0: every port of the protocol. */
  port: number;
  protocol: PortProtocol;
}

/**
 * One item of ingress/egress (allow) or ingressDeny/egressDeny (deny).
 * peers 'all' is a rule without an L3 selector (only toPorts): every peer,
 * also addresses that are no endpoint. An empty peer list allows nothing
 * (Cilium's `- {}` rule, which only puts the endpoint into default deny).
 */
export interface PeerRule {
  peers: 'all' | LabelSelector[];
  /** 'all': every port and protocol. */
  ports: 'all' | PortSpec[];
  /** Mutual authentication required (allow rules only). */
  auth: boolean;
}

export interface NormalisedRule {
  /** The endpoints this rule applies to. */
  subject: LabelSelector;
  description?: string;
  /** Present (non-empty) when the rule has that section: it then selects its subjects in that direction. */
  ingress?: PeerRule[];
  ingressDeny?: PeerRule[];
  egress?: PeerRule[];
  egressDeny?: PeerRule[];
  /** false: selecting does not turn on default deny in that direction (Cilium's enableDefaultDeny). */
  defaultDeny: { ingress: boolean; egress: boolean };
}

export interface NormalisedPolicySpec {
  format: typeof POLICY_FORMAT;
  rules: NormalisedRule[];
}

/** A parsed document: what `upsertPolicy` stores. Cluster-wide policies have namespace "". */
export interface ParsedPolicy {
  namespace: string;
  name: string;
  kind: PolicyKind;
  spec: NormalisedPolicySpec;
}
