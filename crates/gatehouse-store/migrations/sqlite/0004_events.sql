-- Protocol 2: every change of a conversation is an event in its sequence (edits, deletes and
-- reactions are rows of `messages` with their own seq), replies, aggregated reactions,
-- delivery markers, last-seen times and full-text search.

-- `kind`: 'message', or the change events 'edit', 'delete', 'reaction_add', 'reaction_remove',
-- whose `target` is the id of the message they change. A message row holds its final state:
-- `edited_ms` (last edit), `deleted` (a tombstone: text erased) and `reactions` (a JSON object
-- emoji -> count, NULL when none), so reads need no join.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message'
    CHECK (kind IN ('message', 'edit', 'delete', 'reaction_add', 'reaction_remove'));
ALTER TABLE messages ADD COLUMN target INTEGER;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN edited_ms INTEGER;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN reactions TEXT;

-- Who reacted with what: one row per (message, user, emoji).
CREATE TABLE reactions (
    message_id INTEGER NOT NULL,
    uid        TEXT    NOT NULL,
    emoji      TEXT    NOT NULL,
    PRIMARY KEY (message_id, uid, emoji)
) STRICT, WITHOUT ROWID;

-- The highest seq a device of the member received (a receipt marker, like `read_seq`).
ALTER TABLE members ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0;

-- Presence: whether the user was last announced online (1) or offline (0), and when its last
-- device left. Workers flip `present` with a conditional update, so of several workers that
-- see the same change only one announces it.
ALTER TABLE users ADD COLUMN last_seen_ms INTEGER;
ALTER TABLE users ADD COLUMN present INTEGER NOT NULL DEFAULT 0;

-- Full-text search over message texts: an FTS5 index whose content is `messages` itself, kept
-- up to date by triggers inside the appending transaction (the group commit) and the change
-- transactions. Only live messages are indexed: events and tombstones never match.
CREATE VIRTUAL TABLE message_search USING fts5(text, content='messages', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2');
INSERT INTO message_search (rowid, text) SELECT id, text FROM messages WHERE kind = 'message';
CREATE TRIGGER message_search_insert AFTER INSERT ON messages WHEN new.kind = 'message' BEGIN
    INSERT INTO message_search (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER message_search_update AFTER UPDATE OF text ON messages
    WHEN old.kind = 'message' AND old.text <> new.text BEGIN
    INSERT INTO message_search (message_search, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO message_search (rowid, text) SELECT new.id, new.text WHERE new.deleted = 0;
END;
