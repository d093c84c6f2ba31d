import { isIP } from 'node:net';
import { FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted } from '../../spiffe/index.js';
import type { Core, Queryable, Tx } from './core.js';
import type { SqlParam } from './engine.js';
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
async function allocateNumber(core: Core, tx: Tx, table: 'identities' | 'nodes', min: number, max: number, cursorKey: string): Promise<number> {
  const firstFree = async (lo: number, hi: number): Promise<number | undefined> => {
    if (lo > hi) return undefined;
    if (!await tx.get(`SELECT 1 FROM ${table} WHERE id = ?`, lo)) return lo;
    return tx.value<number>(`SELECT t.id + 1 FROM ${table} t WHERE t.id >= ? AND t.id < ?
      AND NOT EXISTS (SELECT 1 FROM ${table} u WHERE u.id = t.id + 1) ORDER BY t.id LIMIT 1`, lo, hi);
  };
  const cursor = Math.min(Math.max(await core.meta(tx, cursorKey), min), max);
  const id = await firstFree(cursor, max) ?? await firstFree(min, cursor - 1);
  if (id === undefined) throw new ResourceExhausted(`all numbers ${min}..${max} are in use`, table === 'identities' ? 'identity' : 'node_id');
  await core.setMeta(tx, cursorKey, id >= max ? min : id + 1);
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

  /** Checks the arguments of allocate before any transaction starts. */
  static check(labelsKey: string, labels: Record<string, string>, serviceAccount: ServiceAccountRef): string {
    nonEmpty(labelsKey, 'labels_key');
    const labelsJson = JSON.stringify(checkLabels(labels, 'labels'));
    nonEmpty(serviceAccount?.namespace, 'service_account.namespace');
    nonEmpty(serviceAccount?.name, 'service_account.name');
    return labelsJson;
  }

  /** The identity of this labels key: the existing one, or a new number >= 256. */
  async allocate(tx: Tx, labelsKey: string, labels: Record<string, string>, serviceAccount: ServiceAccountRef): Promise<Identity> {
    const labelsJson = IdentityStore.check(labelsKey, labels, serviceAccount);
    const existing = await this.findByLabelsKey(tx, labelsKey); // another server may have won the race
    if (existing) return checkSameAccount(existing, serviceAccount);
    const id = await allocateNumber(this.core, tx, 'identities', MIN_IDENTITY, MAX_IDENTITY, 'identity_cursor');
    const revision = await this.core.recordChange(tx, 'identity', String(id), 'upsert');
    await tx.run(`INSERT INTO identities (id, labels_key, labels, service_account_namespace, service_account_name,
        created_at, revision) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    id, labelsKey, labelsJson, serviceAccount.namespace, serviceAccount.name, this.core.nowSeconds(), revision);
    return this.get(tx, id);
  }

  async get(q: Queryable, id: number): Promise<Identity> {
    const row = await q.get<IdentityRow>('SELECT * FROM identities WHERE id = ?', id);
    if (!row) throw new NotFound(`identity ${id} not found`, 'identity');
    return rowToIdentity(row);
  }

  async findByLabelsKey(q: Queryable, labelsKey: string): Promise<Identity | undefined> {
    const row = await q.get<IdentityRow>('SELECT * FROM identities WHERE labels_key = ?', labelsKey);
    return row && rowToIdentity(row);
  }

  async list(q: Queryable): Promise<Identity[]> {
    return (await q.all<IdentityRow>('SELECT * FROM identities ORDER BY id')).map(rowToIdentity);
  }

  async delete(tx: Tx, id: number): Promise<void> {
    await this.get(tx, id);
    const users = (await tx.value<number>('SELECT COUNT(*) FROM endpoints WHERE identity = ?', id))!;
    if (users > 0) throw new FailedPrecondition(`identity ${id} is used by ${users} endpoints`, 'identity');
    await tx.run('DELETE FROM identities WHERE id = ?', id);
    await this.core.recordChange(tx, 'identity', String(id), 'delete');
  }
}

export function checkSameAccount(identity: Identity, sa: ServiceAccountRef): Identity {
  if (identity.serviceAccount.namespace !== sa.namespace || identity.serviceAccount.name !== sa.name) {
    throw new FailedPrecondition(`labels key of identity ${identity.id} belongs to service account ` +
      `${identity.serviceAccount.namespace}/${identity.serviceAccount.name}, not ${sa.namespace}/${sa.name}`, 'service_account');
  }
  return identity;
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
  async allocateId(tx: Tx, name: string): Promise<number> {
    nonEmpty(name, 'name');
    return this.allocateInTx(tx, name);
  }

  static checkUpdate(update: MeshNodeUpdate): void {
    nonEmpty(update.name, 'name');
    if (update.address !== undefined && update.address !== '' && isIP(update.address) === 0) {
      throw new InvalidArgument(`address ${JSON.stringify(update.address)} is not an IP address`, 'address');
    }
  }

  /** Creates or updates the node called `name`; fields left out keep their value. No change, no new revision. */
  async upsert(tx: Tx, update: MeshNodeUpdate): Promise<MeshNode> {
    NodeStore.checkUpdate(update);
    const current = await this.findByName(tx, update.name) ?? await this.get(tx, await this.allocateInTx(tx, update.name));
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
    const revision = await this.core.recordChange(tx, 'node', String(current.id), 'upsert');
    await tx.run('UPDATE nodes SET address = ?, wireguard_public_key = ?, pod_cidr = ?, agent_id = ?, revision = ? WHERE id = ?',
      next.address, next.wireguardPublicKey, next.podCidr, next.agentId, revision, current.id);
    return this.get(tx, current.id);
  }

  async get(q: Queryable, id: number): Promise<MeshNode> {
    const row = await q.get<NodeRow>('SELECT * FROM nodes WHERE id = ?', id);
    if (!row) throw new NotFound(`node ${id} not found`, 'node_id');
    return rowToMeshNode(row);
  }

  async findByName(q: Queryable, name: string): Promise<MeshNode | undefined> {
    const row = await q.get<NodeRow>('SELECT * FROM nodes WHERE name = ?', name);
    return row && rowToMeshNode(row);
  }

  async list(q: Queryable): Promise<MeshNode[]> {
    return (await q.all<NodeRow>('SELECT * FROM nodes ORDER BY id')).map(rowToMeshNode);
  }

  async delete(tx: Tx, id: number): Promise<void> {
    await this.get(tx, id);
    const users = (await tx.value<number>('SELECT COUNT(*) FROM endpoints WHERE node_id = ?', id))!;
    if (users > 0) throw new FailedPrecondition(`node ${id} still has ${users} endpoints`, 'node_id');
    await tx.run('DELETE FROM nodes WHERE id = ?', id);
    await this.core.recordChange(tx, 'node', String(id), 'delete');
  }

  private async allocateInTx(tx: Tx, name: string): Promise<number> {
    const existing = await this.findByName(tx, name);
    if (existing) return existing.id;
    const id = await allocateNumber(this.core, tx, 'nodes', MIN_NODE_ID, MAX_NODE_ID, 'node_cursor');
    const revision = await this.core.recordChange(tx, 'node', String(id), 'upsert');
    await tx.run('INSERT INTO nodes (id, name, created_at, revision) VALUES (?, ?, ?, ?)', id, name, this.core.nowSeconds(), revision);
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
  async upsert(tx: Tx, ep: EndpointUpdate): Promise<Endpoint> {
    if (typeof ep.ip !== 'string' || isIP(ep.ip) === 0) throw new InvalidArgument(`${JSON.stringify(ep.ip)} is not an IP address`, 'ip');
    nonEmpty(ep.namespace, 'namespace');
    nonEmpty(ep.name, 'name');
    const labels = JSON.stringify(checkLabels(ep.labels, 'labels'));
    if (!await tx.get('SELECT 1 FROM identities WHERE id = ?', ep.identity)) {
      throw new FailedPrecondition(`identity ${ep.identity} does not exist`, 'identity');
    }
    if (!await tx.get('SELECT 1 FROM nodes WHERE id = ?', ep.nodeId)) {
      throw new FailedPrecondition(`node ${ep.nodeId} does not exist`, 'node_id');
    }
    const cur = await tx.get<EndpointRow>('SELECT * FROM endpoints WHERE ip = ?', ep.ip);
    if (cur && cur.identity === ep.identity && cur.node_id === ep.nodeId && cur.namespace === ep.namespace &&
        cur.name === ep.name && cur.labels === labels) {
      return rowToEndpoint(cur);
    }
    const revision = await this.core.recordChange(tx, 'endpoint', ep.ip, 'upsert');
    await tx.run(`INSERT INTO endpoints (ip, identity, node_id, namespace, name, labels, revision) VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (ip) DO UPDATE SET identity = excluded.identity, node_id = excluded.node_id, namespace = excluded.namespace,
        name = excluded.name, labels = excluded.labels, revision = excluded.revision`,
    ep.ip, ep.identity, ep.nodeId, ep.namespace, ep.name, labels, revision);
    return this.get(tx, ep.ip);
  }

  async get(q: Queryable, ip: string): Promise<Endpoint> {
    const ep = await this.find(q, ip);
    if (!ep) throw new NotFound(`no endpoint with IP ${ip}`, 'ip');
    return ep;
  }

  async find(q: Queryable, ip: string): Promise<Endpoint | undefined> {
    const row = await q.get<EndpointRow>('SELECT * FROM endpoints WHERE ip = ?', ip);
    return row && rowToEndpoint(row);
  }

  async list(q: Queryable, filter: { nodeId?: number; identity?: number } = {}): Promise<Endpoint[]> {
    const where: string[] = [];
    const params: SqlParam[] = [];
    if (filter.nodeId !== undefined) { where.push('node_id = ?'); params.push(filter.nodeId); }
    if (filter.identity !== undefined) { where.push('identity = ?'); params.push(filter.identity); }
    const sql = 'SELECT * FROM endpoints' + (where.length ? ` WHERE ${where.join(' AND ')}` : '') + ' ORDER BY ip';
    return (await q.all<EndpointRow>(sql, ...params)).map(rowToEndpoint);
  }

  async delete(tx: Tx, ip: string): Promise<void> {
    await this.get(tx, ip);
    await tx.run('DELETE FROM endpoints WHERE ip = ?', ip);
    await this.core.recordChange(tx, 'endpoint', ip, 'delete');
  }
}

interface PolicyRow { namespace: string; name: string; kind: string; spec: string; revision: number }

function rowToPolicy(r: PolicyRow): Policy {
  return { namespace: r.namespace, name: r.name, kind: r.kind, spec: JSON.parse(r.spec) as unknown, revision: r.revision };
}

/** Policies are keyed by (namespace, name); namespace "" holds cluster-wide ones. */
export class PolicyStore {
  constructor(private readonly core: Core) {}

  async upsert(tx: Tx, p: PolicyUpdate): Promise<Policy> {
    if (typeof p.namespace !== 'string') throw new InvalidArgument('namespace must be a string', 'namespace');
    nonEmpty(p.name, 'name');
    nonEmpty(p.kind, 'kind');
    if (p.spec === undefined) throw new InvalidArgument('spec is missing', 'spec');
    const spec = JSON.stringify(p.spec);
    const cur = await tx.get<PolicyRow>('SELECT * FROM policies WHERE namespace = ? AND name = ?', p.namespace, p.name);
    if (cur && cur.kind === p.kind && cur.spec === spec) return rowToPolicy(cur);
    const revision = await this.core.recordChange(tx, 'policy', `${p.namespace}/${p.name}`, 'upsert');
    await tx.run(`INSERT INTO policies (namespace, name, kind, spec, revision) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (namespace, name) DO UPDATE SET kind = excluded.kind, spec = excluded.spec, revision = excluded.revision`,
    p.namespace, p.name, p.kind, spec, revision);
    return this.get(tx, p.namespace, p.name);
  }

  async get(q: Queryable, namespace: string, name: string): Promise<Policy> {
    const row = await q.get<PolicyRow>('SELECT * FROM policies WHERE namespace = ? AND name = ?', namespace, name);
    if (!row) throw new NotFound(`policy ${namespace}/${name} not found`, 'name');
    return rowToPolicy(row);
  }

  async list(q: Queryable, filter: { namespace?: string } = {}): Promise<Policy[]> {
    const rows = filter.namespace === undefined
      ? await q.all<PolicyRow>('SELECT * FROM policies ORDER BY namespace, name')
      : await q.all<PolicyRow>('SELECT * FROM policies WHERE namespace = ? ORDER BY name', filter.namespace);
    return rows.map(rowToPolicy);
  }

  async delete(tx: Tx, namespace: string, name: string): Promise<void> {
    await this.get(tx, namespace, name);
    await tx.run('DELETE FROM policies WHERE namespace = ? AND name = ?', namespace, name);
    await this.core.recordChange(tx, 'policy', `${namespace}/${name}`, 'delete');
  }
}
