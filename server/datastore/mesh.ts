import { isIP } from 'node:net';
import { FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted } from '../../spiffe/errors.js';
import type { Core } from './core.js';
import type {
  Endpoint, EndpointUpdate, Identity, MeshNode, MeshNodeUpdate, Policy, PolicyUpdate, ServiceAccountRef,
} from './types.js';

export const MIN_IDENTITY = 256;
export const MAX_IDENTITY = 0xffff_ffff;
export const MIN_NODE_ID = 1;
export const MAX_NODE_ID = 0xffff;

function nonEmpty(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new InvalidArgument(`${field} must be a non-empty string`, field);
  return value;
}

function checkLabels(labels: unknown, field: string): Record<string, string> {
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) throw new InvalidArgument('labels must be an object', field);
  for (const [k, v] of Object.entries(labels)) {
    if (typeof v !== 'string') throw new InvalidArgument(`label ${JSON.stringify(k)} must be a string`, `${field}.${k}`);
  }
  return labels as Record<string, string>;
}

/**
 * Hands out numbers from [min, max] with a cursor that only moves forward (and wraps),
 * so a number that was just freed is not given to someone else at once: agents may
 * still hold auth-map and policy entries for it.
 */
function allocateNumber(core: Core, table: 'identities' | 'nodes', min: number, max: number, cursorKey: string): number {
  const taken = core.stmt(`SELECT 1 FROM ${table} WHERE id = ?`);
  const nextGap = core.stmt(`SELECT t.id + 1 FROM ${table} t WHERE t.id >= ? AND t.id < ?
      AND NOT EXISTS (SELECT 1 FROM ${table} u WHERE u.id = t.id + 1) ORDER BY t.id LIMIT 1`).pluck();
  const firstFree = (lo: number, hi: number): number | undefined => {
    if (lo > hi) return undefined;
    if (!taken.get(lo)) return lo;
    return (nextGap.get(lo, hi) as number | undefined) ?? undefined;
  };
  const cursor = Math.min(Math.max(core.meta(cursorKey), min), max);
  const id = firstFree(cursor, max) ?? firstFree(min, cursor - 1);
  if (id === undefined) throw new ResourceExhausted(`all numbers ${min}..${max} are in use`, table === 'identities' ? 'identity' : 'node_id');
  core.setMeta(cursorKey, id >= max ? min : id + 1);
  return id;
}

interface IdentityRow {
  id: number; labels_key: string; labels: string; service_account_namespace: string; service_account_name: string;
  created_at: number; revision: number;
}

function rowToIdentity(r: IdentityRow): Identity {
  return {
    id: r.id,
    labelsKey: r.labels_key,
    labels: JSON.parse(r.labels) as Record<string, string>,
    serviceAccount: { namespace: r.service_account_namespace, name: r.service_account_name },
    createdAt: r.created_at,
    revision: r.revision,
  };
}

export class IdentityStore {
  constructor(private readonly core: Core) {}

  /** The identity of this labels key: the existing one, or a new number >= 256. */
  allocate(labelsKey: string, labels: Record<string, string>, serviceAccount: ServiceAccountRef): Identity {
    nonEmpty(labelsKey, 'labels_key');
    const labelsJson = JSON.stringify(checkLabels(labels, 'labels'));
    nonEmpty(serviceAccount?.namespace, 'service_account.namespace');
    nonEmpty(serviceAccount?.name, 'service_account.name');
    const existing = this.findByLabelsKey(labelsKey);
    if (existing) return this.checkSameAccount(existing, serviceAccount);
    return this.core.write(() => {
      const again = this.findByLabelsKey(labelsKey); // another process may have won the race
      if (again) return this.checkSameAccount(again, serviceAccount);
      const id = allocateNumber(this.core, 'identities', MIN_IDENTITY, MAX_IDENTITY, 'identity_cursor');
      const revision = this.core.recordChange('identity', String(id), 'upsert');
      this.core.stmt(`INSERT INTO identities (id, labels_key, labels, service_account_namespace, service_account_name,
          created_at, revision) VALUES (?, ?, ?, ?, ?, ?, ?)`)
        .run(id, labelsKey, labelsJson, serviceAccount.namespace, serviceAccount.name, this.core.nowSeconds(), revision);
      return this.get(id);
    });
  }

