import { z } from 'zod';
import { InvalidArgument } from '../../spiffe/index.js';
import { formatCidr, formatIpv4, isHostOf, overlaps, parseIpv4, parseIpv4Cidr, type Ipv4Cidr } from './ipv4.js';

/** What a devnet should hold. Names become namespace and link names, hence their short alphabets. */
export const podNameSchema = z.string().regex(/^[a-z][a-z0-9-]{0,11}$/, 'a pod name is 1-12 characters of [a-z0-9-], starting with a letter');

export const devnetSpecSchema = z.object({
  /** The underlay subnet shared by the host end and every node. */
  underlayCidr: z.string().default('192.168.77.0/24'),
  /** Node N (1-based, in spec order) gets the Nth /24 of this pool as its pod CIDR unless it names one. */
  podCidrPool: z.string().default('10.201.0.0/16'),
  /** A veth from the root namespace into the underlay bridge, carrying the underlay's first address: where the server listens. */
  host: z.boolean().default(true),
  nodes: z.array(z.object({
    name: z.string().regex(/^[a-z][a-z0-9]{0,7}$/, 'a node name is 1-8 characters of [a-z0-9], starting with a letter'),
    underlayIp: z.string().optional(),
    podCidr: z.string().optional(),
  }).strict()).min(1),
  pods: z.array(z.object({
    name: podNameSchema,
    node: z.string(),
    ip: z.string().optional(),
  }).strict()).default([]),
}).strict();

export type DevnetSpec = z.input<typeof devnetSpecSchema>;

/** A devnet as built (or being built): every name and address, written to the state file before anything is made. */
export interface DevnetState {
  readonly version: 1;
  readonly prefix: string;
  status: 'creating' | 'ready' | 'destroying';
  readonly createdAt: string;
  readonly underlay: { readonly namespace: string; readonly bridge: string; readonly cidr: string };
  /** The root-namespace end of the host veth and its address (the server's address for the nodes); null without one. */
  readonly host: { readonly link: string; readonly address: string } | null;
  readonly nodes: readonly DevnetNode[];
  readonly pods: readonly DevnetPod[];
  /** Root-namespace links this devnet made (deleted by destroy if still there). */
  rootLinks: string[];
}

export interface DevnetNode {
  readonly name: string;
  readonly namespace: string;
  /** The node's link to the underlay bridge, inside its namespace. */
  readonly underlayLink: string;
  readonly underlayIp: string;
  readonly podCidr: string;
  /** The pods' default gateway: an address of the node on every pod veth. */
  readonly gatewayIp: string;
  /** A WireGuard device name for this node's agent, unique on the machine (wireguard-go sockets are machine-wide). */
  readonly wgDevice: string;
}

export interface DevnetPod {
  readonly name: string;
  readonly node: string;
  readonly namespace: string;
  readonly ip: string;
  /** The pod's interface, inside its namespace. */
  readonly interface: string;
  /** The node end of the pod's veth, inside the node namespace: where the datapath attaches its tc programs. */
  readonly hostVeth: string;
}

export const PREFIX_PATTERN = /^[a-z][a-z0-9]{0,9}$/;

