-- Several servers on one datastore. Each has its own CA keys (its CA journal
-- rows carry its id) and its own row here: a heartbeat, and the authorities it
-- signs with, whose union is the trust domain's bundle. Rows of a single server
-- from before this version have server_id '' until that server claims them.
CREATE TABLE servers (
  server_id     TEXT PRIMARY KEY,
  started_at    INTEGER NOT NULL,
  heartbeat_at  INTEGER NOT NULL,
  agent_address TEXT NOT NULL DEFAULT '',
  -- JSON: [{ "jwk": {...}, "expires_at": unix seconds }] of its X.509 and JWT authorities
  authorities   TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(authorities)),
  -- JSON: base64 DER of the CA certificates between its signing key and the bundle (upstream authority)
  intermediates TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(intermediates)),
  -- when this server's CA lifetime (ca_ttl) runs out of heartbeats, it is pruned
  ca_ttl        INTEGER NOT NULL DEFAULT 86400
) WITHOUT ROWID;
ALTER TABLE ca_journal ADD COLUMN server_id TEXT NOT NULL DEFAULT '';
DROP INDEX ca_journal_one_active;
DROP INDEX ca_journal_one_prepared;
CREATE UNIQUE INDEX ca_journal_one_active ON ca_journal (server_id, kind) WHERE state = 'active';
CREATE UNIQUE INDEX ca_journal_one_prepared ON ca_journal (server_id, kind) WHERE state = 'prepared';
-- Jobs that must run on one server at a time: who holds each lease, until when.
CREATE TABLE leases (
  name       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
