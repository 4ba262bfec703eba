//! The operations of the server API, independent of HTTP and gRPC: [`OpKind`] (names and
//! scopes), [`Op`] (a checked request), [`Output`] (its answer) and [`execute`].
//!
//! Both transports turn their request into an [`Op`] with the helpers of [`check`], so a limit
//! is enforced once and reads the same over HTTP and gRPC.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use gatehouse_sdk::cluster::Session;
use gatehouse_sdk::{ApiError, ClientId, Cluster, Deadline, Frame};
use serde::Serialize;

use crate::idempotency::{Fingerprint, FingerprintBuilder};
use crate::keys::Scope;

macro_rules! op_kinds {
    ($($variant:ident = $name:literal, $scope:ident;)*) => {
        /// Every operation, by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum OpKind {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl OpKind {
            /// Every operation, in documentation order.
            pub const ALL: &[OpKind] = &[$(OpKind::$variant),*];

            /// The name in paths (`/api/v1/<name>`) and batch items (`"op": "<name>"`).
            pub fn name(self) -> &'static str {
                match self {
                    $(OpKind::$variant => $name,)*
                }
            }

            /// The scope a key needs for it.
            pub fn scope(self) -> Scope {
                match self {
                    $(OpKind::$variant => Scope::$scope,)*
                }
            }

            /// Finds an operation by name.
            pub fn from_name(name: &str) -> Option<OpKind> {
                match name {
                    $($name => Some(OpKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

op_kinds! {
    SendToClient = "send_to_client", Publish;
    SendToClients = "send_to_clients", Publish;
    SendToUid = "send_to_uid", Publish;
    SendToUids = "send_to_uids", Publish;
    SendToGroup = "send_to_group", Publish;
    SendToGroups = "send_to_groups", Publish;
    SendToAll = "send_to_all", Publish;
    BindUid = "bind_uid", Admin;
    UnbindUid = "unbind_uid", Admin;
    JoinGroup = "join_group", Admin;
    LeaveGroup = "leave_group", Admin;
    Ungroup = "ungroup", Admin;
    SetSession = "set_session", Admin;
    UpdateSession = "update_session", Admin;
    GetSession = "get_session", Query;
    AllSessions = "all_sessions", Query;
    GroupSessions = "group_sessions", Query;
    IsOnline = "is_online", Query;
    IsUidOnline = "is_uid_online", Query;
    OnlineUids = "online_uids", Query;
    ClientIdsByUid = "client_ids_by_uid", Query;
    ClientIdsByUids = "client_ids_by_uids", Query;
    UidOf = "uid_of", Query;
    AllClientIds = "all_client_ids", Query;
    AllClientCount = "all_client_count", Query;
    AllUids = "all_uids", Query;
    AllUidCount = "all_uid_count", Query;
    AllGroups = "all_groups", Query;
    GroupClientIds = "group_client_ids", Query;
    GroupClientCount = "group_client_count", Query;
    GroupClientCounts = "group_client_counts", Query;
    GroupUids = "group_uids", Query;
    GroupUidCount = "group_uid_count", Query;
    CloseClient = "close_client", Publish;
    DestroyClient = "destroy_client", Publish;
    SetDeadline = "set_deadline", Publish;
}

impl OpKind {
    /// Whether it sends a frame (and so may carry an idempotency key).
    pub fn is_send(self) -> bool {
        matches!(
            self,
            OpKind::SendToClient
                | OpKind::SendToClients
                | OpKind::SendToUid
                | OpKind::SendToUids
                | OpKind::SendToGroup
                | OpKind::SendToGroups
                | OpKind::SendToAll
        )
    }
}

/// A checked request: ids parsed, names and lists within their limits, frames built. One
/// variant per [`OpKind`], with the fields of that operation's request (docs/server-api.md);
/// building one is the only way in, so [`execute`] never sees unchecked input.
#[derive(Debug, Clone)]
pub enum Op {
    SendToClient {
        client: ClientId,
        frame: Frame,
    },
    SendToClients {
        clients: Vec<ClientId>,
        frame: Frame,
    },
    SendToUid {
        uid: String,
        frame: Frame,
        exclude: Vec<ClientId>,
    },
    SendToUids {
        uids: Vec<String>,
        frame: Frame,
        exclude: Vec<ClientId>,
    },
    SendToGroup {
        group: String,
        frame: Frame,
        exclude: Vec<ClientId>,
    },
    SendToGroups {
        groups: Vec<String>,
        frame: Frame,
        exclude: Vec<ClientId>,
    },
    SendToAll {
        frame: Frame,
        exclude: Vec<ClientId>,
    },
    BindUid {
        client: ClientId,
        uid: String,
    },
    UnbindUid {
        client: ClientId,
        uid: String,
    },
    JoinGroup {
        client: ClientId,
        group: String,
    },
    LeaveGroup {
        client: ClientId,
        group: String,
    },
    Ungroup {
        group: String,
    },
    SetSession {
        client: ClientId,
        session: Session,
    },
    UpdateSession {
        client: ClientId,
        session: Session,
    },
    GetSession {
        client: ClientId,
    },
    AllSessions,
    GroupSessions {
        group: String,
    },
    IsOnline {
        client: ClientId,
    },
    IsUidOnline {
        uid: String,
    },
    OnlineUids {
        uids: Vec<String>,
    },
    ClientIdsByUid {
        uid: String,
    },
    ClientIdsByUids {
        uids: Vec<String>,
    },
    UidOf {
        client: ClientId,
    },
    AllClientIds,
    AllClientCount,
    AllUids,
    AllUidCount,
    AllGroups,
    GroupClientIds {
        group: String,
    },
    GroupClientCount {
        group: String,
    },
    GroupClientCounts {
        groups: Vec<String>,
    },
    GroupUids {
        group: String,
    },
    GroupUidCount {
        group: String,
    },
    CloseClient {
        client: ClientId,
        last: Option<Frame>,
        code: u16,
        reason: String,
    },
    DestroyClient {
        client: ClientId,
    },
    SetDeadline {
        client: ClientId,
        deadline: Option<Deadline>,
    },
}

impl Op {
    /// Which operation this is.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::SendToClient { .. } => OpKind::SendToClient,
            Op::SendToClients { .. } => OpKind::SendToClients,
            Op::SendToUid { .. } => OpKind::SendToUid,
            Op::SendToUids { .. } => OpKind::SendToUids,
            Op::SendToGroup { .. } => OpKind::SendToGroup,
            Op::SendToGroups { .. } => OpKind::SendToGroups,
            Op::SendToAll { .. } => OpKind::SendToAll,
            Op::BindUid { .. } => OpKind::BindUid,
            Op::UnbindUid { .. } => OpKind::UnbindUid,
            Op::JoinGroup { .. } => OpKind::JoinGroup,
            Op::LeaveGroup { .. } => OpKind::LeaveGroup,
            Op::Ungroup { .. } => OpKind::Ungroup,
            Op::SetSession { .. } => OpKind::SetSession,
            Op::UpdateSession { .. } => OpKind::UpdateSession,
            Op::GetSession { .. } => OpKind::GetSession,
            Op::AllSessions => OpKind::AllSessions,
            Op::GroupSessions { .. } => OpKind::GroupSessions,
            Op::IsOnline { .. } => OpKind::IsOnline,
            Op::IsUidOnline { .. } => OpKind::IsUidOnline,
            Op::OnlineUids { .. } => OpKind::OnlineUids,
            Op::ClientIdsByUid { .. } => OpKind::ClientIdsByUid,
            Op::ClientIdsByUids { .. } => OpKind::ClientIdsByUids,
            Op::UidOf { .. } => OpKind::UidOf,
            Op::AllClientIds => OpKind::AllClientIds,
            Op::AllClientCount => OpKind::AllClientCount,
            Op::AllUids => OpKind::AllUids,
            Op::AllUidCount => OpKind::AllUidCount,
            Op::AllGroups => OpKind::AllGroups,
            Op::GroupClientIds { .. } => OpKind::GroupClientIds,
            Op::GroupClientCount { .. } => OpKind::GroupClientCount,
            Op::GroupClientCounts { .. } => OpKind::GroupClientCounts,
            Op::GroupUids { .. } => OpKind::GroupUids,
            Op::GroupUidCount { .. } => OpKind::GroupUidCount,
            Op::CloseClient { .. } => OpKind::CloseClient,
            Op::DestroyClient { .. } => OpKind::DestroyClient,
            Op::SetDeadline { .. } => OpKind::SetDeadline,
        }
    }

    /// A digest of a send's target and frame, so that an idempotency key reused for another
    /// send is detected. `None` for other operations (they take no idempotency key).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        let start = |frame: &Frame| {
            FingerprintBuilder::default()
                .number(self.kind() as u64)
                .number(u64::from(frame.is_binary()))
                .bytes(frame.data())
        };
        let ids = |mut b: FingerprintBuilder, ids: &[ClientId]| {
            b = b.number(ids.len() as u64);
            for id in ids {
                b = b.number(id.gateway.0).number(id.conn);
            }
            b
        };
        let names = |mut b: FingerprintBuilder, names: &[String]| {
            b = b.number(names.len() as u64);
            for name in names {
                b = b.bytes(name.as_bytes());
            }
            b
        };
        let builder = match self {
            Op::SendToClient { client, frame } => ids(start(frame), std::slice::from_ref(client)),
            Op::SendToClients { clients, frame } => ids(start(frame), clients),
            Op::SendToUid { uid, frame, exclude }
            | Op::SendToGroup {
                group: uid,
                frame,
                exclude,
            } => ids(start(frame).bytes(uid.as_bytes()), exclude),
            Op::SendToUids { uids, frame, exclude }
            | Op::SendToGroups {
                groups: uids,
                frame,
                exclude,
            } => ids(names(start(frame), uids), exclude),
            Op::SendToAll { frame, exclude } => ids(start(frame), exclude),
            _ => return None,
        };
        Some(builder.finish())
    }
}

/// The answer of one operation. Serialised as the `result` object of the HTTP API (each
/// variant's field names are the JSON keys, so the shapes in docs/openapi.json are these); the
/// gRPC API converts it into the operation's response message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Output {
    /// A send: `replayed` when an idempotency key matched an earlier success (nothing sent).
    Sent {
        replayed: bool,
    },
    /// Any other operation without an answer.
    Done {},
    Online {
        online: bool,
    },
    Count {
        count: u64,
    },
    ClientIds {
        client_ids: Vec<ClientId>,
    },
    Uids {
        uids: Vec<String>,
    },
    Groups {
        groups: Vec<String>,
    },
    Uid {
        uid: Option<String>,
    },
    Session {
        session: Option<Session>,
    },
    Sessions {
        sessions: BTreeMap<ClientId, Session>,
    },
    ClientIdsByUid {
        client_ids_by_uid: BTreeMap<String, Vec<ClientId>>,
    },
    Counts {
        counts: BTreeMap<String, u64>,
    },
}

