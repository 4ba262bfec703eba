//! The gRPC front end: `gatehouse.v1.ServerApi` (`proto/gatehouse/v1/api.proto`), the same
//! operations as the HTTP API through the same [`Api`].
//!
//! The key travels in the `authorization` metadata (`Bearer <key>`). Failures are statuses
//! with the code of [`Failure::grpc_status`] (`PERMISSION_DENIED` for a key without the
//! scope, `retry-after` metadata on `RESOURCE_EXHAUSTED`).

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_proto::prost::Message;
use gatehouse_proto::tonic::{self, Request, Response, Status};
use gatehouse_proto::v1::server_api_server::ServerApi;
use gatehouse_proto::v1::{self, batch_operation, batch_result};
use gatehouse_sdk::cluster::Session;
use gatehouse_sdk::{ClientId, Frame};

use crate::config::Limits;
use crate::error::Failure;
use crate::ops::{Op, OpKind, Output, check};
use crate::service::{Api, Call};

/// The `ServerApi` service.
pub struct GrpcApi {
    api: Arc<Api>,
}

impl GrpcApi {
    /// Serves `api` over gRPC.
    pub fn new(api: Arc<Api>) -> GrpcApi {
        GrpcApi { api }
    }

    async fn unary<Req, Resp>(&self, request: Request<Req>) -> Result<Response<Resp>, Status>
    where
        Req: ToCall,
        Resp: FromOutput + Message,
    {
        let api = &self.api;
        let result = async {
            let _permit = api.admit()?;
            let key = api.authenticate(request.metadata().get("authorization").map(|v| v.as_bytes()))?;
            api.charge(&key, 1)?;
            let call = request.into_inner().to_call(api.limits())?;
            api.authorize(&key, call.op.kind())?;
            let output = api.run(&key, call, api.deadline()).await?;
            let response = Resp::from_output(output)?;
            check_size(response.encoded_len(), api.limits().max_response_bytes)?;
            Ok(response)
        }
        .await;
        result.map(Response::new).map_err(|failure: Failure| {
            api.stats().failure(&failure);
            failure.grpc_status()
        })
    }

    async fn run_batch(&self, request: Request<v1::BatchRequest>) -> Result<Response<v1::BatchResponse>, Status> {
        let api = &self.api;
        let result = async {
            let _permit = api.admit()?;
            let key = api.authenticate(request.metadata().get("authorization").map(|v| v.as_bytes()))?;
            let limits = api.limits();
            let ops = request.into_inner().ops;
            if ops.len() > limits.max_batch_ops {
                return Err(Failure::bad_request(format!(
                    "the batch has {} operations; at most {}",
                    ops.len(),
                    limits.max_batch_ops
                )));
            }
            let mut calls = Vec::with_capacity(ops.len());
            for (index, op) in ops.into_iter().enumerate() {
                let indexed = |f: Failure| Failure {
                    message: format!("ops[{index}]: {}", f.message),
                    ..f
                };
                let op = op
                    .op
                    .ok_or_else(|| indexed(Failure::bad_request("an operation must be set")))?;
                let call = batch_call(op, limits).map_err(indexed)?;
                api.authorize(&key, call.op.kind()).map_err(indexed)?;
                calls.push(call);
            }
            api.charge(&key, u32::try_from(calls.len()).unwrap_or(u32::MAX))?;
            let deadline = api.deadline();
            let budget = limits.max_response_bytes;
            let mut used = 0;
            let mut results = Vec::with_capacity(calls.len());
            for call in calls {
                let kind = call.op.kind();
                let result = match api.run(&key, call, deadline).await {
                    Ok(output) => batch_result(kind, output),
                    Err(failure) => Err(failure),
                };
                let result = match result {
                    Ok(result) => {
                        let size = result.encoded_len();
                        if size <= 256 || used + size <= budget {
                            used += size;
                            result
                        } else {
                            error_result(
                                api,
                                Failure::bad_request(format!(
                                    "this answer of {size} bytes does not fit in the batch's limit of {budget} bytes: \
                                     ask for counts or fewer keys"
                                )),
                            )
                        }
                    }
                    Err(failure) => error_result(api, failure),
                };
                results.push(v1::BatchResult { result: Some(result) });
            }
            Ok(v1::BatchResponse { results })
        }
        .await;
        result.map(Response::new).map_err(|failure: Failure| {
            api.stats().failure(&failure);
            failure.grpc_status()
        })
    }
}

