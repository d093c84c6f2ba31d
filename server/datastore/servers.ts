import { InvalidArgument, NotFound } from '../../spiffe/index.js';
import type { Core, Queryable, Tx } from './core.js';

/** One authority a server signs with, as it goes into the bundle. */
export interface ServerAuthority {
  /** The bundle's JWK: `use` x509-svid (with x5c) or jwt-svid (with kid). */
  jwk: Record<string, unknown>;
  expiresAt: number;
}

export interface ServerRecord {
  serverId: string;
  startedAt: number;
  heartbeatAt: number;
  agentAddress: string;
  authorities: ServerAuthority[];
  /** Base64 DER of CA certificates below the bundle (upstream authority). */
  intermediates: string[];
  caTtl: number;
}

interface ServerRow {
  server_id: string; started_at: number; heartbeat_at: number; agent_address: string; authorities: string; intermediates: string; ca_ttl: number;
}

function rowToServer(r: ServerRow): ServerRecord {
  const authorities = (JSON.parse(r.authorities) as { jwk: Record<string, unknown>; expires_at: number }[])
    .map((a) => ({ jwk: a.jwk, expiresAt: a.expires_at }));
  return {
    serverId: r.server_id, startedAt: r.started_at, heartbeatAt: r.heartbeat_at, agentAddress: r.agent_address,
    authorities, intermediates: JSON.parse(r.intermediates) as string[], caTtl: r.ca_ttl,
  };
}

export interface LeaseRecord { name: string; holder: string; expiresAt: number }

/** The servers that share this datastore, and the leases that pick one of them for a job. */
export class ServerStore {
  constructor(private readonly core: Core) {}

  /** Records a server at start (or again after a restart with the same id). */
  async register(tx: Tx, s: { serverId: string; agentAddress: string; caTtl: number }): Promise<ServerRecord> {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(s.serverId)) throw new InvalidArgument('server id must be 1-128 letters, digits, ".", "_" or "-"', 'server_id');
    const now = this.core.nowSeconds();
    await tx.run(`INSERT INTO servers (server_id, started_at, heartbeat_at, agent_address, ca_ttl) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (server_id) DO UPDATE SET started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
        agent_address = excluded.agent_address, ca_ttl = excluded.ca_ttl`, s.serverId, now, now, s.agentAddress, s.caTtl);
    return this.get(tx, s.serverId);
  }

  async get(q: Queryable, serverId: string): Promise<ServerRecord> {
    const row = await q.get<ServerRow>('SELECT * FROM servers WHERE server_id = ?', serverId);
    if (!row) throw new NotFound(`server ${JSON.stringify(serverId)} not found`, 'server_id');
    return rowToServer(row);
  }

  async list(q: Queryable): Promise<ServerRecord[]> {
    return (await q.all<ServerRow>('SELECT * FROM servers ORDER BY server_id')).map(rowToServer);
  }

  async setAuthorities(tx: Tx, serverId: string, authorities: readonly ServerAuthority[], intermediates: readonly string[]): Promise<void> {
    const json = JSON.stringify(authorities.map((a) => ({ jwk: a.jwk, expires_at: a.expiresAt })));
    const n = await tx.run('UPDATE servers SET authorities = ?, intermediates = ?, heartbeat_at = ? WHERE server_id = ?',
      json, JSON.stringify(intermediates), this.core.nowSeconds(), serverId);
    if (n === 0) throw new NotFound(`server ${JSON.stringify(serverId)} is not registered`, 'server_id');
  }

  /** Returns false when the server's row is gone (it was pruned as dead): it must register again. */
  async heartbeat(tx: Tx, serverId: string): Promise<boolean> {
    return await tx.run('UPDATE servers SET heartbeat_at = ? WHERE server_id = ?', this.core.nowSeconds(), serverId) > 0;
  }

  /** Forgets a server and its CA journal (its keys are no longer trusted once the bundle is rebuilt). */
  async delete(tx: Tx, serverId: string): Promise<void> {
    await tx.run('DELETE FROM ca_journal WHERE server_id = ?', serverId);
    await tx.run('DELETE FROM servers WHERE server_id = ?', serverId);
    await tx.run('DELETE FROM leases WHERE holder = ?', serverId);
  }

  /** CA journal rows of a server from before servers had ids ('' ) become this server's; returns how many. */
  claimUnownedCaJournal(tx: Tx, serverId: string): Promise<number> {
    return tx.run("UPDATE ca_journal SET server_id = ? WHERE server_id = ''", serverId);
  }

  /**
   * Takes or renews the lease `name` for `holder` for `ttlSeconds`: true when the
   * holder has it now (it was free, expired, or already its own). Writes are
   * serialized (engine.ts), so of servers asking at once exactly one wins.
   */
  async acquireLease(tx: Tx, name: string, holder: string, ttlSeconds: number): Promise<boolean> {
    const now = this.core.nowSeconds();
    const cur = await tx.get<{ holder: string; expires_at: number }>('SELECT holder, expires_at FROM leases WHERE name = ?', name);
    if (cur && cur.holder !== holder && cur.expires_at > now) return false;
    await tx.run(`INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
        ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at`, name, holder, now + ttlSeconds);
    return true;
  }

  async releaseLease(tx: Tx, name: string, holder: string): Promise<void> {
    await tx.run('DELETE FROM leases WHERE name = ? AND holder = ?', name, holder);
  }

  async listLeases(q: Queryable): Promise<LeaseRecord[]> {
    return (await q.all<{ name: string; holder: string; expires_at: number }>('SELECT name, holder, expires_at FROM leases ORDER BY name'))
      .map((r) => ({ name: r.name, holder: r.holder, expiresAt: r.expires_at }));
  }
}
