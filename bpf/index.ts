/**
 * The eBPF datapath of meshid: the loader (Datapath), typed access to each
 * map, the ring-buffer readers and the boot-time clock. The C side is
 * bpf/meshid.c and bpf/lib/*.h; bpf/README.md states the layouts and rules.
 */
export { Datapath, DEFAULT_PIN_DIR, type DatapathOptions, type EndpointAttachment } from './datapath.js';
export { AuthMap, GenerationMap, IpcacheMap, PolicyMap, MetricsMap, MapName, PerLoadMapName, type MetricsSample } from './maps.js';
export { SignalReader, EventReader, type RingReaderOptions } from './readers.js';
export { bootTimeNs, bootToWallOffsetNs, wallClockToBootNs, bootNsToWallClock } from './clock.js';
export {
  AuthType, Protocol, Reason, reasonName,
  type AuthPair, type DatapathConfig, type Direction, type FlowEvent, type IpcacheEntry,
  type PolicyEntry, type PolicyKey, type ReasonCode, type Verdict,
} from './layouts.js';
