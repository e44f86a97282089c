-- ANALYZE reads a sample of up to 30,000 rows and builds statistics for every column, and
-- autovacuum analyzes a busy table every few rounds (every round while it is young and
-- growing). No statement filters, joins or sorts on the columns below: they are written and
-- read whole. Their statistics were most of ANALYZE's work: the escalation policy of an
-- incident is about 600 bytes of jsonb, the timeline's detail about 120, and each sampled
-- value is detoasted and compared. Measured at 850 alarms/s on 2 cores, autovacuum's ANALYZE
-- used 6.9 s of CPU in 75 s (incidents 2.8 s, incident_timeline 2.0 s, notifications 1.1 s),
-- against 0.3 s for its VACUUMs. Without statistics the planner treats a condition on one of
-- these columns with its default estimates; none is ever asked for.
ALTER TABLE incidents ALTER COLUMN policy SET STATISTICS 0;
ALTER TABLE incident_timeline ALTER COLUMN detail SET STATISTICS 0;
ALTER TABLE notifications ALTER COLUMN reason SET STATISTICS 0;
ALTER TABLE notifications ALTER COLUMN dedupe_key SET STATISTICS 0;
ALTER TABLE events ALTER COLUMN data SET STATISTICS 0;
ALTER TABLE devices ALTER COLUMN mqtt_password_hash SET STATISTICS 0;