fn error_result(api: &Api, failure: Failure) -> batch_result::Result {
    api.stats().failure(&failure);
    batch_result::Result::Error(v1::OperationError {
        code: failure.code.as_str().to_owned(),
        message: failure.message,
    })
}

fn check_size(size: usize, limit: usize) -> Result<(), Failure> {
    if size > limit {
        return Err(Failure::bad_request(format!(
            "the answer is {size} bytes, over the limit of {limit}: ask for counts or fewer keys"
        )));
    }
    Ok(())
}

/// A gRPC request that becomes one [`Call`].
pub trait ToCall {
    /// Checks the request and builds the call.
    fn to_call(self, limits: &Limits) -> Result<Call, Failure>;
}

/// A gRPC response built from an operation's [`Output`].
pub trait FromOutput: Sized {
    /// Converts the output; a shape that does not fit is a bug (`internal`).
    fn from_output(output: Output) -> Result<Self, Failure>;
}

/// The `oneof data` of the send requests.
trait FrameData {
    fn into_frame(self) -> Frame;
}

macro_rules! frame_data {
    ($($t:ty),*) => {$(
        impl FrameData for $t {
            fn into_frame(self) -> Frame {
                match self {
                    Self::Text(text) => Frame::text(text),
                    Self::Binary(bytes) => Frame::binary(bytes),
                }
            }
        }
    )*};
}

frame_data!(
    v1::send_to_client_request::Data,
    v1::send_to_clients_request::Data,
    v1::send_to_uid_request::Data,
    v1::send_to_uids_request::Data,
    v1::send_to_group_request::Data,
    v1::send_to_groups_request::Data,
    v1::send_to_all_request::Data,
    v1::close_client_request::Last,
    v1::client_deadline::Warning
);

fn frame(data: Option<impl FrameData>) -> Result<Frame, Failure> {
    data.map(FrameData::into_frame)
        .ok_or_else(|| Failure::bad_request("a send needs data: text or binary"))
}

fn idempotency_key(key: String) -> Option<String> {
    (!key.is_empty()).then_some(key)
}

fn session(text: &str) -> Result<Session, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::bad_request(format!("session must be a JSON object: {e}")))
}

fn send(op: Op, key: String) -> Result<Call, Failure> {
    Call::new(op).with_idempotency_key(idempotency_key(key))
}

fn plain(op: Op) -> Result<Call, Failure> {
    Ok(Call::new(op))
}

macro_rules! to_call {
    ($($req:ident ($r:ident, $l:ident) => $body:expr;)*) => {$(
        impl ToCall for v1::$req {
            fn to_call(self, limits: &Limits) -> Result<Call, Failure> {
                let $r = self;
                let $l = limits;
                $body
            }
        }
    )*};
}

