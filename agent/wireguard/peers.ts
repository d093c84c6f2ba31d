import { isIPv4, isIPv6 } from 'node:net';
import { InvalidArgument } from '../../spiffe/index.js';
import { canonicalCidr } from '../../common/cidr.js';
import { decodeWireGuardKey } from './key.js';

/** One remote node as the agent wants it configured: its key, where it listens on the underlay, its pod CIDR(s). */
export interface WireGuardPeer {
  /** base64, as `wg pubkey` prints it. */
  readonly publicKey: string;
  /** `IP:port` or `[IPv6]:port` on the underlay. */
  readonly endpoint: string;
  /** The CIDRs routed to this peer (that node's pod CIDR). */
  readonly allowedIps: readonly string[];
  /** Seconds between keepalives; absent or 0 for none. */
  readonly persistentKeepalive?: number;
}

/** A peer in the canonical form that `wg show … dump` prints, so desired and actual compare field by field. */
export interface CanonicalPeer {
  readonly publicKey: string;
  readonly endpoint: string;
  readonly allowedIps: readonly string[];
  readonly persistentKeepalive: number;
}

/** A peer's live state, from `wg show <dev> dump`. */
export interface PeerStatus {
  readonly publicKey: string;
  readonly endpoint: string | null;
  readonly allowedIps: readonly string[];
  /** Time of the last completed handshake; null before the first one. */
  readonly latestHandshake: Date | null;
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly persistentKeepalive: number;
}

export interface DeviceDump {
  readonly publicKey: string;
  readonly listenPort: number;
  readonly peers: readonly PeerStatus[];
}

/** What a reconcile changed, by public key. */
export interface PeerChanges {
  readonly added: readonly string[];
  readonly updated: readonly string[];
  readonly removed: readonly string[];
}

/** Validates the peers handed to setPeers and puts them in canonical form; errors name the field. */
export function canonicalPeers(peers: readonly WireGuardPeer[], ownPublicKey: string): CanonicalPeer[] {
  const seen = new Set<string>();
  return peers.map((peer, i) => {
    const field = `peers[${i}]`;
    if (decodeWireGuardKey(peer.publicKey) === null) {
      throw new InvalidArgument(`${field}.publicKey is not a base64 32-byte WireGuard key`, `${field}.publicKey`);
    }
    if (peer.publicKey === ownPublicKey) {
      throw new InvalidArgument(`${field}.publicKey is this node's own key`, `${field}.publicKey`);
    }
    if (seen.has(peer.publicKey)) {
      throw new InvalidArgument(`${field}.publicKey appears twice`, `${field}.publicKey`);
    }
    seen.add(peer.publicKey);
    const endpoint = canonicalEndpoint(peer.endpoint);
    if (endpoint === null) {
      throw new InvalidArgument(`${field}.endpoint must be IP:port or [IPv6]:port, got "${peer.endpoint}"`, `${field}.endpoint`);
    }
    const allowedIps = peer.allowedIps.map((cidr, j) => {
      const canonical = canonicalCidr(cidr);
      if (canonical === null) {
        throw new InvalidArgument(`${field}.allowedIps[${j}] is not a CIDR: "${cidr}"`, `${field}.allowedIps[${j}]`);
      }
      return canonical;
    });
    const keepalive = peer.persistentKeepalive ?? 0;
    if (!Number.isInteger(keepalive) || keepalive < 0 || keepalive > 65535) {
      throw new InvalidArgument(`${field}.persistentKeepalive must be 0..65535 seconds`, `${field}.persistentKeepalive`);
    }
    return { publicKey: peer.publicKey, endpoint, allowedIps: [...new Set(allowedIps)].sort(), persistentKeepalive: keepalive };
  });
}

function canonicalEndpoint(text: string): string | null {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  if (m[1] !== undefined) {
    if (!isIPv6(m[1])) return null;
    return `[${canonicalCidr(m[1])!.replace(/\/128$/, '')}]:${port}`;
  }
  if (!isIPv4(m[2]!)) return null;
  return `${canonicalCidr(m[2]!)!.replace(/\/32$/, '')}:${port}`;
}

/** Parses `wg show <dev> dump`: one interface line, then one line per peer, tab-separated. */
export function parseDump(text: string): DeviceDump {
  const lines = text.split('\n').filter((l) => l.length > 0);
  const head = lines[0]?.split('\t');
  if (!head || head.length < 4) throw new Error(`unexpected \`wg show dump\` output: ${JSON.stringify(text.slice(0, 200))}`);
  const peers = lines.slice(1).map((line): PeerStatus => {
    const f = line.split('\t');
    if (f.length < 8) throw new Error(`unexpected \`wg show dump\` peer line: ${JSON.stringify(line)}`);
    const handshake = Number(f[4]);
    return {
      publicKey: f[0]!,
      endpoint: f[2] === '(none)' ? null : f[2]!,
      allowedIps: f[3] === '(none)' ? [] : f[3]!.split(',').map((c) => canonicalCidr(c) ?? c).sort(),
      latestHandshake: handshake > 0 ? new Date(handshake * 1000) : null,
      rxBytes: Number(f[5]),
      txBytes: Number(f[6]),
      persistentKeepalive: f[7] === 'off' ? 0 : Number(f[7]),
    };
  });
  return { publicKey: head[1]!, listenPort: Number(head[2]), peers };
}

/** The `wg set` arguments that turn `actual` into `desired`, and what they change. */
export function peerDiff(desired: readonly CanonicalPeer[], actual: readonly PeerStatus[]): { args: string[]; changes: PeerChanges } {
  const actualByKey = new Map(actual.map((p) => [p.publicKey, p]));
  const desiredKeys = new Set(desired.map((p) => p.publicKey));
  const args: string[] = [];
  const added: string[] = [];
  const updated: string[] = [];
  const removed: string[] = [];
  for (const peer of actual) {
    if (!desiredKeys.has(peer.publicKey)) {
      args.push('peer', peer.publicKey, 'remove');
      removed.push(peer.publicKey);
    }
  }
  for (const peer of desired) {
    const current = actualByKey.get(peer.publicKey);
    if (current && current.endpoint === peer.endpoint && current.persistentKeepalive === peer.persistentKeepalive &&
        current.allowedIps.join(',') === peer.allowedIps.join(',')) continue;
    (current ? updated : added).push(peer.publicKey);
    // `allowed-ips` replaces the peer's whole set; an empty value clears it.
    args.push('peer', peer.publicKey, 'endpoint', peer.endpoint, 'allowed-ips', peer.allowedIps.join(','),
      'persistent-keepalive', peer.persistentKeepalive === 0 ? 'off' : String(peer.persistentKeepalive));
  }
  return { args, changes: { added, updated, removed } };
}
