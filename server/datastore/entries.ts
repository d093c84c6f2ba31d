import { randomUUID } from 'node:crypto';
import { AlreadyExists, InvalidArgument, NotFound, Selector, SelectorSet, serverId, SpiffeId, TrustDomain } from '../../spiffe/index.js';
import { type Core, type Queryable, type Tx, checkPageSize, decodePageToken, encodePageToken } from './core.js';
import type { Dialect, SqlParam } from './engine.js';
import type { BatchResult, EntryPatch, EntrySpec, ListEntriesOptions, Page, RegistrationEntry } from './types.js';

/** An entry with the same SPIFFE ID, parent ID and selectors exists; names it. */
export class DuplicateEntry extends AlreadyExists {
  constructor(readonly existingEntryId: string) {
    super(`entry ${existingEntryId} already has this SPIFFE ID, parent ID and selector set`, 'spiffe_id');
  }
}

interface EntryRow {
  pk: number;
  id: string;
  spiffe_id: string;
  parent_id: string;
  x509_svid_ttl: number;
  jwt_svid_ttl: number;
  hint: string;
  admin: number;
  downstream: number;
  expires_at: number;
  created_at: number;
  revision: number;
  selectors: string;
  dns_names: string;
  federates_with: string;
}

/** The SQL this module runs that differs between engines, made once per datastore. */
class EntrySql {
  readonly selectEntry: string;
  /** Rows of (type, value) from a JSON array of [type, value] pairs bound as one parameter. */
  readonly selectorPairs: string;
  /** Node aliases a node belongs to: entries parented by the server whose every selector the node has (params: server ID, now, selector pairs). */
  readonly aliasesOfNode: string;

  constructor(d: Dialect) {
    this.selectEntry = `SELECT e.pk, e.id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, e.hint,
    e.admin, e.downstream, e.expires_at, e.created_at, e.revision,
    (SELECT ${d.jsonArray("s.type || ':' || s.value")} FROM entry_selectors s WHERE s.entry_pk = e.pk) AS selectors,
    (SELECT ${d.jsonArray('d.name', 'd.position')} FROM entry_dns_names d WHERE d.entry_pk = e.pk) AS dns_names,
    (SELECT ${d.jsonArray('f.trust_domain', 'f.trust_domain')} FROM entry_federates_with f WHERE f.entry_pk = e.pk) AS federates_with
  FROM registered_entries e`;
    this.selectorPairs = d.pairsFromJson();
    this.aliasesOfNode = `SELECT a.spiffe_id FROM registered_entries a
        JOIN entry_selectors s ON s.entry_pk = a.pk
        WHERE a.parent_id = ? AND (a.expires_at = 0 OR a.expires_at > ?)
          AND (s.type, s.value) IN (${this.selectorPairs})
        GROUP BY a.pk HAVING COUNT(*) = MAX(a.selector_count)`;
  }
}

function selectorsParam(set: SelectorSet): string {
  return JSON.stringify(set.items.map((s) => [s.type, s.value]));
}

function rowToEntry(r: EntryRow): RegistrationEntry {
  return {
    id: r.id,
    spiffeId: SpiffeId.parse(r.spiffe_id),
    parentId: SpiffeId.parse(r.parent_id),
    selectors: SelectorSet.of((JSON.parse(r.selectors) as string[]).map((s) => Selector.parse(s))),
    x509SvidTtl: r.x509_svid_ttl,
    jwtSvidTtl: r.jwt_svid_ttl,
    dnsNames: JSON.parse(r.dns_names) as string[],
    hint: r.hint,
    admin: r.admin === 1,
    downstream: r.downstream === 1,
    federatesWith: (JSON.parse(r.federates_with) as string[]).map((td) => TrustDomain.parse(td)),
    expiresAt: r.expires_at,
    createdAt: r.created_at,
    revision: r.revision,
  };
}

function checkCount(value: number, field: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new InvalidArgument(`${field} must be a non-negative integer`, field);
  return value;
}

/** The full, checked field set of an entry about to be written. */
interface EntryFields {
  spiffeId: SpiffeId;
  parentId: SpiffeId;
  selectors: SelectorSet;
  x509SvidTtl: number;
  jwtSvidTtl: number;
  dnsNames: readonly string[];
  hint: string;
  admin: boolean;
  downstream: boolean;
  federatesWith: readonly TrustDomain[];
  expiresAt: number;
}

