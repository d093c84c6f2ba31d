import { resolve } from 'node:path';
import { FailedPrecondition, InvalidArgument } from '../../spiffe/index.js';
import { canonicalCidr } from '../../common/cidr.js';
import { CommandFailed, NetnsCommands } from './command.js';
import { loadOrCreateKeyPair, type WireGuardKeyPair } from './key.js';
import {
  canonicalPeers, parseDump, peerDiff,
  type CanonicalPeer, type DeviceDump, type PeerChanges, type PeerStatus, type WireGuardPeer,
} from './peers.js';
import { describeExit, removeStaleSocket, takeOverOrphans, WireGuardGoProcess } from './userspace.js';

export const DEFAULT_DEVICE = 'meshid-wg';
export const DEFAULT_LISTEN_PORT = 51871;

/** The logging the manager needs; the agent's logger fits. */
export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const silentLogger: Logger = { info() {}, warn() {}, error() {} };

export type WireGuardImplementation = 'kernel' | 'wireguard-go';

export interface WireGuardManagerOptions {
  /** The node's private key file (base64, mode 0600); created on first start. */
  readonly keyFile: string;
  /** Device name, at most 15 characters. With wireguard-go it must be unique on the machine, across namespaces. */
  readonly device?: string;
  readonly listenPort?: number;
  /** This node's address on the device (CIDR, e.g. its pod gateway `10.201.1.1/32`), so node-originated traffic to remote pods has a source the peers accept. */
  readonly address?: string;
  readonly mtu?: number;
  /** Run every command in this named namespace (`ip netns exec`); absent: the current namespace. */
  readonly netns?: string;
  /** `auto` (default) uses the kernel module when `ip link add … type wireguard` works, wireguard-go otherwise. */
  readonly implementation?: 'auto' | WireGuardImplementation;
  readonly wireguardGoBinary?: string;
  /** Restart delays for a wireguard-go that died: doubling from initialMs up to maxMs; back to initialMs after a run of resetAfterMs. */
  readonly restartBackoff?: { readonly initialMs: number; readonly maxMs: number; readonly resetAfterMs: number };
  readonly logger?: Logger;
}

export interface WireGuardStatus {
  readonly device: string;
  readonly implementation: WireGuardImplementation;
  readonly publicKey: string;
  readonly listenPort: number;
  /** False while a dead wireguard-go waits for its restart. */
  readonly up: boolean;
  readonly peers: readonly PeerStatus[];
  /** How many times wireguard-go was restarted after dying. */
  readonly restarts: number;
  /** The wireguard-go process id; null with the kernel device or while it is down. */
  readonly processId: number | null;
}

type State = 'stopped' | 'starting' | 'running' | 'restarting' | 'stopping';

/**
 * Owns the node's WireGuard device: key, device (kernel or wireguard-go), address,
 * one peer per remote node, and a route per remote pod CIDR through the device.
 * The desired peers are kept, so a wireguard-go that dies is restarted and given
 * its whole configuration again.
 */
