-- Users who have signed in at least once: a direct message to anyone else is refused as
-- "unknown recipient" instead of creating a conversation nobody will ever read.
CREATE TABLE users (
    uid TEXT PRIMARY KEY,
    first_seen_ms BIGINT NOT NULL
);
