-- Actions an officer app sent over MQTT: (officer_id, action_id) makes a redelivered
-- message take effect once; the stored result answers the repeat.
CREATE TABLE officer_app_actions (
    officer_id  text NOT NULL REFERENCES officers (officer_id),
    action_id   text NOT NULL,
    incident_id text NOT NULL,
    action      text NOT NULL,
    result      jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (officer_id, action_id)
);
