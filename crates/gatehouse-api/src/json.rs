//! The JSON shapes of the HTTP API: one request body per operation (unknown fields refused),
//! parsed straight into an [`Op`], and the answer envelopes.
//!
//! A frame is `data` (a text frame) or `data_base64` (a binary frame, standard base64).

use base64::Engine as _;
use gatehouse_sdk::Frame;
use gatehouse_sdk::cluster::Session;
use serde::Deserialize;

use crate::config::Limits;
use crate::error::Failure;
use crate::ops::{Op, OpKind, check};
use crate::service::Call;

/// Parses one operation's body (`/api/v1/<op>`); an empty body means no arguments.
pub fn parse_body(kind: OpKind, body: &[u8], limits: &Limits) -> Result<Call, Failure> {
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        serde_json::from_slice(body).map_err(invalid)?
    };
    body.into_call(kind, limits)
}

/// Parses one batch item (an object with `"op"` and the operation's fields).
pub fn parse_item(mut item: serde_json::Value, limits: &Limits) -> Result<Call, Failure> {
    let object = item
        .as_object_mut()
        .ok_or_else(|| Failure::bad_request("a batch item must be a JSON object"))?;
    let name = match object.remove("op") {
        Some(serde_json::Value::String(name)) => name,
        Some(_) => return Err(Failure::bad_request("\"op\" must be a string")),
        None => return Err(Failure::bad_request("a batch item needs \"op\"")),
    };
    let kind = OpKind::from_name(&name).ok_or_else(|| unknown_op(&name))?;
    let body: Body = serde_json::from_value(item).map_err(invalid)?;
    body.into_call(kind, limits)
}

/// The failure for an operation name that does not exist.
pub fn unknown_op(name: &str) -> Failure {
    Failure::bad_request(format!(
        "unknown operation {:?}",
        name.chars().take(64).collect::<String>()
    ))
}

fn invalid(error: serde_json::Error) -> Failure {
    Failure::bad_request(format!("invalid request body: {error}"))
}

/// The body fields `kind` accepts (for documentation checks).
pub fn field_names(kind: OpKind) -> Vec<&'static str> {
    accepted(kind)
        .iter()
        .flat_map(|f| match f {
            Field::Data => vec!["data", "data_base64"],
            other => vec![other.name()],
        })
        .collect()
}

/// Every field any operation takes; [`Body::into_call`] refuses the fields `kind` does not
/// take, so each operation accepts exactly its own (documented) fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    client: Option<String>,
    clients: Option<Vec<String>>,
    uid: Option<String>,
    uids: Option<Vec<String>>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    data: Option<String>,
    data_base64: Option<String>,
    idempotency_key: Option<String>,
    session: Option<Session>,
    code: Option<u32>,
    reason: Option<String>,
    #[serde(default, deserialize_with = "present")]
    deadline: Option<Option<DeadlineBody>>,
}

/// Distinguishes `"deadline": null` (present) from a missing field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<DeadlineBody>>, D::Error> {
    Option::<DeadlineBody>::deserialize(d).map(Some)
}

/// `set_deadline`'s `deadline` object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineBody {
    at_ms: u64,
    #[serde(default)]
    warn_before_ms: u64,
    data: Option<String>,
    data_base64: Option<String>,
    #[serde(default)]
    close_code: u32,
    #[serde(default)]
    close_reason: String,
}

/// The fields an operation takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Client,
    Clients,
    Uid,
    Uids,
    Group,
    Groups,
    Exclude,
    Data,
    IdempotencyKey,
    Session,
    Code,
    Reason,
    Deadline,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Client => "client",
            Field::Clients => "clients",
            Field::Uid => "uid",
            Field::Uids => "uids",
            Field::Group => "group",
            Field::Groups => "groups",
            Field::Exclude => "exclude",
            Field::Data => "data",
            Field::IdempotencyKey => "idempotency_key",
            Field::Session => "session",
            Field::Code => "code",
            Field::Reason => "reason",
            Field::Deadline => "deadline",
        }
    }
}

