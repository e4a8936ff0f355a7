-- The key that signs this service's page tokens (HMAC-SHA256, taskmesh_platform::pages):
-- one row, 32 random bytes written by the first process that starts.
CREATE TABLE page_token_key (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    key bytea NOT NULL CHECK (length(key) = 32)
);
