/**
 * The agent's side of the kernel datapath: loads (or re-uses) the pinned maps
 * and programs, attaches them to the local endpoints' node-side interfaces,
 * keeps `meshid_ipcache` equal to the endpoints the server knows, reads the
 * signal and event ring buffers, and exposes the drop counters.
 */
import { isIPv6 } from 'node:net';
import type { Logger } from '../../common/log.js';
import type { MetricsRegistry } from '../../common/metrics.js';
import { Datapath, EventReader, SignalReader, type AuthPair, type FlowEvent, type IpcacheEntry } from '../../bpf/index.js';
import type { AgentState, StateChange } from '../sync/state.js';

export interface DatapathManagerOptions {
  state: AgentState;
  logger: Logger;
  registry: MetricsRegistry;
  pinDir: string;
  /** Node-side interfaces of the local endpoints. */
  interfaces: string[];
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

  constructor(private readonly opts: DatapathManagerOptions) {
    this.datapath = new Datapath({ pinDir: opts.pinDir });
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
    if (this.opts.state.revision > 0) this.syncIpcache();
    this.signals = new SignalReader({ pinDir: this.opts.pinDir, onError: (err) => this.opts.logger.error('signal reader', { err }) }, this.opts.onSignal);
    this.signals.start();
    this.events = new EventReader({ pinDir: this.opts.pinDir, onError: (err) => this.opts.logger.error('event reader', { err }) }, (e) => this.opts.onEvent?.(e));
    this.events.start();
    this.registerMetrics();
  }

  /** Releases handles; programs and pinned maps stay so traffic keeps being policed across a restart. */
  stop(): void {
    this.unsubscribe?.();
    this.signals?.stop();
    this.events?.stop();
    this.datapath.stop();
  }

  private onStateChange(c: StateChange): void {
    if (c.snapshot || c.endpoints.upserted.length + c.endpoints.removed.length > 0 || c.nodes.upserted.length > 0) this.syncIpcache();
  }

  /** Makes `meshid_ipcache` hold exactly one /32 (/128) per known endpoint, with node 0 for local ones. */
  syncIpcache(): void {
    const { state } = this.opts;
    const local = state.localNodeId;
    const desired = new Map<string, IpcacheEntry>();
    for (const ep of state.endpoints.values()) {
      desired.set(hostPrefix(ep.ip), { identity: ep.identity, nodeId: ep.node_id === local ? 0 : ep.node_id, flags: 0 });
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

const key = (e: IpcacheEntry): string => `${e.identity}/${e.nodeId}/${e.flags ?? 0}`;
