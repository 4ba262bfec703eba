//! SQL shared by the backends (`$n` placeholders work on SQLite and PostgreSQL alike; MariaDB
//! gets each statement through `mysql::statement`, so every `$n` appears once, in order, unless
//! the statement has a MariaDB override there).
//!
//! Every message query is an index range on `(conversation_id, seq)`; every per-user query
//! starts from the `members (uid, conversation_id)` index.

/// Returns the uid if `$2` is a member of conversation `$1` (primary-key look-up).
pub(crate) const IS_MEMBER: &str = "SELECT uid FROM members WHERE conversation_id = $1 AND uid = $2";

/// Returns the id if group conversation `$1` exists.
pub(crate) const GROUP_EXISTS: &str = "SELECT id FROM conversations WHERE id = $1 AND kind = 'group'";

/// Creates group conversation `$1` named `$2`, created by `$3` at `$4`, owned by `$5` (its
/// creator again), with access `$6` and history `$7`; affects 0 rows if it exists.
pub(crate) const CREATE_GROUP: &str = "INSERT INTO conversations \
     (id, kind, name, created_by, created_at_ms, last_seq, owner, access, history) \
     VALUES ($1, 'group', $2, $3, $4, 0, $5, $6, $7) \
     ON CONFLICT (id) DO NOTHING";

/// Adds the creator `$2` of group `$1` at `$3`.
pub(crate) const ADD_CREATOR: &str = "INSERT INTO members \
     (conversation_id, uid, joined_at_ms, read_seq, role, joined_seq) VALUES ($1, $2, $3, 0, 'member', 0)";

/// Adds `$2` to group `$1` at `$3`; `$4` and `$5` are both the group's `last_seq` read under its
/// lock: earlier messages count as read, and with `joined` history they stay invisible to the
/// new member.
pub(crate) const ADD_MEMBER: &str = "INSERT INTO members \
     (conversation_id, uid, joined_at_ms, read_seq, role, joined_seq) VALUES ($1, $2, $3, $4, 'member', $5)";

/// Removes `$2` from conversation `$1`.
pub(crate) const LEAVE: &str = "DELETE FROM members WHERE conversation_id = $1 AND uid = $2";

/// Group `$1` and user `$2`'s standing in it (see `access::Standing`), plus its member count:
/// one statement, so all of it comes from one snapshot (and, after the group's lock, from the
/// state every other change of the group waits for).
pub(crate) const STANDING: &str = "SELECT coalesce(c.owner, c.created_by) AS owner, c.access, c.history, \
     c.name, c.last_seq, \
     (SELECT m.role FROM members AS m WHERE m.conversation_id = c.id AND m.uid = $2) AS role, \
     (SELECT count(*) FROM group_bans AS b WHERE b.conversation_id = c.id AND b.uid = $2) AS banned, \
     (SELECT count(*) FROM group_invites AS i WHERE i.conversation_id = c.id AND i.uid = $2) AS invited, \
     (SELECT count(*) FROM members AS n WHERE n.conversation_id = c.id) AS member_count \
     FROM conversations AS c WHERE c.id = $1 AND c.kind = 'group'";

/// How many groups user `$1` belongs to (group ids are the `g:` range of its conversations).
pub(crate) const COUNT_GROUPS_OF: &str =
    "SELECT count(*) FROM members WHERE uid = $1 AND conversation_id >= 'g:' AND conversation_id < 'g;'";

/// The groups user `$1` belongs to, at most `$2`.
pub(crate) const GROUPS_OF: &str = "SELECT conversation_id FROM members \
     WHERE uid = $1 AND conversation_id >= 'g:' AND conversation_id < 'g;' ORDER BY conversation_id LIMIT $2";

/// How many invitations group `$1` has outstanding.
pub(crate) const COUNT_GROUP_INVITES: &str = "SELECT count(*) FROM group_invites WHERE conversation_id = $1";

/// How many invitations user `$1` has received and not used.
pub(crate) const COUNT_USER_INVITES: &str = "SELECT count(*) FROM group_invites WHERE uid = $1";

/// Invites `$2` to group `$1` on behalf of `$3` at `$4`.
pub(crate) const ADD_INVITE: &str = "INSERT INTO group_invites (conversation_id, uid, invited_by, created_at_ms) \
     VALUES ($1, $2, $3, $4)";

/// Withdraws (or uses up) `$2`'s invitation to group `$1`.
pub(crate) const DELETE_INVITE: &str = "DELETE FROM group_invites WHERE conversation_id = $1 AND uid = $2";

