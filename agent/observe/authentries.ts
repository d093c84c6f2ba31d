/** A node's auth map, each pair named with the SPIFFE IDs and nodes the agent has synced. */
import { AuthType, bootNsToWallClock, type AuthPair } from '../../bpf/index.js';
import type { AuthEntryJson } from '../../api/observe.js';
import type { AgentState } from '../sync/index.js';

export function authEntriesJson(
  state: Pick<AgentState, 'identities' | 'nodes'>, nodeName: string,
  entries: Iterable<{ pair: AuthPair; expiresAtBootNs: bigint }>,
): AuthEntryJson[] {
  const name = (id: number): string | null => state.identities.get(id)?.spiffeId.toString() ?? null;
  return [...entries].map(({ pair, expiresAtBootNs }) => ({
    local_identity: pair.localIdentity, local_spiffe_id: name(pair.localIdentity),
    remote_identity: pair.remoteIdentity, remote_spiffe_id: name(pair.remoteIdentity),
    remote_node_id: pair.remoteNodeId, remote_node: pair.remoteNodeId === 0 ? nodeName : (state.nodes.get(pair.remoteNodeId)?.name ?? null),
    auth_type: pair.authType === AuthType.mutual ? 'mutual' : String(pair.authType),
    expires_at: bootNsToWallClock(expiresAtBootNs).toISOString(),
  }));
}