/// The fields each operation accepts (required or optional, checked when built).
fn accepted(kind: OpKind) -> &'static [Field] {
    use Field::*;
    match kind {
        OpKind::SendToClient => &[Client, Data, IdempotencyKey],
        OpKind::SendToClients => &[Clients, Data, IdempotencyKey],
        OpKind::SendToUid => &[Uid, Data, Exclude, IdempotencyKey],
        OpKind::SendToUids => &[Uids, Data, Exclude, IdempotencyKey],
        OpKind::SendToGroup => &[Group, Data, Exclude, IdempotencyKey],
        OpKind::SendToGroups => &[Groups, Data, Exclude, IdempotencyKey],
        OpKind::SendToAll => &[Data, Exclude, IdempotencyKey],
        OpKind::BindUid | OpKind::UnbindUid => &[Client, Uid],
        OpKind::JoinGroup | OpKind::LeaveGroup => &[Client, Group],
        OpKind::SetSession | OpKind::UpdateSession => &[Client, Session],
        OpKind::GetSession | OpKind::IsOnline | OpKind::UidOf | OpKind::DestroyClient => &[Client],
        OpKind::IsUidOnline | OpKind::ClientIdsByUid => &[Uid],
        OpKind::OnlineUids | OpKind::ClientIdsByUids => &[Uids],
        OpKind::Ungroup
        | OpKind::GroupSessions
        | OpKind::GroupClientIds
        | OpKind::GroupClientCount
        | OpKind::GroupUids
        | OpKind::GroupUidCount => &[Group],
        OpKind::GroupClientCounts => &[Groups],
        OpKind::AllSessions
        | OpKind::AllClientIds
        | OpKind::AllClientCount
        | OpKind::AllUids
        | OpKind::AllUidCount
        | OpKind::AllGroups => &[],
        OpKind::CloseClient => &[Client, Data, Code, Reason],
        OpKind::SetDeadline => &[Client, Deadline],
    }
}

fn frame(data: Option<String>, data_base64: Option<String>, prefix: &str) -> Result<Option<Frame>, Failure> {
    match (data, data_base64) {
        (Some(_), Some(_)) => Err(Failure::bad_request(format!(
            "{prefix}data and {prefix}data_base64 exclude each other"
        ))),
        (Some(text), None) => Ok(Some(Frame::text(text))),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map(|bytes| Some(Frame::binary(bytes)))
            .map_err(|e| Failure::bad_request(format!("{prefix}data_base64 is not valid base64: {e}"))),
        (None, None) => Ok(None),
    }
}

impl Body {
    fn present(&self) -> Vec<Field> {
        use Field::*;
        let mut fields = Vec::new();
        let mut add = |on: bool, f| {
            if on {
                fields.push(f);
            }
        };
        add(self.client.is_some(), Client);
        add(self.clients.is_some(), Clients);
        add(self.uid.is_some(), Uid);
        add(self.uids.is_some(), Uids);
        add(self.group.is_some(), Group);
        add(self.groups.is_some(), Groups);
        add(self.exclude.is_some(), Exclude);
        add(self.data.is_some() || self.data_base64.is_some(), Data);
        add(self.idempotency_key.is_some(), IdempotencyKey);
        add(self.session.is_some(), Session);
        add(self.code.is_some(), Code);
        add(self.reason.is_some(), Reason);
        add(self.deadline.is_some(), Deadline);
        fields
    }