  get(id: number): Identity {
    const row = this.core.stmt('SELECT * FROM identities WHERE id = ?').get(id) as IdentityRow | undefined;
    if (!row) throw new NotFound(`identity ${id} not found`, 'identity');
    return rowToIdentity(row);
  }

  findByLabelsKey(labelsKey: string): Identity | undefined {
    const row = this.core.stmt('SELECT * FROM identities WHERE labels_key = ?').get(labelsKey) as IdentityRow | undefined;
    return row && rowToIdentity(row);
  }

  list(): Identity[] {
    return (this.core.stmt('SELECT * FROM identities ORDER BY id').all() as IdentityRow[]).map(rowToIdentity);
  }

  delete(id: number): void {
    this.core.write(() => {
      this.get(id);
      const users = this.core.stmt('SELECT COUNT(*) FROM endpoints WHERE identity = ?').pluck().get(id) as number;
      if (users > 0) throw new FailedPrecondition(`identity ${id} is used by ${users} endpoints`, 'identity');
      this.core.stmt('DELETE FROM identities WHERE id = ?').run(id);
      this.core.recordChange('identity', String(id), 'delete');
    });
  }

  private checkSameAccount(identity: Identity, sa: ServiceAccountRef): Identity {
    if (identity.serviceAccount.namespace !== sa.namespace || identity.serviceAccount.name !== sa.name) {
      throw new FailedPrecondition(`labels key of identity ${identity.id} belongs to service account ` +
        `${identity.serviceAccount.namespace}/${identity.serviceAccount.name}, not ${sa.namespace}/${sa.name}`, 'service_account');
    }
    return identity;
  }
}

interface NodeRow {
  id: number; name: string; address: string; wireguard_public_key: string; pod_cidr: string; agent_id: string; created_at: number; revision: number;
}

function rowToMeshNode(r: NodeRow): MeshNode {
  return {
    id: r.id, name: r.name, address: r.address, wireguardPublicKey: r.wireguard_public_key, podCidr: r.pod_cidr, agentId: r.agent_id,
    createdAt: r.created_at, revision: r.revision,
  };
}

export class NodeStore {
  constructor(private readonly core: Core) {}

  /** The node id of `name`: the existing one, or a new number >= 1 (reserved by a row with empty fields). */
  allocateId(name: string): number {
    nonEmpty(name, 'name');
    const existing = this.findByName(name);
    if (existing) return existing.id;
    return this.core.write(() => this.allocateInTx(name));
  }

  /** Creates or updates the node called `name`; fields left out keep their value. No change, no new revision. */
  upsert(update: MeshNodeUpdate): MeshNode {
    nonEmpty(update.name, 'name');
    if (update.address !== undefined && update.address !== '' && isIP(update.address) === 0) {
      throw new InvalidArgument(`address ${JSON.stringify(update.address)} is not an IP address`, 'address');
    }
    return this.core.write(() => {
      const current = this.findByName(update.name) ?? this.get(this.allocateInTx(update.name));
      const next = {
        address: update.address ?? current.address,
        wireguardPublicKey: update.wireguardPublicKey ?? current.wireguardPublicKey,
        podCidr: update.podCidr ?? current.podCidr,
        agentId: update.agentId ?? current.agentId,
      };
      if (next.address === current.address && next.wireguardPublicKey === current.wireguardPublicKey && next.podCidr === current.podCidr &&
        next.agentId === current.agentId) {
        return current;
      }
      const revision = this.core.recordChange('node', String(current.id), 'upsert');
      this.core.stmt('UPDATE nodes SET address = ?, wireguard_public_key = ?, pod_cidr = ?, agent_id = ?, revision = ? WHERE id = ?')
        .run(next.address, next.wireguardPublicKey, next.podCidr, next.agentId, revision, current.id);
      return this.get(current.id);
    });
  }

