/**
 * The agent's side of the kernel datapath: loads (or re-uses) the pinned maps
 * and programs, attaches them to the local endpoints' node-side interfaces,
 * keeps `meshid_ipcache` equal to the endpoints the server knows, reads the
 * signal and event ring buffers, and exposes the drop counters.
 *
 * Interfaces come from the config (the devnet names each endpoint's veth) and,
 * for local endpoints that the config does not name (Kubernetes pods, which the
 * server learns from the API and the primary CNI wires up), from the node's
 * routing table: the device the node routes the endpoint's IP to directly.
 */
import { execFile } from 'node:child_process';
import { isIPv6 } from 'node:net';
import type { Logger } from '../../common/log.js';
import type { MetricsRegistry } from '../../common/metrics.js';
import { Datapath, EventReader, SignalReader, type AuthPair, type FlowEvent, type IpcacheEntry } from '../../bpf/index.js';
import type { AgentState, StateChange } from '../sync/index.js';

export interface DatapathManagerOptions {
  state: AgentState;
  logger: Logger;
  registry: MetricsRegistry;
  pinDir: string;
  /** Node-side interfaces of the local endpoints, from the config. */
  interfaces: string[];
  /** Attach to the interface each other local endpoint's IP is routed to (default true). */
  discoverInterfaces?: boolean;
  /** Run in this network namespace (a path such as /run/netns/node1) instead of the agent's own; tests. */
  netns?: string;
  /** First retry delay for an endpoint whose route is not there yet (doubling up to 5 s; default 200 ms). */
  discoverRetryMs?: number;
  /** The WireGuard device: cross-node traffic that needs authentication must arrive through it. */
  wireguardDevice?: string;
  /** Each (pair, node) a packet needed and had no auth entry for. */
  onSignal: (pair: AuthPair) => void;
  /** Every drop (and forwarded flow when tracing). */
  onEvent?: (event: FlowEvent) => void;
}

const hostPrefix = (ip: string): string => `${ip}/${isIPv6(ip) ? 128 : 32}`;

export class DatapathManager {
  readonly datapath: Datapath;
  private signals: SignalReader | undefined;
  private events: EventReader | undefined;
  private unsubscribe: (() => void) | undefined;
  private written = new Map<string, string>();
  ipcacheWrites = 0;
  /** Local endpoint IP → the interface found for it and attached. */
  private readonly discovered = new Map<string, string>();
  /** Local endpoint IP → the device `ip route get` last named for it (config, WireGuard and discovered ones alike). */
  private readonly routes = new Map<string, string>();
  /** Interfaces named by the config or by endpoints added at run time: never detached by discovery. */
  private readonly configured: Set<string>;
  private discovering: Promise<void> | undefined;
  private rediscover = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs: number;
  private stopped = false;

  constructor(private readonly opts: DatapathManagerOptions) {
    this.datapath = new Datapath({ pinDir: opts.pinDir, ...(opts.netns ? { netns: opts.netns } : {}) });
    this.configured = new Set(opts.interfaces);
    this.retryMs = opts.discoverRetryMs ?? 200;
  }

  start(): void {
    const dp = this.datapath;
    dp.start();
    for (const ifname of this.opts.interfaces) {
      dp.attachEndpoint(ifname);
      this.opts.logger.info('datapath attached', { interface: ifname });
    }
    if (this.opts.wireguardDevice) dp.setWireguardDevice(this.opts.wireguardDevice);
    // What an earlier agent wrote stays until we know better: reconcile from the kernel's view.
    for (const { cidr, entry } of dp.ipcache.entries()) this.written.set(cidr, key(entry));
    this.unsubscribe = this.opts.state.onChange((c) => this.onStateChange(c));
    if (this.opts.state.revision > 0) { this.syncIpcache(); this.discoverInterfaces(); }
    this.signals = new SignalReader({ pinDir: this.opts.pinDir, onError: (err) => this.opts.logger.error('signal reader', { err }) }, this.opts.onSignal);
    this.signals.start();
    this.events = new EventReader({ pinDir: this.opts.pinDir, onError: (err) => this.opts.logger.error('event reader', { err }) }, (e) => this.opts.onEvent?.(e));
    this.events.start();
    this.registerMetrics();
  }

