-- A device whose clock is wrong still gets its alarm through: the event is accepted, recorded
-- with the time the platform received it as occurred_at, and flagged here with how far the
-- device's own occurred_at lay from that (seconds; positive: ahead). NULL: the clock was fine.
ALTER TABLE events ADD COLUMN clock_offset_s double precision;
