/**
 * The JSON shapes of the admin API (api/openapi.yaml) that the server writes
 * and the CLI reads: shared here so the CLI imports nothing of the server.
 */

/** An entry as the API returns it: every field present, plus `id`, `created_at` and `revision`. */
export interface EntryJson {
  id: string;
  spiffe_id: string;
  parent_id: string;
  selectors: string[];
  x509_svid_ttl: number;
  jwt_svid_ttl: number;
  dns_names: string[];
  hint: string;
  admin: boolean;
  downstream: boolean;
  federates_with: string[];
  expires_at: number;
  created_at: number;
  revision: number;
}

/** An attested agent as the API returns it. */
export interface AgentJson {
  spiffe_id: string;
  attestation_type: string;
  x509_svid_serial_number: string;
  x509_svid_expires_at: number;
  banned: boolean;
  can_reattest: boolean;
  selectors: string[];
  created_at: number;
  updated_at: number;
}