  /** Releases handles; programs and pinned maps stay so traffic keeps being policed across a restart. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.unsubscribe?.();
    this.signals?.stop();
    this.events?.stop();
    this.datapath.stop();
  }

  private onStateChange(c: StateChange): void {
    if (c.snapshot || c.endpoints.upserted.length + c.endpoints.removed.length > 0 || c.nodes.upserted.length > 0) {
      this.syncIpcache();
      this.discoverInterfaces();
    }
  }

  /** Attaches the programs to a named interface (an endpoint added at run time); discovery leaves it alone from then on. */
  attachInterface(ifname: string): void {
    this.datapath.attachEndpoint(ifname);
    this.configured.add(ifname);
    this.opts.logger.info('datapath attached', { interface: ifname });
  }

  /** Detaches the programs from a named interface; false when none were attached (or the link is gone). */
  detachInterface(ifname: string): boolean {
    this.configured.delete(ifname);
    try { return this.datapath.detachEndpoint(ifname); } catch { return false; }
  }

  /** Whether this datapath's programs (not an older loader's) police the interface now, by the kernel. */
  isAttached(ifname: string): boolean {
    const ours = this.datapath.programIds();
    try { const a = this.datapath.attachment(ifname); return a.fromEndpoint === ours.fromEndpoint && a.toEndpoint === ours.toEndpoint; } catch { return false; }
  }

  /** Local endpoint IP → interface, for the endpoints whose interface was found in the routing table. */
  discoveredInterfaces(): ReadonlyMap<string, string> { return this.discovered; }

  /**
   * Attaches the programs to the interface of every local endpoint the config
   * does not name, and detaches them from interfaces no endpoint uses any more.
   * Runs one pass at a time; a change during a pass queues one more. An IP
   * without a direct route yet (the CNI is still wiring the pod) is tried again,
   * from discoverRetryMs doubling up to 5 s.
   */
  discoverInterfaces(): Promise<void> {
    if (this.opts.discoverInterfaces === false || this.stopped) return Promise.resolve();
    if (this.discovering) { this.rediscover = true; return this.discovering; }
    this.discovering = (async () => {
      do {
        this.rediscover = false;
        await this.discoverPass().catch((err) => this.opts.logger.error('discovering endpoint interfaces failed', { err }));
      } while (this.rediscover && !this.stopped);
    })().finally(() => { this.discovering = undefined; });
    return this.discovering;
  }