function checkFields(f: EntryFields): EntryFields {
  if (f.selectors.size === 0) throw new InvalidArgument('an entry needs at least one selector', 'selectors');
  checkCount(f.x509SvidTtl, 'x509_svid_ttl');
  checkCount(f.jwtSvidTtl, 'jwt_svid_ttl');
  checkCount(f.expiresAt, 'expires_at');
  const seen = new Set<string>();
  f.dnsNames.forEach((name, i) => {
    if (typeof name !== 'string' || name === '') throw new InvalidArgument('DNS name is empty', `dns_names[${i}]`);
    if (seen.has(name)) throw new InvalidArgument(`DNS name "${name}" appears twice`, `dns_names[${i}]`);
    seen.add(name);
  });
  return f;
}

export class EntryStore {
  private readonly sql: EntrySql;

  constructor(private readonly core: Core) {
    this.sql = new EntrySql(core.dialect);
  }

  create(tx: Tx, spec: EntrySpec): Promise<RegistrationEntry> {
    return this.createInTx(tx, spec);
  }

  async batchCreate(tx: Tx, specs: readonly EntrySpec[]): Promise<BatchResult<RegistrationEntry>[]> {
    const out: BatchResult<RegistrationEntry>[] = [];
    for (const spec of specs) {
      try {
        out.push({ ok: true as const, value: await tx.savepoint(() => this.createInTx(tx, spec)) });
      } catch (err) {
        out.push({ ok: false as const, error: this.core.engine.toMeshidError(err) });
      }
    }
    return out;
  }

  async get(q: Queryable, id: string): Promise<RegistrationEntry> {
    const entry = await this.find(q, id);
    if (!entry) throw new NotFound(`entry ${JSON.stringify(id)} not found`, 'id');
    return entry;
  }

  async find(q: Queryable, id: string): Promise<RegistrationEntry | undefined> {
    const row = await q.get<EntryRow>(`${this.sql.selectEntry} WHERE e.id = ?`, id);
    return row && rowToEntry(row);
  }

  async update(tx: Tx, id: string, patch: EntryPatch): Promise<RegistrationEntry> {
    const current = await this.get(tx, id);
    const pk = await this.pkOf(tx, id);
    const next = checkFields({ ...current, ...definedOnly(patch) });
    const selectorsKey = next.selectors.key();
    await this.refuseDuplicate(tx, next.spiffeId, next.parentId, selectorsKey, id);
    const parents = [...new Set([current.parentId.toString(), next.parentId.toString()])];
    const revision = await this.core.recordChange(tx, 'entry', id, 'upsert', parents);
    await tx.run(`UPDATE registered_entries SET spiffe_id = ?, parent_id = ?, selectors_key = ?, selector_count = ?,
        x509_svid_ttl = ?, jwt_svid_ttl = ?, hint = ?, admin = ?, downstream = ?, expires_at = ?, revision = ?
      WHERE pk = ?`, next.spiffeId.toString(), next.parentId.toString(), selectorsKey, next.selectors.size,
    next.x509SvidTtl, next.jwtSvidTtl, next.hint, next.admin ? 1 : 0, next.downstream ? 1 : 0, next.expiresAt,
    revision, pk);
    await tx.run('DELETE FROM entry_selectors WHERE entry_pk = ?', pk);
    await tx.run('DELETE FROM entry_dns_names WHERE entry_pk = ?', pk);
    await tx.run('DELETE FROM entry_federates_with WHERE entry_pk = ?', pk);
    await this.insertChildren(tx, pk, next);
    return this.get(tx, id);
  }

  delete(tx: Tx, id: string): Promise<RegistrationEntry> {
    return this.deleteInTx(tx, id);
  }

  async batchDelete(tx: Tx, ids: readonly string[]): Promise<BatchResult<RegistrationEntry>[]> {
    const out: BatchResult<RegistrationEntry>[] = [];
    for (const id of ids) {
      try {
        out.push({ ok: true as const, value: await tx.savepoint(() => this.deleteInTx(tx, id)) });
      } catch (err) {
        out.push({ ok: false as const, error: this.core.engine.toMeshidError(err) });
      }
    }
    return out;
  }