fn sorted(set: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut list: Vec<String> = set.into_iter().collect();
    list.sort();
    list
}

/// Runs one operation on the cluster.
pub async fn execute(cluster: &Cluster, op: Op) -> Result<Output, ApiError> {
    let sent = Output::Sent { replayed: false };
    let done = Output::Done {};
    Ok(match op {
        Op::SendToClient { client, frame } => cluster.send_to_client(client, &frame).await.map(|()| sent)?,
        Op::SendToClients { clients, frame } => cluster.send_to_clients(&clients, &frame).await.map(|()| sent)?,
        Op::SendToUid { uid, frame, exclude } => cluster.send_to_uid(&uid, &frame, &exclude).await.map(|()| sent)?,
        Op::SendToUids { uids, frame, exclude } => {
            cluster.send_to_uids(&uids, &frame, &exclude).await.map(|()| sent)?
        }
        Op::SendToGroup { group, frame, exclude } => {
            cluster.send_to_group(&group, &frame, &exclude).await.map(|()| sent)?
        }
        Op::SendToGroups { groups, frame, exclude } => {
            cluster.send_to_groups(&groups, &frame, &exclude).await.map(|()| sent)?
        }
        Op::SendToAll { frame, exclude } => cluster.send_to_all(&frame, &exclude).await.map(|()| sent)?,
        Op::BindUid { client, uid } => cluster.bind_uid(client, &uid).await.map(|()| done)?,
        Op::UnbindUid { client, uid } => cluster.unbind_uid(client, &uid).await.map(|()| done)?,
        Op::JoinGroup { client, group } => cluster.join_group(client, &group).await.map(|()| done)?,
        Op::LeaveGroup { client, group } => cluster.leave_group(client, &group).await.map(|()| done)?,
        Op::Ungroup { group } => cluster.ungroup(&group).await.map(|()| done)?,
        Op::SetSession { client, session } => cluster.set_session(client, &session).await.map(|()| done)?,
        Op::UpdateSession { client, session } => cluster.update_session(client, &session).await.map(|()| done)?,
        Op::GetSession { client } => Output::Session {
            session: cluster.get_session(client).await?,
        },
        Op::AllSessions => Output::Sessions {
            sessions: cluster.all_sessions().await?.into_iter().collect(),
        },
        Op::GroupSessions { group } => Output::Sessions {
            sessions: cluster.group_sessions(&group).await?.into_iter().collect(),
        },
        Op::IsOnline { client } => Output::Online {
            online: cluster.is_online(client).await?,
        },
        Op::IsUidOnline { uid } => Output::Online {
            online: cluster.is_uid_online(&uid).await?,
        },
        Op::OnlineUids { uids } => Output::Uids {
            uids: sorted(cluster.online_uids(&uids).await?),
        },
        Op::ClientIdsByUid { uid } => Output::ClientIds {
            client_ids: sorted_ids(cluster.client_ids_by_uid(&uid).await?),
        },
        Op::ClientIdsByUids { uids } => Output::ClientIdsByUid {
            client_ids_by_uid: cluster
                .client_ids_by_uids(&uids)
                .await?
                .into_iter()
                .map(|(uid, ids)| (uid, sorted_ids(ids)))
                .collect(),
        },
        Op::UidOf { client } => Output::Uid {
            uid: cluster.uid_of(client).await?,
        },
        Op::AllClientIds => Output::ClientIds {
            client_ids: sorted_ids(cluster.all_client_ids().await?),
        },
        Op::AllClientCount => Output::Count {
            count: cluster.all_client_count().await?,
        },
        Op::AllUids => Output::Uids {
            uids: cluster.all_uids().await?,
        },
        Op::AllUidCount => Output::Count {
            count: cluster.all_uid_count().await?,
        },
        Op::AllGroups => Output::Groups {
            groups: cluster.all_groups().await?,
        },
        Op::GroupClientIds { group } => Output::ClientIds {
            client_ids: sorted_ids(cluster.group_client_ids(&group).await?),
        },
        Op::GroupClientCount { group } => Output::Count {
            count: cluster.group_client_count(&group).await?,
        },
        Op::GroupClientCounts { groups } => Output::Counts {
            counts: cluster.group_client_counts(&groups).await?.into_iter().collect(),
        },
        Op::GroupUids { group } => Output::Uids {
            uids: cluster.group_uids(&group).await?,
        },
        Op::GroupUidCount { group } => Output::Count {
            count: cluster.group_uid_count(&group).await?,
        },
        Op::CloseClient {
            client,
            last,
            code,
            reason,
        } => cluster
            .close_client_with(client, code, &reason, last.as_ref())
            .await
            .map(|()| done)?,
        Op::DestroyClient { client } => cluster.destroy_client(client).await.map(|()| done)?,
        Op::SetDeadline { client, deadline } => cluster.set_deadline(client, deadline).await.map(|()| done)?,
    })
}

