-- Group access model: an owner, admins, open or invite-only access, per-group history
-- visibility, invitations, bans, and blocks between users (the same model and the same
-- defaults for existing groups as the SQLite and PostgreSQL schemas).

-- Groups: `owner` (NULL for direct conversations), who may join (`access`) and which messages a
-- member reads (`history`: `joined` = only those after the member joined, `shared` = all).
ALTER TABLE conversations
    ADD COLUMN owner   VARCHAR(64),
    ADD COLUMN access  VARCHAR(6) NOT NULL DEFAULT 'invite' CHECK (access IN ('open', 'invite')),
    ADD COLUMN history VARCHAR(6) NOT NULL DEFAULT 'shared' CHECK (history IN ('joined', 'shared'));
UPDATE conversations SET owner = created_by WHERE kind = 'group';

-- Members: `role` (the owner is named by `conversations.owner`), and `joined_seq`, the
-- conversation's `last_seq` when the member joined: with `joined` history a member reads only
-- messages after it.
ALTER TABLE members
    ADD COLUMN role       VARCHAR(6) NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
    ADD COLUMN joined_seq BIGINT     NOT NULL DEFAULT 0;

-- Outstanding invitations to groups; a join consumes the member's invitation.
CREATE TABLE group_invites (
    conversation_id VARCHAR(400) NOT NULL,
    uid             VARCHAR(64)  NOT NULL,
    invited_by      VARCHAR(64)  NOT NULL,
    created_at_ms   BIGINT       NOT NULL,
    PRIMARY KEY (conversation_id, uid),
    -- "Invitations of a user" (listing them, counting them against the per-user cap).
    KEY group_invites_by_uid (uid, conversation_id),
    CONSTRAINT group_invites_conversation FOREIGN KEY (conversation_id) REFERENCES conversations (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- Users banned from a group: they cannot join again until unbanned.
CREATE TABLE group_bans (
    conversation_id VARCHAR(400) NOT NULL,
    uid             VARCHAR(64)  NOT NULL,
    banned_by       VARCHAR(64)  NOT NULL,
    created_at_ms   BIGINT       NOT NULL,
    PRIMARY KEY (conversation_id, uid),
    CONSTRAINT group_bans_conversation FOREIGN KEY (conversation_id) REFERENCES conversations (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- `blocker` refuses direct messages and group invitations from `blocked`.
CREATE TABLE blocks (
    blocker       VARCHAR(64) NOT NULL,
    blocked       VARCHAR(64) NOT NULL,
    created_at_ms BIGINT      NOT NULL,
    PRIMARY KEY (blocker, blocked)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
