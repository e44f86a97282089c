-- Officers sign in to the duty desk with a password, stored only as an argon2id hash.
ALTER TABLE officers ADD COLUMN password_hash text;
ALTER TABLE officers ADD COLUMN password_changed_at timestamptz;
-- The live queue lists open incidents by priority and age, and catches up by updated_at.
CREATE INDEX incidents_updated_idx ON incidents (updated_at);
CREATE INDEX incidents_queue_idx ON incidents (priority, opened_at) WHERE closed_at IS NULL;
