//! SQL shared by both backends (`$n` placeholders work on SQLite and PostgreSQL alike).
//!
//! Every message query is an index range on `(conversation_id, seq)`; every per-user query
//! starts from the `members (uid, conversation_id)` index.

/// Returns the uid if `$2` is a member of conversation `$1` (primary-key look-up).
pub(crate) const IS_MEMBER: &str = "SELECT uid FROM members WHERE conversation_id = $1 AND uid = $2";

/// Returns the id if group conversation `$1` exists.
pub(crate) const GROUP_EXISTS: &str = "SELECT id FROM conversations WHERE id = $1 AND kind = 'group'";

/// Creates group conversation `$1` named `$2` by `$3` at `$4`; affects 0 rows if it exists.
pub(crate) const CREATE_GROUP: &str = "INSERT INTO conversations \
     (id, kind, name, created_by, created_at_ms, last_seq) \
     VALUES ($1, 'group', $2, $3, $4, 0) \
     ON CONFLICT (id) DO NOTHING";

/// Adds the creator `$2` of group `$1` at `$3`.
pub(crate) const ADD_CREATOR: &str = "INSERT INTO members \
     (conversation_id, uid, joined_at_ms, read_seq) VALUES ($1, $2, $3, 0)";

/// Adds `$2` to existing group `$1` at `$3`, with everything before the join marked read;
/// affects 0 rows if the group is unknown or `$2` is already a member.
pub(crate) const JOIN_GROUP: &str = "INSERT INTO members \
     (conversation_id, uid, joined_at_ms, read_seq) \
     SELECT id, $2, $3, last_seq FROM conversations WHERE id = $1 AND kind = 'group' \
     ON CONFLICT (conversation_id, uid) DO NOTHING";

/// Removes `$2` from conversation `$1`.
pub(crate) const LEAVE: &str = "DELETE FROM members WHERE conversation_id = $1 AND uid = $2";

/// Lists the members of conversation `$1`.
pub(crate) const MEMBERS: &str = "SELECT uid FROM members WHERE conversation_id = $1 ORDER BY uid";

/// Lists user `$1`'s conversations with counters and read markers.
pub(crate) const SUMMARIES: &str = "SELECT c.id, c.name, c.last_seq, m.read_seq \
     FROM members AS m JOIN conversations AS c ON c.id = m.conversation_id \
     WHERE m.uid = $1 ORDER BY c.id";

/// Lists user `$1`'s conversations with their `last_seq` (sync planning).
pub(crate) const CURSORS: &str = "SELECT m.conversation_id, c.last_seq \
     FROM members AS m JOIN conversations AS c ON c.id = m.conversation_id \
     WHERE m.uid = $1 ORDER BY m.conversation_id";

/// Messages of `$1` with `seq > $2`, ascending, at most `$3`.
pub(crate) const MESSAGES_AFTER: &str = "SELECT id, conversation_id, seq, sender, cid, text, ts_ms FROM messages \
     WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// Messages of `$1` with `seq < $2`, descending (newest first), at most `$3`.
pub(crate) const MESSAGES_BEFORE: &str = "SELECT id, conversation_id, seq, sender, cid, text, ts_ms FROM messages \
     WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";

/// Records a user on first sign-in (idempotent).
pub(crate) const ENSURE_USER: &str =
    "INSERT INTO users (uid, first_seen_ms) VALUES ($1, $2) ON CONFLICT (uid) DO NOTHING";

/// Whether a user has ever signed in.
pub(crate) const USER_EXISTS: &str = "SELECT uid FROM users WHERE uid = $1";

/// Every statement shared by both backends, for the tests that check each one is served by an
/// index (the backends add their own dialect statements).
#[cfg(test)]
pub(crate) const SHARED: [&str; 13] = [
    IS_MEMBER,
    GROUP_EXISTS,
    CREATE_GROUP,
    ADD_CREATOR,
    JOIN_GROUP,
    LEAVE,
    MEMBERS,
    SUMMARIES,
    CURSORS,
    MESSAGES_AFTER,
    MESSAGES_BEFORE,
    ENSURE_USER,
    USER_EXISTS,
];