  private async discoverPass(): Promise<void> {
    const { state, logger } = this.opts;
    const local = state.localNodeId;
    const ips = local === 0 ? [] : (state.index().endpointsOnNode.get(local) ?? []).map((ep) => ep.ip);
    // One `ip route get` per endpoint that is new or whose device lost our programs (a pod re-created, its veth with it),
    // not one per endpoint on every change: a device still policed by us is still its device.
    const attached = new Set<string>();
    const found = await Promise.all(ips.map((ip) => {
      const known = this.routes.get(ip);
      if (known !== undefined && (known === this.opts.wireguardDevice || this.configured.has(known))) return known;
      if (known !== undefined && (attached.has(known) || this.isAttached(known))) { attached.add(known); return known; }
      return routeInterface(ip, this.opts.netns);
    }));
    if (this.stopped) return;
    this.routes.clear();
    ips.forEach((ip, i) => { if (found[i] !== undefined) this.routes.set(ip, found[i]!); });
    const missing: string[] = [];
    const next = new Map<string, string>();
    ips.forEach((ip, i) => {
      const ifname = found[i];
      if (ifname === undefined) { missing.push(ip); return; }
      if (ifname === this.opts.wireguardDevice || this.configured.has(ifname)) return;
      next.set(ip, ifname);
    });
    // Asked of the kernel, not remembered: a pod re-created between two passes has a new veth of the same name, without programs.
    for (const [ip, ifname] of next) {
      if (attached.has(ifname) || this.isAttached(ifname)) { attached.add(ifname); continue; }
      try {
        this.datapath.attachEndpoint(ifname);
        attached.add(ifname);
        logger.info('datapath attached', { interface: ifname, endpoint: ip, found: 'route' });
      } catch (err) {
        missing.push(ip); // the link went away between the lookup and the attach
        next.delete(ip);
        logger.warn('attaching the datapath failed; will retry', { interface: ifname, endpoint: ip, err });
      }
    }
    const inUse = new Set(next.values());
    for (const [ip, ifname] of this.discovered) {
      if (inUse.has(ifname)) continue;
      try {
        if (this.datapath.detachEndpoint(ifname)) logger.info('datapath detached', { interface: ifname, endpoint: ip });
      } catch { /* the link is gone with its pod, and the programs with it */ }
      inUse.add(ifname); // once per interface
    }
    this.discovered.clear();
    for (const [ip, ifname] of next) this.discovered.set(ip, ifname);
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (missing.length === 0) { this.retryMs = this.opts.discoverRetryMs ?? 200; return; }
    logger.debug('no direct route to local endpoints yet; will look again', { endpoints: missing, retry_ms: this.retryMs });
    this.retryTimer = setTimeout(() => { this.retryTimer = undefined; void this.discoverInterfaces(); }, this.retryMs);
    this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, 5_000);
  }

  /** Makes `meshid_ipcache` hold exactly one /32 (/128) per known endpoint, with node 0 for local ones. */
  syncIpcache(): void {
    const { state } = this.opts;
    const local = state.localNodeId;
    const desired = new Map<string, IpcacheEntry>();
    for (const ep of state.endpoints.values()) {
      desired.set(hostPrefix(ep.ip), { identity: ep.identity, nodeId: ep.nodeId === local ? 0 : ep.nodeId, flags: 0 });
    }
    const ipcache = this.datapath.ipcache;
    for (const [cidr, entry] of desired) {
      const k = key(entry);
      if (this.written.get(cidr) === k) continue;
      ipcache.upsert(cidr, entry);
      this.written.set(cidr, k);
      this.ipcacheWrites++;
    }
    for (const cidr of [...this.written.keys()]) {
      if (desired.has(cidr)) continue;
      ipcache.delete(cidr);
      this.written.delete(cidr);
      this.ipcacheWrites++;
    }
  }

  private registerMetrics(): void {
    const drops = this.opts.registry.gauge('meshid_agent_datapath_packets', 'Packets the datapath counted, by reason (forwarded, auth required, policy denied, …) and direction.');
    const bytes = this.opts.registry.gauge('meshid_agent_datapath_bytes', 'Bytes the datapath counted, by reason and direction.');
    drops.collect(() => {
      drops.reset();
      bytes.reset();
      for (const s of this.datapath.metrics.read()) {
        drops.set(Number(s.packets), { reason: s.reason, direction: s.direction });
        bytes.set(Number(s.bytes), { reason: s.reason, direction: s.direction });
      }
    });
  }
}

/**
 * The interface the node routes `ip` to directly (`ip route get`: no gateway,
 * not a local address); undefined when there is none, e.g. before the CNI has
 * wired the pod.
 */
export function routeInterface(ip: string, netns?: string): Promise<string | undefined> {
  const argv = ['ip', '-j', isIPv6(ip) ? '-6' : '-4', 'route', 'get', ip];
  const [cmd, ...args] = netns ? ['nsenter', `--net=${netns}`, ...argv] : argv;
  return new Promise((resolve) => {
    execFile(cmd!, args, { encoding: 'utf8', timeout: 5_000 }, (err, stdout) => {
      if (err) { resolve(undefined); return; }
      try {
        const [route] = JSON.parse(stdout) as { dev?: string; gateway?: string; type?: string }[];
        resolve(route?.dev && !route.gateway && route.type !== 'local' && route.dev !== 'lo' ? route.dev : undefined);
      } catch { resolve(undefined); }
    });
  });
}

const key = (e: IpcacheEntry): string => `${e.identity}/${e.nodeId}/${e.flags ?? 0}`;
