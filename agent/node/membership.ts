/**
 * This node's membership of the mesh: publishes the node (underlay address,
 * pod CIDR, WireGuard public key) and its endpoints to the server, and keeps
 * one WireGuard peer per remote node from the node registry.
 */
import type { ServiceError } from '@grpc/grpc-js';
import type { Logger } from '../../common/log.js';
import type { EndpointRegistrationMsg, PublishNodeResponseMsg, RegisterEndpointsResponseMsg } from '../../api/agentproto.js';
import { FailedPrecondition } from '../../spiffe/index.js';
import type { TunnelReadiness } from '../mutualauth/index.js';
import type { ServerConnection } from '../serverapi/index.js';
import type { AgentState, MeshNode, StateChange } from '../sync/index.js';
import type { WireGuardManager, WireGuardPeer } from '../wireguard/index.js';

export interface LocalEndpoint {
  name: string;
  namespace: string;
  serviceAccount: string;
  labels: Record<string, string>;
  ip: string;
  /** The node-side interface that carries the endpoint's traffic (the datapath attaches here). */
  interface: string;
}

export interface NodeMembershipOptions {
  name: string;
  address: string;
  podCidr: string;
  endpoints: LocalEndpoint[];
  connection: ServerConnection;
  state: AgentState;
  logger: Logger;
  wireguard?: WireGuardManager;
  /** Endpoints come from elsewhere (the Kubernetes controller): register none, so none are replaced. */
  endpointsOwnedElsewhere?: boolean;
  /** UDP port of every node's WireGuard device. */
  wireguardPort: number;
}

const peerText = (p: WireGuardPeer): string => `${p.endpoint} ${[...p.allowedIps].sort().join(',')}`;

export class NodeMembership implements TunnelReadiness {
  private unsubscribe: (() => void) | undefined;
  /** The peers the device was last given successfully: public key → endpoint and allowed IPs. */
  private applied = new Map<string, string>();
  /** Peers (public keys) whose handshake this node leads and has started: they get the persistent keepalive. */
  private readonly handshakeLed = new Set<string>();
  private readonly waiters = new Set<{ nodeId: number; done: (ok: boolean) => void }>();
  private retry: NodeJS.Timeout | undefined;
  private published = false;
  private peersQueued = false;
  private stopped = false;

