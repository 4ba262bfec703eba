//! Group and block requests of the chat service: membership, invitations, kicks and bans,
//! roles, settings, member lists and blocks.
//!
//! The store decides (under the group's lock) and the worker makes the cluster follow: after a
//! membership change committed, every connection of the user joins or leaves the group's
//! cluster group before the request is answered, so a removed user gets none of the group's
//! pushes once its removal is answered.

use gatehouse_sdk::{ClientId, Context, Frame};
use gatehouse_store::{
    Access, GroupUpdate, HistoryVisibility, InviteOutcome, MAX_PAGE, NewGroup, Role, group_conversation_id,
};
use serde_json::{Value, json};

use crate::common::{Answer, api_error, store_error};
use crate::protocol::{self, Code, ProtocolError, Request};
use crate::state::ChatWorker;

impl ChatWorker {
    /// Executes a membership request for `uid`: create, join, leave, invite, decline, and the
    /// member and invitation lists.
    pub(crate) async fn group_request(
        &self,
        ctx: &Context,
        uid: &str,
        request: Request,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let answer = match request {
            Request::CreateGroup {
                group,
                name,
                access,
                history,
            } => {
                let settings = NewGroup {
                    name,
                    access: access.unwrap_or(Access::Invite),
                    history: history.unwrap_or(HistoryVisibility::Joined),
                };
                self.store
                    .create_group(&group, uid, &settings)
                    .await
                    .map_err(store_error)?;
                self.follow_group(ctx, uid, &group, true).await?;
                group_frame(&group, "created", None)
            }
            Request::JoinGroup { group } => {
                self.store.join_group(&group, uid).await.map_err(store_error)?;
                self.follow_group(ctx, uid, &group, true).await?;
                group_frame(&group, "joined", None)
            }
            Request::LeaveGroup { group } => {
                self.store.leave_group(&group, uid).await.map_err(store_error)?;
                self.follow_group(ctx, uid, &group, false).await?;
                group_frame(&group, "left", None)
            }
            Request::Invite { group, uid: invitee } => self.invite(ctx, uid, &group, &invitee).await?,
            Request::Decline { group } => {
                self.store.decline_invitation(&group, uid).await.map_err(store_error)?;
                group_frame(&group, "declined", None)
            }
            Request::Members { group, after, limit } => {
                return self.members(uid, &group, after.as_deref(), limit, cid).await;
            }
            Request::Invitations => return self.invitations(uid, cid).await,
            other => return Err(not_for(&other, "a membership request")),
        };
        Ok(Answer::Json(answer))
    }

    /// Executes a group administration request for `uid`: kick, ban, unban, promote, demote,
    /// the settings and their reading.
    pub(crate) async fn admin_request(
        &self,
        ctx: &Context,
        uid: &str,
        request: Request,
    ) -> Result<Answer, ProtocolError> {
        let answer = match request {
            Request::Kick { group, uid: target } => {
                self.store.kick(&group, uid, &target).await.map_err(store_error)?;
                self.remove_from_group(ctx, uid, &target, &group, "kicked").await?;
                group_frame(&group, "kicked", Some(&target))
            }
            Request::Ban { group, uid: target } => {
                self.store.ban(&group, uid, &target).await.map_err(store_error)?;
                self.remove_from_group(ctx, uid, &target, &group, "banned").await?;
                group_frame(&group, "banned", Some(&target))
            }
            Request::Unban { group, uid: target } => {
                self.store.unban(&group, uid, &target).await.map_err(store_error)?;
                group_frame(&group, "unbanned", Some(&target))
            }
            Request::Promote { group, uid: target } => {
                self.store
                    .set_admin(&group, uid, &target, true)
                    .await
                    .map_err(store_error)?;
                group_frame(&group, "promoted", Some(&target))
            }
            Request::Demote { group, uid: target } => {
                self.store
                    .set_admin(&group, uid, &target, false)
                    .await
                    .map_err(store_error)?;
                group_frame(&group, "demoted", Some(&target))
            }
            Request::UpdateGroup {
                group,
                name,
                access,
                history,
            } => {
                let update = GroupUpdate { name, access, history };
                let info = self
                    .store
                    .update_group(&group, uid, &update)
                    .await
                    .map_err(store_error)?;
                protocol::group_info(&info)
            }
            Request::GroupInfo { group } => {
                let info = self.store.group_info(&group, uid).await.map_err(store_error)?;
                protocol::group_info(&info)
            }
            other => return Err(not_for(&other, "a group administration request")),
        };
        Ok(Answer::Json(answer))
    }

    /// Executes a block request for `uid`: block, unblock, and the list of blocked uids.
    pub(crate) async fn block_request(
        &self,
        uid: &str,
        request: Request,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        match request {
            Request::Block { uid: blocked } => {
                self.store.block(uid, &blocked).await.map_err(store_error)?;
                Ok(Answer::Json(
                    json!({"type": "block", "uid": blocked, "action": "blocked"}),
                ))
            }
            Request::Unblock { uid: blocked } => {
                self.store.unblock(uid, &blocked).await.map_err(store_error)?;
                Ok(Answer::Json(
                    json!({"type": "block", "uid": blocked, "action": "unblocked"}),
                ))
            }
            Request::Blocks { after } => {
                let (blocked, mut more) = self
                    .store
                    .blocks_of(uid, after.as_deref(), MAX_PAGE)
                    .await
                    .map_err(store_error)?;
                let mut reply = self.list_reply("blocks", cid, &[], "uids", None);
                if blocked.iter().any(|b| !reply.push(b)) {
                    more = true;
                }
                Ok(Answer::Frame(reply.finish(more)))
            }
            other => Err(not_for(&other, "a block request")),
        }
    }

