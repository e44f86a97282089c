-- The open incidents by priority and age. Like incidents_open_idx before it (0011), this small
-- partial index was taken by the worker's generic plans for lookups it cannot serve: "does this
-- device have an open incident" and the correlation count read every open incident through it,
-- with a filter, instead of one entry of incidents_one_open_per_device or of
-- incidents_open_alarms_grid_idx. At 506 alarms/s that was 1,400 of the 1,600 buffers the
-- worker's plan reads took per batch, and it grows with the number of open incidents.
-- The desk's queue (open incidents of a jurisdiction, by priority, then age) reads the open
-- incidents and sorts the top of them; they are hundreds, thousands in a city-wide crisis.
-- One index fewer to write on every incident, too.
DROP INDEX IF EXISTS incidents_queue_idx;