export class WireGuardManager {
  readonly device: string;
  readonly listenPort: number;
  private readonly commands: NetnsCommands;
  private readonly logger: Logger;
  private readonly backoff: { initialMs: number; maxMs: number; resetAfterMs: number };
  private readonly address: string | undefined;
  private readonly keyFile: string;
  private state: State = 'stopped';
  private keys: WireGuardKeyPair | undefined;
  private implementation: WireGuardImplementation | undefined;
  private process: WireGuardGoProcess | undefined;
  private processStartedAt = 0;
  private desired: CanonicalPeer[] = [];
  private restartTimer: NodeJS.Timeout | undefined;
  private nextBackoffMs: number;
  private restarts = 0;
  private ownsDevice = false;
  // Every change to the device runs after the previous one: setPeers, restarts and stop never interleave.
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: WireGuardManagerOptions) {
    this.device = options.device ?? DEFAULT_DEVICE;
    if (!/^[A-Za-z0-9_=+.-]{1,15}$/.test(this.device)) {
      throw new InvalidArgument(`WireGuard device name "${this.device}" must be 1-15 characters of [A-Za-z0-9_=+.-]`, 'wireguard.device');
    }
    this.listenPort = options.listenPort ?? DEFAULT_LISTEN_PORT;
    if (!Number.isInteger(this.listenPort) || this.listenPort < 1 || this.listenPort > 65535) {
      throw new InvalidArgument(`WireGuard listen port ${this.listenPort} is not 1..65535`, 'wireguard.listenPort');
    }
    if (options.address !== undefined) {
      const [addr, len] = options.address.split('/');
      if (canonicalCidr(options.address) === null || addr === undefined) {
        throw new InvalidArgument(`WireGuard address "${options.address}" is not an address or CIDR`, 'wireguard.address');
      }
      this.address = len === undefined ? `${addr}/${addr.includes(':') ? 128 : 32}` : options.address;
    }
    this.keyFile = resolve(options.keyFile);
    this.commands = new NetnsCommands(options.netns);
    this.logger = options.logger ?? silentLogger;
    this.backoff = options.restartBackoff ?? { initialMs: 500, maxMs: 30_000, resetAfterMs: 60_000 };
    this.nextBackoffMs = this.backoff.initialMs;
  }

  /** The node's public key, to publish through the server; available once started. */
  get publicKey(): string {
    if (this.keys === undefined) throw new FailedPrecondition('the WireGuard manager is not started');
    return this.keys.publicKey;
  }

  /** Loads (or creates) the key, creates and configures the device. Anything left from an earlier run is replaced. */
  async start(): Promise<void> {
    if (this.state !== 'stopped') throw new FailedPrecondition(`the WireGuard manager for ${this.device} is already ${this.state}`);
    this.state = 'starting';
    try {
      await this.exclusive(async () => {
        this.keys = loadOrCreateKeyPair(this.keyFile);
        await this.removeLeftovers();
        await this.createDevice();
        await this.configure();
      });
      this.state = 'running';
      this.logger.info('wireguard device up', { device: this.device, implementation: this.implementation, publicKey: this.keys!.publicKey });
    } catch (err) {
      await this.teardown().catch(() => {});
      this.state = 'stopped';
      throw err;
    }
  }

  /** Kills wireguard-go (and waits for it) or deletes the kernel device; no device, process or socket is left. */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopping';
    clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    try {
      await this.exclusive(() => this.teardown());
    } finally {
      this.state = 'stopped';
    }
    this.logger.info('wireguard device removed', { device: this.device });
  }

  /**
   * Makes the device's peers exactly `peers` (one per remote node): adds new ones,
   * updates changed ones, removes the rest, and routes each allowed CIDR through the
   * device. Calling it again with the same peers changes nothing.
   */
  async setPeers(peers: readonly WireGuardPeer[]): Promise<PeerChanges> {
    if (this.keys === undefined || this.state === 'stopped' || this.state === 'stopping') {
      throw new FailedPrecondition(`the WireGuard manager for ${this.device} is not running`);
    }
    const desired = canonicalPeers(peers, this.keys.publicKey);
    return this.exclusive(async () => {
      this.desired = desired;
      // A dead wireguard-go gets the desired peers when it is restarted.
      if (this.state === 'restarting') return { added: [], updated: [], removed: [] };
      return this.applyPeers();
    });
  }

  async status(): Promise<WireGuardStatus> {
    if (this.keys === undefined || this.implementation === undefined || this.state === 'stopped') {
      throw new FailedPrecondition(`the WireGuard manager for ${this.device} is not running`);
    }
    let up = this.state === 'running';
    let dump: DeviceDump | undefined;
    if (up) {
      try {
        dump = await this.dump();
      } catch (err) {
        // wireguard-go died a moment ago and its exit is not handled yet: report it down, as it is.
        // A process killed this instant has closed its socket before the kernel shows it gone
        // (files close early in exit), so give it a moment to show as exited before calling this an error.
        const proc = this.process;
        if (proc === undefined) throw err;
        for (let i = 0; i < 40 && !proc.hasExited; i++) await new Promise((r) => setTimeout(r, 25));
        if (!proc.hasExited) throw err;
        up = false;
      }
    }
    return {
      device: this.device,
      implementation: this.implementation,
      publicKey: this.keys.publicKey,
      listenPort: dump?.listenPort ?? this.listenPort,
      up,
      peers: dump?.peers ?? [],
      restarts: this.restarts,
      processId: up ? this.process?.pid ?? null : null,
    };
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }

  private async dump(): Promise<DeviceDump> {
    return parseDump((await this.commands.run(['wg', 'show', this.device, 'dump'])).stdout);
  }

  private async linkExists(): Promise<boolean> {
    return this.commands.succeeds(['ip', 'link', 'show', 'dev', this.device]);
  }

  private async removeLeftovers(): Promise<void> {
    const taken = await takeOverOrphans(this.device, this.options.netns);
    if (taken.length > 0) this.logger.warn('ended a wireguard-go left by an earlier run', { device: this.device, pids: taken });
    removeStaleSocket(this.device);
    if (await this.linkExists()) {
      this.logger.warn('deleting a leftover WireGuard device', { device: this.device });
      await this.commands.run(['ip', 'link', 'del', 'dev', this.device]);
    }
  }

  private async createDevice(): Promise<void> {
    const wanted = this.options.implementation ?? 'auto';
    if (wanted !== 'wireguard-go') {
      try {
        await this.commands.run(['ip', 'link', 'add', 'dev', this.device, 'type', 'wireguard']);
        this.ownsDevice = true;
        this.implementation = 'kernel';
        return;
      } catch (err) {
        if (!(err instanceof CommandFailed) || wanted === 'kernel') {
          throw new FailedPrecondition(`cannot create kernel WireGuard device ${this.device}: ${(err as Error).message}`, 'wireguard.implementation');
        }
        this.logger.info('kernel WireGuard unavailable, using wireguard-go', { device: this.device, reason: err.stderr.trim() });
      }
    }
    this.implementation = 'wireguard-go';
    this.ownsDevice = true;
    await this.spawnWireGuardGo();
  }

  private async spawnWireGuardGo(): Promise<void> {
    const proc = new WireGuardGoProcess(this.options.wireguardGoBinary ?? 'wireguard-go', this.device, this.commands);
    this.process = proc;
    this.processStartedAt = Date.now();
    void proc.exited.then((exit) => this.onProcessExit(proc, describeExit(exit)));
    try {
      await proc.ready();
    } catch (err) {
      await proc.stop();
      throw err;
    }
  }

  /** Key, port, address, link up, then peers and routes: everything a new device needs. */
  private async configure(): Promise<void> {
    // wg reads the key from a file by path; the key file was checked (0600, one key) when it was loaded.
    await this.commands.run(['wg', 'set', this.device, 'private-key', this.keyFile, 'listen-port', String(this.listenPort)]);
    if (this.address !== undefined) await this.commands.run(['ip', 'address', 'replace', this.address, 'dev', this.device]);
    if (this.options.mtu !== undefined) await this.commands.run(['ip', 'link', 'set', 'dev', this.device, 'mtu', String(this.options.mtu)]);
    await this.commands.run(['ip', 'link', 'set', 'dev', this.device, 'up']);
    await this.applyPeers();
  }

  private async applyPeers(): Promise<PeerChanges> {
    const actual = await this.dump();
    const { args, changes } = peerDiff(this.desired, actual.peers);
    if (args.length > 0) await this.commands.run(['wg', 'set', this.device, ...args]);
    await this.applyRoutes(new Set(this.desired.flatMap((p) => p.allowedIps)));
    if (changes.added.length + changes.updated.length + changes.removed.length > 0) {
      this.logger.info('wireguard peers reconciled', { device: this.device, ...changes });
    }
    return changes;
  }

  /** Routes through the device exactly the peers' allowed CIDRs (connected routes of the device's own address aside). */
  private async applyRoutes(wanted: Set<string>): Promise<void> {
    const present = new Set<string>();
    for (const family of ['-4', '-6']) {
      let routes: { dst?: string; protocol?: string; type?: string }[];
      try {
        routes = JSON.parse((await this.commands.run(['ip', '-j', family, 'route', 'show', 'dev', this.device])).stdout || '[]');
      } catch (err) {
        if (family === '-6' && err instanceof CommandFailed) continue; // IPv6 disabled in this namespace
        throw err;
      }
      for (const route of routes) {
        if (route.protocol === 'kernel' || (route.type !== undefined && route.type !== 'unicast') || route.dst === undefined) continue;
        const dst = route.dst === 'default' ? (family === '-4' ? '0.0.0.0/0' : '::/0') : canonicalCidr(route.dst);
        if (dst !== null) present.add(dst);
      }
    }
    for (const dst of present) {
      if (!wanted.has(dst)) await this.commands.run(['ip', 'route', 'del', dst, 'dev', this.device]);
    }
    for (const dst of wanted) {
      if (!present.has(dst)) await this.commands.run(['ip', 'route', 'replace', dst, 'dev', this.device]);
    }
  }

  private onProcessExit(proc: WireGuardGoProcess, how: string): void {
    if (proc !== this.process || this.state !== 'running') return;
    const ranMs = Date.now() - this.processStartedAt;
    if (ranMs >= this.backoff.resetAfterMs) this.nextBackoffMs = this.backoff.initialMs;
    this.state = 'restarting';
    this.logger.error('wireguard-go exited unexpectedly; restarting', {
      device: this.device, exit: how, output: proc.recentOutput, restartInMs: this.nextBackoffMs,
    });
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    const delay = this.nextBackoffMs;
    this.nextBackoffMs = Math.min(this.nextBackoffMs * 2, this.backoff.maxMs);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.exclusive(async () => {
        if (this.state !== 'restarting') return;
        try {
          removeStaleSocket(this.device);
          if (await this.linkExists()) await this.commands.run(['ip', 'link', 'del', 'dev', this.device]);
          await this.spawnWireGuardGo();
          await this.configure();
          this.restarts++;
          if (this.state !== 'restarting') return; // stop() came meanwhile; its teardown runs next
          this.state = 'running';
          this.logger.info('wireguard-go restarted', { device: this.device, restarts: this.restarts });
        } catch (err) {
          if (this.state !== 'restarting') return;
          await this.process?.stop().catch(() => {});
          this.logger.error('wireguard-go restart failed', { device: this.device, error: (err as Error).message, retryInMs: this.nextBackoffMs });
          this.scheduleRestart();
        }
      });
    }, delay);
  }

  /** Removes what this manager made, and only that: a start refused over another's device must not touch it. */
  private async teardown(): Promise<void> {
    const proc = this.process;
    this.process = undefined;
    if (proc !== undefined) await proc.stop();
    if (this.ownsDevice && await this.linkExists()) await this.commands.run(['ip', 'link', 'del', 'dev', this.device]);
    this.ownsDevice = false;
  }
}