    /// `invite`: invites `invitee` to `group` and tells its devices, unless it was invited or
    /// a member already (the answer says which).
    async fn invite(&self, ctx: &Context, uid: &str, group: &str, invitee: &str) -> Result<Value, ProtocolError> {
        let outcome = self.store.invite(group, uid, invitee).await.map_err(store_error)?;
        if outcome == InviteOutcome::Invited {
            let push = json!({"type": "invited", "group": group, "by": uid});
            ctx.cluster()
                .send_to_uid(invitee, &Frame::json(&push), &[])
                .await
                .map_err(api_error)?;
        }
        let mut answer = group_frame(group, "invited", Some(invitee));
        match outcome {
            InviteOutcome::Invited => {}
            InviteOutcome::AlreadyInvited => answer["already"] = json!("invited"),
            InviteOutcome::AlreadyMember => answer["already"] = json!("member"),
        }
        Ok(answer)
    }

    /// `members`: a page of `group`'s members after `after`, with the roles of those who are
    /// more than members, within the reply budget.
    async fn members(
        &self,
        uid: &str,
        group: &str,
        after: Option<&str>,
        limit: u32,
        cid: Option<&str>,
    ) -> Result<Answer, ProtocolError> {
        let page = self
            .store
            .group_members(group, uid, after, limit)
            .await
            .map_err(store_error)?;
        let mut reply = self.list_reply("members", cid, &[("group", group)], "members", Some("roles"));
        let mut more = page.more;
        for member in &page.members {
            let role = json!(member.role);
            let entry = (member.role != Role::Member).then_some((member.uid.as_str(), &role));
            if !reply.push_with_entry(&member.uid, entry) {
                more = true;
                break;
            }
        }
        Ok(Answer::Frame(reply.finish(more)))
    }

    /// `invitations`: the user's pending invitations, within the reply budget.
    async fn invitations(&self, uid: &str, cid: Option<&str>) -> Result<Answer, ProtocolError> {
        let invitations = self.store.invitations_of(uid).await.map_err(store_error)?;
        let mut reply = self.list_reply("invitations", cid, &[], "invitations", None);
        let pushed = invitations
            .iter()
            .take_while(|i| reply.push(&json!({"group": i.group, "name": i.name, "by": i.by, "ts": i.ts_ms})))
            .count();
        Ok(Answer::Frame(reply.finish(pushed < invitations.len())))
    }

    /// Makes every connection of `uid` join (or leave) the cluster group of a chat group, so that
    /// pushes reach all of the user's devices. Called after the store committed the membership
    /// change and before the request is answered: once a removal is answered, no connection of
    /// the removed user gets the group's pushes any more.
    pub(crate) async fn follow_group(
        &self,
        ctx: &Context,
        uid: &str,
        group: &str,
        join: bool,
    ) -> Result<(), ProtocolError> {
        let cluster = ctx.cluster();
        let key = group_conversation_id(group);
        for client in cluster.client_ids_by_uid(uid).await.map_err(api_error)? {
            follow(ctx, client, &key, join).await?;
        }
        Ok(())
    }

    /// After `target`'s removal from `group` committed (kick or ban by `actor`): takes every
    /// connection of `target` out of the group's pushes and tells its devices.
    async fn remove_from_group(
        &self,
        ctx: &Context,
        actor: &str,
        target: &str,
        group: &str,
        reason: &str,
    ) -> Result<(), ProtocolError> {
        self.follow_group(ctx, target, group, false).await?;
        let notice = json!({"type": "removed", "group": group, "by": actor, "reason": reason});
        ctx.cluster()
            .send_to_uid(target, &Frame::json(&notice), &[])
            .await
            .map_err(api_error)
    }
}

/// Makes one connection join or leave cluster group `key`; a connection that went away
/// meanwhile is not an error.
pub(crate) async fn follow(ctx: &Context, client: ClientId, key: &str, join: bool) -> Result<(), ProtocolError> {
    let cluster = ctx.cluster();
    let result = if join {
        cluster.join_group(client, key).await
    } else {
        cluster.leave_group(client, key).await
    };
    match result {
        Err(error) if error.code != gatehouse_sdk::ErrorCode::NotFound => Err(api_error(error)),
        _ => Ok(()),
    }
}

/// The error of a request dispatched to the wrong handler: a bug, answered `internal`.
fn not_for(request: &Request, what: &str) -> ProtocolError {
    ProtocolError::new(Code::Internal, format!("not {what}: {request:?}"))
}

/// The answer to a group action: `{"type":"group","group":…,"action":…}` and, for actions on
/// another user, its `uid`.
fn group_frame(group: &str, action: &str, uid: Option<&str>) -> Value {
    let mut frame = json!({"type": "group", "group": group, "action": action});
    if let Some(uid) = uid {
        frame["uid"] = json!(uid);
    }
    frame
}
