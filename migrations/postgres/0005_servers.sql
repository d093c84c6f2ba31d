-- As ../0005_servers.sql: servers, their authorities, CA journal rows per server, leases.
CREATE TABLE servers (
  server_id     TEXT COLLATE "C" PRIMARY KEY,
  started_at    BIGINT NOT NULL,
  heartbeat_at  BIGINT NOT NULL,
  agent_address TEXT NOT NULL DEFAULT '',
  authorities   TEXT NOT NULL DEFAULT '[]' CHECK (authorities::json IS NOT NULL),
  intermediates TEXT NOT NULL DEFAULT '[]' CHECK (intermediates::json IS NOT NULL),
  ca_ttl        BIGINT NOT NULL DEFAULT 86400
);
ALTER TABLE ca_journal ADD COLUMN server_id TEXT NOT NULL DEFAULT '';
DROP INDEX ca_journal_one_active;
DROP INDEX ca_journal_one_prepared;
CREATE UNIQUE INDEX ca_journal_one_active ON ca_journal (server_id, kind) WHERE state = 'active';
CREATE UNIQUE INDEX ca_journal_one_prepared ON ca_journal (server_id, kind) WHERE state = 'prepared';
CREATE TABLE leases (
  name       TEXT COLLATE "C" PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at BIGINT NOT NULL
);
