-- Protocol 2: every change of a conversation is an event in its sequence (edits, deletes and
-- reactions are rows of `messages` with their own seq), replies, aggregated reactions,
-- delivery markers, presence and full-text search.

-- `kind`: 'message', or the change events 'edit', 'delete', 'reaction_add', 'reaction_remove',
-- whose `target` is the id of the message they change. A message row holds its final state:
-- `edited_ms`, `deleted` (a tombstone: text erased) and `reactions` (JSON emoji -> count).
ALTER TABLE messages
    ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'message'
        CHECK (kind IN ('message', 'edit', 'delete', 'reaction_add', 'reaction_remove')),
    ADD COLUMN target BIGINT NULL,
    ADD COLUMN reply_to BIGINT NULL,
    ADD COLUMN edited_ms BIGINT NULL,
    ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reactions TEXT NULL;

CREATE TABLE reactions (
    message_id BIGINT      NOT NULL,
    uid        VARCHAR(64) NOT NULL,
    emoji      VARCHAR(32) NOT NULL,
    PRIMARY KEY (message_id, uid, emoji)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

ALTER TABLE members ADD COLUMN delivered_seq BIGINT NOT NULL DEFAULT 0;

-- Presence: whether the user was last announced online (1) or offline (0), and when its last
-- device left. Workers flip `present` with a conditional update, so of several workers that
-- see the same change only one announces it.
ALTER TABLE users ADD COLUMN last_seen_ms BIGINT NULL, ADD COLUMN present BIGINT NOT NULL DEFAULT 0;

-- Full-text search: InnoDB FULLTEXT over a stored, lower-cased copy of live message texts
-- (empty for events and tombstones). The schema's collation compares bytes, so the copy is
-- what makes matching case-insensitive; InnoDB applies index changes at commit, inside the
-- writing transaction (the group commit, an edit, a delete). No stopword list: every word of
-- three characters or more (`innodb_ft_min_token_size`) is found.
SET SESSION innodb_ft_enable_stopword = OFF;
ALTER TABLE messages ADD COLUMN search_text MEDIUMTEXT
    AS (CASE WHEN kind = 'message' AND deleted = 0 THEN LOWER(text) ELSE '' END) PERSISTENT;
ALTER TABLE messages ADD FULLTEXT INDEX messages_search (search_text);
