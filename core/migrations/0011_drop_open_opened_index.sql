-- The open incidents by opening time. Every list of open incidents is ordered by priority
-- first (incidents_queue_idx, with the same predicate), so nothing needs this one; but being
-- small, the planner took it for lookups it cannot serve, reading every open incident: for the
-- worker's "does this device have an open incident" (one entry of incidents_one_open_per_device)
-- and for its correlation count (incidents_open_alarms_grid_idx). At 759 alarms/s that was
-- 31,000 buffers per batch. One index fewer to write on every incident, too.
DROP INDEX IF EXISTS incidents_open_idx;
