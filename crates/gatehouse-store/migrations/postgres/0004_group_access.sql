-- Group access model: an owner, admins, open or invite-only access, per-group history
-- visibility, invitations, bans, and blocks between users.
--
-- Existing groups keep everything their members had: the creator becomes the owner, history
-- stays visible to every member (`shared`), and existing members joined at seq 0. They become
-- invite-only, so outsiders can no longer walk in by guessing a group's name.

-- Groups: `owner` (NULL for direct conversations), who may join (`access`) and which messages a
-- member reads (`history`: `joined` = only those after the member joined, `shared` = all).
-- Constant defaults: adding the columns rewrites no row.
ALTER TABLE conversations
    ADD COLUMN owner TEXT,
    ADD COLUMN access TEXT NOT NULL DEFAULT 'invite' CHECK (access IN ('open', 'invite')),
    ADD COLUMN history TEXT NOT NULL DEFAULT 'shared' CHECK (history IN ('joined', 'shared'));
UPDATE conversations SET owner = created_by WHERE kind = 'group';

-- Members: `role` (the owner is named by `conversations.owner`), and `joined_seq`, the
-- conversation's `last_seq` when the member joined: with `joined` history a member reads only
-- messages after it.
ALTER TABLE members
    ADD COLUMN role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
    ADD COLUMN joined_seq BIGINT NOT NULL DEFAULT 0;

-- Outstanding invitations to groups; a join consumes the member's invitation.
CREATE TABLE group_invites (
    conversation_id TEXT   NOT NULL REFERENCES conversations (id),
    uid             TEXT   NOT NULL,
    invited_by      TEXT   NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, uid)
);
-- "Invitations of a user" (listing them, counting them against the per-user cap).
CREATE INDEX group_invites_by_uid ON group_invites (uid, conversation_id);

-- Users banned from a group: they cannot join again until unbanned.
CREATE TABLE group_bans (
    conversation_id TEXT   NOT NULL REFERENCES conversations (id),
    uid             TEXT   NOT NULL,
    banned_by       TEXT   NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, uid)
);

-- `blocker` refuses direct messages and group invitations from `blocked`.
CREATE TABLE blocks (
    blocker       TEXT   NOT NULL,
    blocked       TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