/** Validates the spec and fixes every name and address; errors name the spec field. */
export function planDevnet(prefix: string, input: DevnetSpec): DevnetState {
  if (!PREFIX_PATTERN.test(prefix)) {
    throw new InvalidArgument(`devnet prefix "${prefix}" must be 1-10 characters of [a-z0-9], starting with a letter`, 'prefix');
  }
  const parsed = devnetSpecSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.');
    throw new InvalidArgument(`devnet spec ${field || '(root)'}: ${issue.message}`, field);
  }
  const spec = parsed.data;
  const underlay = cidrField(spec.underlayCidr, 'underlayCidr');
  const pool = cidrField(spec.podCidrPool, 'podCidrPool');
  if (overlaps(underlay, pool)) throw new InvalidArgument('podCidrPool overlaps underlayCidr', 'podCidrPool');

  const names = new Set<string>(['ul']);
  const claim = (name: string, field: string): void => {
    if (names.has(name)) throw new InvalidArgument(`devnet name "${name}" is used twice (namespaces are <prefix>-<name>)`, field);
    names.add(name);
  };
  const underlayIps = new Set<number>();
  const claimUnderlayIp = (addr: number, field: string): string => {
    if (!isHostOf(underlay, addr)) throw new InvalidArgument(`${field} ${formatIpv4(addr)} is not a host address of ${formatCidr(underlay)}`, field);
    if (underlayIps.has(addr)) throw new InvalidArgument(`${field} ${formatIpv4(addr)} is used twice`, field);
    underlayIps.add(addr);
    return formatIpv4(addr);
  };

  const hostAddress = spec.host ? claimUnderlayIp(underlay.network + 1, 'underlayCidr') : null;
  const podCidrs: Ipv4Cidr[] = [];
  const nodes = spec.nodes.map((node, i): DevnetNode => {
    const field = `nodes.${i}`;
    claim(node.name, `${field}.name`);
    const underlayIp = node.underlayIp === undefined
      ? claimUnderlayIp(underlay.network + 10 + i + 1, `${field}.underlayIp`)
      : claimUnderlayIp(addrField(node.underlayIp, `${field}.underlayIp`), `${field}.underlayIp`);
    const podCidr = node.podCidr === undefined
      ? { network: (pool.network + (i + 1) * 256) >>> 0, prefixLen: 24 }
      : cidrField(node.podCidr, `${field}.podCidr`);
    if (podCidr.prefixLen > 29 || (node.podCidr === undefined && (!overlaps(pool, podCidr) || pool.prefixLen > 24))) {
      throw new InvalidArgument(`${field}.podCidr ${formatCidr(podCidr)} does not fit (pool ${formatCidr(pool)})`, `${field}.podCidr`);
    }
    if (overlaps(podCidr, underlay) || podCidrs.some((c) => overlaps(c, podCidr))) {
      throw new InvalidArgument(`${field}.podCidr ${formatCidr(podCidr)} overlaps another network of the devnet`, `${field}.podCidr`);
    }
    podCidrs.push(podCidr);
    return {
      name: node.name,
      namespace: `${prefix}-${node.name}`,
      underlayLink: 'ul0',
      underlayIp,
      podCidr: formatCidr(podCidr),
      gatewayIp: formatIpv4(podCidr.network + 1),
      wgDevice: `${prefix}-wg${i + 1}`,
    };
  });

  const nextPodHost = new Map(nodes.map((n) => [n.name, 2]));
  const podIps = new Set<string>();
  const pods = spec.pods.map((pod, i): DevnetPod => {
    const field = `pods.${i}`;
    claim(pod.name, `${field}.name`);
    const nodeIndex = nodes.findIndex((n) => n.name === pod.node);
    if (nodeIndex < 0) throw new InvalidArgument(`${field}.node "${pod.node}" is not a node of the spec`, `${field}.node`);
    const node = nodes[nodeIndex]!;
    const cidr = podCidrs[nodeIndex]!;
    let addr: number;
    if (pod.ip === undefined) {
      const n = nextPodHost.get(node.name)!;
      nextPodHost.set(node.name, n + 1);
      addr = cidr.network + n;
    } else {
      addr = addrField(pod.ip, `${field}.ip`);
    }
    const ip = formatIpv4(addr);
    if (!isHostOf(cidr, addr) || ip === node.gatewayIp) {
      throw new InvalidArgument(`${field}.ip ${ip} is not a free host address of ${node.podCidr} (the gateway is ${node.gatewayIp})`, `${field}.ip`);
    }
    if (podIps.has(ip)) throw new InvalidArgument(`${field}.ip ${ip} is used twice`, `${field}.ip`);
    podIps.add(ip);
    return { name: pod.name, node: node.name, namespace: `${prefix}-${pod.name}`, ip, interface: 'eth0', hostVeth: `v-${pod.name}` };
  });

  return {
    version: 1,
    prefix,
    status: 'creating',
    createdAt: new Date().toISOString(),
    underlay: { namespace: `${prefix}-ul`, bridge: 'br0', cidr: formatCidr(underlay) },
    host: hostAddress === null ? null : { link: `${prefix}-host`, address: hostAddress },
    nodes,
    pods,
    rootLinks: [],
  };
}

function cidrField(text: string, field: string): Ipv4Cidr {
  const cidr = parseIpv4Cidr(text);
  if (cidr === null) throw new InvalidArgument(`${field} "${text}" is not an IPv4 CIDR with zero host bits`, field);
  return cidr;
}

function addrField(text: string, field: string): number {
  const addr = parseIpv4(text);
  if (addr === null) throw new InvalidArgument(`${field} "${text}" is not an IPv4 address`, field);
  return addr;
}
