import { createHash } from 'node:crypto';
import { AlreadyExists, InvalidArgument, NotFound, Selector, SelectorSet, SpiffeId } from '../../spiffe/index.js';
import { type Core, type Queryable, type Tx, checkPageSize, decodePageToken, encodePageToken } from './core.js';
import type { SqlParam } from './engine.js';
import type {
  AttestedNode, AttestedNodePatch, ConsumedJoinToken, ListAttestedNodesOptions, NewAttestedNode, NewJoinToken, Page,
} from './types.js';

interface NodeRow {
  spiffe_id: string;
  attestation_type: string;
  cert_serial: string;
  cert_not_after: number;
  new_cert_serial: string;
  new_cert_not_after: number;
  banned: number;
  can_reattest: number;
  created_at: number;
  updated_at: number;
  revision: number;
  selectors: string;
}

const selectNode = (core: Core): string => `SELECT n.*,
    (SELECT ${core.dialect.jsonArray("s.type || ':' || s.value")} FROM attested_node_selectors s WHERE s.spiffe_id = n.spiffe_id) AS selectors
  FROM attested_nodes n`;

function rowToNode(r: NodeRow): AttestedNode {
  return {
    spiffeId: SpiffeId.parse(r.spiffe_id),
    attestationType: r.attestation_type,
    certSerial: r.cert_serial,
    certNotAfter: r.cert_not_after,
    newCertSerial: r.new_cert_serial,
    newCertNotAfter: r.new_cert_not_after,
    banned: r.banned === 1,
    canReattest: r.can_reattest === 1,
    selectors: SelectorSet.of((JSON.parse(r.selectors) as string[]).map((s) => Selector.parse(s))),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    revision: r.revision,
  };
}

function checkTime(value: number, field: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new InvalidArgument(`${field} must be unix seconds`, field);
  return value;
}

/** Attested nodes (agents): what the server knows about each agent it issued an SVID to. */
export class AttestedNodeStore {
  private readonly selectNode: string;

  constructor(private readonly core: Core) {
    this.selectNode = selectNode(core);
  }

