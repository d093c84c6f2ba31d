/**
 * Endpoints added and removed at run time through the admin socket, the way a
 * CNI plugin's ADD and DEL reach an agent, and whether an endpoint is ready:
 * registered with an identity, policed by the datapath, and every pair that any
 * node's policy requires between its identity and another already authenticated.
 * A CNI ADD that waits for readiness before the pod's containers start gives a
 * new pod a first packet that is never dropped for want of authentication.
 */
import type { ServiceError } from '@grpc/grpc-js';
import type { AuthPair } from '../bpf/index.js';
import { FailedPrecondition, InvalidArgument, NotFound, Unavailable } from '../spiffe/errors.js';
import { endpointSchema } from './config.js';
import type { DatapathManager } from './datapath/index.js';
import type { LocalEndpoint, NodeMembership } from './node/index.js';
import type { AuthRequirement } from './policy/index.js';
import type { AgentState } from './sync/state.js';

export interface EndpointStatus {
  ip: string;
  name: string;
  namespace: string;
  interface: string;
  /** The security identity the server gave it; null before it has. */
  identity: number | null;
  ready: boolean;
  /** What it still waits for, in words; empty when ready. */
  waiting_for: string[];
  /** Auth entries its pairs need on this node, and how many are there. */
  auth_entries: { needed: number; present: number };
}

export interface LocalEndpointsOptions {
  state: AgentState;
  membership: NodeMembership;
  datapath?: DatapathManager;
  /** The auth map (to look entries up); absent without the datapath. */
  authMap?: { get(pair: AuthPair): bigint | undefined };
  /** The pairs node `nodeId`'s policies require (this node: the policy map's own list). */
  authPairsOf: (nodeId: number) => readonly AuthRequirement[];
  /** Identity → the nodes hosting it (0: this node). */
  nodesHosting: () => Map<number, Set<number>>;
  /** How often waitReady() looks again (default 25 ms). */
  pollMs?: number;
}

export class LocalEndpoints {
  constructor(private readonly opts: LocalEndpointsOptions) {}