/// User `$1`'s invitations with their groups' names, in group order, at most `$2`.
pub(crate) const INVITATIONS_OF: &str = "SELECT c.id, c.name, i.invited_by, i.created_at_ms \
     FROM group_invites AS i JOIN conversations AS c ON c.id = i.conversation_id \
     WHERE i.uid = $1 ORDER BY i.conversation_id LIMIT $2";

/// How many users group `$1` has banned.
pub(crate) const COUNT_BANS: &str = "SELECT count(*) FROM group_bans WHERE conversation_id = $1";

/// Bans `$2` from group `$1` on behalf of `$3` at `$4` (idempotent).
pub(crate) const ADD_BAN: &str = "INSERT INTO group_bans (conversation_id, uid, banned_by, created_at_ms) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id, uid) DO NOTHING";

/// Lifts `$2`'s ban from group `$1`.
pub(crate) const DELETE_BAN: &str = "DELETE FROM group_bans WHERE conversation_id = $1 AND uid = $2";

/// Sets member `$3`'s role in group `$2` to `$1` (`member` or `admin`).
pub(crate) const SET_ROLE: &str = "UPDATE members SET role = $1 WHERE conversation_id = $2 AND uid = $3";

/// Changes the given settings of group `$4` (`NULL` keeps a setting): name `$1`, access `$2`,
/// history `$3`.
pub(crate) const UPDATE_GROUP: &str = "UPDATE conversations \
     SET name = coalesce($1, name), access = coalesce($2, access), history = coalesce($3, history) \
     WHERE id = $4 AND kind = 'group'";

/// One page of group `$1`'s members after uid `$3`, at most `$4`, with the group's owner: empty
/// unless `$2` is a member itself (checked in the same statement, so in the same snapshot).
pub(crate) const MEMBER_PAGE: &str = "SELECT o.uid, o.role, coalesce(c.owner, c.created_by) AS owner \
     FROM members AS me JOIN conversations AS c ON c.id = me.conversation_id \
     JOIN members AS o ON o.conversation_id = me.conversation_id \
     WHERE me.conversation_id = $1 AND me.uid = $2 AND o.conversation_id = $1 AND o.uid > $3 \
     ORDER BY o.uid LIMIT $4";

/// The members of `$1`'s conversations other than `$1`, conversation by conversation in id
/// order (so direct peers, `d:…`, before fellow group members, `g:…`), at most `$2` rows (a
/// user shares many conversations with some: the caller keeps the distinct ones).
pub(crate) const CONTACTS: &str = "SELECT o.uid FROM members AS me \
     JOIN members AS o ON o.conversation_id = me.conversation_id \
     WHERE me.uid = $1 AND o.uid <> me.uid ORDER BY me.conversation_id LIMIT $2";

/// Whether `$1` blocks `$2` (0 or 1).
pub(crate) const IS_BLOCKED: &str = "SELECT count(*) FROM blocks WHERE blocker = $1 AND blocked = $2";

/// How many users `$1` blocks.
pub(crate) const COUNT_BLOCKS: &str = "SELECT count(*) FROM blocks WHERE blocker = $1";

/// `$1` blocks `$2` from `$3` on (idempotent).
pub(crate) const ADD_BLOCK: &str = "INSERT INTO blocks (blocker, blocked, created_at_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (blocker, blocked) DO NOTHING";

/// `$1` no longer blocks `$2`.
pub(crate) const DELETE_BLOCK: &str = "DELETE FROM blocks WHERE blocker = $1 AND blocked = $2";

/// The users `$1` blocks after uid `$2`, in uid order, at most `$3`.
pub(crate) const BLOCKS_OF: &str =
    "SELECT blocked FROM blocks WHERE blocker = $1 AND blocked > $2 ORDER BY blocked LIMIT $3";

/// Lists user `$1`'s conversations after id `$2` with counters and read markers, in id order,
/// at most `$3`.
pub(crate) const SUMMARIES: &str = "SELECT c.id, c.name, c.last_seq, m.read_seq \
     FROM members AS m JOIN conversations AS c ON c.id = m.conversation_id \
     WHERE m.uid = $1 AND m.conversation_id > $2 ORDER BY m.conversation_id LIMIT $3";

