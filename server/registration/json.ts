import type { RegistrationEntry } from '../datastore/index.js';
import type { EntryJson } from '../../api/admin.js';
export type { EntryJson };

/**
 * A registration entry as the admin REST API and the CLI send it (SPIRE's field names).
 *
 * ```json
 * {
 *   "spiffe_id": "spiffe://example.org/ns/default/sa/web",
 *   "parent_id": "spiffe://example.org/meshid/agent/join_token/node-1",
 *   "selectors": ["k8s:ns:default", "k8s:sa:web"],
 *   "x509_svid_ttl": 3600,          // seconds; 0 or absent: the server default
 *   "jwt_svid_ttl": 300,
 *   "dns_names": ["web.default.svc"],
 *   "hint": "web",
 *   "admin": false,
 *   "downstream": false,
 *   "federates_with": ["partner.example"],
 *   "expires_at": 0                  // unix seconds; 0 or absent: never
 * }
 * ```
 * `id` may be given on create to choose the entry's id (letters, digits, ".", "_", ":", "-",
 * at most 255); otherwise the server makes a UUID. Any other field is refused.
 */
export interface EntryInput {
  id?: string;
  spiffe_id: string;
  parent_id: string;
  selectors: string[];
  x509_svid_ttl?: number;
  jwt_svid_ttl?: number;
  dns_names?: string[];
  hint?: string;
  admin?: boolean;
  downstream?: boolean;
  federates_with?: string[];
  expires_at?: number;
}


export function entryToJson(entry: RegistrationEntry): EntryJson {
  return {
    id: entry.id,
    spiffe_id: entry.spiffeId.toString(),
    parent_id: entry.parentId.toString(),
    selectors: entry.selectors.toStrings(),
    x509_svid_ttl: entry.x509SvidTtl,
    jwt_svid_ttl: entry.jwtSvidTtl,
    dns_names: [...entry.dnsNames],
    hint: entry.hint,
    admin: entry.admin,
    downstream: entry.downstream,
    federates_with: entry.federatesWith.map((td) => td.name),
    expires_at: entry.expiresAt,
    created_at: entry.createdAt,
    revision: entry.revision,
  };
}

/** The filter of a list request, as JSON (the REST layer turns query parameters into this). */
export interface ListEntriesInput {
  by_spiffe_id?: string;
  by_parent_id?: string;
  /** `match` defaults to "exact", as in SPIRE. */
  by_selectors?: { selectors: string[]; match?: 'exact' | 'subset' | 'superset' | 'any' };
  by_hint?: string;
  /** A number, or a string of digits (query parameters are strings). */
  page_size?: number | string;
  page_token?: string;
}
