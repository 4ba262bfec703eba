-- Conversations: one row per direct pair or group. `last_seq` is the per-conversation sequence
-- counter; appends bump it inside the inserting transaction (SQLite has a single writer, so the
-- bump and the insert are serialised with every other write).
CREATE TABLE conversations (
    id            TEXT    NOT NULL PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('direct', 'group')),
    name          TEXT,
    created_by    TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Members: who may read and write a conversation, and how far each member has read.
CREATE TABLE members (
    conversation_id TEXT    NOT NULL REFERENCES conversations (id),
    uid             TEXT    NOT NULL,
    joined_at_ms    INTEGER NOT NULL,
    read_seq        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, uid)
) STRICT, WITHOUT ROWID;

-- "Conversations of a user" (sync, unread counts) reads this index, never the whole table.
CREATE INDEX members_by_uid ON members (uid, conversation_id);

-- Messages. `id` is the rowid (store-wide unique, never a cursor); `(conversation_id, seq)` is
-- the cursor key and serves history and sync as an index range; `(sender, cid)` is the
-- idempotency key.
CREATE TABLE messages (
    id              INTEGER NOT NULL PRIMARY KEY,
    conversation_id TEXT    NOT NULL REFERENCES conversations (id),
    seq             INTEGER NOT NULL,
    sender          TEXT    NOT NULL,
    cid             TEXT    NOT NULL,
    text            TEXT    NOT NULL,
    ts_ms           INTEGER NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (sender, cid)
) STRICT;
