//! Group membership and administration: create, join, leave, invite, kick, ban, roles,
//! settings, member lists.
//!
//! Every change takes the group's conversation lock first, as appends do (PostgreSQL, MariaDB:
//! the row lock; SQLite: the database write lock every write transaction takes), reads the actor's and
//! the target's standing under it, decides with the rules of [`crate::access`], writes, and
//! commits. So a change is decided on the state every other change and every append of the
//! group waits for: a message is never stored after its sender's removal committed, and two
//! changes never both pass a cap that only one of them fits under. Per-user caps are counted
//! under the user's row lock, taken after the group's (the order every transaction keeps).

use crate::access::{
    GroupInfo, GroupMember, GroupUpdate, Invitation, InviteOutcome, JoinOutcome, MemberPage, Needs, NewGroup, Role,
    check_cap, check_name, may_remove,
};
use crate::error::{Limit, StoreError};
use crate::ids::{check_ident, group_conversation_id, now_ms};
use crate::model::StandingRow;
use crate::sql;
use crate::store::{Store, with_pool};

/// Most groups [`Store::groups_of`] returns: memberships older than
/// [`StoreLimits::groups_per_user`](crate::StoreLimits) may exceed the cap, never this.
pub const MAX_GROUPS_LISTED: u32 = 10_000;

/// Reads `$uid`'s standing in group conversation `$conversation` inside transaction `$tx`:
/// `None` when the group does not exist.
macro_rules! standing {
    ($tx:expr, $dialect:expr, $conversation:expr, $uid:expr) => {{
        let row: Option<StandingRow> = sqlx::query_as($dialect.sql(sql::STANDING))
            .bind($conversation)
            .bind($uid)
            .fetch_optional(&mut *$tx)
            .await?;
        match row {
            Some(row) => Some(row.into_standing($uid)?),
            None => None,
        }
    }};
}

/// Runs a `count(*)` statement inside transaction `$tx`.
macro_rules! count {
    ($tx:expr, $dialect:expr, $sql:expr $(, $arg:expr)*) => {{
        let count: i64 = sqlx::query_scalar($dialect.sql($sql))$(.bind($arg))*.fetch_one(&mut *$tx).await?;
        count
    }};
}

/// Takes conversation `$conversation`'s lock inside transaction `$tx` (see [`Dialect`]).
///
/// [`Dialect`]: crate::store::Dialect
macro_rules! lock_conversation {
    ($tx:expr, $dialect:expr, $conversation:expr) => {
        sqlx::query($dialect.lock_conversation)
            .bind($conversation)
            .execute(&mut *$tx)
            .await?
    };
}

/// Returns whether user `$uid` exists, taking its row lock inside `$tx` where the backend has
/// row locks.
macro_rules! lock_user {
    ($tx:expr, $dialect:expr, $uid:expr) => {{
        let found: Option<String> = sqlx::query_scalar($dialect.lock_user)
            .bind($uid)
            .fetch_optional(&mut *$tx)
            .await?;
        found.is_some()
    }};
}

pub(crate) use {count, lock_conversation, lock_user};

fn unknown_group(group: &str) -> StoreError {
    StoreError::UnknownGroup(group.to_owned())
}

fn not_member(uid: &str, group: &str) -> StoreError {
    StoreError::NotMember {
        uid: uid.to_owned(),
        conversation: group_conversation_id(group),
    }
}

