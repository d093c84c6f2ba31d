-- meshid-server datastore, schema version 1.
-- Applied by server/datastore/migrate.ts inside one transaction; the runner records
-- the version in schema_version itself, so this file only creates objects.
-- Times are unix seconds. SPIFFE IDs and trust domains are stored in their
-- canonical string form (parsed and validated before they get here).

-- Key/value bookkeeping: the global revision counter and allocation cursors.
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES
  ('revision', 0),               -- last revision handed out
  ('changes_compacted_through', 0), -- changes with revision <= this were deleted
  ('identity_cursor', 256),      -- next identity number to try
  ('node_cursor', 1);            -- next node id to try

-- One row per change that agents can see; the sync stream sends "changes since N".
-- Every change has its own revision, so a page boundary never splits a revision.
CREATE TABLE changes (
  revision  INTEGER PRIMARY KEY,
  kind      TEXT NOT NULL,  -- ChangeKind in server/datastore/types.ts; no CHECK, so new kinds need no table rebuild
  object_id TEXT NOT NULL,
  op        TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
  at        INTEGER NOT NULL
);

-- Registration entries. `pk` orders pages and keys the child tables; `id` is the
-- public (uuid or admin-chosen) identifier.
CREATE TABLE registered_entries (
  pk             INTEGER PRIMARY KEY,
  id             TEXT NOT NULL UNIQUE,
  spiffe_id      TEXT NOT NULL,
  parent_id      TEXT NOT NULL,
  selectors_key  TEXT NOT NULL,  -- sorted "type:value" joined by "\n": equal sets, equal keys
  selector_count INTEGER NOT NULL CHECK (selector_count > 0),
  x509_svid_ttl  INTEGER NOT NULL DEFAULT 0 CHECK (x509_svid_ttl >= 0),
  jwt_svid_ttl   INTEGER NOT NULL DEFAULT 0 CHECK (jwt_svid_ttl >= 0),
  hint           TEXT NOT NULL DEFAULT '',
  admin          INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
  downstream     INTEGER NOT NULL DEFAULT 0 CHECK (downstream IN (0, 1)),
  expires_at     INTEGER NOT NULL DEFAULT 0,
  created_at     INTEGER NOT NULL,
  revision       INTEGER NOT NULL,
  UNIQUE (spiffe_id, parent_id, selectors_key)
);
CREATE INDEX registered_entries_by_parent ON registered_entries (parent_id);
CREATE INDEX registered_entries_by_hint ON registered_entries (hint) WHERE hint <> '';

CREATE TABLE entry_selectors (
  entry_pk INTEGER NOT NULL REFERENCES registered_entries (pk) ON DELETE CASCADE,
  type     TEXT NOT NULL,
  value    TEXT NOT NULL,
  PRIMARY KEY (entry_pk, type, value)
) WITHOUT ROWID;
CREATE INDEX entry_selectors_by_selector ON entry_selectors (type, value);

CREATE TABLE entry_dns_names (
  entry_pk INTEGER NOT NULL REFERENCES registered_entries (pk) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  name     TEXT NOT NULL,
  PRIMARY KEY (entry_pk, position)
) WITHOUT ROWID;

CREATE TABLE entry_federates_with (
  entry_pk     INTEGER NOT NULL REFERENCES registered_entries (pk) ON DELETE CASCADE,
  trust_domain TEXT NOT NULL,
  PRIMARY KEY (entry_pk, trust_domain)
) WITHOUT ROWID;
CREATE INDEX entry_federates_with_by_td ON entry_federates_with (trust_domain);

-- Trust bundles, own and federated, as SPIFFE bundle documents (JWK Set JSON).
CREATE TABLE bundles (
  trust_domain TEXT PRIMARY KEY,
  document     TEXT NOT NULL CHECK (json_valid(document)),
  updated_at   INTEGER NOT NULL,
  revision     INTEGER NOT NULL
) WITHOUT ROWID;

