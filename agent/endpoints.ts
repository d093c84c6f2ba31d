/**
 * Endpoints added and removed at run time through the admin socket, the way a
 * CNI plugin's ADD and DEL reach an agent, and whether an endpoint is ready:
 * registered with an identity, policed by the datapath, and every pair that any
 * node's policy requires between its identity and another already authenticated.
 * A CNI ADD that waits for readiness before the pod's containers start gives a
 * new pod a first packet that is never dropped for want of authentication.
 */
import { readFileSync } from 'node:fs';
import type { ServiceError } from '@grpc/grpc-js';
import type { AuthPair } from '../bpf/index.js';
import { FailedPrecondition, InvalidArgument, NotFound, Unavailable } from '../spiffe/index.js';
import { endpointSchema } from './config.js';
import type { DatapathManager } from './datapath/index.js';
import type { LocalEndpoint, NodeMembership } from './node/index.js';
import type { AuthPlanner } from './mutualauth/index.js';
import type { AgentState } from './sync/index.js';

export interface EndpointStatus {
  ip: string;
  name: string;
  namespace: string;
  /** Where the datapath polices it; null while none is known. */
  interface: string | null;
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
  /** Which auth entries an endpoint's readiness waits for. */
  planner: Pick<AuthPlanner, 'neededEntries'>;
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
    // before touching any interface: in Kubernetes mode a veth may be a pod's, policed through discovery
    membership.refuseWhenOwnedElsewhere();
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
    this.opts.membership.refuseWhenOwnedElsewhere();
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

  /** Every endpoint of this node: those added here and those the server reports (Kubernetes pods). */
  list(): EndpointStatus[] {
    return this.localIps().map((ip) => this.status(ip));
  }

  private localIps(): string[] {
    const { state } = this.opts;
    const ips = new Set(this.opts.membership.endpoints.map((e) => e.ip));
    if (state.localNodeId !== 0) for (const ep of state.index().endpointsOnNode.get(state.localNodeId) ?? []) ips.add(ep.ip);
    return [...ips];
  }

  /**
   * The readiness of the endpoints a calling process is: those of this node
   * whose IP is an address of the caller's network namespace (a pod's init
   * container asks for its pod). Not ready while there is none yet: the
   * server may not have learnt the pod's IP.
   */
  callerReadiness(pid: number, procRoot = '/proc'): { ready: boolean; endpoints: string[]; waiting_for: string[] } {
    const addresses = namespaceAddresses(pid, procRoot);
    const mine = this.localIps().filter((ip) => addresses.includes(ip));
    if (mine.length === 0) {
      return { ready: false, endpoints: [], waiting_for: [`no endpoint of this node has an address of the caller's network namespace yet (${addresses.join(', ') || 'it has none'})`] };
    }
    const statuses = mine.map((ip) => this.status(ip));
    return { ready: statuses.every((s) => s.ready), endpoints: mine, waiting_for: statuses.flatMap((s) => s.waiting_for.map((w) => `${s.ip}: ${w}`)) };
  }

  /**
   * The endpoint's readiness now: one added here, or one the server reports on
   * this node (a Kubernetes pod, its interface found by the datapath's route
   * lookup). NotFound for an IP this node does not host.
   */
  status(ip: string): EndpointStatus {
    const { state, datapath } = this.opts;
    const added = this.opts.membership.endpoints.find((x) => x.ip === ip);
    const known = state.endpoints.get(ip);
    const local = state.localNodeId;
    const hostedHere = known !== undefined && local !== 0 && known.nodeId === local;
    if (!added && !hostedHere) throw new NotFound(`this node has no endpoint ${ip}`, 'ip');
    const waiting: string[] = [];
    const identity = hostedHere ? known.identity : null;
    if (identity === null) waiting.push('the server has not given it an identity yet');
    const iface = added?.interface ?? datapath?.discoveredInterfaces().get(ip) ?? null;
    if (datapath && iface === null) waiting.push('no interface found for it yet (the node has no direct route to it)');
    else if (datapath && iface !== null && !datapath.isAttached(iface)) waiting.push(`the datapath is not attached to ${iface}`);
    let needed = 0;
    let present = 0;
    if (identity !== null && this.opts.authMap) {
      for (const pair of this.opts.planner.neededEntries(identity)) {
        needed++;
        if (this.opts.authMap.get(pair) !== undefined) { present++; continue; }
        if (waiting.length < 10) waiting.push(`pair ${this.nameOf(pair.localIdentity)} ↔ ${this.nameOf(pair.remoteIdentity)} with ${this.nodeName(pair.remoteNodeId)} is not authenticated yet`);
      }
    }
    return {
      ip, name: added?.name ?? known!.name, namespace: added?.namespace ?? known!.namespace, interface: iface, identity,
      ready: waiting.length === 0, waiting_for: waiting, auth_entries: { needed, present },
    };
  }