/// Lists user `$1`'s conversations with their `last_seq` and the seq at and below which the user
/// may not read (`joined` history: the group's `last_seq` when it joined; else 0).
pub(crate) const CURSORS: &str = "SELECT m.conversation_id, c.last_seq, \
     CASE WHEN c.history = 'joined' THEN m.joined_seq ELSE 0 END AS floor \
     FROM members AS m JOIN conversations AS c ON c.id = m.conversation_id \
     WHERE m.uid = $1 ORDER BY m.conversation_id";

/// The seq at and below which `$2` may not read conversation `$1` (no row: not a member).
pub(crate) const FLOOR: &str = "SELECT CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END \
     FROM members AS v JOIN conversations AS c ON c.id = v.conversation_id \
     WHERE v.conversation_id = $1 AND v.uid = $2";

/// Messages of `$1` that `$2` may read with `seq > $3`, ascending, at most `$4`. The reader's
/// membership and visibility floor are checked in the statement itself, so a reader removed
/// from the conversation reads nothing from the moment its removal committed. `$3` already
/// includes the floor, so the index range starts there.
pub(crate) const VISIBLE_AFTER: &str = "SELECT m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms, \
     m.kind, m.target, m.reply_to, m.edited_ms, m.deleted, m.reactions \
     FROM members AS v JOIN conversations AS c ON c.id = v.conversation_id \
     JOIN messages AS m ON m.conversation_id = v.conversation_id \
     WHERE v.conversation_id = $1 AND v.uid = $2 AND m.conversation_id = $1 AND m.seq > $3 \
     AND m.seq > CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END \
     ORDER BY m.seq LIMIT $4";

/// Messages of `$1` that `$2` may read with `$4 < seq < $3`, descending (newest first), at most
/// `$5`; `$4` is the reader's floor (see [`FLOOR`]), which bounds the index range, and the
/// membership and floor are checked again in the statement.
pub(crate) const VISIBLE_BEFORE: &str = "SELECT m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms, \
     m.kind, m.target, m.reply_to, m.edited_ms, m.deleted, m.reactions \
     FROM members AS v JOIN conversations AS c ON c.id = v.conversation_id \
     JOIN messages AS m ON m.conversation_id = v.conversation_id \
     WHERE v.conversation_id = $1 AND v.uid = $2 AND m.conversation_id = $1 AND m.seq < $3 AND m.seq > $4 \
     AND m.seq > CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END \
     ORDER BY m.seq DESC LIMIT $5";

/// Records a user on first sign-in (idempotent).
pub(crate) const ENSURE_USER: &str =
    "INSERT INTO users (uid, first_seen_ms) VALUES ($1, $2) ON CONFLICT (uid) DO NOTHING";

/// Whether a user has ever signed in.
pub(crate) const USER_EXISTS: &str = "SELECT uid FROM users WHERE uid = $1";

/// Every statement shared by the backends: for the tests that check each one is served by an
/// index (the backends add their own dialect statements), and the MariaDB translations.
pub(crate) const SHARED: &[&str] = &[
    IS_MEMBER,
    GROUP_EXISTS,
    CREATE_GROUP,
    ADD_CREATOR,
    ADD_MEMBER,
    LEAVE,
    STANDING,
    COUNT_GROUPS_OF,
    GROUPS_OF,
    COUNT_GROUP_INVITES,
    COUNT_USER_INVITES,
    ADD_INVITE,
    DELETE_INVITE,
    INVITATIONS_OF,
    COUNT_BANS,
    ADD_BAN,
    DELETE_BAN,
    SET_ROLE,
    UPDATE_GROUP,
    MEMBER_PAGE,
    IS_BLOCKED,
    COUNT_BLOCKS,
    ADD_BLOCK,
    DELETE_BLOCK,
    BLOCKS_OF,
    CONTACTS,
    SUMMARIES,
    CURSORS,
    FLOOR,
    VISIBLE_AFTER,
    VISIBLE_BEFORE,
    ENSURE_USER,
    USER_EXISTS,
];

// ------------------------------------------------ changes, receipts and presence (`events`)

pub(crate) const CONTEXT: &str = "SELECT c.last_seq, c.kind, coalesce(c.owner, c.created_by) AS owner, v.role, \
     CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END AS floor \
     FROM members AS v JOIN conversations AS c ON c.id = v.conversation_id \
     WHERE v.conversation_id = $1 AND v.uid = $2";

pub(crate) const TARGET: &str = "SELECT id, conversation_id, seq, sender, cid, text, ts_ms, kind, target, reply_to, \
     edited_ms, deleted, reactions FROM messages WHERE id = $1 AND conversation_id = $2";