  get(id: number): MeshNode {
    const row = this.core.stmt('SELECT * FROM nodes WHERE id = ?').get(id) as NodeRow | undefined;
    if (!row) throw new NotFound(`node ${id} not found`, 'node_id');
    return rowToMeshNode(row);
  }

  findByName(name: string): MeshNode | undefined {
    const row = this.core.stmt('SELECT * FROM nodes WHERE name = ?').get(name) as NodeRow | undefined;
    return row && rowToMeshNode(row);
  }

  list(): MeshNode[] {
    return (this.core.stmt('SELECT * FROM nodes ORDER BY id').all() as NodeRow[]).map(rowToMeshNode);
  }

  delete(id: number): void {
    this.core.write(() => {
      this.get(id);
      const users = this.core.stmt('SELECT COUNT(*) FROM endpoints WHERE node_id = ?').pluck().get(id) as number;
      if (users > 0) throw new FailedPrecondition(`node ${id} still has ${users} endpoints`, 'node_id');
      this.core.stmt('DELETE FROM nodes WHERE id = ?').run(id);
      this.core.recordChange('node', String(id), 'delete');
    });
  }

  private allocateInTx(name: string): number {
    const existing = this.findByName(name);
    if (existing) return existing.id;
    const id = allocateNumber(this.core, 'nodes', MIN_NODE_ID, MAX_NODE_ID, 'node_cursor');
    const revision = this.core.recordChange('node', String(id), 'upsert');
    this.core.stmt('INSERT INTO nodes (id, name, created_at, revision) VALUES (?, ?, ?, ?)').run(id, name, this.core.nowSeconds(), revision);
    return id;
  }
}

interface EndpointRow { ip: string; identity: number; node_id: number; namespace: string; name: string; labels: string; revision: number }

function rowToEndpoint(r: EndpointRow): Endpoint {
  return {
    ip: r.ip, identity: r.identity, nodeId: r.node_id, namespace: r.namespace, name: r.name,
    labels: JSON.parse(r.labels) as Record<string, string>, revision: r.revision,
  };
}

export class EndpointStore {
  constructor(private readonly core: Core) {}

  /** Creates or replaces the endpoint at `ip`. No change, no new revision. */
  upsert(ep: EndpointUpdate): Endpoint {
    if (typeof ep.ip !== 'string' || isIP(ep.ip) === 0) throw new InvalidArgument(`${JSON.stringify(ep.ip)} is not an IP address`, 'ip');
    nonEmpty(ep.namespace, 'namespace');
    nonEmpty(ep.name, 'name');
    const labels = JSON.stringify(checkLabels(ep.labels, 'labels'));
    return this.core.write(() => {
      if (!this.core.stmt('SELECT 1 FROM identities WHERE id = ?').get(ep.identity)) {
        throw new FailedPrecondition(`identity ${ep.identity} does not exist`, 'identity');
      }
      if (!this.core.stmt('SELECT 1 FROM nodes WHERE id = ?').get(ep.nodeId)) {
        throw new FailedPrecondition(`node ${ep.nodeId} does not exist`, 'node_id');
      }
      const cur = this.core.stmt('SELECT * FROM endpoints WHERE ip = ?').get(ep.ip) as EndpointRow | undefined;
      if (cur && cur.identity === ep.identity && cur.node_id === ep.nodeId && cur.namespace === ep.namespace &&
          cur.name === ep.name && cur.labels === labels) {
        return rowToEndpoint(cur);
      }
      const revision = this.core.recordChange('endpoint', ep.ip, 'upsert');
      this.core.stmt(`INSERT INTO endpoints (ip, identity, node_id, namespace, name, labels, revision) VALUES (?, ?, ?, ?, ?, ?, ?)
          ON CONFLICT (ip) DO UPDATE SET identity = excluded.identity, node_id = excluded.node_id, namespace = excluded.namespace,
          name = excluded.name, labels = excluded.labels, revision = excluded.revision`)
        .run(ep.ip, ep.identity, ep.nodeId, ep.namespace, ep.name, labels, revision);
      return this.get(ep.ip);
    });
  }

