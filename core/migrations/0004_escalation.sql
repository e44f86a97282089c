-- Escalation up the levels, rosters, and the whole incident lifecycle.

-- Rosters: an officer is on duty while one of their shifts covers the moment.
CREATE TABLE duty_shifts (
    id         bigserial PRIMARY KEY,
    officer_id text NOT NULL REFERENCES officers (officer_id),
    during     tstzrange NOT NULL CHECK (NOT isempty(during)),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX duty_shifts_officer_idx ON duty_shifts (officer_id);
CREATE INDEX duty_shifts_during_idx ON duty_shifts USING gist (during);

-- Officers marked on duty before rosters existed keep a year-long shift.
INSERT INTO duty_shifts (officer_id, during)
SELECT officer_id, tstzrange(now() - interval '1 day', now() + interval '365 days')
  FROM officers WHERE on_duty;
DROP INDEX officers_unit_idx;
ALTER TABLE officers DROP COLUMN on_duty;
CREATE INDEX officers_unit_idx ON officers (unit_code) WHERE active;

-- Escalation policies per unit and priority; a unit without one inherits its parent's, and
-- the platform's defaults (in code) apply above the city. `levels` is a JSON list of
-- {"level", "ack_s", "arrive_s", "remind_s"} from the grid upwards.
CREATE TABLE escalation_policies (
    unit_code      text NOT NULL REFERENCES units (code),
    priority       integer NOT NULL CHECK (priority BETWEEN 1 AND 5),
    levels         jsonb NOT NULL,
    cancel_grace_s integer NOT NULL DEFAULT 120 CHECK (cancel_grace_s >= 0),
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_by     text NOT NULL DEFAULT 'system',
    PRIMARY KEY (unit_code, priority)
);

-- Officer apps log in to the broker as the officer (MQTT user name = officer id).
ALTER TABLE officers ADD COLUMN mqtt_password_hash text;

-- A building groups devices for correlation (several alarms in one building).
ALTER TABLE devices ADD COLUMN building text NOT NULL DEFAULT '';

-- The incident's escalation state. The policy in force is frozen on the incident when it
-- opens. `awaiting` says which clock runs: 'ack' (acknowledgement at the current level),
-- 'arrival' (on scene after an acknowledgement) or 'none'. `due_at` is the earlier of
-- `deadline_at` and `remind_at`: the escalation timer claims incidents by it.
ALTER TABLE incidents
    ADD COLUMN policy          jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN level_index     integer NOT NULL DEFAULT 0 CHECK (level_index BETWEEN 0 AND 4),
    ADD COLUMN awaiting        text NOT NULL DEFAULT 'ack' CHECK (awaiting IN ('ack', 'arrival', 'none')),
    ADD COLUMN deadline_at     timestamptz,
    ADD COLUMN remind_at       timestamptz,
    ADD COLUMN due_at          timestamptz,
    ADD COLUMN acknowledged_by text,
    ADD COLUMN ack_level       text,
    ADD COLUMN on_scene_by     text,
    ADD COLUMN closed_by       text,
    ADD COLUMN outcome         text CHECK (outcome IN ('resolved', 'false_alarm', 'referred', 'cancelled')),
    ADD COLUMN referral        text CHECK (referral IN ('110', '119', '120')),
    ADD COLUMN assigned_to     text REFERENCES officers (officer_id),
    ADD COLUMN is_major        boolean NOT NULL DEFAULT false,
    ADD COLUMN major_id        uuid REFERENCES incidents (incident_id),
    ADD COLUMN correlation_key text;
ALTER TABLE incidents ALTER COLUMN device_id DROP NOT NULL;
ALTER TABLE incidents ADD CONSTRAINT incidents_device_unless_major CHECK (is_major OR device_id IS NOT NULL);
CREATE INDEX incidents_due_idx ON incidents (due_at) WHERE closed_at IS NULL AND due_at IS NOT NULL;
-- One open major incident per building or grid cell.
CREATE UNIQUE INDEX incidents_one_open_major
    ON incidents (correlation_key) WHERE is_major AND closed_at IS NULL;
CREATE INDEX incidents_major_members_idx ON incidents (major_id) WHERE major_id IS NOT NULL;

-- Bearer tokens of officers (the duty desk and officer apps): only a SHA-256 is stored.
CREATE TABLE officer_sessions (
    token_sha256 bytea PRIMARY KEY,
    officer_id   text NOT NULL REFERENCES officers (officer_id),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX officer_sessions_officer_idx ON officer_sessions (officer_id);

-- Notifications say which transition caused them: several reminders to one officer are
-- distinct rows.
ALTER TABLE notifications ADD COLUMN incident_version integer NOT NULL DEFAULT 1;