  async list(q: Queryable, opts: ListEntriesOptions = {}): Promise<Page<RegistrationEntry>> {
    const pageSize = checkPageSize(opts.pageSize);
    const after = decodePageToken('entries', opts.pageToken);
    const where: string[] = [];
    const params: SqlParam[] = [];
    if (opts.bySpiffeId) { where.push('e.spiffe_id = ?'); params.push(opts.bySpiffeId.toString()); }
    if (opts.byParentId) { where.push('e.parent_id = ?'); params.push(opts.byParentId.toString()); }
    if (opts.byHint !== undefined) { where.push('e.hint = ?'); params.push(opts.byHint); }
    if (opts.bySelectors) {
      const { selectors, match } = opts.bySelectors;
      const cond = selectorCondition(this.sql.selectorPairs, match, selectors);
      if (cond) { where.push(cond.sql); params.push(...cond.params); }
    }
    if (after !== undefined) {
      const pk = Number(after);
      if (!Number.isSafeInteger(pk)) throw new InvalidArgument('page token is not one this list returned', 'page_token');
      where.push('e.pk > ?');
      params.push(pk);
    }
    let sql = this.sql.selectEntry + (where.length ? ` WHERE ${where.join(' AND ')}` : '') + ' ORDER BY e.pk';
    if (pageSize > 0) { sql += ' LIMIT ?'; params.push(pageSize + 1); }
    const rows = await q.all<EntryRow>(sql, ...params);
    let nextPageToken = '';
    if (pageSize > 0 && rows.length > pageSize) {
      rows.length = pageSize;
      nextPageToken = encodePageToken('entries', rows[pageSize - 1]!.pk);
    }
    return { items: rows.map(rowToEntry), nextPageToken };
  }

  /**
   * The entries an agent may hold (SPIRE semantics, one level): those whose parent is
   * the agent, and those whose parent is a node alias, i.e. the SPIFFE ID of an entry
   * parented by the server ID whose selectors are all among the agent's node
   * selectors. Expired entries are left out.
   */
  async forAgent(q: Queryable, agentId: SpiffeId, nodeSelectors: SelectorSet): Promise<RegistrationEntry[]> {
    const now = this.core.nowSeconds();
    // one IN over the agent and its aliases, not "= agent OR IN (aliases)": PostgreSQL plans the OR as a scan of every entry
    const rows = await q.all<EntryRow>(`WITH aliases AS (${this.sql.aliasesOfNode})
      ${this.sql.selectEntry}
      WHERE e.parent_id IN (SELECT ? UNION ALL SELECT spiffe_id FROM aliases)
        AND (e.expires_at = 0 OR e.expires_at > ?)
      ORDER BY e.pk`, serverId(agentId.trustDomain).toString(), now, selectorsParam(nodeSelectors),
    agentId.toString(), now);
    return rows.map(rowToEntry);
  }

  /** The SPIFFE IDs of the node aliases (entries parented by the server) whose selectors a node with `nodeSelectors` has: forAgent's second kind of parent. */
  aliasesOfNode(q: Queryable, trustDomain: TrustDomain, nodeSelectors: SelectorSet): Promise<string[]> {
    return q.column<string>(this.sql.aliasesOfNode, serverId(trustDomain).toString(), this.core.nowSeconds(), selectorsParam(nodeSelectors));
  }

  /** Deletes entries whose expiry has passed; returns how many. */
  async pruneExpired(tx: Tx): Promise<number> {
    const ids = await tx.column<string>('SELECT id FROM registered_entries WHERE expires_at <> 0 AND expires_at <= ?', this.core.nowSeconds());
    for (const id of ids) await this.deleteInTx(tx, id);
    return ids.length;
  }

  /** How many entries federate with `td`; a federated bundle in use is not deleted. */
  async countFederatingWith(q: Queryable, td: TrustDomain): Promise<number> {
    return (await q.value<number>('SELECT COUNT(*) FROM entry_federates_with WHERE trust_domain = ?', td.name))!;
  }

