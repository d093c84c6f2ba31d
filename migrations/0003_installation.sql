-- Which installation this datastore belongs to. The data directory keeps the same
-- id (installation.json), so a server refuses a datastore that was emptied,
-- replaced by a fresh one, or copied in from another installation.
CREATE TABLE installation (
  singleton       INTEGER PRIMARY KEY CHECK (singleton = 1),
  installation_id TEXT NOT NULL,
  trust_domain    TEXT NOT NULL,
  created_at      INTEGER NOT NULL
);
