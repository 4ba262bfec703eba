//! The group access model: who may join, read, invite, kick, ban and manage a group, and the
//! caps on every collection a user can grow.
//!
//! A group has an owner (its creator) and admins. It is `open` (anyone may join) or `invite`
//! (only users invited by the owner or an admin, and the owner, may join). Its history is
//! `joined` (a member reads the messages after the one that was last when it joined) or
//! `shared` (every message). Banned users cannot join; users can block each other, which refuses
//! the blocked user's direct messages and invitations.
//!
//! The rules live here as pure functions of what a transaction read under the group's lock, so
//! every backend applies exactly the same decisions and the rules are unit-tested without a
//! database.

use serde::Serialize;

use crate::error::{Limit, StoreError};

/// Longest group display name, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 100;

/// Who may join a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone who is not banned may join.
    Open,
    /// Only invited users (and the owner) may join. The default: group names are guessable.
    Invite,
}

impl Access {
    /// The value stored in the database and used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Invite => "invite",
        }
    }

    /// Parses [`Access::as_str`]'s output.
    pub fn parse(value: &str) -> Option<Access> {
        match value {
            "open" => Some(Access::Open),
            "invite" => Some(Access::Invite),
            _ => None,
        }
    }
}

/// Which messages of a group a member may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryVisibility {
    /// Only messages stored after the member joined (seq above the group's `last_seq` at the
    /// join). The default: a newcomer does not read what was said before it was there.
    Joined,
    /// Every message of the group.
    Shared,
}

impl HistoryVisibility {
    /// The value stored in the database and used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryVisibility::Joined => "joined",
            HistoryVisibility::Shared => "shared",
        }
    }

    /// Parses [`HistoryVisibility::as_str`]'s output.
    pub fn parse(value: &str) -> Option<HistoryVisibility> {
        match value {
            "joined" => Some(HistoryVisibility::Joined),
            "shared" => Some(HistoryVisibility::Shared),
            _ => None,
        }
    }
}

/// A member's rights in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and writes.
    Member,
    /// Also invites, kicks, bans and unbans members, and changes the group's settings.
    Admin,
    /// Also promotes and demotes admins; cannot be kicked, banned or demoted.
    Owner,
}

impl Role {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

/// The settings of a new group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    /// Display name (at most [`MAX_GROUP_NAME_CHARS`] characters).
    pub name: Option<String>,
    /// Who may join; `invite` by default.
    pub access: Access,
    /// What members read; `joined` by default.
    pub history: HistoryVisibility,
}

impl Default for NewGroup {
    fn default() -> Self {
        NewGroup {
            name: None,
            access: Access::Invite,
            history: HistoryVisibility::Joined,
        }
    }
}

/// A change to a group's settings; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupUpdate {
    /// New display name.
    pub name: Option<String>,
    /// New access mode.
    pub access: Option<Access>,
    /// New history visibility (applies at once to every member's reads).
    pub history: Option<HistoryVisibility>,
}

/// A group as one of its members sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// The group id (without `g:`).
    pub group: String,
    /// Display name.
    pub name: Option<String>,
    /// The owner's uid.
    pub owner: String,
    /// Who may join.
    pub access: Access,
    /// What members read.
    pub history: HistoryVisibility,
    /// How many members the group has.
    pub member_count: i64,
    /// The asking member's role.
    pub role: Role,
}

/// One member on a page of a group's member list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    /// The member's uid.
    pub uid: String,
    /// Its role.
    pub role: Role,
}

/// One page of a group's members, in uid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPage {
    /// The members after the requested uid.
    pub members: Vec<GroupMember>,
    /// `true` when more members follow the last one.
    pub more: bool,
}

/// An outstanding invitation to a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    /// The group id (without `g:`).
    pub group: String,
    /// The group's display name.
    pub name: Option<String>,
    /// Who invited.
    pub by: String,
    /// When, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
}

/// What an invitation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteOutcome {
    /// A new invitation was stored.
    Invited,
    /// The user was already invited; nothing changed.
    AlreadyInvited,
    /// The user is already a member; nothing changed.
    AlreadyMember,
}

/// What a join did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The user became a member.
    Joined,
    /// The user was a member already; nothing changed.
    AlreadyMember,
}