  private async createInTx(tx: Tx, spec: EntrySpec): Promise<RegistrationEntry> {
    const fields = checkFields({
      spiffeId: spec.spiffeId,
      parentId: spec.parentId,
      selectors: spec.selectors,
      x509SvidTtl: spec.x509SvidTtl ?? 0,
      jwtSvidTtl: spec.jwtSvidTtl ?? 0,
      dnsNames: spec.dnsNames ?? [],
      hint: spec.hint ?? '',
      admin: spec.admin ?? false,
      downstream: spec.downstream ?? false,
      federatesWith: spec.federatesWith ?? [],
      expiresAt: spec.expiresAt ?? 0,
    });
    const id = spec.id ?? randomUUID();
    if (id === '') throw new InvalidArgument('entry id is empty', 'id');
    if (await tx.get('SELECT 1 FROM registered_entries WHERE id = ?', id)) {
      throw new AlreadyExists(`an entry with id ${JSON.stringify(id)} already exists`, 'id');
    }
    const selectorsKey = fields.selectors.key();
    await this.refuseDuplicate(tx, fields.spiffeId, fields.parentId, selectorsKey, undefined);
    const revision = await this.core.recordChange(tx, 'entry', id, 'upsert', [fields.parentId.toString()]);
    let pk: number;
    try {
      pk = (await tx.value<number>(`INSERT INTO registered_entries (id, spiffe_id, parent_id, selectors_key, selector_count,
          x509_svid_ttl, jwt_svid_ttl, hint, admin, downstream, expires_at, created_at, revision)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk`,
      id, fields.spiffeId.toString(), fields.parentId.toString(), selectorsKey, fields.selectors.size,
      fields.x509SvidTtl, fields.jwtSvidTtl, fields.hint, fields.admin ? 1 : 0, fields.downstream ? 1 : 0,
      fields.expiresAt, this.core.nowSeconds(), revision))!;
    } catch (err) {
      if (this.core.isConstraint(err, 'UNIQUE')) throw new AlreadyExists('an equal entry already exists', 'spiffe_id');
      throw err;
    }
    await this.insertChildren(tx, pk, fields);
    return this.get(tx, id);
  }

  private async deleteInTx(tx: Tx, id: string): Promise<RegistrationEntry> {
    const entry = await this.get(tx, id);
    await tx.run('DELETE FROM registered_entries WHERE id = ?', id);
    await this.core.recordChange(tx, 'entry', id, 'delete', [entry.parentId.toString()]);
    return entry;
  }

  private async insertChildren(tx: Tx, pk: number, f: EntryFields): Promise<void> {
    for (const s of f.selectors.items) await tx.run('INSERT INTO entry_selectors (entry_pk, type, value) VALUES (?, ?, ?)', pk, s.type, s.value);
    for (const [i, name] of f.dnsNames.entries()) await tx.run('INSERT INTO entry_dns_names (entry_pk, position, name) VALUES (?, ?, ?)', pk, i, name);
    for (const td of f.federatesWith) {
      await tx.run('INSERT INTO entry_federates_with (entry_pk, trust_domain) VALUES (?, ?) ON CONFLICT DO NOTHING', pk, td.name);
    }
  }

  private async pkOf(q: Queryable, id: string): Promise<number> {
    return (await q.value<number>('SELECT pk FROM registered_entries WHERE id = ?', id))!;
  }

  private async refuseDuplicate(q: Queryable, spiffeId: SpiffeId, parentId: SpiffeId, selectorsKey: string, exceptId: string | undefined): Promise<void> {
    const existing = await q.value<string>('SELECT id FROM registered_entries WHERE spiffe_id = ? AND parent_id = ? AND selectors_key = ?',
      spiffeId.toString(), parentId.toString(), selectorsKey);
    if (existing !== undefined && existing !== exceptId) throw new DuplicateEntry(existing);
  }
}

/** SQL for "entry e's selectors relate to `set` by `match`"; undefined means no condition. */
function selectorCondition(pairsSql: string, match: string, set: SelectorSet): { sql: string; params: SqlParam[] } | undefined {
  if (set.size === 0) {
    // Every set is a superset of the empty set; no non-empty set equals, is a subset of, or meets it.
    return match === 'superset' ? undefined : { sql: '1 = 0', params: [] };
  }
  const pairs = selectorsParam(set);
  switch (match) {
    case 'exact':
      return { sql: 'e.selectors_key = ?', params: [set.key()] };
    case 'superset':
      return {
        sql: `e.pk IN (SELECT s.entry_pk FROM entry_selectors s WHERE (s.type, s.value) IN (${pairsSql})
          GROUP BY s.entry_pk HAVING COUNT(*) = ?)`,
        params: [pairs, set.size],
      };
    case 'subset':
      return {
        sql: `e.pk IN (SELECT s.entry_pk FROM entry_selectors s JOIN registered_entries x ON x.pk = s.entry_pk
          WHERE (s.type, s.value) IN (${pairsSql}) GROUP BY s.entry_pk HAVING COUNT(*) = MAX(x.selector_count))`,
        params: [pairs],
      };
    case 'any':
      return {
        sql: `EXISTS (SELECT 1 FROM entry_selectors s WHERE s.entry_pk = e.pk AND (s.type, s.value) IN (${pairsSql}))`,
        params: [pairs],
      };
    default:
      throw new InvalidArgument(`selector match must be exact, subset, superset or any, not ${JSON.stringify(match)}`, 'by_selectors.match');
  }
}

function definedOnly<T extends object>(patch: T): Partial<T> {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) as Partial<T>;
}

