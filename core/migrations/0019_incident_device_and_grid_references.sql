-- An incident's device and grid cell are those of the device row that the same transaction has
-- just updated (the worker's batch statement, or the per-event path's touch of the device: a row
-- locked until the commit, whose grid cell refers to units by a foreign key of its own). Nothing
-- deletes devices or units. These two foreign keys therefore never refused a row, but each cost
-- every new incident a lookup and a row lock (a trigger's query per key) after the statement
-- that opens the incidents. At 1,500 alarms/s in the benchmark, two alternated runs each with
-- pg_stat_statements: that statement took 7.6 and 7.6 s in all with them, 5.9 and 5.8 s without,
-- and the press-to-notification p50 was 100 and 104 ms with them, 64 and 61 ms without.
-- tests/integration/test_lifecycle_e2e.py checks that no incident refers to a device or grid
-- cell that does not exist. Whatever comes to delete devices or units must bring these back.
-- The references written from officers' actions (assigned_to, major_id) keep their keys.
ALTER TABLE incidents DROP CONSTRAINT IF EXISTS incidents_device_id_fkey;
ALTER TABLE incidents DROP CONSTRAINT IF EXISTS incidents_grid_code_fkey;