impl Store {
    /// Creates group `group_id` owned by `creator`, its first member.
    ///
    /// Groups are explicit (unlike direct conversations) so that membership is an admission
    /// decision; fails with [`StoreError::GroupExists`] if the id is taken, and with
    /// [`StoreError::LimitExceeded`] when the creator already belongs to as many groups as
    /// allowed.
    pub async fn create_group(&self, group_id: &str, creator: &str, settings: &NewGroup) -> Result<(), StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", creator)?;
        if let Some(name) = &settings.name {
            check_name(name)?;
        }
        let conversation = group_conversation_id(group_id);
        let now = now_ms();
        let max_groups = self.limits.groups_per_user;
        with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            let created = sqlx::query(dialect.sql(sql::CREATE_GROUP))
                .bind(&conversation)
                .bind(settings.name.as_deref())
                .bind(creator)
                .bind(now)
                .bind(creator)
                .bind(settings.access.as_str())
                .bind(settings.history.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if created == 0 {
                return Err(StoreError::GroupExists(group_id.to_owned()));
            }
            // The creator signed in (its row exists in the chat service); a store-level caller
            // without one gets an approximate cap on PostgreSQL (see `StoreLimits`).
            let _registered = lock_user!(tx, dialect, creator);
            check_cap(
                Limit::GroupsPerUser,
                count!(tx, dialect, sql::COUNT_GROUPS_OF, creator),
                max_groups,
            )?;
            sqlx::query(dialect.sql(sql::ADD_CREATOR))
                .bind(&conversation)
                .bind(creator)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Adds `uid` to group `group_id`.
    ///
    /// Admitted: the owner; anyone not banned when the group is `open`; invited users when it is
    /// `invite` (the invitation is used up). Refused with [`StoreError::Banned`],
    /// [`StoreError::NotInvited`] or [`StoreError::LimitExceeded`] (members per group, groups
    /// per user). Earlier messages count as read for the new member, and with `joined` history
    /// they stay invisible to it. Joining twice is a no-op ([`JoinOutcome::AlreadyMember`]).
    pub async fn join_group(&self, group_id: &str, uid: &str) -> Result<JoinOutcome, StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", uid)?;
        let conversation = group_conversation_id(group_id);
        let (max_members, max_groups) = (self.limits.members_per_group, self.limits.groups_per_user);
        Ok(with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let Some((standing, members)) = standing!(tx, dialect, &conversation, uid) else {
                return Err(unknown_group(group_id));
            };
            if standing.role.is_some() {
                return Ok(JoinOutcome::AlreadyMember);
            }
            standing.admit(uid, group_id)?;
            check_cap(Limit::MembersPerGroup, members, max_members)?;
            let _registered = lock_user!(tx, dialect, uid);
            check_cap(
                Limit::GroupsPerUser,
                count!(tx, dialect, sql::COUNT_GROUPS_OF, uid),
                max_groups,
            )?;
            sqlx::query(dialect.sql(sql::ADD_MEMBER))
                .bind(&conversation)
                .bind(uid)
                .bind(now_ms())
                .bind(standing.last_seq)
                .bind(standing.last_seq)
                .execute(&mut *tx)
                .await?;
            sqlx::query(dialect.sql(sql::DELETE_INVITE))
                .bind(&conversation)
                .bind(uid)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            JoinOutcome::Joined
        }))
    }

    /// Removes `uid` from group `group_id`; leaving when not a member is a no-op. The owner may
    /// leave too; it stays the owner and may join again whatever the group's access.
    pub async fn leave_group(&self, group_id: &str, uid: &str) -> Result<(), StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", uid)?;
        let conversation = group_conversation_id(group_id);
        with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let removed = sqlx::query(dialect.sql(sql::LEAVE))
                .bind(&conversation)
                .bind(uid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if removed == 0 {
                let exists: Option<String> = sqlx::query_scalar(dialect.sql(sql::GROUP_EXISTS))
                    .bind(&conversation)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    return Err(unknown_group(group_id));
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Invites `invitee` to group `group_id` on behalf of `actor` (the owner or an admin).
    ///
    /// Refused with [`StoreError::UnknownUser`] for a uid that never signed in,
    /// [`StoreError::Blocked`] when the invitee blocks the actor, [`StoreError::Banned`] when the
    /// invitee is banned, and [`StoreError::LimitExceeded`] when the group or the invitee has as
    /// many outstanding invitations as allowed.
    pub async fn invite(&self, group_id: &str, actor: &str, invitee: &str) -> Result<InviteOutcome, StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", actor)?;
        check_ident("uid", invitee)?;
        let conversation = group_conversation_id(group_id);
        let limits = self.limits;
        Ok(with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let Some((me, _)) = standing!(tx, dialect, &conversation, actor) else {
                return Err(unknown_group(group_id));
            };
            me.authorize(actor, group_id, "invite", Needs::Manager)?;
            if !lock_user!(tx, dialect, invitee) {
                return Err(StoreError::UnknownUser(invitee.to_owned()));
            }
            if count!(tx, dialect, sql::IS_BLOCKED, invitee, actor) > 0 {
                return Err(StoreError::Blocked {
                    uid: actor.to_owned(),
                    by: invitee.to_owned(),
                });
            }
            let Some((them, _)) = standing!(tx, dialect, &conversation, invitee) else {
                return Err(unknown_group(group_id));
            };
            if them.role.is_some() {
                return Ok(InviteOutcome::AlreadyMember);
            }
            if them.banned {
                return Err(StoreError::Banned {
                    uid: invitee.to_owned(),
                    group: group_id.to_owned(),
                });
            }
            if them.invited {
                return Ok(InviteOutcome::AlreadyInvited);
            }
            check_cap(
                Limit::InvitationsPerGroup,
                count!(tx, dialect, sql::COUNT_GROUP_INVITES, &conversation),
                limits.invitations_per_group,
            )?;
            check_cap(
                Limit::InvitationsPerUser,
                count!(tx, dialect, sql::COUNT_USER_INVITES, invitee),
                limits.invitations_per_user,
            )?;
            sqlx::query(dialect.sql(sql::ADD_INVITE))
                .bind(&conversation)
                .bind(invitee)
                .bind(actor)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            InviteOutcome::Invited
        }))
    }

    /// Withdraws `uid`'s invitation to group `group_id` (the invitee declines it); returns
    /// whether there was one.
    pub async fn decline_invitation(&self, group_id: &str, uid: &str) -> Result<bool, StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", uid)?;
        let conversation = group_conversation_id(group_id);
        Ok(with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let removed = sqlx::query(dialect.sql(sql::DELETE_INVITE))
                .bind(&conversation)
                .bind(uid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            removed > 0
        }))
    }

    /// Removes member `target` from group `group_id` on behalf of `actor` (the owner or an admin;
    /// only the owner removes admins; nobody removes the owner). Its invitation goes too; it may
    /// join again if the group's access lets it (ban it to prevent that).
    pub async fn kick(&self, group_id: &str, actor: &str, target: &str) -> Result<(), StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", actor)?;
        check_ident("uid", target)?;
        if actor == target {
            return self.leave_group(group_id, actor).await;
        }
        let conversation = group_conversation_id(group_id);
        with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let Some((me, _)) = standing!(tx, dialect, &conversation, actor) else {
                return Err(unknown_group(group_id));
            };
            me.authorize(actor, group_id, "kick", Needs::Manager)?;
            let Some((them, _)) = standing!(tx, dialect, &conversation, target) else {
                return Err(unknown_group(group_id));
            };
            if them.role.is_none() {
                return Err(not_member(target, group_id));
            }
            may_remove(actor, me.role.unwrap_or(Role::Member), target, &them, group_id, "kick")?;
            for statement in [dialect.sql(sql::LEAVE), dialect.sql(sql::DELETE_INVITE)] {
                sqlx::query(statement)
                    .bind(&conversation)
                    .bind(target)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Bans `target` from group `group_id` on behalf of `actor` (same rights as [`Store::kick`]):
    /// removes its membership and invitation, and refuses its joins until [`Store::unban`].
    /// `target` need not be a member. Banning twice is a no-op.
    pub async fn ban(&self, group_id: &str, actor: &str, target: &str) -> Result<(), StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", actor)?;
        check_ident("uid", target)?;
        let conversation = group_conversation_id(group_id);
        let max_bans = self.limits.bans_per_group;
        with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let Some((me, _)) = standing!(tx, dialect, &conversation, actor) else {
                return Err(unknown_group(group_id));
            };
            me.authorize(actor, group_id, "ban", Needs::Manager)?;
            if actor == target {
                return Err(StoreError::Forbidden {
                    uid: actor.to_owned(),
                    group: group_id.to_owned(),
                    action: "ban itself: leave the group instead".to_owned(),
                });
            }
            let Some((them, _)) = standing!(tx, dialect, &conversation, target) else {
                return Err(unknown_group(group_id));
            };
            may_remove(actor, me.role.unwrap_or(Role::Member), target, &them, group_id, "ban")?;
            if !them.banned {
                check_cap(
                    Limit::BansPerGroup,
                    count!(tx, dialect, sql::COUNT_BANS, &conversation),
                    max_bans,
                )?;
            }
            sqlx::query(dialect.sql(sql::ADD_BAN))
                .bind(&conversation)
                .bind(target)
                .bind(actor)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            for statement in [dialect.sql(sql::LEAVE), dialect.sql(sql::DELETE_INVITE)] {
                sqlx::query(statement)
                    .bind(&conversation)
                    .bind(target)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Lifts `target`'s ban from group `group_id` on behalf of `actor` (the owner or an admin);
    /// returns whether it was banned. It is not re-admitted: it joins as anyone else would.
    pub async fn unban(&self, group_id: &str, actor: &str, target: &str) -> Result<bool, StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", actor)?;
        check_ident("uid", target)?;
        let conversation = group_conversation_id(group_id);
        Ok(with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let Some((me, _)) = standing!(tx, dialect, &conversation, actor) else {
                return Err(unknown_group(group_id));
            };
            me.authorize(actor, group_id, "unban", Needs::Manager)?;
            let removed = sqlx::query(dialect.sql(sql::DELETE_BAN))
                .bind(&conversation)
                .bind(target)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            removed > 0
        }))
    }

    /// Makes member `target` of group `group_id` an admin (`admin = true`) or a plain member
    /// again, on behalf of `actor`, who must be the owner. The owner's own role cannot change.
    pub async fn set_admin(&self, group_id: &str, actor: &str, target: &str, admin: bool) -> Result<(), StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", actor)?;
        check_ident("uid", target)?;
        let conversation = group_conversation_id(group_id);
        let action = if admin { "promote" } else { "demote" };
        with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let Some((me, _)) = standing!(tx, dialect, &conversation, actor) else {
                return Err(unknown_group(group_id));
            };
            me.authorize(actor, group_id, action, Needs::Owner)?;
            let Some((them, _)) = standing!(tx, dialect, &conversation, target) else {
                return Err(unknown_group(group_id));
            };
            if them.role.is_none() {
                return Err(not_member(target, group_id));
            }
            if them.owner == target {
                return Err(StoreError::Forbidden {
                    uid: actor.to_owned(),
                    group: group_id.to_owned(),
                    action: format!("{action} {target}: the owner's role cannot change"),
                });
            }
            sqlx::query(dialect.sql(sql::SET_ROLE))
                .bind(if admin { "admin" } else { "member" })
                .bind(&conversation)
                .bind(target)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Changes group `group_id`'s name, access or history visibility on behalf of `actor` (the
    /// owner or an admin) and returns the group as it is now. A history change applies at once
    /// to every member's reads.
    pub async fn update_group(
        &self,
        group_id: &str,
        actor: &str,
        update: &GroupUpdate,
    ) -> Result<GroupInfo, StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", actor)?;
        if let Some(name) = &update.name {
            check_name(name)?;
        }
        let conversation = group_conversation_id(group_id);
        Ok(with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let Some((me, _)) = standing!(tx, dialect, &conversation, actor) else {
                return Err(unknown_group(group_id));
            };
            me.authorize(actor, group_id, "change the group's settings", Needs::Manager)?;
            sqlx::query(dialect.sql(sql::UPDATE_GROUP))
                .bind(update.name.as_deref())
                .bind(update.access.map(|a| a.as_str()))
                .bind(update.history.map(|h| h.as_str()))
                .bind(&conversation)
                .execute(&mut *tx)
                .await?;
            let Some((now, members)) = standing!(tx, dialect, &conversation, actor) else {
                return Err(unknown_group(group_id));
            };
            tx.commit().await?;
            info(group_id, actor, now, members)?
        }))
    }

    /// Returns group `group_id` as member `uid` sees it ([`StoreError::NotMember`] otherwise).
    pub async fn group_info(&self, group_id: &str, uid: &str) -> Result<GroupInfo, StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", uid)?;
        let conversation = group_conversation_id(group_id);
        let row: Option<StandingRow> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_as(dialect.sql(sql::STANDING))
                .bind(&conversation)
                .bind(uid)
                .fetch_optional(pool)
                .await?
        });
        let Some(row) = row else {
            return Err(unknown_group(group_id));
        };
        let (standing, members) = row.into_standing(uid)?;
        if standing.role.is_none() {
            return Err(not_member(uid, group_id));
        }
        info(group_id, uid, standing, members)
    }

    /// Returns up to `limit` members of group `group_id` with a uid after `after` (from the
    /// start when `None`), in uid order, with their roles: only a member (`uid`) may list them.
    pub async fn group_members(
        &self,
        group_id: &str,
        uid: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<MemberPage, StoreError> {
        check_ident("group id", group_id)?;
        check_ident("uid", uid)?;
        let conversation = group_conversation_id(group_id);
        let limit = limit.clamp(1, crate::MAX_PAGE);
        let rows: Vec<(String, String, String)> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_as(dialect.sql(sql::MEMBER_PAGE))
                .bind(&conversation)
                .bind(uid)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?
        });
        if rows.is_empty() {
            // Either the end of the list, or the reader may not see it: find out which.
            self.group_info(group_id, uid).await?;
        }
        let more = rows.len() > limit as usize;
        let members = rows
            .into_iter()
            .take(limit as usize)
            .map(|(member, role, owner)| GroupMember {
                role: if member == owner {
                    Role::Owner
                } else if role == "admin" {
                    Role::Admin
                } else {
                    Role::Member
                },
                uid: member,
            })
            .collect();
        Ok(MemberPage { members, more })
    }

    /// Returns whether group `group_id` exists.
    pub async fn group_exists(&self, group_id: &str) -> Result<bool, StoreError> {
        check_ident("group id", group_id)?;
        let found: Option<String> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_scalar(dialect.sql(sql::GROUP_EXISTS))
                .bind(group_conversation_id(group_id))
                .fetch_optional(pool)
                .await?
        });
        Ok(found.is_some())
    }

    /// Returns the ids of the groups `uid` belongs to, sorted (at most [`MAX_GROUPS_LISTED`]).
    pub async fn groups_of(&self, uid: &str) -> Result<Vec<String>, StoreError> {
        check_ident("uid", uid)?;
        let ids: Vec<String> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_scalar(dialect.sql(sql::GROUPS_OF))
                .bind(uid)
                .bind(i64::from(MAX_GROUPS_LISTED))
                .fetch_all(pool)
                .await?
        });
        Ok(ids
            .into_iter()
            .filter_map(|id| id.strip_prefix("g:").map(str::to_owned))
            .collect())
    }

    /// Returns the invitations `uid` has received and not used or declined, in group order (at
    /// most [`StoreLimits::invitations_per_user`](crate::StoreLimits)).
    pub async fn invitations_of(&self, uid: &str) -> Result<Vec<Invitation>, StoreError> {
        check_ident("uid", uid)?;
        let rows: Vec<(String, Option<String>, String, i64)> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_as(dialect.sql(sql::INVITATIONS_OF))
                .bind(uid)
                .bind(i64::from(self.limits.invitations_per_user))
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(id, name, by, ts_ms)| {
                Some(Invitation {
                    group: id.strip_prefix("g:")?.to_owned(),
                    name,
                    by,
                    ts_ms,
                })
            })
            .collect())
    }
}

/// The group as member `uid`, whose standing this is, sees it.
fn info(group_id: &str, uid: &str, standing: crate::access::Standing, members: i64) -> Result<GroupInfo, StoreError> {
    let role = standing.role.ok_or_else(|| not_member(uid, group_id))?;
    Ok(GroupInfo {
        group: group_id.to_owned(),
        name: standing.name,
        owner: standing.owner,
        access: standing.access,
        history: standing.history,
        member_count: members,
        role,
    })
}
