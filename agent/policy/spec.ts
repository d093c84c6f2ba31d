/**
 * Decodes PolicyMsg.spec_json, the normalised policy the server produced
 * (server/policy/model.ts), at the agent's door: whatever arrives is checked
 * against this schema before the compiler trusts it.
 */
import { z } from 'zod';
import type { PolicyMsg } from '../../api/agentproto.js';

const requirement = z.strictObject({
  key: z.string().min(1),
  operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
  values: z.array(z.string()),
});
const selector = z.strictObject({ requirements: z.array(requirement) });
const portSpec = z.strictObject({
  port: z.number().int().min(0).max(65535),
  protocol: z.enum(['TCP', 'UDP', 'SCTP']),
});
const peerRule = z.strictObject({
  peers: z.union([z.literal('all'), z.array(selector)]),
  ports: z.union([z.literal('all'), z.array(portSpec)]),
  auth: z.boolean(),
});
const rule = z.strictObject({
  subject: selector,
  description: z.string().optional(),
  ingress: z.array(peerRule).optional(),
  ingressDeny: z.array(peerRule).optional(),
  egress: z.array(peerRule).optional(),
  egressDeny: z.array(peerRule).optional(),
  defaultDeny: z.strictObject({ ingress: z.boolean(), egress: z.boolean() }),
});
const policySpec = z.strictObject({ format: z.literal('meshid.policy/v1'), rules: z.array(rule) });

export type PolicySpec = z.infer<typeof policySpec>;
export type PolicyRule = z.infer<typeof rule>;
export type PolicyPeerRule = z.infer<typeof peerRule>;
export type PolicySelector = z.infer<typeof selector>;
export type PolicyPortSpec = z.infer<typeof portSpec>;

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
  let raw: unknown;
  try {
    raw = JSON.parse(msg.spec_json);
  } catch (err) {
    throw new Error(`policy ${msg.namespace}/${msg.name}: spec is not JSON: ${(err as Error).message}`);
  }
  const parsed = policySpec.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`policy ${msg.namespace}/${msg.name}: spec.${issue.path.join('.')}: ${issue.message}`);
  }
  return { id: `${msg.namespace}/${msg.name}`, namespace: msg.namespace, name: msg.name, kind: msg.kind, spec: parsed.data };
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