  async create(tx: Tx, node: NewAttestedNode): Promise<AttestedNode> {
    if (node.attestationType === '') throw new InvalidArgument('attestation type is empty', 'attestation_type');
    checkTime(node.certNotAfter, 'cert_not_after');
    const id = node.spiffeId.toString();
    if (await this.find(tx, node.spiffeId)) throw new AlreadyExists(`agent ${id} is already attested`, 'spiffe_id');
    const now = this.core.nowSeconds();
    const revision = await this.core.recordChange(tx, 'agent', id, 'upsert');
    await tx.run(`INSERT INTO attested_nodes (spiffe_id, attestation_type, cert_serial, cert_not_after, can_reattest,
        created_at, updated_at, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    id, node.attestationType, node.certSerial, node.certNotAfter, node.canReattest ? 1 : 0, now, now, revision);
    await this.insertSelectors(tx, id, node.selectors ?? SelectorSet.empty);
    return this.get(tx, node.spiffeId);
  }

  /** undefined when the agent is not known; for attestation, which decides what that means. */
  async find(q: Queryable, id: SpiffeId): Promise<AttestedNode | undefined> {
    const row = await q.get<NodeRow>(`${this.selectNode} WHERE n.spiffe_id = ?`, id.toString());
    return row && rowToNode(row);
  }

  async get(q: Queryable, id: SpiffeId): Promise<AttestedNode> {
    const node = await this.find(q, id);
    if (!node) throw new NotFound(`agent ${id.toString()} not found`, 'spiffe_id');
    return node;
  }

  async list(q: Queryable, opts: ListAttestedNodesOptions = {}): Promise<Page<AttestedNode>> {
    const pageSize = checkPageSize(opts.pageSize);
    const after = decodePageToken('agents', opts.pageToken);
    const where: string[] = [];
    const params: SqlParam[] = [];
    if (opts.banned !== undefined) { where.push('n.banned = ?'); params.push(opts.banned ? 1 : 0); }
    if (opts.attestationType !== undefined) { where.push('n.attestation_type = ?'); params.push(opts.attestationType); }
    if (opts.expiresBefore !== undefined) { where.push('n.cert_not_after < ?'); params.push(opts.expiresBefore); }
    if (after !== undefined) { where.push('n.spiffe_id > ?'); params.push(after); }
    let sql = this.selectNode + (where.length ? ` WHERE ${where.join(' AND ')}` : '') + ' ORDER BY n.spiffe_id';
    if (pageSize > 0) { sql += ' LIMIT ?'; params.push(pageSize + 1); }
    const rows = await q.all<NodeRow>(sql, ...params);
    let nextPageToken = '';
    if (pageSize > 0 && rows.length > pageSize) {
      rows.length = pageSize;
      nextPageToken = encodePageToken('agents', rows[pageSize - 1]!.spiffe_id);
    }
    return { items: rows.map(rowToNode), nextPageToken };
  }

  static checkPatch(patch: AttestedNodePatch): void {
    if (patch.attestationType === '') throw new InvalidArgument('attestation type is empty', 'attestation_type');
    if (patch.certNotAfter !== undefined) checkTime(patch.certNotAfter, 'cert_not_after');
    if (patch.newCertNotAfter !== undefined) checkTime(patch.newCertNotAfter, 'new_cert_not_after');
  }

  async update(tx: Tx, id: SpiffeId, patch: AttestedNodePatch): Promise<AttestedNode> {
    AttestedNodeStore.checkPatch(patch);
    const cur = await this.get(tx, id);
    const key = id.toString();
    const revision = await this.core.recordChange(tx, 'agent', key, 'upsert');
    await tx.run(`UPDATE attested_nodes SET attestation_type = ?, cert_serial = ?, cert_not_after = ?,
        new_cert_serial = ?, new_cert_not_after = ?, can_reattest = ?, updated_at = ?, revision = ?
      WHERE spiffe_id = ?`,
    patch.attestationType ?? cur.attestationType,
    patch.certSerial ?? cur.certSerial,
    patch.certNotAfter ?? cur.certNotAfter,
    patch.newCertSerial ?? cur.newCertSerial,
    patch.newCertNotAfter ?? cur.newCertNotAfter,
    (patch.canReattest ?? cur.canReattest) ? 1 : 0,
    this.core.nowSeconds(), revision, key);
    if (patch.selectors) {
      await tx.run('DELETE FROM attested_node_selectors WHERE spiffe_id = ?', key);
      await this.insertSelectors(tx, key, patch.selectors);
    }
    return this.get(tx, id);
  }

  /** Bans an agent: it keeps its row (so it cannot attest again) but no certificate is valid for it any more. */
  async ban(tx: Tx, id: SpiffeId): Promise<AttestedNode> {
    await this.get(tx, id);
    const revision = await this.core.recordChange(tx, 'agent', id.toString(), 'upsert');
    await tx.run(`UPDATE attested_nodes SET banned = 1, cert_serial = '', new_cert_serial = '',
        updated_at = ?, revision = ? WHERE spiffe_id = ?`, this.core.nowSeconds(), revision, id.toString());
    return this.get(tx, id);
  }

  /** Evicts an agent: forgets it, so it must attest again (and may, unlike a banned one). */
  async evict(tx: Tx, id: SpiffeId): Promise<AttestedNode> {
    const node = await this.get(tx, id);
    await tx.run('DELETE FROM attested_nodes WHERE spiffe_id = ?', id.toString());
    await this.core.recordChange(tx, 'agent', id.toString(), 'delete');
    return node;
  }

  private async insertSelectors(tx: Tx, id: string, selectors: SelectorSet): Promise<void> {
    for (const s of selectors.items) await tx.run('INSERT INTO attested_node_selectors (spiffe_id, type, value) VALUES (?, ?, ?)', id, s.type, s.value);
  }
}

function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** One-time join tokens. The database holds only their SHA-256. */
export class JoinTokenStore {
  constructor(private readonly core: Core) {}

  static check(t: NewJoinToken): void {
    if (typeof t.token !== 'string' || t.token === '') throw new InvalidArgument('join token is empty', 'token');
    checkTime(t.expiresAt, 'expires_at');
  }

  async create(tx: Tx, t: NewJoinToken): Promise<void> {
    JoinTokenStore.check(t);
    const hash = tokenHash(t.token);
    if (await tx.get('SELECT 1 FROM join_tokens WHERE token_hash = ?', hash)) {
      throw new AlreadyExists('this join token already exists', 'token');
    }
    await tx.run('INSERT INTO join_tokens (token_hash, expires_at, agent_id, created_at) VALUES (?, ?, ?, ?)',
      hash, t.expiresAt, t.agentId?.toString() ?? null, this.core.nowSeconds());
  }

  /**
   * Uses a token up: deleting it and reading it is one statement in one write
   * transaction, so of two concurrent consumers (in any process, on any server)
   * exactly one gets it. An expired token is deleted too, and refused.
   */
  async consume(tx: Tx, token: string): Promise<ConsumedJoinToken> {
    const row = await tx.get<{ expires_at: number; agent_id: string | null }>(
      'DELETE FROM join_tokens WHERE token_hash = ? RETURNING expires_at, agent_id', tokenHash(token));
    if (!row) throw new NotFound('join token is unknown or was already used', 'join_token');
    return { expiresAt: row.expires_at, agentId: row.agent_id === null ? undefined : SpiffeId.parse(row.agent_id) };
  }

  /** Deletes expired tokens; returns how many. */
  pruneExpired(tx: Tx): Promise<number> {
    return tx.run('DELETE FROM join_tokens WHERE expires_at <= ?', this.core.nowSeconds());
  }
}
