-- MariaDB schema (10.6 or later: JSON_TABLE, INSERT ... RETURNING, NO PAD collations).
--
-- Every text column compares byte by byte (`utf8mb4_nopad_bin`), as on SQLite and PostgreSQL:
-- uids, cids and conversation ids are case-sensitive keys, `'bob'` and `'bob '` are two users,
-- and `ORDER BY` on them is the code point order the other stores use. Identifiers are at most
-- 64 characters (the store refuses longer ones), so a direct conversation id, two escaped uids,
-- fits 400 characters and every key stays under InnoDB's 3072-byte limit.

-- Conversations: one row per direct pair or group. `last_seq` is the per-conversation sequence
-- counter; appends bump it under the row lock (`FOR UPDATE`) inside the inserting transaction,
-- so sequence order equals commit order within a conversation.
CREATE TABLE conversations (
    id            VARCHAR(400) NOT NULL PRIMARY KEY,
    kind          VARCHAR(6)   NOT NULL CHECK (kind IN ('direct', 'group')),
    name          TEXT,
    created_by    VARCHAR(64)  NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    last_seq      BIGINT       NOT NULL DEFAULT 0
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Members: who may read and write a conversation, and how far each member has read.
CREATE TABLE members (
    conversation_id VARCHAR(400) NOT NULL,
    uid             VARCHAR(64)  NOT NULL,
    joined_at_ms    BIGINT       NOT NULL,
    read_seq        BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, uid),
    -- "Conversations of a user" (sync, unread counts) reads this index, never the whole table.
    KEY members_by_uid (uid, conversation_id),
    CONSTRAINT members_conversation FOREIGN KEY (conversation_id) REFERENCES conversations (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Messages, clustered by `(conversation_id, seq)`: the cursor key, so history and sync read one
-- contiguous range. `id` is store-wide unique (never a cursor); `(sender, cid)` is the
-- idempotency key. No foreign key to the conversation: every append holds the conversation's
-- row lock already, and conversations are never deleted (as on PostgreSQL).
CREATE TABLE messages (
    conversation_id VARCHAR(400) NOT NULL,
    seq             BIGINT       NOT NULL,
    id              BIGINT       NOT NULL AUTO_INCREMENT,
    sender          VARCHAR(64)  NOT NULL,
    cid             VARCHAR(64)  NOT NULL,
    text            MEDIUMTEXT   NOT NULL,
    ts_ms           BIGINT       NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE KEY messages_id (id),
    UNIQUE KEY messages_sender_cid (sender, cid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Users who have signed in at least once: a direct message to anyone else is refused as
-- "unknown recipient" instead of creating a conversation nobody will ever read.
CREATE TABLE users (
    uid           VARCHAR(64) NOT NULL PRIMARY KEY,
    first_seen_ms BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
