-- The worker's correlation check counts the open alarms of a cell opened within the window.
-- incidents_grid_idx holds every incident of the cell, closed ones too, so in a busy cell
-- that count read hundreds of index entries and heap rows per batch; this one holds only
-- the open single-device alarms.
CREATE INDEX incidents_open_alarms_grid_idx ON incidents (grid_code, opened_at)
    WHERE closed_at IS NULL AND category = 'alarm' AND NOT is_major;

-- The outbox and the notifications are work queues: every row is written, claimed and
-- marked done within a second, which leaves a dead row version and a dead entry in the
-- pending index behind. The claim reads through the dead entries until a vacuum removes
-- them, and the default trigger (20% of the table dead) lets them pile up to tens of
-- thousands under load. Vacuum these tables after a fixed number of dead rows instead.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                        autovacuum_vacuum_cost_delay = 0);
ALTER TABLE notifications SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                               autovacuum_vacuum_cost_delay = 0);