  get(ip: string): Endpoint {
    const ep = this.find(ip);
    if (!ep) throw new NotFound(`no endpoint with IP ${ip}`, 'ip');
    return ep;
  }

  find(ip: string): Endpoint | undefined {
    const row = this.core.stmt('SELECT * FROM endpoints WHERE ip = ?').get(ip) as EndpointRow | undefined;
    return row && rowToEndpoint(row);
  }

  list(filter: { nodeId?: number; identity?: number } = {}): Endpoint[] {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.nodeId !== undefined) { where.push('node_id = ?'); params.push(filter.nodeId); }
    if (filter.identity !== undefined) { where.push('identity = ?'); params.push(filter.identity); }
    const sql = 'SELECT * FROM endpoints' + (where.length ? ` WHERE ${where.join(' AND ')}` : '') + ' ORDER BY ip';
    return (this.core.stmt(sql).all(...params) as EndpointRow[]).map(rowToEndpoint);
  }

  delete(ip: string): void {
    this.core.write(() => {
      this.get(ip);
      this.core.stmt('DELETE FROM endpoints WHERE ip = ?').run(ip);
      this.core.recordChange('endpoint', ip, 'delete');
    });
  }
}

interface PolicyRow { namespace: string; name: string; kind: string; spec: string; revision: number }

function rowToPolicy(r: PolicyRow): Policy {
  return { namespace: r.namespace, name: r.name, kind: r.kind, spec: JSON.parse(r.spec) as unknown, revision: r.revision };
}

/** Policies are keyed by (namespace, name); namespace "" holds cluster-wide ones. */
export class PolicyStore {
  constructor(private readonly core: Core) {}

  upsert(p: PolicyUpdate): Policy {
    if (typeof p.namespace !== 'string') throw new InvalidArgument('namespace must be a string', 'namespace');
    nonEmpty(p.name, 'name');
    nonEmpty(p.kind, 'kind');
    if (p.spec === undefined) throw new InvalidArgument('spec is missing', 'spec');
    const spec = JSON.stringify(p.spec);
    return this.core.write(() => {
      const cur = this.core.stmt('SELECT * FROM policies WHERE namespace = ? AND name = ?').get(p.namespace, p.name) as PolicyRow | undefined;
      if (cur && cur.kind === p.kind && cur.spec === spec) return rowToPolicy(cur);
      const revision = this.core.recordChange('policy', `${p.namespace}/${p.name}`, 'upsert');
      this.core.stmt(`INSERT INTO policies (namespace, name, kind, spec, revision) VALUES (?, ?, ?, ?, ?)
          ON CONFLICT (namespace, name) DO UPDATE SET kind = excluded.kind, spec = excluded.spec, revision = excluded.revision`)
        .run(p.namespace, p.name, p.kind, spec, revision);
      return this.get(p.namespace, p.name);
    });
  }

  get(namespace: string, name: string): Policy {
    const row = this.core.stmt('SELECT * FROM policies WHERE namespace = ? AND name = ?').get(namespace, name) as PolicyRow | undefined;
    if (!row) throw new NotFound(`policy ${namespace}/${name} not found`, 'name');
    return rowToPolicy(row);
  }

  list(filter: { namespace?: string } = {}): Policy[] {
    const rows = filter.namespace === undefined
      ? this.core.stmt('SELECT * FROM policies ORDER BY namespace, name').all()
      : this.core.stmt('SELECT * FROM policies WHERE namespace = ? ORDER BY name').all(filter.namespace);
    return (rows as PolicyRow[]).map(rowToPolicy);
  }

  delete(namespace: string, name: string): void {
    this.core.write(() => {
      this.get(namespace, name);
      this.core.stmt('DELETE FROM policies WHERE namespace = ? AND name = ?').run(namespace, name);
      this.core.recordChange('policy', `${namespace}/${name}`, 'delete');
    });
  }
}
