-- The open, recent single-device alarms of some grid cells, which the worker's batches count to
-- correlate alarms (workers/batch_recorder.py, _PLAN_READS). Read by a plain index scan, never a
-- bitmap scan. Closing an incident leaves its entry in incidents_open_alarms_grid_idx until
-- vacuum comes by; a plain index scan marks such an entry dead the first time it finds its row
-- gone, and the scans after it pass over it without reading the table. A bitmap scan marks
-- nothing: it read the table page of every incident closed since the last vacuum again, once
-- per batch (at 1,500 alarms/s in the benchmark, 25,677 entries and 3,280 table pages a batch for
-- 337 open alarms, most of the statement's time). A function, so that the setting holds for
-- this one query, and PL/pgSQL, so that its plan is made once per connection.
CREATE OR REPLACE FUNCTION pingan_recent_alarms(grids text[], since timestamptz)
RETURNS TABLE (device_id text, grid_code text)
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off
AS $$
BEGIN
    RETURN QUERY
    SELECT i.device_id, i.grid_code
      FROM incidents i
     WHERE i.category = 'alarm' AND i.closed_at IS NULL AND NOT i.is_major
       AND i.grid_code = ANY(grids) AND i.opened_at >= since;
END
$$;
