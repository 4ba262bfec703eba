-- Protocol 2: every change of a conversation is an event in its sequence (edits, deletes and
-- reactions are rows of `messages` with their own seq), replies, aggregated reactions,
-- delivery markers, last-seen times and full-text search. Constant defaults: adding the
-- columns rewrites no row (the generated search column does, once).

-- `kind`: 'message', or the change events 'edit', 'delete', 'reaction_add', 'reaction_remove',
-- whose `target` is the id of the message they change. A message row holds its final state:
-- `edited_ms`, `deleted` (a tombstone: text erased) and `reactions` (JSON emoji -> count).
ALTER TABLE messages
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'message'
        CHECK (kind IN ('message', 'edit', 'delete', 'reaction_add', 'reaction_remove')),
    ADD COLUMN target BIGINT,
    ADD COLUMN reply_to BIGINT,
    ADD COLUMN edited_ms BIGINT,
    ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reactions TEXT;

CREATE TABLE reactions (
    message_id BIGINT NOT NULL,
    uid        TEXT   NOT NULL,
    emoji      TEXT   NOT NULL,
    PRIMARY KEY (message_id, uid, emoji)
);

ALTER TABLE members ADD COLUMN delivered_seq BIGINT NOT NULL DEFAULT 0;
-- Presence: whether the user was last announced online (1) or offline (0), and when its last
-- device left. Workers flip `present` with a conditional update, so of several workers that
-- see the same change only one announces it.
ALTER TABLE users ADD COLUMN last_seen_ms BIGINT, ADD COLUMN present BIGINT NOT NULL DEFAULT 0;

-- Full-text search: a generated tsvector ('simple' configuration: no stemming, every language
-- alike) of live messages, NULL for events and tombstones, under a GIN index. Computed by the
-- INSERT of the group commit itself and by the UPDATE of an edit or delete.
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    CASE WHEN kind = 'message' AND deleted = 0 THEN to_tsvector('simple'::regconfig, text) END) STORED;
CREATE INDEX messages_search ON messages USING GIN (search);
