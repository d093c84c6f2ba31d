import { TrustDomain } from '../../spiffe/id.js';
import { FailedPrecondition, InvalidArgument, NotFound } from '../../spiffe/errors.js';
import type { Core } from './core.js';
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

  get(td: TrustDomain): StoredBundle {
    const row = this.core.stmt('SELECT * FROM bundles WHERE trust_domain = ?').get(td.name) as BundleRow | undefined;
    if (!row) throw new NotFound(`no bundle for trust domain ${td.name}`, 'trust_domain');
    return rowToBundle(row);
  }

  /** Creates or replaces; writing the same document again changes nothing (no new revision). */
  set(td: TrustDomain, document: SpiffeBundleDocument): StoredBundle {
    const json = checkDocument(document);
    return this.core.write(() => {
      const current = this.core.stmt('SELECT document FROM bundles WHERE trust_domain = ?').pluck().get(td.name) as string | undefined;
      if (current === json) return this.get(td);
      const revision = this.core.recordChange('bundle', td.name, 'upsert');
      this.core.stmt(`INSERT INTO bundles (trust_domain, document, updated_at, revision) VALUES (?, ?, ?, ?)
          ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at,
          revision = excluded.revision`).run(td.name, json, this.core.nowSeconds(), revision);
      return this.get(td);
    });
  }

  list(): StoredBundle[] {
    return (this.core.stmt('SELECT * FROM bundles ORDER BY trust_domain').all() as BundleRow[]).map(rowToBundle);
  }

  listFederated(): StoredBundle[] {
    return (this.core.stmt('SELECT * FROM bundles WHERE trust_domain <> ? ORDER BY trust_domain').all(this.own.name) as BundleRow[])
      .map(rowToBundle);
  }

  /** Like SPIRE's RESTRICT mode: a bundle that entries federate with stays until they stop. */
  deleteFederated(td: TrustDomain): void {
    if (td.equals(this.own)) throw new FailedPrecondition(`${td.name} is the server's own trust domain; its bundle cannot be deleted`, 'trust_domain');
    this.core.write(() => {
      this.get(td);
      const users = this.entries.countFederatingWith(td);
      if (users > 0) throw new FailedPrecondition(`${users} entries federate with ${td.name}; remove it from them first`, 'trust_domain');
      this.core.stmt('DELETE FROM bundles WHERE trust_domain = ?').run(td.name);
      this.core.recordChange('bundle', td.name, 'delete');
    });
  }
}
