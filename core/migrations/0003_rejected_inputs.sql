-- Input refused by a gateway, copied from the dead-letter topic so that rejections are on the
-- record and counted. (topic, partition, offset) makes the copy idempotent.
CREATE TABLE rejected_inputs (
    id              bigserial PRIMARY KEY,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    reason          text NOT NULL,
    detail          text NOT NULL,
    device_id       text,
    event_id        text,
    mqtt_topic      text,
    ingress         text NOT NULL,
    gateway_id      text NOT NULL,
    received_at     timestamptz NOT NULL,
    payload         text NOT NULL,
    payload_bytes   integer NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT rejected_inputs_once UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX rejected_inputs_received_idx ON rejected_inputs (received_at);
CREATE INDEX rejected_inputs_device_idx ON rejected_inputs (device_id, received_at);