  /**
   * Adds an endpoint: the datapath first (its traffic is policed from the start),
   * then the registration with the server. When the registration fails, the
   * endpoint is taken back out (nothing half-added) and the error says why.
   */
  async add(input: unknown): Promise<EndpointStatus> {
    const parsed = endpointSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const field = issue.path.join('.') || 'endpoint';
      throw new InvalidArgument(`${field}: ${issue.message}`, field);
    }
    const e = parsed.data;
    const ep: LocalEndpoint = { name: e.name, namespace: e.namespace, serviceAccount: e.service_account, labels: e.labels, ip: e.ip, interface: e.interface };
    const { membership, datapath } = this.opts;
    const previous = membership.endpoints.find((x) => x.ip === ep.ip);
    if (datapath) {
      try { datapath.attachInterface(ep.interface); } catch (err) {
        throw new InvalidArgument(`cannot attach the datapath to interface ${ep.interface}: ${(err as Error).message}`, 'interface');
      }
    }
    try {
      await membership.addEndpoint(ep);
    } catch (err) {
      // back to how it was: the old endpoint with this IP (if any), and no programs on a new interface
      try {
        if (previous) await membership.addEndpoint(previous); else await membership.removeEndpoint(ep.ip);
      } catch { /* the server is away; the next publish sends the set as it is now */ }
      if (datapath && previous?.interface !== ep.interface && !membership.endpoints.some((x) => x.interface === ep.interface)) datapath.detachInterface(ep.interface);
      if (err instanceof FailedPrecondition) throw err;
      const se = err as ServiceError;
      throw new Unavailable(`the server did not register the endpoint: ${se.details || se.message}`);
    }
    if (datapath && previous && previous.interface !== ep.interface && !membership.endpoints.some((x) => x.interface === previous.interface)) {
      datapath.detachInterface(previous.interface);
    }
    return this.status(ep.ip);
  }

  /** Removes an endpoint: unregistered first, then its interface loses the programs (unless another endpoint uses it). */
  async remove(ip: string): Promise<void> {
    const ep = this.opts.membership.endpoints.find((x) => x.ip === ip);
    if (!ep) throw new NotFound(`this node has no endpoint ${ip}`, 'ip');
    try {
      await this.opts.membership.removeEndpoint(ip);
    } catch (err) {
      if (err instanceof FailedPrecondition) throw err;
      const se = err as ServiceError;
      throw new Unavailable(`removed here; the server was not told (the next publish will): ${se.details || se.message}`);
    } finally {
      if (this.opts.datapath && !this.opts.membership.endpoints.some((x) => x.interface === ep.interface)) this.opts.datapath.detachInterface(ep.interface);
    }
  }

  list(): EndpointStatus[] {
    return this.opts.membership.endpoints.map((e) => this.status(e.ip));
  }

  /** The endpoint's readiness now; NotFound for an IP this node does not host. */
  status(ip: string): EndpointStatus {
    const ep = this.opts.membership.endpoints.find((x) => x.ip === ip);
    if (!ep) throw new NotFound(`this node has no endpoint ${ip}`, 'ip');
    const { state, datapath } = this.opts;
    const waiting: string[] = [];
    const known = state.endpoints.get(ip);
    const local = state.localNodeId;
    const identity = known && local !== 0 && known.node_id === local ? known.identity : null;
    if (identity === null) waiting.push('the server has not given it an identity yet');
    if (datapath && !datapath.isAttached(ep.interface)) waiting.push(`the datapath is not attached to ${ep.interface}`);
    let needed = 0;
    let present = 0;
    if (identity !== null && this.opts.authMap) {
      for (const pair of this.neededEntries(identity)) {
        needed++;
        if (this.opts.authMap.get(pair) !== undefined) { present++; continue; }
        if (waiting.length < 10) waiting.push(`pair ${this.nameOf(pair.localIdentity)} ↔ ${this.nameOf(pair.remoteIdentity)} with ${this.nodeName(pair.remoteNodeId)} is not authenticated yet`);
      }
    }
    return {
      ip, name: ep.name, namespace: ep.namespace, interface: ep.interface, identity,
      ready: waiting.length === 0, waiting_for: waiting, auth_entries: { needed, present },
    };
  }

  /** Resolves when the endpoint is ready, or with its status when timeoutMs pass first. */
  async waitReady(ip: string, timeoutMs: number): Promise<EndpointStatus> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = this.status(ip);
      if (s.ready || Date.now() >= end) return s;
      await new Promise((r) => setTimeout(r, Math.min(this.opts.pollMs ?? 25, Math.max(1, end - Date.now()))));
    }
  }

  /**
   * The auth entries this node must hold for `identity`'s pairs: those its own
   * policies require with the identity on either side, and the mirrored entry of
   * each pair another node's policies require towards it (written here when that
   * node authenticates with us).
   */
  private neededEntries(identity: number): AuthPair[] {
    const { state } = this.opts;
    const hosting = this.opts.nodesHosting();
    const out = new Map<string, AuthPair>();
    const need = (localIdentity: number, remoteIdentity: number, remoteNodeId: number, authType: number): void => {
      out.set(`${localIdentity}/${remoteIdentity}/${remoteNodeId}/${authType}`, { localIdentity, remoteIdentity, remoteNodeId, authType });
    };
    for (const p of this.opts.authPairsOf(state.localNodeId)) {
      if (p.localIdentity === identity) for (const n of hosting.get(p.remoteIdentity) ?? []) need(identity, p.remoteIdentity, n, p.authType);
      if (p.remoteIdentity === identity && hosting.get(p.localIdentity)?.has(0)) need(p.localIdentity, identity, 0, p.authType);
    }
    for (const nodeId of state.nodes.keys()) {
      if (nodeId === state.localNodeId) continue;
      for (const p of this.opts.authPairsOf(nodeId)) {
        if (p.remoteIdentity === identity && hosting.get(p.localIdentity)?.has(nodeId)) need(identity, p.localIdentity, nodeId, p.authType);
      }
    }
    return [...out.values()];
  }

  private nameOf(identity: number): string {
    const i = this.opts.state.identities.get(identity);
    return i ? `${i.namespace}/${i.service_account} (${identity})` : String(identity);
  }

  private nodeName(nodeId: number): string {
    return nodeId === 0 ? 'this node' : `node ${this.opts.state.nodes.get(nodeId)?.name ?? nodeId}`;
  }
}
