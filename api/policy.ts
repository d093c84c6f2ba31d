/**
 * The normalised policy: what meshid-server stores as a policy's spec and
 * sends to agents as PolicyMsg.spec_json. One zod schema, and the types are
 * inferred from it, so the server's parser and store and the agent's compiler
 * and explain cannot drift apart.
 *
 * Everything that depends on where a policy was written is resolved before
 * this form (source prefixes stripped, namespace requirements explicit, ports
 * parsed, ANY expanded), so the agent's compiler needs no Kubernetes knowledge.
 */
import { z } from 'zod';

export const POLICY_FORMAT = 'meshid.policy/v1';

export const POLICY_KINDS = ['CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy', 'AuthPolicy'] as const;
export type PolicyKind = typeof POLICY_KINDS[number];

const selectorOperator = z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']);
export type SelectorOperator = z.infer<typeof selectorOperator>;

/** One label requirement, with Kubernetes semantics (NotIn and DoesNotExist match an absent key). Values sorted, without duplicates; empty for Exists and DoesNotExist. */
const labelRequirement = z.strictObject({ key: z.string().min(1), operator: selectorOperator, values: z.array(z.string()) });
export type LabelRequirement = z.infer<typeof labelRequirement>;

/** All requirements must hold; no requirements selects every identity. */
const labelSelector = z.strictObject({ requirements: z.array(labelRequirement) });
export type LabelSelector = z.infer<typeof labelSelector>;

const portProtocol = z.enum(['TCP', 'UDP', 'SCTP']);
export type PortProtocol = z.infer<typeof portProtocol>;

/** port 0: every port of the protocol. */
const portSpec = z.strictObject({ port: z.number().int().min(0).max(65535), protocol: portProtocol });
export type PortSpec = z.infer<typeof portSpec>;

/**
 * One item of ingress/egress (allow) or ingressDeny/egressDeny (deny).
 * peers 'all' is a rule without an L3 selector (only toPorts): every peer,
 * also addresses that are no endpoint. An empty peer list allows nothing
 * (Cilium's `- {}` rule, which only puts the endpoint into default deny).
 * ports 'all': every port and protocol. auth: mutual authentication required
 * (allow rules only).
 */
const peerRule = z.strictObject({
  peers: z.union([z.literal('all'), z.array(labelSelector)]),
  ports: z.union([z.literal('all'), z.array(portSpec)]),
  auth: z.boolean(),
});
export type PeerRule = z.infer<typeof peerRule>;

/**
 * subject: the endpoints the rule applies to. A section present (non-empty)
 * selects its subjects in that direction. defaultDeny false: selecting does
 * not turn on default deny in that direction (Cilium's enableDefaultDeny).
 */
const normalisedRule = z.strictObject({
  subject: labelSelector,
  description: z.string().optional(),
  ingress: z.array(peerRule).optional(),
  ingressDeny: z.array(peerRule).optional(),
  egress: z.array(peerRule).optional(),
  egressDeny: z.array(peerRule).optional(),
  defaultDeny: z.strictObject({ ingress: z.boolean(), egress: z.boolean() }),
});
export type NormalisedRule = z.infer<typeof normalisedRule>;

export const policySpecSchema = z.strictObject({ format: z.literal(POLICY_FORMAT), rules: z.array(normalisedRule) });
export type NormalisedPolicySpec = z.infer<typeof policySpecSchema>;

/** Checks a value against the schema; throws an Error naming `where` and the first bad field. */
export function checkPolicySpec(value: unknown, where: string): NormalisedPolicySpec {
  const parsed = policySpecSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${where}: spec.${issue.path.join('.')}: ${issue.message}`);
  }
  return parsed.data;
}

/** Decodes a spec from its JSON text (PolicyMsg.spec_json); throws an Error naming `where` and what was wrong. */
export function decodePolicySpec(json: string, where: string): NormalisedPolicySpec {
  let raw: unknown;
  try { raw = JSON.parse(json); } catch (err) {
    throw new Error(`${where}: spec is not JSON: ${(err as Error).message}`);
  }
  return checkPolicySpec(raw, where);
}
