-- The parent IDs an entry change concerns (JSON array, NULL for other kinds), kept
-- in the log itself so that a server that follows the log (another server's
-- writes) can tell which agents a change concerns without reading the entry.
ALTER TABLE changes ADD COLUMN parents TEXT;
