-- The transactional outbox (taskmesh_platform::outbox): records written in the transaction of
-- the change they announce, published to Kafka by the relay and then deleted.
-- (`IF NOT EXISTS`: see 20261122000002_processed_events.sql.)
CREATE TABLE IF NOT EXISTS outbox (
    id           bigserial PRIMARY KEY,
    topic        text        NOT NULL,
    record_key   text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    source       text        NOT NULL,
    subject      text        NOT NULL,
    event_time   timestamptz NOT NULL,
    data_schema  text        NOT NULL,
    payload      bytea       NOT NULL,
    traceparent  text
);