to_call! {
    SendToClientRequest(r, _l) => send(
        Op::SendToClient { client: check::client("client", &r.client)?, frame: frame(r.data)? },
        r.idempotency_key,
    );
    SendToClientsRequest(r, l) => send(
        Op::SendToClients {
            clients: check::clients("clients", &r.clients, l.max_list_len)?,
            frame: frame(r.data)?,
        },
        r.idempotency_key,
    );
    SendToUidRequest(r, l) => send(
        Op::SendToUid {
            uid: check::name("uid", r.uid)?,
            frame: frame(r.data)?,
            exclude: check::clients("exclude", &r.exclude, l.max_list_len)?,
        },
        r.idempotency_key,
    );
    SendToUidsRequest(r, l) => send(
        Op::SendToUids {
            uids: check::names("uids", r.uids, l.max_list_len)?,
            frame: frame(r.data)?,
            exclude: check::clients("exclude", &r.exclude, l.max_list_len)?,
        },
        r.idempotency_key,
    );
    SendToGroupRequest(r, l) => send(
        Op::SendToGroup {
            group: check::name("group", r.group)?,
            frame: frame(r.data)?,
            exclude: check::clients("exclude", &r.exclude, l.max_list_len)?,
        },
        r.idempotency_key,
    );
    SendToGroupsRequest(r, l) => send(
        Op::SendToGroups {
            groups: check::names("groups", r.groups, l.max_list_len)?,
            frame: frame(r.data)?,
            exclude: check::clients("exclude", &r.exclude, l.max_list_len)?,
        },
        r.idempotency_key,
    );
    SendToAllRequest(r, l) => send(
        Op::SendToAll {
            frame: frame(r.data)?,
            exclude: check::clients("exclude", &r.exclude, l.max_list_len)?,
        },
        r.idempotency_key,
    );
    BindUidRequest(r, _l) => plain(Op::BindUid { client: check::client("client", &r.client)?, uid: check::name("uid", r.uid)? });
    UnbindUidRequest(r, _l) => plain(Op::UnbindUid { client: check::client("client", &r.client)?, uid: check::name("uid", r.uid)? });
    JoinGroupRequest(r, _l) => plain(Op::JoinGroup { client: check::client("client", &r.client)?, group: check::name("group", r.group)? });
    LeaveGroupRequest(r, _l) => plain(Op::LeaveGroup { client: check::client("client", &r.client)?, group: check::name("group", r.group)? });
    UngroupRequest(r, _l) => plain(Op::Ungroup { group: check::name("group", r.group)? });
    SetSessionRequest(r, _l) => plain(Op::SetSession { client: check::client("client", &r.client)?, session: session(&r.session)? });
    UpdateSessionRequest(r, _l) => plain(Op::UpdateSession { client: check::client("client", &r.client)?, session: session(&r.session)? });
    GetSessionRequest(r, _l) => plain(Op::GetSession { client: check::client("client", &r.client)? });
    AllSessionsRequest(_r, _l) => plain(Op::AllSessions);
    GroupSessionsRequest(r, _l) => plain(Op::GroupSessions { group: check::name("group", r.group)? });
    IsOnlineRequest(r, _l) => plain(Op::IsOnline { client: check::client("client", &r.client)? });
    IsUidOnlineRequest(r, _l) => plain(Op::IsUidOnline { uid: check::name("uid", r.uid)? });
    OnlineUidsRequest(r, l) => plain(Op::OnlineUids { uids: check::names("uids", r.uids, l.max_list_len)? });
    ClientIdsByUidRequest(r, _l) => plain(Op::ClientIdsByUid { uid: check::name("uid", r.uid)? });
    ClientIdsByUidsRequest(r, l) => plain(Op::ClientIdsByUids { uids: check::names("uids", r.uids, l.max_list_len)? });
    UidOfRequest(r, _l) => plain(Op::UidOf { client: check::client("client", &r.client)? });
    AllClientIdsRequest(_r, _l) => plain(Op::AllClientIds);
    AllClientCountRequest(_r, _l) => plain(Op::AllClientCount);
    AllUidsRequest(_r, _l) => plain(Op::AllUids);
    AllUidCountRequest(_r, _l) => plain(Op::AllUidCount);
    AllGroupsRequest(_r, _l) => plain(Op::AllGroups);
    GroupClientIdsRequest(r, _l) => plain(Op::GroupClientIds { group: check::name("group", r.group)? });
    GroupClientCountRequest(r, _l) => plain(Op::GroupClientCount { group: check::name("group", r.group)? });
    GroupClientCountsRequest(r, l) => plain(Op::GroupClientCounts { groups: check::names("groups", r.groups, l.max_list_len)? });
    GroupUidsRequest(r, _l) => plain(Op::GroupUids { group: check::name("group", r.group)? });
    GroupUidCountRequest(r, _l) => plain(Op::GroupUidCount { group: check::name("group", r.group)? });
    CloseClientRequest(r, _l) => plain(Op::CloseClient {
        client: check::client("client", &r.client)?,
        code: check::close(r.code, &r.reason)?,
        last: r.last.map(FrameData::into_frame),
        reason: r.reason,
    });
    DestroyClientRequest(r, _l) => plain(Op::DestroyClient { client: check::client("client", &r.client)? });
    SetDeadlineRequest(r, _l) => plain(Op::SetDeadline {
        client: check::client("client", &r.client)?,
        deadline: match r.deadline {
            None => None,
            Some(d) => Some(check::deadline(
                d.at_ms,
                d.warn_before_ms,
                d.warning.map(FrameData::into_frame),
                d.close_code,
                d.close_reason,
            )?),
        },
    });
}

