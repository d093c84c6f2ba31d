/**
 * Which auth entries this node must hold, decided from the decoded state in
 * one place: the pairs each node's policies require (this node's from the
 * policy map sync, another node's compiled here, since every agent has every
 * policy), what to authenticate ahead of the first packet, what an endpoint's
 * readiness waits for, and whether an entry is still needed at all.
 */
import { AuthType, type AuthPair } from '../../bpf/index.js';
import { compileState, type AuthRequirement } from '../policy/index.js';
import type { AgentState } from '../sync/index.js';
import type { PairRequest } from './service.js';

export interface AuthPlannerOptions {
  state: AgentState;
  /** This node's required pairs as the policy map sync compiled them; undefined without a datapath. */
  ownPairs: () => readonly AuthRequirement[] | undefined;
}

const pairText = (local: number, remote: number): string => `${local}/${remote}`;

export class AuthPlanner {
  private remote: { applied: number; byNode: Map<number, readonly AuthRequirement[]> } | undefined;

  constructor(private readonly opts: AuthPlannerOptions) {}

  private get state(): AgentState { return this.opts.state; }

  /** The pairs node `nodeId`'s policies require; compiled once per state change for other nodes. */
  pairsOf(nodeId: number): readonly AuthRequirement[] {
    const state = this.state;
    if (nodeId === state.localNodeId) {
      const own = this.opts.ownPairs();
      if (own) return own;
    }
    if (this.remote?.applied !== state.applied) this.remote = { applied: state.applied, byNode: new Map() };
    let pairs = this.remote.byNode.get(nodeId);
    if (!pairs) {
      pairs = compileState({ policies: state.policies, identities: state.identities, endpoints: state.endpoints, localNodeId: nodeId }).authPairs;
      this.remote.byNode.set(nodeId, pairs);
    }
    return pairs;
  }

  /**
   * Pre-authentication: each of `pairs` (required by this node's policies)
   * with each node where the remote identity has endpoints, for a local
   * identity hosted here, leaving out those `held` already has.
   */
  requests(pairs: readonly AuthRequirement[], held: (pair: AuthPair) => boolean): PairRequest[] {
    const state = this.state;
    if (state.localNodeId === 0) return [];
    const hosting = state.index().nodesHosting;
    const out: PairRequest[] = [];
    for (const p of pairs) {
      if (!hosting.get(p.localIdentity)?.has(0)) continue;
      for (const node of hosting.get(p.remoteIdentity) ?? []) {
        if (held({ localIdentity: p.localIdentity, remoteIdentity: p.remoteIdentity, remoteNodeId: node, authType: AuthType.mutual })) continue;
        out.push({ localIdentity: p.localIdentity, remoteIdentity: p.remoteIdentity, remoteNodeId: node });
      }
    }
    return out;
  }

  /** Whether a required pair is held with every node that hosts its remote identity (make-before-break waits for this). */
  heldEverywhere(p: AuthRequirement, held: (pair: AuthPair) => boolean): boolean {
    for (const node of this.state.index().nodesHosting.get(p.remoteIdentity) ?? []) {
      if (!held({ localIdentity: p.localIdentity, remoteIdentity: p.remoteIdentity, remoteNodeId: node, authType: p.authType })) return false;
    }
    return true;
  }

  /**
   * The auth entries this node must hold for `identity`'s pairs (what an
   * endpoint's readiness waits for): those its own policies require with the
   * identity on either side, and the mirrored entry of each pair another
   * node's policies require towards it (written here when that node
   * authenticates with us).
   */
  neededEntries(identity: number): AuthPair[] {
    const state = this.state;
    const hosting = state.index().nodesHosting;
    const out = new Map<string, AuthPair>();
    const need = (localIdentity: number, remoteIdentity: number, remoteNodeId: number, authType: number): void => {
      out.set(`${localIdentity}/${remoteIdentity}/${remoteNodeId}/${authType}`, { localIdentity, remoteIdentity, remoteNodeId, authType });
    };
    for (const p of this.pairsOf(state.localNodeId)) {
      if (p.localIdentity === identity) for (const n of hosting.get(p.remoteIdentity) ?? []) need(identity, p.remoteIdentity, n, p.authType);
      if (p.remoteIdentity === identity && hosting.get(p.localIdentity)?.has(0)) need(p.localIdentity, identity, 0, p.authType);
    }
    for (const nodeId of state.nodes.keys()) {
      if (nodeId === state.localNodeId) continue;
      for (const p of this.pairsOf(nodeId)) {
        if (p.remoteIdentity === identity && hosting.get(p.localIdentity)?.has(nodeId)) need(identity, p.localIdentity, nodeId, p.authType);
      }
    }
    return [...out.values()];
  }

  /**
   * A test of whether an entry is still needed by some policy: (L, R, node N)
   * stays while a policy of this node requires (L, R), or a policy of node N
   * requires (R, L) (the entry this agent wrote as the answering side), or,
   * for a pair inside this node, this node requires (R, L). Built for one
   * sweep: node N's pairs are compiled on first use.
   */
  neededByPolicy(): (pair: AuthPair) => boolean {
    const own = new Set(this.pairsOf(this.state.localNodeId).map((p) => pairText(p.localIdentity, p.remoteIdentity)));
    const remoteNeeds = new Map<number, Set<string>>();
    const needsOf = (node: number): Set<string> => {
      let set = remoteNeeds.get(node);
      if (!set) {
        set = new Set(this.pairsOf(node).map((p) => pairText(p.localIdentity, p.remoteIdentity)));
        remoteNeeds.set(node, set);
      }
      return set;
    };
    return (p) => own.has(pairText(p.localIdentity, p.remoteIdentity))
      || (p.remoteNodeId !== 0 && needsOf(p.remoteNodeId).has(pairText(p.remoteIdentity, p.localIdentity)))
      || (p.remoteNodeId === 0 && own.has(pairText(p.remoteIdentity, p.localIdentity)));
  }
}
