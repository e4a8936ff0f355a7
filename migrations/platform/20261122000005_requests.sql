-- Idempotency keys (AIP-155, taskmesh_platform::requests): the first result of a request, per
-- user and method. (`IF NOT EXISTS`: see 20261122000002_processed_events.sql.)
CREATE TABLE IF NOT EXISTS requests (
    user_id      text        NOT NULL,
    request_id   text        NOT NULL,
    method       text        NOT NULL,
    resource_id  uuid        NOT NULL,
    response     bytea       NOT NULL,
    create_time  timestamptz NOT NULL,
    PRIMARY KEY (user_id, method, request_id)
);
CREATE INDEX IF NOT EXISTS requests_create_time ON requests (create_time);