fn mismatch(response: &str, output: &Output) -> Failure {
    Failure::internal(format!("{response} cannot carry the answer {output:?}"))
}

fn ids(ids: Vec<ClientId>) -> Vec<String> {
    ids.into_iter().map(|id| id.to_string()).collect()
}

fn session_text(session: &Session) -> String {
    serde_json::to_string(session).expect("json maps serialise")
}

macro_rules! from_output {
    ($($resp:ident: $pat:pat => $build:expr;)*) => {$(
        impl FromOutput for v1::$resp {
            fn from_output(output: Output) -> Result<Self, Failure> {
                #[allow(clippy::redundant_field_names)]
                match output {
                    $pat => Ok($build),
                    other => Err(mismatch(stringify!($resp), &other)),
                }
            }
        }
    )*};
}

from_output! {
    SendToClientResponse: Output::Sent { replayed } => v1::SendToClientResponse { replayed };
    SendToClientsResponse: Output::Sent { replayed } => v1::SendToClientsResponse { replayed };
    SendToUidResponse: Output::Sent { replayed } => v1::SendToUidResponse { replayed };
    SendToUidsResponse: Output::Sent { replayed } => v1::SendToUidsResponse { replayed };
    SendToGroupResponse: Output::Sent { replayed } => v1::SendToGroupResponse { replayed };
    SendToGroupsResponse: Output::Sent { replayed } => v1::SendToGroupsResponse { replayed };
    SendToAllResponse: Output::Sent { replayed } => v1::SendToAllResponse { replayed };
    BindUidResponse: Output::Done {} => v1::BindUidResponse {};
    UnbindUidResponse: Output::Done {} => v1::UnbindUidResponse {};
    JoinGroupResponse: Output::Done {} => v1::JoinGroupResponse {};
    LeaveGroupResponse: Output::Done {} => v1::LeaveGroupResponse {};
    UngroupResponse: Output::Done {} => v1::UngroupResponse {};
    SetSessionResponse: Output::Done {} => v1::SetSessionResponse {};
    UpdateSessionResponse: Output::Done {} => v1::UpdateSessionResponse {};
    GetSessionResponse: Output::Session { session } => v1::GetSessionResponse { session: session.as_ref().map(session_text) };
    AllSessionsResponse: Output::Sessions { sessions } => v1::AllSessionsResponse {
        sessions: sessions.iter().map(|(id, s)| (id.to_string(), session_text(s))).collect::<HashMap<_, _>>(),
    };
    GroupSessionsResponse: Output::Sessions { sessions } => v1::GroupSessionsResponse {
        sessions: sessions.iter().map(|(id, s)| (id.to_string(), session_text(s))).collect::<HashMap<_, _>>(),
    };
    IsOnlineResponse: Output::Online { online } => v1::IsOnlineResponse { online };
    IsUidOnlineResponse: Output::Online { online } => v1::IsUidOnlineResponse { online };
    OnlineUidsResponse: Output::Uids { uids } => v1::OnlineUidsResponse { uids };
    ClientIdsByUidResponse: Output::ClientIds { client_ids } => v1::ClientIdsByUidResponse { client_ids: ids(client_ids) };
    ClientIdsByUidsResponse: Output::ClientIdsByUid { client_ids_by_uid } => v1::ClientIdsByUidsResponse {
        client_ids_by_uid: client_ids_by_uid
            .into_iter()
            .map(|(uid, list)| (uid, v1::ClientIdList { client_ids: ids(list) }))
            .collect(),
    };
    UidOfResponse: Output::Uid { uid } => v1::UidOfResponse { uid };
    AllClientIdsResponse: Output::ClientIds { client_ids } => v1::AllClientIdsResponse { client_ids: ids(client_ids) };
    AllClientCountResponse: Output::Count { count } => v1::AllClientCountResponse { count };
    AllUidsResponse: Output::Uids { uids } => v1::AllUidsResponse { uids };
    AllUidCountResponse: Output::Count { count } => v1::AllUidCountResponse { count };
    AllGroupsResponse: Output::Groups { groups } => v1::AllGroupsResponse { groups };
    GroupClientIdsResponse: Output::ClientIds { client_ids } => v1::GroupClientIdsResponse { client_ids: ids(client_ids) };
    GroupClientCountResponse: Output::Count { count } => v1::GroupClientCountResponse { count };
    GroupClientCountsResponse: Output::Counts { counts } => v1::GroupClientCountsResponse { counts: counts.into_iter().collect() };
    GroupUidsResponse: Output::Uids { uids } => v1::GroupUidsResponse { uids };
    GroupUidCountResponse: Output::Count { count } => v1::GroupUidCountResponse { count };
    CloseClientResponse: Output::Done {} => v1::CloseClientResponse {};
    DestroyClientResponse: Output::Done {} => v1::DestroyClientResponse {};
    SetDeadlineResponse: Output::Done {} => v1::SetDeadlineResponse {};
}

