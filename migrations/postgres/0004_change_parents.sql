-- As ../0004_change_parents.sql: the parent IDs an entry change concerns (JSON array).
ALTER TABLE changes ADD COLUMN parents TEXT;
