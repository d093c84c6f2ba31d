/**
 * The JSON of the cluster-wide view that agents relay and the admin API serves
 * (/v1/auth, /v1/relay/nodes): shared by the agent, the server, the CLI and the UI.
 */

/** One entry of a node's auth map, named. */
export interface AuthEntryJson {
  local_identity: number;
  local_spiffe_id: string | null;
  remote_identity: number;
  remote_spiffe_id: string | null;
  remote_node_id: number;
  remote_node: string | null;
  auth_type: string;
  expires_at: string;
}

/** A node's relay as the server sees it. */
export interface RelayNodeJson {
  node: string;
  agent_id: string;
  /** connected: its relay stream is open; unavailable: it was, and is not now. */
  state: 'connected' | 'unavailable';
  /** When the stream opened, or when it closed. */
  since: string;
  /** The last message from it. */
  last_seen: string;
  flows_received: number;
  /** Flow events the node reported lost (its ring or its relay queue was full). */
  flows_lost: number;
  counters: Array<{ reason: string; direction: string; packets: number; bytes: number }>;
}

/** /v1/auth: every node's authenticated pairs, and the nodes whose answer is missing. */
export interface ClusterAuthJson {
  nodes: Array<{ node: string; state: RelayNodeJson['state']; since: string; entries: AuthEntryJson[] }>;
  unavailable: string[];
}