  /** The local endpoints this agent registers: the config's, and those added at run time. */
  private local: LocalEndpoint[];
  /** Registrations run one at a time, each with the whole set at its turn. */
  private registering: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: NodeMembershipOptions) {
    this.local = [...opts.endpoints];
  }

  get endpoints(): readonly LocalEndpoint[] { return this.local; }

  /**
   * Adds a local endpoint (or replaces the one with its IP) and registers the
   * node's endpoints with the server. When the server cannot be reached the
   * endpoint stays and goes with the next successful publish; the error is thrown.
   */
  async addEndpoint(e: LocalEndpoint): Promise<void> {
    this.refuseWhenOwnedElsewhere();
    this.local = [...this.local.filter((x) => x.ip !== e.ip), e];
    await this.registerEndpoints();
  }

  /** Removes a local endpoint by IP and registers the rest; false when there was none. */
  async removeEndpoint(ip: string): Promise<boolean> {
    this.refuseWhenOwnedElsewhere();
    const before = this.local.length;
    this.local = this.local.filter((x) => x.ip !== ip);
    if (this.local.length === before) return false;
    await this.registerEndpoints();
    return true;
  }

  /** Throws (FailedPrecondition) when this node's endpoints come from elsewhere (the Kubernetes API). */
  refuseWhenOwnedElsewhere(): void {
    if (this.opts.endpointsOwnedElsewhere) {
      throw new FailedPrecondition('this node\'s endpoints come from the Kubernetes API; they are not added or removed through the agent', 'endpoints');
    }
  }

  private registerEndpoints(): Promise<RegisterEndpointsResponseMsg> {
    const run = this.registering.then(() => this.opts.connection.unary<RegisterEndpointsResponseMsg>('RegisterEndpoints', {
      endpoints: this.local.map((e): EndpointRegistrationMsg => ({ ip: e.ip, namespace: e.namespace, name: e.name, service_account: e.serviceAccount, labels: e.labels })),
    }));
    this.registering = run.catch(() => {});
    return run;
  }

  start(): void {
    this.unsubscribe = this.opts.state.onChange((c) => this.onStateChange(c));
    void this.publish();
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.retry) clearTimeout(this.retry);
    for (const w of [...this.waiters]) w.done(false);
  }

  /**
   * Whether traffic to node `nodeId` can take the tunnel: without WireGuard, or
   * for a node that publishes no tunnel, at once; otherwise once its peer and
   * route are on the device. Mutual auth waits for it on both sides, so an
   * authenticated pair means both ends can already carry the first packet
   * (a handshake initiation to a device that lacks the peer is dropped, and
   * WireGuard tries again only after 5 s).
   */
  ready(nodeId: number): boolean {
    if (!this.opts.wireguard) return true;
    const node = this.opts.state.nodes.get(nodeId);
    if (!node) return false;
    const want = this.peerOf(node);
    return want === undefined || this.applied.get(want.publicKey) === peerText(want);
  }

  wait(nodeId: number, timeoutMs: number): Promise<boolean> {
    if (this.ready(nodeId)) return Promise.resolve(true);
    if (this.stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      const w = {
        nodeId,
        done: (ok: boolean) => { clearTimeout(timer); this.waiters.delete(w); resolve(ok); },
      };
      const timer = setTimeout(() => w.done(this.ready(nodeId)), timeoutMs);
      this.waiters.add(w);
    });
  }

  private wakeWaiters(): void {
    for (const w of [...this.waiters]) {
      if (this.ready(w.nodeId)) w.done(true);
      else if (!this.opts.state.nodes.has(w.nodeId)) w.done(false);
    }
  }

  /**
   * Mutual auth learnt that node `nodeId` has its side of the tunnel configured.
   * Of two nodes, the one with the lower id leads: it turns on the persistent
   * keepalive then, which sends its first handshake at once, to a peer that
   * knows it. The other never starts one on its own: two handshakes that
   * cross are each refused by the other side (both end as responders), and
   * WireGuard tries again only after 5 s; nor does a handshake go out before
   * the peer can take it.
   */
  peerConfigured(nodeId: number): void {
    const local = this.opts.state.localNodeId;
    if (!this.opts.wireguard || local === 0 || local >= nodeId) return;
    const key = this.opts.state.nodes.get(nodeId)?.wgKey;
    if (!key || this.handshakeLed.has(key)) return;
    this.handshakeLed.add(key);
    this.queuePeers();
  }

  /** The WireGuard peer a remote node gets; undefined for this node or a node without key, address or pod CIDR. */
  private peerOf(n: MeshNode): WireGuardPeer | undefined {
    if (n.name === this.opts.name || !n.wgKey || !n.address || !n.podCidr) return undefined;
    return {
      publicKey: n.wgKey, endpoint: `${n.address}:${this.opts.wireguardPort}`, allowedIps: [n.podCidr],
      ...(this.handshakeLed.has(n.wgKey) ? { persistentKeepalive: 25 } : {}),
    };
  }

  /** Publishes the node and its endpoints; retried until it works (the server may be away). */
  async publish(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.opts.connection.unary<PublishNodeResponseMsg>('PublishNode', {
        name: this.opts.name, address: this.opts.address, pod_cidr: this.opts.podCidr,
        wireguard_public_key: this.opts.wireguard?.publicKey ?? '',
      });
      if (this.local.length === 0 && this.opts.endpointsOwnedElsewhere) { this.published = true; return; }
      const res = await this.registerEndpoints();
      this.published = true;
      this.opts.logger.info('node and endpoints published', { node: this.opts.name, endpoints: res.endpoints.map((e) => `${e.ip}=${e.identity}`) });
    } catch (err) {
      const e = err as ServiceError;
      this.opts.logger.warn('publishing the node failed; will retry', { code: e.code, reason: e.details ?? e.message });
      this.retry = setTimeout(() => void this.publish(), 2000);
      this.retry.unref();
    }
  }

  get isPublished(): boolean { return this.published; }

  private onStateChange(c: StateChange): void {
    // A server that lost its state (or a fresh snapshot without our node) gets it again.
    if (c.snapshot && this.published && ![...this.opts.state.nodes.values()].some((n) => n.name === this.opts.name)) {
      this.published = false;
      void this.publish();
    }
    if (this.opts.wireguard && (c.snapshot || c.nodes.upserted.length + c.nodes.removed.length > 0)) {
      this.queuePeers();
      if (c.nodes.removed.length > 0) this.wakeWaiters();
    }
  }

  private queuePeers(): void {
    if (this.peersQueued) return;
    this.peersQueued = true;
    setImmediate(() => {
      this.peersQueued = false;
      void this.syncPeers();
    });
  }

  /** One WireGuard peer per remote node that has published a key, an address and a pod CIDR. */
  async syncPeers(): Promise<void> {
    const wg = this.opts.wireguard;
    if (!wg || this.stopped) return;
    const peers: WireGuardPeer[] = [];
    for (const n of this.opts.state.nodes.values()) {
      const peer = this.peerOf(n);
      if (peer) peers.push(peer);
    }
    try {
      const changes = await wg.setPeers(peers);
      this.applied = new Map(peers.map((p) => [p.publicKey, peerText(p)]));
      this.wakeWaiters();
      if (changes.added.length + changes.updated.length + changes.removed.length > 0) {
        this.opts.logger.info('WireGuard peers updated', { added: changes.added.length, updated: changes.updated.length, removed: changes.removed.length });
      }
    } catch (err) {
      this.opts.logger.error('setting WireGuard peers failed', { err });
    }
  }
}