/// The caps on what users can accumulate, each refused with [`StoreError::LimitExceeded`].
///
/// Counts are exact on SQLite (every write holds the database lock). On PostgreSQL the group's
/// row lock makes the per-group caps exact, and the user's row lock (taken after it) the
/// per-user caps, for users that have signed in (the chat service registers every user at its
/// first sign-in). Rows that existed before a cap was introduced are kept, never trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Members of one group (a group message is pushed to every one of them).
    pub members_per_group: u32,
    /// Groups one user belongs to (every connection joins them all at sign-in).
    pub groups_per_user: u32,
    /// Outstanding invitations of one group.
    pub invitations_per_group: u32,
    /// Outstanding invitations one user has received (the invitee can decline or block).
    pub invitations_per_user: u32,
    /// Bans of one group.
    pub bans_per_group: u32,
    /// Users one user blocks.
    pub blocks_per_user: u32,
}

impl Default for StoreLimits {
    /// 1,000 members per group, 200 groups per user, 100 outstanding invitations per group and
    /// per invitee, 1,000 bans per group, 1,000 blocks per user.
    fn default() -> Self {
        StoreLimits {
            members_per_group: 1_000,
            groups_per_user: 200,
            invitations_per_group: 100,
            invitations_per_user: 100,
            bans_per_group: 1_000,
            blocks_per_user: 1_000,
        }
    }
}

/// Refuses with [`StoreError::LimitExceeded`] when `count` already reached `max`.
pub(crate) fn check_cap(limit: Limit, count: i64, max: u32) -> Result<(), StoreError> {
    if count >= i64::from(max) {
        return Err(StoreError::LimitExceeded { limit, max });
    }
    Ok(())
}

/// A group and one user's standing in it, as read under the group's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) owner: String,
    pub(crate) access: Access,
    pub(crate) history: HistoryVisibility,
    pub(crate) name: Option<String>,
    pub(crate) last_seq: i64,
    /// `None` when the user is not a member.
    pub(crate) role: Option<Role>,
    pub(crate) banned: bool,
    pub(crate) invited: bool,
}

/// What a management action needs of its actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    /// The owner or an admin.
    Manager,
    /// The owner.
    Owner,
}

impl Needs {
    fn describe(self) -> &'static str {
        match self {
            Needs::Manager => "the owner or an admin",
            Needs::Owner => "the owner",
        }
    }
}

impl Standing {
    /// Checks that `actor` (whose standing this is) may perform `action` in `group`: it must be
    /// a member with the role `needs` asks for.
    pub(crate) fn authorize(&self, actor: &str, group: &str, action: &str, needs: Needs) -> Result<(), StoreError> {
        let Some(role) = self.role else {
            return Err(StoreError::NotMember {
                uid: actor.to_owned(),
                conversation: crate::ids::group_conversation_id(group),
            });
        };
        let allowed = match needs {
            Needs::Manager => role >= Role::Admin,
            Needs::Owner => role == Role::Owner,
        };
        if allowed {
            Ok(())
        } else {
            Err(StoreError::Forbidden {
                uid: actor.to_owned(),
                group: group.to_owned(),
                action: format!("{action}: only {} may", needs.describe()),
            })
        }
    }

    /// Checks that `uid` (whose standing this is) may join: not banned, and the group is open,
    /// or `uid` is invited or the owner.
    pub(crate) fn admit(&self, uid: &str, group: &str) -> Result<(), StoreError> {
        if self.banned {
            return Err(StoreError::Banned {
                uid: uid.to_owned(),
                group: group.to_owned(),
            });
        }
        if self.access == Access::Invite && !self.invited && self.owner != uid {
            return Err(StoreError::NotInvited {
                uid: uid.to_owned(),
                group: group.to_owned(),
            });
        }
        Ok(())
    }
}

/// Checks that `actor` (a manager, see [`Standing::authorize`]) may remove or ban `target`,
/// whose standing is `target_standing`: nobody removes the owner, and only the owner removes an
/// admin.
pub(crate) fn may_remove(
    actor: &str,
    actor_role: Role,
    target: &str,
    target_standing: &Standing,
    group: &str,
    action: &str,
) -> Result<(), StoreError> {
    let forbidden = |why: &str| StoreError::Forbidden {
        uid: actor.to_owned(),
        group: group.to_owned(),
        action: format!("{action} {target}: {why}"),
    };
    if target_standing.owner == target {
        return Err(forbidden("the owner cannot be removed"));
    }
    if target_standing.role == Some(Role::Admin) && actor_role != Role::Owner {
        return Err(forbidden("only the owner may remove an admin"));
    }
    Ok(())
}

