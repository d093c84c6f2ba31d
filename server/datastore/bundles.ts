import { FailedPrecondition, InvalidArgument, NotFound, TrustDomain } from '../../spiffe/index.js';
import type { Core, Queryable, Tx } from './core.js';
import type { EntryStore } from './entries.js';
import type { SpiffeBundleDocument, StoredBundle } from './types.js';

interface BundleRow { trust_domain: string; document: string; updated_at: number; revision: number }

function rowToBundle(r: BundleRow): StoredBundle {
  return {
    trustDomain: TrustDomain.parse(r.trust_domain),
    document: JSON.parse(r.document) as SpiffeBundleDocument,
    updatedAt: r.updated_at,
    revision: r.revision,
  };
}

function checkDocument(doc: SpiffeBundleDocument): string {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc) || !Array.isArray(doc.keys)) {
    throw new InvalidArgument('a SPIFFE bundle is a JSON object with a "keys" array', 'bundle');
  }
  doc.keys.forEach((k, i) => {
    if (typeof k !== 'object' || k === null || Array.isArray(k)) throw new InvalidArgument('a key must be a JWK object', `bundle.keys[${i}]`);
  });
  return JSON.stringify(doc);
}

/** Trust bundles: the server's own trust domain's and the federated ones, as SPIFFE bundle documents. */
export class BundleStore {
  constructor(private readonly core: Core, private readonly own: TrustDomain, private readonly entries: EntryStore) {}

  async get(q: Queryable, td: TrustDomain): Promise<StoredBundle> {
    const row = await q.get<BundleRow>('SELECT * FROM bundles WHERE trust_domain = ?', td.name);
    if (!row) throw new NotFound(`no bundle for trust domain ${td.name}`, 'trust_domain');
    return rowToBundle(row);
  }

  /** Creates or replaces; writing the same document again changes nothing (no new revision). */
  async set(tx: Tx, td: TrustDomain, document: SpiffeBundleDocument): Promise<StoredBundle> {
    const json = checkDocument(document);
    const current = await tx.value<string>('SELECT document FROM bundles WHERE trust_domain = ?', td.name);
    if (current === json) return this.get(tx, td);
    const revision = await this.core.recordChange(tx, 'bundle', td.name, 'upsert');
    await tx.run(`INSERT INTO bundles (trust_domain, document, updated_at, revision) VALUES (?, ?, ?, ?)
        ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at,
        revision = excluded.revision`, td.name, json, this.core.nowSeconds(), revision);
    return this.get(tx, td);
  }

  async list(q: Queryable): Promise<StoredBundle[]> {
    return (await q.all<BundleRow>('SELECT * FROM bundles ORDER BY trust_domain')).map(rowToBundle);
  }

  async listFederated(q: Queryable): Promise<StoredBundle[]> {
    return (await q.all<BundleRow>('SELECT * FROM bundles WHERE trust_domain <> ? ORDER BY trust_domain', this.own.name)).map(rowToBundle);
  }

  /** Like SPIRE's RESTRICT mode: a bundle that entries federate with stays until they stop. */
  async deleteFederated(tx: Tx, td: TrustDomain): Promise<void> {
    if (td.equals(this.own)) throw new FailedPrecondition(`${td.name} is the server's own trust domain; its bundle cannot be deleted`, 'trust_domain');
    await this.get(tx, td);
    const users = await this.entries.countFederatingWith(tx, td);
    if (users > 0) throw new FailedPrecondition(`${users} entries federate with ${td.name}; remove it from them first`, 'trust_domain');
    await tx.run('DELETE FROM bundles WHERE trust_domain = ?', td.name);
    await this.core.recordChange(tx, 'bundle', td.name, 'delete');
  }
}