macro_rules! service {
    ($($method:ident, $variant:ident, $req:ident, $resp:ident;)*) => {
        #[tonic::async_trait]
        impl ServerApi for GrpcApi {
            $(
                async fn $method(&self, request: Request<v1::$req>) -> Result<Response<v1::$resp>, Status> {
                    self.unary(request).await
                }
            )*

            async fn batch(&self, request: Request<v1::BatchRequest>) -> Result<Response<v1::BatchResponse>, Status> {
                self.run_batch(request).await
            }
        }

        fn batch_call(op: batch_operation::Op, limits: &Limits) -> Result<Call, Failure> {
            match op {
                $(batch_operation::Op::$variant(request) => request.to_call(limits),)*
            }
        }

        fn batch_result(kind: OpKind, output: Output) -> Result<batch_result::Result, Failure> {
            match kind {
                $(OpKind::$variant => v1::$resp::from_output(output).map(batch_result::Result::$variant),)*
            }
        }
    };
}

service! {
    send_to_client, SendToClient, SendToClientRequest, SendToClientResponse;
    send_to_clients, SendToClients, SendToClientsRequest, SendToClientsResponse;
    send_to_uid, SendToUid, SendToUidRequest, SendToUidResponse;
    send_to_uids, SendToUids, SendToUidsRequest, SendToUidsResponse;
    send_to_group, SendToGroup, SendToGroupRequest, SendToGroupResponse;
    send_to_groups, SendToGroups, SendToGroupsRequest, SendToGroupsResponse;
    send_to_all, SendToAll, SendToAllRequest, SendToAllResponse;
    bind_uid, BindUid, BindUidRequest, BindUidResponse;
    unbind_uid, UnbindUid, UnbindUidRequest, UnbindUidResponse;
    join_group, JoinGroup, JoinGroupRequest, JoinGroupResponse;
    leave_group, LeaveGroup, LeaveGroupRequest, LeaveGroupResponse;
    ungroup, Ungroup, UngroupRequest, UngroupResponse;
    set_session, SetSession, SetSessionRequest, SetSessionResponse;
    update_session, UpdateSession, UpdateSessionRequest, UpdateSessionResponse;
    get_session, GetSession, GetSessionRequest, GetSessionResponse;
    all_sessions, AllSessions, AllSessionsRequest, AllSessionsResponse;
    group_sessions, GroupSessions, GroupSessionsRequest, GroupSessionsResponse;
    is_online, IsOnline, IsOnlineRequest, IsOnlineResponse;
    is_uid_online, IsUidOnline, IsUidOnlineRequest, IsUidOnlineResponse;
    online_uids, OnlineUids, OnlineUidsRequest, OnlineUidsResponse;
    client_ids_by_uid, ClientIdsByUid, ClientIdsByUidRequest, ClientIdsByUidResponse;
    client_ids_by_uids, ClientIdsByUids, ClientIdsByUidsRequest, ClientIdsByUidsResponse;
    uid_of, UidOf, UidOfRequest, UidOfResponse;
    all_client_ids, AllClientIds, AllClientIdsRequest, AllClientIdsResponse;
    all_client_count, AllClientCount, AllClientCountRequest, AllClientCountResponse;
    all_uids, AllUids, AllUidsRequest, AllUidsResponse;
    all_uid_count, AllUidCount, AllUidCountRequest, AllUidCountResponse;
    all_groups, AllGroups, AllGroupsRequest, AllGroupsResponse;
    group_client_ids, GroupClientIds, GroupClientIdsRequest, GroupClientIdsResponse;
    group_client_count, GroupClientCount, GroupClientCountRequest, GroupClientCountResponse;
    group_client_counts, GroupClientCounts, GroupClientCountsRequest, GroupClientCountsResponse;
    group_uids, GroupUids, GroupUidsRequest, GroupUidsResponse;
    group_uid_count, GroupUidCount, GroupUidCountRequest, GroupUidCountResponse;
    close_client, CloseClient, CloseClientRequest, CloseClientResponse;
    destroy_client, DestroyClient, DestroyClientRequest, DestroyClientResponse;
    set_deadline, SetDeadline, SetDeadlineRequest, SetDeadlineResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_an_rpc_and_its_answers_fit_the_response() {
        // `batch_result` covers every kind; an output of the kind's own shape converts.
        let sample = |kind: OpKind| match kind {
            k if k.is_send() => Output::Sent { replayed: true },
            OpKind::GetSession => Output::Session { session: None },
            OpKind::AllSessions | OpKind::GroupSessions => Output::Sessions {
                sessions: Default::default(),
            },
            OpKind::IsOnline | OpKind::IsUidOnline => Output::Online { online: true },
            OpKind::OnlineUids | OpKind::AllUids | OpKind::GroupUids => Output::Uids { uids: vec![] },
            OpKind::ClientIdsByUid | OpKind::AllClientIds | OpKind::GroupClientIds => {
                Output::ClientIds { client_ids: vec![] }
            }
            OpKind::ClientIdsByUids => Output::ClientIdsByUid {
                client_ids_by_uid: Default::default(),
            },
            OpKind::UidOf => Output::Uid { uid: None },
            OpKind::AllClientCount | OpKind::AllUidCount | OpKind::GroupClientCount | OpKind::GroupUidCount => {
                Output::Count { count: 3 }
            }
            OpKind::AllGroups => Output::Groups { groups: vec![] },
            OpKind::GroupClientCounts => Output::Counts {
                counts: Default::default(),
            },
            _ => Output::Done {},
        };
        for kind in OpKind::ALL {
            assert!(batch_result(*kind, sample(*kind)).is_ok(), "{kind:?}");
        }
        let error = v1::IsOnlineResponse::from_output(Output::Done {}).unwrap_err();
        assert_eq!(error.code, gatehouse_proto::ErrorCode::Internal);
    }

    #[test]
    fn requests_are_checked_like_the_http_ones() {
        let limits = Limits {
            max_list_len: 2,
            ..Limits::default()
        };
        let no_data = v1::SendToUidRequest {
            uid: "alice".into(),
            ..Default::default()
        };
        assert!(no_data.to_call(&limits).unwrap_err().message.contains("needs data"));
        let long = v1::OnlineUidsRequest {
            uids: vec!["a".into(), "b".into(), "c".into()],
        };
        assert!(long.to_call(&limits).unwrap_err().message.contains("at most 2"));
        let bad_session = v1::SetSessionRequest {
            client: "00000000000000010000000000000002".into(),
            session: "[1]".into(),
        };
        assert!(bad_session.to_call(&limits).is_err());
        let keyed = v1::SendToUidRequest {
            uid: "alice".into(),
            data: Some(v1::send_to_uid_request::Data::Text("hi".into())),
            idempotency_key: "order-1".into(),
            ..Default::default()
        };
        assert_eq!(
            keyed.to_call(&limits).unwrap().idempotency_key.as_deref(),
            Some("order-1")
        );
    }
}