/// Checks a display name: 1–[`MAX_GROUP_NAME_CHARS`] characters, not only whitespace, no
/// control characters.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::InvalidInput("group name is empty".to_owned()));
    }
    if name.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(StoreError::InvalidInput(format!(
            "group name is longer than {MAX_GROUP_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput(
            "group name contains a control character".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(role: Option<Role>) -> Standing {
        Standing {
            owner: "olga".into(),
            access: Access::Invite,
            history: HistoryVisibility::Joined,
            name: None,
            last_seq: 7,
            role,
            banned: false,
            invited: false,
        }
    }

    #[test]
    fn only_members_with_the_needed_role_may_act() {
        assert!(matches!(
            standing(None).authorize("x", "g", "invite", Needs::Manager),
            Err(StoreError::NotMember { .. })
        ));
        assert!(matches!(
            standing(Some(Role::Member)).authorize("x", "g", "invite", Needs::Manager),
            Err(StoreError::Forbidden { .. })
        ));
        assert!(
            standing(Some(Role::Admin))
                .authorize("x", "g", "invite", Needs::Manager)
                .is_ok()
        );
        assert!(matches!(
            standing(Some(Role::Admin)).authorize("x", "g", "promote", Needs::Owner),
            Err(StoreError::Forbidden { .. })
        ));
        assert!(
            standing(Some(Role::Owner))
                .authorize("olga", "g", "promote", Needs::Owner)
                .is_ok()
        );
    }

    #[test]
    fn invite_only_groups_admit_the_invited_and_the_owner_but_never_the_banned() {
        let outsider = standing(None);
        assert!(matches!(outsider.admit("x", "g"), Err(StoreError::NotInvited { .. })));
        assert!(outsider.admit("olga", "g").is_ok(), "the owner may always come back");
        let invited = Standing {
            invited: true,
            ..standing(None)
        };
        assert!(invited.admit("x", "g").is_ok());
        let open = Standing {
            access: Access::Open,
            ..standing(None)
        };
        assert!(open.admit("x", "g").is_ok());
        let banned = Standing {
            access: Access::Open,
            invited: true,
            banned: true,
            ..standing(None)
        };
        assert!(matches!(banned.admit("x", "g"), Err(StoreError::Banned { .. })));
    }

    #[test]
    fn nobody_removes_the_owner_and_only_the_owner_removes_admins() {
        let owner = standing(Some(Role::Owner));
        assert!(matches!(
            may_remove("ada", Role::Admin, "olga", &owner, "g", "kick"),
            Err(StoreError::Forbidden { .. })
        ));
        let admin = standing(Some(Role::Admin));
        assert!(matches!(
            may_remove("ada", Role::Admin, "bea", &admin, "g", "kick"),
            Err(StoreError::Forbidden { .. })
        ));
        assert!(may_remove("olga", Role::Owner, "bea", &admin, "g", "kick").is_ok());
        let member = standing(Some(Role::Member));
        assert!(may_remove("ada", Role::Admin, "max", &member, "g", "ban").is_ok());
    }

    #[test]
    fn caps_refuse_at_the_maximum() {
        assert!(check_cap(Limit::GroupsPerUser, 1, 2).is_ok());
        assert!(matches!(
            check_cap(Limit::GroupsPerUser, 2, 2),
            Err(StoreError::LimitExceeded {
                limit: Limit::GroupsPerUser,
                max: 2
            })
        ));
    }

    #[test]
    fn names_are_bounded_printable_text() {
        assert!(check_name("Team ☕").is_ok());
        assert!(check_name(" ").is_err());
        assert!(check_name("a\u{7}b").is_err());
        assert!(check_name(&"x".repeat(MAX_GROUP_NAME_CHARS)).is_ok());
        assert!(check_name(&"x".repeat(MAX_GROUP_NAME_CHARS + 1)).is_err());
    }
}
