-- Conversations: one row per direct pair or group. `last_seq` is the per-conversation sequence
-- counter; appends bump it under the row lock inside the inserting transaction, so sequence
-- order equals commit order within a conversation.
CREATE TABLE conversations (
    id            TEXT   NOT NULL PRIMARY KEY,
    kind          TEXT   NOT NULL CHECK (kind IN ('direct', 'group')),
    name          TEXT,
    created_by    TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL DEFAULT 0
);

-- Members: who may read and write a conversation, and how far each member has read.
CREATE TABLE members (
    conversation_id TEXT   NOT NULL REFERENCES conversations (id),
    uid             TEXT   NOT NULL,
    joined_at_ms    BIGINT NOT NULL,
    read_seq        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, uid)
);

-- "Conversations of a user" (sync, unread counts) reads this index, never the whole table.
CREATE INDEX members_by_uid ON members (uid, conversation_id);

-- Messages. `id` is store-wide unique (never a cursor); `(conversation_id, seq)` is the cursor
-- key and serves history and sync as an index range; `(sender, cid)` is the idempotency key.
CREATE TABLE messages (
    conversation_id TEXT   NOT NULL REFERENCES conversations (id),
    seq             BIGINT NOT NULL,
    id              BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY UNIQUE,
    sender          TEXT   NOT NULL,
    cid             TEXT   NOT NULL,
    text            TEXT   NOT NULL,
    ts_ms           BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (sender, cid)
);