    /// Checks the fields against `kind` and builds the call.
    pub fn into_call(self, kind: OpKind, limits: &Limits) -> Result<Call, Failure> {
        let allowed = accepted(kind);
        if let Some(extra) = self.present().into_iter().find(|f| !allowed.contains(f)) {
            let name = if extra == Field::Data {
                if self.data.is_some() { "data" } else { "data_base64" }
            } else {
                extra.name()
            };
            return Err(Failure::bad_request(format!(
                "{} does not take the field {name:?}",
                kind.name()
            )));
        }
        let max = limits.max_list_len;
        let need = |value: Option<String>, field: &str| {
            value.ok_or_else(|| Failure::bad_request(format!("{} needs \"{field}\"", kind.name())))
        };
        let need_list = |value: Option<Vec<String>>, field: &str| {
            value.ok_or_else(|| Failure::bad_request(format!("{} needs \"{field}\"", kind.name())))
        };
        let Body {
            client,
            clients,
            uid,
            uids,
            group,
            groups,
            exclude,
            data,
            data_base64,
            idempotency_key,
            session,
            code,
            reason,
            deadline,
        } = self;
        let client = || -> Result<_, Failure> { check::client("client", &need(client.clone(), "client")?) };
        let uid = || -> Result<_, Failure> { check::name("uid", need(uid.clone(), "uid")?) };
        let group = || -> Result<_, Failure> { check::name("group", need(group.clone(), "group")?) };
        let exclude = || check::clients("exclude", exclude.as_deref().unwrap_or_default(), max);
        let send_frame = || -> Result<Frame, Failure> {
            frame(data.clone(), data_base64.clone(), "")?
                .ok_or_else(|| Failure::bad_request(format!("{} needs \"data\" or \"data_base64\"", kind.name())))
        };
        let session = || {
            session
                .clone()
                .ok_or_else(|| Failure::bad_request(format!("{} needs \"session\"", kind.name())))
        };
        let op = match kind {
            OpKind::SendToClient => Op::SendToClient {
                client: client()?,
                frame: send_frame()?,
            },
            OpKind::SendToClients => Op::SendToClients {
                clients: check::clients("clients", &need_list(clients, "clients")?, max)?,
                frame: send_frame()?,
            },
            OpKind::SendToUid => Op::SendToUid {
                uid: uid()?,
                frame: send_frame()?,
                exclude: exclude()?,
            },
            OpKind::SendToUids => Op::SendToUids {
                uids: check::names("uids", need_list(uids, "uids")?, max)?,
                frame: send_frame()?,
                exclude: exclude()?,
            },
            OpKind::SendToGroup => Op::SendToGroup {
                group: group()?,
                frame: send_frame()?,
                exclude: exclude()?,
            },
            OpKind::SendToGroups => Op::SendToGroups {
                groups: check::names("groups", need_list(groups, "groups")?, max)?,
                frame: send_frame()?,
                exclude: exclude()?,
            },
            OpKind::SendToAll => Op::SendToAll {
                frame: send_frame()?,
                exclude: exclude()?,
            },
            OpKind::BindUid => Op::BindUid {
                client: client()?,
                uid: uid()?,
            },
            OpKind::UnbindUid => Op::UnbindUid {
                client: client()?,
                uid: uid()?,
            },
            OpKind::JoinGroup => Op::JoinGroup {
                client: client()?,
                group: group()?,
            },
            OpKind::LeaveGroup => Op::LeaveGroup {
                client: client()?,
                group: group()?,
            },
            OpKind::Ungroup => Op::Ungroup { group: group()? },
            OpKind::SetSession => Op::SetSession {
                client: client()?,
                session: session()?,
            },
            OpKind::UpdateSession => Op::UpdateSession {
                client: client()?,
                session: session()?,
            },
            OpKind::GetSession => Op::GetSession { client: client()? },
            OpKind::AllSessions => Op::AllSessions,
            OpKind::GroupSessions => Op::GroupSessions { group: group()? },
            OpKind::IsOnline => Op::IsOnline { client: client()? },
            OpKind::IsUidOnline => Op::IsUidOnline { uid: uid()? },
            OpKind::OnlineUids => Op::OnlineUids {
                uids: check::names("uids", need_list(uids, "uids")?, max)?,
            },
            OpKind::ClientIdsByUid => Op::ClientIdsByUid { uid: uid()? },
            OpKind::ClientIdsByUids => Op::ClientIdsByUids {
                uids: check::names("uids", need_list(uids, "uids")?, max)?,
            },
            OpKind::UidOf => Op::UidOf { client: client()? },
            OpKind::AllClientIds => Op::AllClientIds,
            OpKind::AllClientCount => Op::AllClientCount,
            OpKind::AllUids => Op::AllUids,
            OpKind::AllUidCount => Op::AllUidCount,
            OpKind::AllGroups => Op::AllGroups,
            OpKind::GroupClientIds => Op::GroupClientIds { group: group()? },
            OpKind::GroupClientCount => Op::GroupClientCount { group: group()? },
            OpKind::GroupClientCounts => Op::GroupClientCounts {
                groups: check::names("groups", need_list(groups, "groups")?, max)?,
            },
            OpKind::GroupUids => Op::GroupUids { group: group()? },
            OpKind::GroupUidCount => Op::GroupUidCount { group: group()? },
            OpKind::CloseClient => {
                let reason = reason.unwrap_or_default();
                Op::CloseClient {
                    client: client()?,
                    last: frame(data, data_base64, "")?,
                    code: check::close(code.unwrap_or(1000), &reason)?,
                    reason,
                }
            }
            OpKind::DestroyClient => Op::DestroyClient { client: client()? },
            OpKind::SetDeadline => Op::SetDeadline {
                client: client()?,
                deadline: match deadline.flatten() {
                    None => None,
                    Some(d) => Some(check::deadline(
                        d.at_ms,
                        d.warn_before_ms,
                        frame(d.data, d.data_base64, "deadline.")?,
                        d.close_code,
                        d.close_reason,
                    )?),
                },
            },
        };
        Call::new(op).with_idempotency_key(idempotency_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00000000000000010000000000000002";

    fn parse(kind: OpKind, body: &str) -> Result<Call, Failure> {
        parse_body(kind, body.as_bytes(), &Limits::default())
    }

    fn message(result: Result<Call, Failure>) -> String {
        let failure = result.expect_err("must be refused");
        assert_eq!(failure.code, gatehouse_proto::ErrorCode::BadRequest);
        failure.message
    }

    #[test]
    fn a_valid_body_becomes_the_operation() {
        let call = parse(
            OpKind::SendToUid,
            r#"{"uid":"alice","data":"hi","exclude":[],"idempotency_key":"k1"}"#,
        )
        .unwrap();
        assert!(
            matches!(&call.op, Op::SendToUid { uid, frame, .. } if uid == "alice" && frame.as_text() == Some("hi"))
        );
        assert_eq!(call.idempotency_key.as_deref(), Some("k1"));
        let call = parse(
            OpKind::SendToClient,
            &format!(r#"{{"client":"{CLIENT}","data_base64":"AAEC"}}"#),
        )
        .unwrap();
        assert!(
            matches!(&call.op, Op::SendToClient { frame, .. } if frame.is_binary() && frame.data()[..] == [0, 1, 2])
        );
        assert!(matches!(parse(OpKind::AllGroups, "").unwrap().op, Op::AllGroups));
        assert!(matches!(parse(OpKind::AllGroups, " {} ").unwrap().op, Op::AllGroups));
    }

    #[test]
    fn malformed_bodies_get_a_message_that_names_the_problem() {
        assert!(message(parse(OpKind::SendToUid, "{")).contains("invalid request body"));
        assert!(message(parse(OpKind::SendToUid, "[]")).contains("invalid request body"));
        assert!(message(parse(OpKind::SendToUid, r#"{"uid":5,"data":"x"}"#)).contains("invalid type"));
        assert!(message(parse(OpKind::SendToUid, r#"{"uid":"a","data":"x","colour":1}"#)).contains("unknown field"));
        assert!(message(parse(OpKind::SendToUid, r#"{"data":"x"}"#)).contains("needs \"uid\""));
        assert!(message(parse(OpKind::SendToUid, r#"{"uid":"a"}"#)).contains("needs \"data\""));
        assert!(
            message(parse(
                OpKind::SendToUid,
                r#"{"uid":"a","data":"x","data_base64":"eA=="}"#
            ))
            .contains("exclude each other")
        );
        assert!(message(parse(OpKind::SendToUid, r#"{"uid":"a","data_base64":"***"}"#)).contains("base64"));
        // A field another operation takes is still refused here.
        assert!(message(parse(OpKind::AllGroups, r#"{"group":"g"}"#)).contains("does not take the field \"group\""));
        assert!(message(parse(OpKind::IsOnline, r#"{"client":"xyz"}"#)).contains("invalid client id"));
        assert!(
            message(parse(
                OpKind::BindUid,
                &format!(r#"{{"client":"{CLIENT}","uid":"a","idempotency_key":"k"}}"#)
            ))
            .contains("does not take")
        );
        assert!(
            message(parse(
                OpKind::SetSession,
                &format!(r#"{{"client":"{CLIENT}","session":[1]}}"#)
            ))
            .contains("invalid type")
        );
        let nested = format!(r#"{{"client":"{CLIENT}","session":{{"a":{}}}}}"#, "[".repeat(10_000));
        assert!(message(parse(OpKind::SetSession, &nested)).contains("invalid request body"));
    }

    #[test]
    fn lists_over_the_limit_are_refused() {
        let limits = Limits {
            max_list_len: 3,
            ..Limits::default()
        };
        let body = r#"{"uids":["a","b","c","d"],"data":"x"}"#;
        let failure = parse_body(OpKind::SendToUids, body.as_bytes(), &limits).unwrap_err();
        assert!(failure.message.contains("at most 3"), "{}", failure.message);
        let body = format!(r#"{{"group":"g","data":"x","exclude":["{CLIENT}","{CLIENT}","{CLIENT}","{CLIENT}"]}}"#);
        assert!(parse_body(OpKind::SendToGroup, body.as_bytes(), &limits).is_err());
    }

    #[test]
    fn a_deadline_of_null_or_absent_clears_it() {
        for body in [
            format!(r#"{{"client":"{CLIENT}"}}"#),
            format!(r#"{{"client":"{CLIENT}","deadline":null}}"#),
        ] {
            assert!(matches!(
                parse(OpKind::SetDeadline, &body).unwrap().op,
                Op::SetDeadline { deadline: None, .. }
            ));
        }
        let body = format!(
            r#"{{"client":"{CLIENT}","deadline":{{"at_ms":1900000000000,"warn_before_ms":500,"data":"soon","close_code":4001,"close_reason":"expired"}}}}"#
        );
        let Op::SetDeadline { deadline: Some(d), .. } = parse(OpKind::SetDeadline, &body).unwrap().op else {
            panic!("a deadline was given")
        };
        assert_eq!(d.close_code, 4001);
        let bad = format!(r#"{{"client":"{CLIENT}","deadline":{{"at_ms":1,"when":2}}}}"#);
        assert!(message(parse(OpKind::SetDeadline, &bad)).contains("unknown field"));
    }

    #[test]
    fn batch_items_name_their_operation() {
        let limits = Limits::default();
        let item = serde_json::json!({"op": "send_to_uid", "uid": "a", "data": "x"});
        assert!(matches!(parse_item(item, &limits).unwrap().op, Op::SendToUid { .. }));
        for (item, reason) in [
            (serde_json::json!({"uid": "a"}), "needs \"op\""),
            (serde_json::json!({"op": 3}), "must be a string"),
            (serde_json::json!({"op": "drop_database"}), "unknown operation"),
            (serde_json::json!([1]), "JSON object"),
        ] {
            let failure = parse_item(item, &limits).unwrap_err();
            assert!(failure.message.contains(reason), "{}", failure.message);
        }
    }
}