  /** Resolves when the endpoint is ready, or with its status when timeoutMs pass first. */
  waitReady(ip: string, timeoutMs: number): Promise<EndpointStatus> {
    return this.poll(() => this.status(ip), timeoutMs);
  }

  /** callerReadiness() until the caller's endpoints are ready, timeoutMs pass, or `gone()` (the caller left). */
  waitCallerReady(pid: number, timeoutMs: number, gone: () => boolean = () => false): Promise<ReturnType<LocalEndpoints['callerReadiness']>> {
    return this.poll(() => this.callerReadiness(pid), timeoutMs, gone);
  }

  /** Reads a readiness every pollMs until it says ready, the time is up, or `gone()`; the last reading. */
  private async poll<T extends { ready: boolean }>(read: () => T, timeoutMs: number, gone: () => boolean = () => false): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = read();
      if (s.ready || Date.now() >= end || gone()) return s;
      await new Promise((r) => setTimeout(r, Math.min(this.opts.pollMs ?? 25, Math.max(1, end - Date.now()))));
    }
  }

  private nameOf(identity: number): string {
    const i = this.opts.state.identities.get(identity);
    return i ? `${i.namespace}/${i.serviceAccount} (${identity})` : String(identity);
  }

  private nodeName(nodeId: number): string {
    return nodeId === 0 ? 'this node' : `node ${this.opts.state.nodes.get(nodeId)?.name ?? nodeId}`;
  }
}

/** The addresses of a process's network namespace, from /proc/<pid>/net (no need to enter it): IPv4 from fib_trie, IPv6 from if_inet6; loopback and link-local left out. */
export function namespaceAddresses(pid: number, procRoot = '/proc'): string[] {
  const read = (name: string): string => { try { return readFileSync(`${procRoot}/${pid}/net/${name}`, 'utf8'); } catch { return ''; } };
  return [...new Set([...localIpv4FromFibTrie(read('fib_trie')), ...ipv6FromIfInet6(read('if_inet6'))])];
}

/** The host-local IPv4 addresses in /proc/net/fib_trie ("|-- A.B.C.D" followed by "/32 host LOCAL"), loopback left out. */
export function localIpv4FromFibTrie(text: string): string[] {
  const out = new Set<string>();
  let last: string | undefined;
  for (const line of text.split('\n')) {
    const leaf = /\|-- (\d+\.\d+\.\d+\.\d+)\s*$/.exec(line);
    if (leaf) { last = leaf[1]; continue; }
    if (last && /\/32 host LOCAL/.test(line) && !last.startsWith('127.')) out.add(last);
  }
  return [...out];
}

/** The addresses in /proc/net/if_inet6 (32 hex digits each), in the usual text form; loopback and link-local (fe80::/10) left out. */
export function ipv6FromIfInet6(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const hex = line.trim().split(/\s+/)[0] ?? '';
    if (!/^[0-9a-f]{32}$/.test(hex) || hex === '0'.repeat(31) + '1' || /^fe[89ab]/.test(hex)) continue;
    const groups = hex.match(/.{4}/g)!.map((g) => g.replace(/^0+(?=.)/, ''));
    out.push(compressIpv6(groups));
  }
  return out;
}

/** RFC 5952 text: the longest run (two or more) of zero groups becomes "::". */
function compressIpv6(groups: string[]): string {
  let best = { start: -1, len: 0 };
  for (let i = 0; i < groups.length;) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > best.len) best = { start: i, len: j - i };
    i = j;
  }
  if (best.len < 2) return groups.join(':');
  return `${groups.slice(0, best.start).join(':')}::${groups.slice(best.start + best.len).join(':')}`;
}