pub(crate) const BY_KEY: &str = "SELECT id, conversation_id, seq, sender, cid, text, ts_ms, kind, target, reply_to, \
     edited_ms, deleted, reactions FROM messages WHERE sender = $1 AND cid = $2";

/// Bumps the counter of conversation `$1` by one (under its lock: to the event's seq).
pub(crate) const BUMP: &str = "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1";

pub(crate) const INSERT_EVENT: &str = "INSERT INTO messages (conversation_id, seq, sender, cid, text, ts_ms, kind, target) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";

pub(crate) const APPLY_EDIT: &str = "UPDATE messages SET text = $1, edited_ms = $2 WHERE id = $3";

pub(crate) const APPLY_DELETE: &str = "UPDATE messages SET text = '', deleted = 1, reactions = NULL WHERE id = $1";

pub(crate) const DELETE_REACTIONS: &str = "DELETE FROM reactions WHERE message_id = $1";

pub(crate) const ADD_REACTION: &str = "INSERT INTO reactions (message_id, uid, emoji) VALUES ($1, $2, $3)";

pub(crate) const REMOVE_REACTION: &str = "DELETE FROM reactions WHERE message_id = $1 AND uid = $2 AND emoji = $3";

pub(crate) const REACTIONS_OF: &str = "SELECT uid, emoji FROM reactions WHERE message_id = $1";

pub(crate) const SET_REACTIONS: &str = "UPDATE messages SET reactions = $1 WHERE id = $2";

/// A message `$3` of `$1` that `$2` may read (a member, above its floor), not an event.
pub(crate) const READABLE_MESSAGE: &str = "SELECT m.id FROM members AS v JOIN conversations AS c ON c.id = v.conversation_id \
     JOIN messages AS m ON m.conversation_id = v.conversation_id \
     WHERE v.conversation_id = $1 AND v.uid = $2 AND m.id = $3 AND m.kind = 'message' \
     AND m.seq > CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END";

/// Sets a read marker: to `$1` for member `$3` of `$2` (parameters in text order, as every
/// statement here, so that the MariaDB text is a mere placeholder change).
pub(crate) const SET_READ: &str = "UPDATE members SET read_seq = $1 WHERE conversation_id = $2 AND uid = $3";

pub(crate) const AUTHOR_AT: &str = "SELECT sender FROM messages WHERE conversation_id = $1 AND seq = $2";

pub(crate) const GO_ONLINE: &str = "UPDATE users SET present = 1 WHERE uid = $1 AND present = 0";

pub(crate) const GO_OFFLINE: &str = "UPDATE users SET present = 0, last_seen_ms = $1 WHERE uid = $2 AND present = 1";

/// Every statement of `events`: for the index tests of the backends, and translated once for
/// MariaDB.
pub(crate) const EVENTS: &[&str] = &[
    CONTEXT,
    TARGET,
    BY_KEY,
    BUMP,
    INSERT_EVENT,
    APPLY_EDIT,
    APPLY_DELETE,
    DELETE_REACTIONS,
    ADD_REACTION,
    REMOVE_REACTION,
    REACTIONS_OF,
    SET_REACTIONS,
    READABLE_MESSAGE,
    GO_ONLINE,
    GO_OFFLINE,
    SET_READ,
    AUTHOR_AT,
];

// ----------------------------------------------------------------------- catch-up (`catchup`)

/// User `$1`'s conversations, most recently active first (the time of the event at
/// `last_seq`, else the creation), at most `$2`, with the read floor and, for a direct
/// conversation, the peer's markers.
pub(crate) const ACTIVITY: &str = "SELECT m.conversation_id AS id, c.name, c.last_seq, m.read_seq, \
     CASE WHEN c.history = 'joined' THEN m.joined_seq ELSE 0 END AS floor, \
     coalesce(l.ts_ms, c.created_at_ms) AS last_ts, p.read_seq AS peer_read_seq, p.delivered_seq AS peer_delivered_seq \
     FROM members AS m JOIN conversations AS c ON c.id = m.conversation_id \
     LEFT JOIN messages AS l ON l.conversation_id = m.conversation_id AND l.seq = c.last_seq \
     LEFT JOIN members AS p ON p.conversation_id = m.conversation_id AND p.uid <> m.uid AND c.kind = 'direct' \
     WHERE m.uid = $1 ORDER BY last_ts DESC, m.conversation_id LIMIT $2";
