-- The outbox is a queue, not a record: once the relay has published a row (the Kafka topic or
-- the MQTT broker holds it), the relay deletes it. Marking it published instead kept every row
-- for ever (three per alarm, no retention) and cost a new row version with a new entry in each
-- of the table's indexes per row; a delete costs neither. What happened to an incident is on
-- its timeline; what was announced is in Kafka.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX IF EXISTS outbox_pending_idx;
ALTER TABLE outbox DROP COLUMN published_at;