-- Attested nodes (agents). banned agents keep their row so that they cannot re-attest.
CREATE TABLE attested_nodes (
  spiffe_id          TEXT PRIMARY KEY,
  attestation_type   TEXT NOT NULL,
  cert_serial        TEXT NOT NULL DEFAULT '',
  cert_not_after     INTEGER NOT NULL DEFAULT 0,
  new_cert_serial    TEXT NOT NULL DEFAULT '',
  new_cert_not_after INTEGER NOT NULL DEFAULT 0,
  banned             INTEGER NOT NULL DEFAULT 0 CHECK (banned IN (0, 1)),
  can_reattest       INTEGER NOT NULL DEFAULT 0 CHECK (can_reattest IN (0, 1)),
  created_at         INTEGER NOT NULL,
  updated_at         INTEGER NOT NULL,
  revision           INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX attested_nodes_by_expiry ON attested_nodes (cert_not_after);

CREATE TABLE attested_node_selectors (
  spiffe_id TEXT NOT NULL REFERENCES attested_nodes (spiffe_id) ON DELETE CASCADE,
  type      TEXT NOT NULL,
  value     TEXT NOT NULL,
  PRIMARY KEY (spiffe_id, type, value)
) WITHOUT ROWID;

-- Join tokens: only the SHA-256 of the token is kept. Consuming deletes the row.
CREATE TABLE join_tokens (
  token_hash TEXT PRIMARY KEY,
  expires_at INTEGER NOT NULL,
  agent_id   TEXT,               -- fixed agent SPIFFE ID, or NULL for the default one
  created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- CA journal: key/authority records the CA module defines (opaque JSON).
CREATE TABLE ca_journal (
  kind       TEXT NOT NULL CHECK (kind IN ('x509', 'jwt')),
  id         TEXT NOT NULL,
  state      TEXT NOT NULL CHECK (state IN ('prepared', 'active', 'old')),
  data       TEXT NOT NULL CHECK (json_valid(data)),
  position   INTEGER NOT NULL,   -- order of the records as the CA saved them
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX ca_journal_one_active ON ca_journal (kind) WHERE state = 'active';
CREATE UNIQUE INDEX ca_journal_one_prepared ON ca_journal (kind) WHERE state = 'prepared';

-- Security identities: one number per distinct set of security-relevant labels.
-- 1..255 are reserved (host, world, ...).
CREATE TABLE identities (
  id                        INTEGER PRIMARY KEY CHECK (id BETWEEN 256 AND 4294967295),
  labels_key                TEXT NOT NULL UNIQUE,
  labels                    TEXT NOT NULL CHECK (json_valid(labels)),
  service_account_namespace TEXT NOT NULL,
  service_account_name      TEXT NOT NULL,
  created_at                INTEGER NOT NULL,
  revision                  INTEGER NOT NULL
);

-- Cluster nodes as the datapath sees them (node id 0 means "this node" in the maps).
CREATE TABLE nodes (
  id                   INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 65535),
  name                 TEXT NOT NULL UNIQUE,
  address              TEXT NOT NULL DEFAULT '',
  wireguard_public_key TEXT NOT NULL DEFAULT '',
  pod_cidr             TEXT NOT NULL DEFAULT '',
  created_at           INTEGER NOT NULL,
  revision             INTEGER NOT NULL
);

CREATE TABLE endpoints (
  ip        TEXT PRIMARY KEY,
  identity  INTEGER NOT NULL REFERENCES identities (id),
  node_id   INTEGER NOT NULL REFERENCES nodes (id),
  namespace TEXT NOT NULL,
  name      TEXT NOT NULL,
  labels    TEXT NOT NULL CHECK (json_valid(labels)),
  revision  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX endpoints_by_identity ON endpoints (identity);
CREATE INDEX endpoints_by_node ON endpoints (node_id);
CREATE INDEX endpoints_by_name ON endpoints (namespace, name);

CREATE TABLE policies (
  namespace TEXT NOT NULL,
  name      TEXT NOT NULL,
  kind      TEXT NOT NULL,
  spec      TEXT NOT NULL CHECK (json_valid(spec)),
  revision  INTEGER NOT NULL,
  PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
