-- Every accepted device event, once: (device_id, event_id) is the idempotency key, so a
-- redelivered event (MQTT QoS 1, Kafka at-least-once) takes effect once. Append-only.
CREATE TABLE events (
    id              bigserial PRIMARY KEY,
    device_id       text NOT NULL,
    event_id        text NOT NULL,
    type            text NOT NULL,
    seq             bigint NOT NULL,
    occurred_at     timestamptz NOT NULL,   -- the device's clock
    received_at     timestamptz NOT NULL,   -- the gateway's clock, when the press arrived
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    ingress         text NOT NULL,
    gateway_id      text NOT NULL,
    battery         integer,
    data            jsonb NOT NULL DEFAULT '{}'::jsonb,
    kafka_partition integer,
    kafka_offset    bigint,
    CONSTRAINT events_idempotency UNIQUE (device_id, event_id)
);
CREATE INDEX events_received_idx ON events (received_at);

CREATE SEQUENCE case_number_seq;

CREATE TABLE incidents (
    incident_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- one human-readable number, the same at every level and in every channel
    case_number       text NOT NULL UNIQUE,
    category          text NOT NULL CHECK (category IN ('alarm', 'maintenance')),
    status            text NOT NULL CHECK (status IN (
                          'opened', 'notified', 'acknowledged', 'on_scene',
                          'resolved', 'cancelled', 'false_alarm', 'referred')),
    priority          integer NOT NULL CHECK (priority BETWEEN 1 AND 5),
    level             text NOT NULL DEFAULT 'grid'
                          CHECK (level IN ('grid', 'community', 'street', 'district', 'city')),
    device_id         text NOT NULL REFERENCES devices (device_id),
    grid_code         text NOT NULL REFERENCES units (code),
    event_type        text NOT NULL,          -- type of the event that opened it
    first_event_id    text NOT NULL,
    pressed_at        timestamptz NOT NULL,   -- occurred_at of the first event
    received_at       timestamptz NOT NULL,   -- when the gateway received the first event
    opened_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    first_notified_at timestamptz,            -- first notification delivered to an officer
    acknowledged_at   timestamptz,
    on_scene_at       timestamptz,
    closed_at         timestamptz,
    event_count       integer NOT NULL DEFAULT 1,
    version           integer NOT NULL DEFAULT 1,
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Repeated presses of a device while its incident is open join that incident.
CREATE UNIQUE INDEX incidents_one_open_per_device
    ON incidents (device_id, category) WHERE closed_at IS NULL;
CREATE INDEX incidents_open_idx ON incidents (opened_at) WHERE closed_at IS NULL;
CREATE INDEX incidents_grid_idx ON incidents (grid_code, opened_at);

-- Who did what, when, to an incident. Append-only.
CREATE TABLE incident_timeline (
    id           bigserial PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incidents (incident_id),
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind         text NOT NULL,
    actor        text NOT NULL,           -- device:<id>, officer:<id>, system:<component>
    event_row_id bigint REFERENCES events (id),
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX incident_timeline_incident_idx ON incident_timeline (incident_id, id);

-- Notifications to officers: the durable work queue of the notifier.
CREATE TABLE notifications (
    id              bigserial PRIMARY KEY,
    incident_id     uuid NOT NULL REFERENCES incidents (incident_id),
    officer_id      text NOT NULL REFERENCES officers (officer_id),
    channel         text NOT NULL DEFAULT 'mqtt',
    kind            text NOT NULL,
    level           text NOT NULL,
    reason          text NOT NULL,
    -- at most one notification of a kind, per incident, officer and level
    dedupe_key      text NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at         timestamptz,
    last_error      text
);
CREATE INDEX notifications_pending_idx ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_incident_idx ON notifications (incident_id);
CREATE INDEX notifications_sent_idx ON notifications (sent_at) WHERE status = 'sent';

-- Transactional outbox: rows written in the same transaction as the change they announce,
-- published by the outbox relay to Kafka or MQTT, in id order.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    destination     text NOT NULL CHECK (destination IN ('kafka', 'mqtt')),
    topic           text NOT NULL,
    key             text,
    payload         bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error      text
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;

-- Input that could not be recorded after it was accepted (kept, never dropped silently).
CREATE TABLE unprocessable_events (
    id          bigserial PRIMARY KEY,
    device_id   text,
    event_id    text,
    reason      text NOT NULL,
    record      bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
