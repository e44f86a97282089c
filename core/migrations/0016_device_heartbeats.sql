-- Heartbeats get a narrow table of their own. A heartbeat only updates its device's health
-- (last seen, battery, sequence), and there are many: a city's devices beating every 30 s are
-- tens of thousands a second. As rows of `events` (thirteen columns given, three indexes, a
-- sequence value each) they cost Postgres 16.5-17.7 us of CPU apiece with the device update
-- (batches of 500, measured alone), and 10.0-12.7 us in a table like this one; the worker also
-- encodes fewer columns. At 20,000 heartbeats/s on a
-- 2-core machine that was the difference (`bench.run --full --rate 20000 --seconds 20 --type
-- device.heartbeat`): the backlog drained 2.7-3.2 s after the step before, 0.12 s after with
-- this table, and 22,500/s drained 0.98 s after.
--
-- Here a heartbeat is one row under one index, its idempotency key: a redelivered heartbeat is
-- recorded once, as an event is. `events` keeps what acts (alarms, cancels, maintenance), so an
-- incident's device history is no longer twenty heartbeats.
--
-- received_at has a BRIN index: rows arrive in its order, so a few pages summarise a day, and a
-- count over a recent window (`dispatch status`) or a range to delete reads only its pages.
-- data is NULL when the heartbeat had none (nearly always).
CREATE TABLE device_heartbeats (
    device_id      text NOT NULL,
    event_id       text NOT NULL,
    seq            bigint NOT NULL,
    occurred_at    timestamptz NOT NULL,   -- as in events: received_at when the clock was off
    received_at    timestamptz NOT NULL,
    battery        integer,
    ingress        text NOT NULL,
    gateway_id     text NOT NULL,
    clock_offset_s double precision,
    data           jsonb,
    CONSTRAINT device_heartbeats_idempotency PRIMARY KEY (device_id, event_id)
);
CREATE INDEX device_heartbeats_received_brin ON device_heartbeats USING brin (received_at);
ALTER TABLE device_heartbeats ALTER COLUMN data SET STATISTICS 0;

-- The heartbeats recorded before this table move into it, so that every heartbeat is in one
-- place (nothing refers to their event rows: they open nothing).
INSERT INTO device_heartbeats (device_id, event_id, seq, occurred_at, received_at, battery, ingress,
                               gateway_id, clock_offset_s, data)
SELECT device_id, event_id, seq, occurred_at, received_at, battery, ingress, gateway_id, clock_offset_s,
       NULLIF(data, '{}'::jsonb)
  FROM events
 WHERE type = 'device.heartbeat'
 ORDER BY id
    ON CONFLICT (device_id, event_id) DO NOTHING;
DELETE FROM events WHERE type = 'device.heartbeat';
