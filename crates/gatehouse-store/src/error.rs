//! The one error type of the crate.

use std::sync::Arc;

use serde::Serialize;

/// Everything a store operation can fail with.
///
/// The type is `Clone` because one failed group-commit transaction has to be reported to every
/// caller whose message was in that batch; database errors are therefore shared behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The user is not a member of the conversation it tried to write to or read from.
    #[error("{uid} is not a member of conversation {conversation}")]
    NotMember {
        /// The user that was refused.
        uid: String,
        /// The conversation id (`d:…` or `g:…`).
        conversation: String,
    },
    /// The group does not exist (groups are created explicitly, never implicitly).
    #[error("unknown group {0}")]
    UnknownGroup(String),
    /// A group with this id already exists, so it cannot be created again.
    #[error("group {0} already exists")]
    GroupExists(String),
    /// The uid has never signed in, so it cannot be invited, banned or blocked.
    #[error("unknown user {0}")]
    UnknownUser(String),
    /// The user's role in the group does not allow the action.
    #[error("{uid} may not {action} in group {group}")]
    Forbidden {
        /// The user that was refused.
        uid: String,
        /// The group id.
        group: String,
        /// What was refused, and why.
        action: String,
    },
    /// The user is banned from the group and cannot join it.
    #[error("{uid} is banned from group {group}")]
    Banned {
        /// The banned user.
        uid: String,
        /// The group id.
        group: String,
    },
    /// The group is invite-only and the user has no invitation.
    #[error("group {group} is invite-only and {uid} has no invitation")]
    NotInvited {
        /// The user that was refused.
        uid: String,
        /// The group id.
        group: String,
    },
    /// `by` has blocked `uid`: its direct messages and invitations are refused.
    #[error("{by} does not accept messages or invitations from {uid}")]
    Blocked {
        /// The refused sender or inviter.
        uid: String,
        /// The user who blocked it.
        by: String,
    },
    /// The sender's `cid` is already stored for another message (another conversation or
    /// text); nothing was stored. An identical resend is a duplicate, not a conflict.
    #[error("cid {cid} of {sender} was already used for a different message")]
    CidConflict {
        /// The sender.
        sender: String,
        /// The reused idempotency key.
        cid: String,
    },
    /// The message a change or a reply names is not in that conversation, is not a message
    /// (an event), or is not readable by the user.
    #[error("no message {id} in conversation {conversation} for this user")]
    UnknownMessage {
        /// The conversation id.
        conversation: String,
        /// The message id given.
        id: i64,
    },
    /// An edit came after the edit window of the message had closed.
    #[error("message {id} can no longer be edited (the edit window is {window_ms} ms)")]
    EditWindowClosed {
        /// The message id.
        id: i64,
        /// The window.
        window_ms: i64,
    },
    /// The message was deleted: it can no longer be edited, reacted to or deleted again.
    #[error("message {0} was deleted")]
    MessageDeleted(i64),
    /// A cap of [`StoreLimits`](crate::StoreLimits) would be exceeded.
    #[error("limit {limit} reached (at most {max})")]
    LimitExceeded {
        /// Which cap.
        limit: Limit,
        /// Its value.
        max: u32,
    },
    /// A caller-supplied value cannot be stored (empty id, NUL byte, unknown URL scheme …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The group committer's queue is full; returned by `try_append` so callers can shed load.
    #[error("write queue is full")]
    Overloaded,
    /// The group committer's writer task is gone, so nothing more can be written through it.
    #[error("group committer has stopped")]
    Closed,
    /// The group committer's writer thread (or its runtime) could not be started.
    #[error("cannot start the group committer: {0}")]
    Start(Arc<std::io::Error>),
    /// Concurrent writers kept inserting the same idempotency keys into other conversations, and
    /// the batch was retried as often as allowed without reaching a consistent plan.
    #[error("gave up after {0} attempts against conflicting concurrent writers")]
    Contention(u32),
    /// The database contradicted an invariant the store relies on (a locked row vanished).
    #[error("store invariant violated: {0}")]
    Invariant(String),
    /// The database (or the connection pool) failed.
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
    /// The embedded schema migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(Arc<sqlx::migrate::MigrateError>),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(Arc::new(error))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(Arc::new(error))
    }
}

impl StoreError {
    /// Returns the name of the constraint a database error violated, if this is one and the
    /// database names it.
    pub(crate) fn database_constraint(&self) -> Option<String> {
        self.database_error()?.constraint().map(str::to_owned)
    }

    /// Returns the SQLSTATE / SQLite extended code of a database error, if this is one.
    pub(crate) fn database_code(&self) -> Option<String> {
        self.database_error()?.code().map(|code| code.into_owned())
    }

    /// Returns the message of a database error, if this is one.
    pub(crate) fn database_message(&self) -> Option<String> {
        Some(self.database_error()?.message().to_owned())
    }

    fn database_error(&self) -> Option<&dyn sqlx::error::DatabaseError> {
        match self {
            StoreError::Database(error) => error.as_database_error(),
            _ => None,
        }
    }
}

/// Which cap of [`StoreLimits`](crate::StoreLimits) a refused operation hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// [`StoreLimits::members_per_group`](crate::StoreLimits::members_per_group).
    MembersPerGroup,
    /// [`StoreLimits::groups_per_user`](crate::StoreLimits::groups_per_user).
    GroupsPerUser,
    /// [`StoreLimits::invitations_per_group`](crate::StoreLimits::invitations_per_group).
    InvitationsPerGroup,
    /// [`StoreLimits::invitations_per_user`](crate::StoreLimits::invitations_per_user).
    InvitationsPerUser,
    /// [`StoreLimits::bans_per_group`](crate::StoreLimits::bans_per_group).
    BansPerGroup,
    /// [`StoreLimits::blocks_per_user`](crate::StoreLimits::blocks_per_user).
    BlocksPerUser,
    /// Different emoji on one message ([`crate::MAX_REACTIONS_PER_MESSAGE`]).
    ReactionsPerMessage,
    /// One user's emoji on one message ([`crate::MAX_REACTIONS_PER_USER`]).
    ReactionsPerUser,
}

impl Limit {
    /// The name used in error frames and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MembersPerGroup => "members_per_group",
            Limit::GroupsPerUser => "groups_per_user",
            Limit::InvitationsPerGroup => "invitations_per_group",
            Limit::InvitationsPerUser => "invitations_per_user",
            Limit::BansPerGroup => "bans_per_group",
            Limit::BlocksPerUser => "blocks_per_user",
            Limit::ReactionsPerMessage => "reactions_per_message",
            Limit::ReactionsPerUser => "reactions_per_user",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