fn sorted_ids(mut ids: Vec<ClientId>) -> Vec<ClientId> {
    ids.sort();
    ids
}

/// Request checks shared by the HTTP and gRPC front ends.
pub mod check {
    use super::*;
    use crate::error::Failure;
    use gatehouse_core::limits::{check_close, check_key};

    /// Longest warning lead time of a deadline: a day (a deadline is a token's expiry).
    pub const MAX_WARN_BEFORE: Duration = Duration::from_secs(24 * 3600);

    /// Parses a client id.
    pub fn client(field: &str, text: &str) -> Result<ClientId, Failure> {
        text.parse()
            .map_err(|e: gatehouse_core::ids::ParseClientIdError| Failure::bad_request(format!("{field}: {e}")))
    }

    /// Parses a list of client ids within `max` entries.
    pub fn clients(field: &str, texts: &[String], max: usize) -> Result<Vec<ClientId>, Failure> {
        list_len(field, texts.len(), max)?;
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| client(&format!("{field}[{i}]"), t))
            .collect()
    }

    /// Checks a uid or group name.
    pub fn name(field: &'static str, name: String) -> Result<String, Failure> {
        check_key(field, &name).map_err(|e| Failure::bad_request(e.to_string()))?;
        Ok(name)
    }

    /// Checks a list of uids or group names within `max` entries.
    pub fn names(field: &'static str, names: Vec<String>, max: usize) -> Result<Vec<String>, Failure> {
        list_len(field, names.len(), max)?;
        for (i, n) in names.iter().enumerate() {
            check_key(field, n).map_err(|e| Failure::bad_request(format!("{field}[{i}]: {e}")))?;
        }
        Ok(names)
    }

    /// Refuses a list longer than `max`.
    pub fn list_len(field: &str, len: usize, max: usize) -> Result<(), Failure> {
        if len > max {
            return Err(Failure::bad_request(format!(
                "{field} has {len} entries; at most {max} per request"
            )));
        }
        Ok(())
    }

    /// A close code and reason an application may send.
    pub fn close(code: u32, reason: &str) -> Result<u16, Failure> {
        check_close(code, reason).map_err(|e| Failure::bad_request(e.to_string()))
    }

    /// Builds a deadline from its wire fields.
    pub fn deadline(
        at_ms: u64,
        warn_before_ms: u64,
        warning: Option<Frame>,
        close_code: u32,
        close_reason: String,
    ) -> Result<Deadline, Failure> {
        if at_ms == 0 {
            return Err(Failure::bad_request(
                "deadline.at_ms must be a Unix time in milliseconds",
            ));
        }
        let warn_before = Duration::from_millis(warn_before_ms);
        if warn_before > MAX_WARN_BEFORE {
            return Err(Failure::bad_request("deadline.warn_before_ms is at most one day"));
        }
        if warn_before_ms > 0 && warning.is_none() {
            return Err(Failure::bad_request(
                "deadline.warn_before_ms needs a warning frame (data or data_base64)",
            ));
        }
        let code = close(close_code, &close_reason)?;
        Ok(Deadline {
            at: UNIX_EPOCH + Duration::from_millis(at_ms),
            warning: warning.map(|frame| (warn_before, frame)),
            close_code: code,
            close_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::NodeId;

    #[test]
    fn every_operation_has_a_unique_name_that_round_trips() {
        let mut names = std::collections::HashSet::new();
        for kind in OpKind::ALL {
            assert!(names.insert(kind.name()), "{} twice", kind.name());
            assert_eq!(OpKind::from_name(kind.name()), Some(*kind));
        }
        assert_eq!(OpKind::ALL.len(), 36);
        assert_eq!(OpKind::from_name("batch"), None);
        assert_eq!(OpKind::from_name("Send_To_Uid"), None);
    }

    #[test]
    fn sends_need_publish_queries_need_query_and_writes_need_admin() {
        assert_eq!(OpKind::SendToUid.scope(), Scope::Publish);
        assert_eq!(OpKind::CloseClient.scope(), Scope::Publish);
        assert_eq!(OpKind::SetDeadline.scope(), Scope::Publish);
        assert_eq!(OpKind::GetSession.scope(), Scope::Query);
        assert_eq!(OpKind::AllGroups.scope(), Scope::Query);
        assert_eq!(OpKind::BindUid.scope(), Scope::Admin);
        assert_eq!(OpKind::SetSession.scope(), Scope::Admin);
        assert_eq!(OpKind::ALL.iter().filter(|k| k.is_send()).count(), 7);
    }

    #[test]
    fn the_fingerprint_tells_sends_apart_by_target_and_frame() {
        let a = ClientId::new(NodeId(1), 1);
        let b = ClientId::new(NodeId(1), 2);
        let send = |client, text: &str| Op::SendToClient {
            client,
            frame: Frame::text(text),
        };
        assert_eq!(send(a, "hi").fingerprint(), send(a, "hi").fingerprint());
        assert_ne!(send(a, "hi").fingerprint(), send(b, "hi").fingerprint());
        assert_ne!(send(a, "hi").fingerprint(), send(a, "ho").fingerprint());
        let binary = Op::SendToClient {
            client: a,
            frame: Frame::binary(b"hi".to_vec()),
        };
        assert_ne!(binary.fingerprint(), send(a, "hi").fingerprint());
        let uid = Op::SendToUid {
            uid: "u".into(),
            frame: Frame::text("hi"),
            exclude: vec![],
        };
        let group = Op::SendToGroup {
            group: "u".into(),
            frame: Frame::text("hi"),
            exclude: vec![],
        };
        assert_ne!(uid.fingerprint(), group.fingerprint());
        assert!(Op::AllGroups.fingerprint().is_none());
    }

    #[test]
    fn checks_refuse_bad_ids_names_lists_and_close_codes() {
        assert!(check::client("client", "nope").is_err());
        assert!(check::client("client", &"0".repeat(32)).is_err());
        assert!(check::client("client", "00000000000000010000000000000002").is_ok());
        assert!(check::name("uid", String::new()).is_err());
        assert!(check::name("uid", "a\nb".into()).is_err());
        assert!(check::name("uid", "x".repeat(257)).is_err());
        let error = check::names("uids", vec!["a".into(); 11], 10).unwrap_err();
        assert!(error.message.contains("at most 10"), "{}", error.message);
        let error = check::names("uids", vec!["a".into(), String::new()], 10).unwrap_err();
        assert!(error.message.contains("uids[1]"), "{}", error.message);
        assert!(check::close(1002, "").is_err());
        assert_eq!(check::close(0, "").unwrap(), 1000);
        assert!(check::deadline(0, 0, None, 4001, String::new()).is_err());
        assert!(check::deadline(1, 10, None, 4001, String::new()).is_err());
        assert!(check::deadline(1, 0, None, 1002, String::new()).is_err());
        assert!(check::deadline(1, 1000, Some(Frame::text("soon")), 4001, "expired".into()).is_ok());
    }
}
