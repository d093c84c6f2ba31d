import { existsSync, mkdirSync, readdirSync, rmdirSync, statfsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { bpfObjectDir } from '../api/assets.js';
import { FailedPrecondition, NotFound } from '../spiffe/index.js';
import type { DatapathConfig } from './layouts.js';
import { MapType } from 'bpf';
import { CT_KEY_SIZE, CT_VALUE_SIZE, METRICS_KEY_SIZE, METRICS_VALUE_SIZE } from './layouts.js';
import { AuthMap, ConfigMap, EventsLostMap, GenerationMap, IpcacheMap, MapName, MetricsMap, PolicyMap, pinnedMapLayout } from './maps.js';
import { loadNative, type NativeBpf } from './native.js';

export const DEFAULT_PIN_DIR = '/sys/fs/bpf/meshid';
const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * Maps whose contents can be lost on an upgrade: conntrack (a cache; the new
 * programs start a table of their own, the old ones keep theirs until
 * attachEndpoint replaces them) and the counters (Prometheus sees a reset).
 * A pin of either with the layout of an older build would make the load fail,
 * so it is unpinned first. Every other map keeps its layout or fails the start.
 */
const REBUILDABLE: Array<{ name: string; type: MapType; keySize: number; valueSize: number }> = [
  { name: MapName.conntrack, type: MapType.LRU_HASH, keySize: CT_KEY_SIZE, valueSize: CT_VALUE_SIZE },
  { name: MapName.metrics, type: MapType.PERCPU_ARRAY, keySize: METRICS_KEY_SIZE, valueSize: METRICS_VALUE_SIZE },
];

function unpinOutdated(pinDir: string): void {
  for (const expected of REBUILDABLE) {
    const path = join(pinDir, expected.name);
    if (!existsSync(path)) continue;
    const layout = pinnedMapLayout(path);
    if (layout.type !== expected.type || layout.keySize !== expected.keySize || layout.valueSize !== expected.valueSize) {
      unlinkSync(path);
    }
  }
}

/** The programs of bpf/meshid.c and the tc hook of the node-side veth each goes on. */
const FROM_ENDPOINT = 'meshid_from_ep'; // tc ingress: traffic leaving the endpoint
const TO_ENDPOINT = 'meshid_to_ep'; // tc egress: traffic entering the endpoint
/** The tc filter that is ours on each hook (replaced in place on re-attach). */
const TC_HANDLE = 0x6d65;
const TC_PRIORITY = 1;

interface DatapathMaps {
  auth: AuthMap;
  ipcache: IpcacheMap;
  policy: PolicyMap;
  metrics: MetricsMap;
  config: ConfigMap;
  generation: GenerationMap;
  eventsLost: EventsLostMap;
}

export interface DatapathOptions {
  /** Where the maps are pinned; default /sys/fs/bpf/meshid. Must be on a bpf filesystem. */
  readonly pinDir?: string;
  /** The compiled object; default build/bpf/meshid.o. */
  readonly objectPath?: string;
  /**
   * The network namespace (a path such as /run/netns/node1) that holds the
   * endpoints' node-side interfaces and the WireGuard device; default: this process's.
   */
  readonly netns?: string;
  /** The kernel calls; default the addon in bpf/native. */
  readonly native?: NativeBpf;
}

/** The ids of the programs attached to an endpoint interface (0: none). */
export interface EndpointAttachment {
  /** Policing traffic that leaves the endpoint (tc ingress of the node-side veth). */
  readonly fromEndpoint: number;
  /** Policing traffic that enters the endpoint (tc egress of the node-side veth). */
  readonly toEndpoint: number;
}

/**
 * The kernel datapath of one node: loads the programs, pins the maps (and
 * re-uses maps already pinned, so an agent restart keeps every entry and the
 * attached programs keep running), and attaches the programs to endpoints.
 *
 * stop() releases this process's handles only: attached programs and pinned
 * maps stay, so traffic keeps being policed while no agent runs. A new
 * instance's attachEndpoint() replaces the running programs in place.
 */
export class Datapath {
  readonly pinDir: string;
  readonly objectPath: string;
  readonly netns: string | null;
  readonly #native: NativeBpf;
  #programs: Record<string, { fd: number; id: number }> | undefined;
  #mapIds: Record<string, number> = {};
  #maps: DatapathMaps | undefined;

  constructor(options: DatapathOptions = {}) {
    this.pinDir = options.pinDir ?? DEFAULT_PIN_DIR;
    this.objectPath = options.objectPath ?? join(bpfObjectDir, 'meshid.o');
    this.netns = options.netns ?? null;
    this.#native = options.native ?? loadNative();
  }

  get running(): boolean { return this.#programs !== undefined; }

  /** Loads the programs and opens the maps, creating and pinning those not pinned yet. */
  start(): void {
    if (this.#programs) return;
    if (!existsSync(this.objectPath)) {
      throw new FailedPrecondition(`no eBPF object at ${this.objectPath} (run make bpf)`, 'objectPath');
    }
    mkdirSync(this.pinDir, { recursive: true });
    if (statfsSync(this.pinDir).type !== BPF_FS_MAGIC) {
      throw new FailedPrecondition(`${this.pinDir} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)`, 'pinDir');
    }
    unpinOutdated(this.pinDir);
    const loaded = this.#native.loadObject(this.objectPath, this.pinDir);
    try {
      for (const name of [FROM_ENDPOINT, TO_ENDPOINT]) {
        if (!loaded.programs[name]) throw new FailedPrecondition(`${this.objectPath} has no program ${name}`, 'objectPath');
      }
      const generation = GenerationMap.open(this.pinDir);
      this.#maps = {
        generation,
        auth: AuthMap.open(this.pinDir, generation),
        ipcache: IpcacheMap.open(this.pinDir, generation),
        policy: PolicyMap.open(this.pinDir, generation),
        metrics: MetricsMap.open(this.pinDir),
        config: ConfigMap.open(this.pinDir, generation),
        eventsLost: EventsLostMap.open(this.pinDir),
      };
    } catch (err) {
      for (const p of Object.values(loaded.programs)) this.#native.closeFd(p.fd);
      throw err;
    }
    this.#programs = loaded.programs;
    this.#mapIds = loaded.maps;
  }

  /** Releases this process's handles; attachments and pins stay (see the class comment). */
  stop(): void {
    if (!this.#programs) return;
    for (const p of Object.values(this.#programs)) this.#native.closeFd(p.fd);
    for (const m of Object.values(this.#maps!)) m.close();
    this.#programs = undefined;
    this.#maps = undefined;
  }

  #started(): DatapathMaps {
    if (!this.#maps) throw new FailedPrecondition('the datapath is not started');
    return this.#maps;
  }

  get auth(): AuthMap { return this.#started().auth; }
  get ipcache(): IpcacheMap { return this.#started().ipcache; }
  get policy(): PolicyMap { return this.#started().policy; }
  get metrics(): MetricsMap { return this.#started().metrics; }
  /** Event records the kernel could not put in the ring (its reader was behind), on every CPU. */
  eventsLost(): bigint { return this.#started().eventsLost.total(); }
  /** The generation the fast path checks; the maps above bump it after each write. */
  get generation(): GenerationMap { return this.#started().generation; }

  /** Kernel ids of the maps this instance uses (the same ids across restarts when pins are re-used). */
  mapIds(): Record<string, number> {
    this.#started();
    return { ...this.#mapIds };
  }

  /** Kernel ids of the programs this instance loaded. */
  programIds(): EndpointAttachment {
    this.#started();
    return { fromEndpoint: this.#programs![FROM_ENDPOINT]!.id, toEndpoint: this.#programs![TO_ENDPOINT]!.id };
  }

  /**
   * Runs one of the programs on an Ethernet frame with the kernel's test runner
   * (BPF_PROG_TEST_RUN), `repeat` times, against the live maps: for the
   * differential test and the benchmark. `ingressIfindex` is the device the
   * frame seems to have entered the node through. durationNs is per run.
   */
  testRun(program: keyof EndpointAttachment, frame: Buffer,
    options: { repeat?: number; ingressIfindex?: number } = {}): { retval: number; durationNs: number } {
    this.#started();
    const name = program === 'fromEndpoint' ? FROM_ENDPOINT : TO_ENDPOINT;
    return this.#native.progTestRun(this.#programs![name]!.fd, frame, options.repeat ?? 1, options.ingressIfindex ?? 0);
  }

  /**
   * Attaches both programs to the node-side interface of an endpoint (adding a
   * clsact qdisc if needed). Programs already attached there, by this or an
   * earlier instance, are replaced atomically: no packet goes unpoliced.
   */
  attachEndpoint(ifname: string): void {
    this.#started();
    const programs = this.#programs!;
    this.#withLink(ifname, () => {
      this.#native.tcAttach(this.netns, ifname, false, programs[FROM_ENDPOINT]!.fd, TC_HANDLE, TC_PRIORITY);
      this.#native.tcAttach(this.netns, ifname, true, programs[TO_ENDPOINT]!.fd, TC_HANDLE, TC_PRIORITY);
    });
  }

  /** Removes our programs from the interface; false when none was attached. */
  detachEndpoint(ifname: string): boolean {
    return this.#withLink(ifname, () => {
      const a = this.#native.tcDetach(this.netns, ifname, false, TC_HANDLE, TC_PRIORITY);
      const b = this.#native.tcDetach(this.netns, ifname, true, TC_HANDLE, TC_PRIORITY);
      return a || b;
    });
  }

  /** Which programs are attached to the interface now (from the kernel, whichever instance attached them). */
  attachment(ifname: string): EndpointAttachment {
    return this.#withLink(ifname, () => ({
      fromEndpoint: this.#native.tcQuery(this.netns, ifname, false, TC_HANDLE, TC_PRIORITY),
      toEndpoint: this.#native.tcQuery(this.netns, ifname, true, TC_HANDLE, TC_PRIORITY),
    }));
  }

  /**
   * Names the WireGuard device: cross-node traffic that requires authentication
   * is accepted only when it entered the node through it. null: no device (then
   * no such traffic is accepted). Returns the device's ifindex (0 for null).
   */
  setWireguardDevice(ifname: string | null): number {
    const config = this.#started().config;
    const ifindex = ifname === null ? 0 : this.#ifindex(ifname);
    config.set({ ...config.get(), wireguardIfindex: ifindex });
    return ifindex;
  }

  /** Also report each new forwarded flow on the event stream (drops are always reported). */
  setTraceForwarded(on: boolean): void {
    const config = this.#started().config;
    config.set({ ...config.get(), traceForwarded: on });
  }

  config(): DatapathConfig {
    return this.#started().config.get();
  }

  #ifindex(ifname: string): number {
    const ifindex = this.#native.ifIndex(this.netns, ifname);
    if (ifindex === 0) throw new NotFound(`no interface ${ifname}${this.netns ? ` in ${this.netns}` : ''}`, 'ifname');
    return ifindex;
  }

  #withLink<T>(ifname: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if ((err as { code?: string }).code === 'ENODEV') {
        throw new NotFound(`no interface ${ifname}${this.netns ? ` in ${this.netns}` : ''}`, 'ifname');
      }
      throw err;
    }
  }

  /**
   * Unpins every map under `pinDir` and removes the folder: for uninstall and
   * tests. Maps still used by attached programs live on until those are detached.
   */
  static removePins(pinDir: string): void {
    if (!existsSync(pinDir)) return;
    for (const name of readdirSync(pinDir)) unlinkSync(join(pinDir, name));
    rmdirSync(pinDir);
  }
}
