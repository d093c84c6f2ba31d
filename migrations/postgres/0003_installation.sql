-- As ../0003_installation.sql: which installation this datastore belongs to.
CREATE TABLE installation (
  singleton       INTEGER PRIMARY KEY CHECK (singleton = 1),
  installation_id TEXT NOT NULL,
  trust_domain    TEXT NOT NULL,
  created_at      BIGINT NOT NULL
);
