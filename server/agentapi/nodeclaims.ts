/**
 * What an agent may say about the mesh: one node, its own, and endpoints
 * inside that node's pod CIDR. A compromised agent key must not move another
 * node's pods, CIDR or tunnel to itself (issue 14): every claim is checked
 * here, against the registry, before anything is written. Where Kubernetes is
 * the source of nodes and pods, the API's addresses and CIDRs win and an agent
 * contributes only its WireGuard key.
 */
import { isIP } from 'node:net';
import { cidrRange, rangeContains, rangesOverlap } from '../../common/cidr.js';
import type { EndpointRegistrationMsg, PublishNodeRequestMsg } from '../../api/agentproto.js';
import { InvalidArgument, k8sNameProblem, PermissionDenied, type SelectorSet, type SpiffeId } from '../../spiffe/index.js';
import type { Endpoint, MeshNode, MeshNodeUpdate } from '../datastore/index.js';

/** The widest pod CIDR a node may hold, per family. */
const WIDEST_PREFIX = { 4: 8, 6: 32 } as const;

/** The attested agent making a claim. */
export interface Claimant { agentId: SpiffeId; selectors: SelectorSet }

/** A claim that was not taken: Kubernetes said otherwise. */
export interface Overridden { field: 'address' | 'pod_cidr'; claimed: string; kept: string }

/** The node name a k8s_psat attestation bound this agent to, if it was one. */
function attestedNodeName(c: Claimant): string | undefined {
  for (const s of c.selectors.items) if (s.type === 'k8s_psat' && s.value.startsWith('agent_node_name:')) return s.value.slice('agent_node_name:'.length);
  return undefined;
}

/** A WireGuard public key: 32 bytes in canonical base64. */
export function isWireGuardKey(text: string): boolean {
  const raw = Buffer.from(text, 'base64');
  return raw.length === 32 && raw.toString('base64') === text;
}

/**
 * Checks a PublishNode request against the registry and returns the update to
 * write and the claims Kubernetes overrode. Throws InvalidArgument for a
 * malformed value and PermissionDenied for a claim on what is not the caller's.
 */
export function authorizeNodeClaim(req: PublishNodeRequestMsg, caller: Claimant, nodes: readonly MeshNode[], kubernetesOwnsNodes: boolean): { update: MeshNodeUpdate; overridden: Overridden[] } {
  const who = caller.agentId.toString();
  const badName = k8sNameProblem('node', req.name);
  if (badName) throw new InvalidArgument(`node name ${badName}`, 'name');
  const bound = attestedNodeName(caller);
  if (bound !== undefined && bound !== req.name) throw new PermissionDenied(`agent ${who} was attested on node "${bound}"; it may not publish node "${req.name}"`);
  const own = nodes.find((n) => n.agentId === who);
  if (own && own.name !== req.name) throw new PermissionDenied(`agent ${who} speaks for node "${own.name}"; an agent publishes one node, its own, not "${req.name}"`);
  const current = nodes.find((n) => n.name === req.name);
  if (current?.agentId && current.agentId !== who) throw new PermissionDenied(`node "${req.name}" belongs to ${current.agentId}, not ${who}`);
  const others = nodes.filter((n) => n.name !== req.name);

  if (req.address && isIP(req.address) === 0) throw new InvalidArgument(`address "${req.address}" is not an IP address`, 'address');
  if (req.wireguard_public_key && !isWireGuardKey(req.wireguard_public_key)) {
    throw new InvalidArgument('wireguard_public_key is not a WireGuard public key (32 bytes in base64)', 'wireguard_public_key');
  }
  let podCidr: string | undefined;
  if (req.pod_cidr) {
    const range = cidrRange(req.pod_cidr);
    if (!range || !req.pod_cidr.includes('/')) throw new InvalidArgument(`pod_cidr "${req.pod_cidr}" is not a CIDR like 10.201.1.0/24`, 'pod_cidr');
    if (range.prefixLen < WIDEST_PREFIX[range.family]) throw new InvalidArgument(`pod_cidr ${range.text} is wider than /${WIDEST_PREFIX[range.family]}`, 'pod_cidr');
    podCidr = range.text;
  }
  const overridden: Overridden[] = [];
  const update: MeshNodeUpdate = { name: req.name, agentId: who };
  if (req.wireguard_public_key) {
    const holder = others.find((n) => n.wireguardPublicKey === req.wireguard_public_key);
    if (holder) throw new PermissionDenied(`WireGuard public key is node "${holder.name}"'s`);
    update.wireguardPublicKey = req.wireguard_public_key;
  }
  if (kubernetesOwnsNodes) {
    // The controller writes address and pod CIDR from the Node object; a claim that differs is not taken.
    if (req.address && current?.address && req.address !== current.address) overridden.push({ field: 'address', claimed: req.address, kept: current.address });
    if (podCidr && current?.podCidr && podCidr !== current.podCidr) overridden.push({ field: 'pod_cidr', claimed: podCidr, kept: current.podCidr });
    return { update, overridden };
  }
  if (req.address) {
    const holder = others.find((n) => n.address === req.address);
    if (holder) throw new PermissionDenied(`address ${req.address} is node "${holder.name}"'s`);
    update.address = req.address;
  }
  if (podCidr) {
    const range = cidrRange(podCidr)!;
    const holder = others.find((n) => { const r = n.podCidr ? cidrRange(n.podCidr) : null; return r !== null && rangesOverlap(r, range); });
    if (holder) throw new PermissionDenied(`pod_cidr ${podCidr} overlaps node "${holder.name}"'s ${holder.podCidr}`);
    update.podCidr = podCidr;
  }
  return { update, overridden };
}

/**
 * Checks a RegisterEndpoints request: each IP an address inside the caller's
 * node's pod CIDR, given once, and not another node's endpoint.
 */
export async function authorizeEndpointClaim(regs: readonly EndpointRegistrationMsg[], node: MeshNode, endpointAt: (ip: string) => Promise<Endpoint | undefined>): Promise<void> {
  const range = node.podCidr ? cidrRange(node.podCidr) : null;
  const seen = new Set<string>();
  for (const [i, r] of regs.entries()) {
    const field = `endpoints[${i}].ip`;
    if (typeof r.ip !== 'string' || isIP(r.ip) === 0) throw new InvalidArgument(`"${r.ip}" is not an IP address`, field);
    if (seen.has(r.ip)) throw new InvalidArgument(`${r.ip} is listed twice`, field);
    seen.add(r.ip);
    if (!range) throw new PermissionDenied(`node "${node.name}" has no pod CIDR, so it can host no endpoint (${r.ip})`);
    if (!rangeContains(range, r.ip)) throw new PermissionDenied(`${r.ip} is outside node "${node.name}"'s pod CIDR ${node.podCidr}`);
    const holder = await endpointAt(r.ip);
    if (holder && holder.nodeId !== node.id) throw new PermissionDenied(`${r.ip} is an endpoint of node ${holder.nodeId}, not of node "${node.name}"`);
  }
}
