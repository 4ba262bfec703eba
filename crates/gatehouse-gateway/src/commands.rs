//! Execution of worker commands against this gateway's hub.
//!
//! Commands of one link run in the order they arrive, on the link's reader task, and never
//! await: deliveries are pushes into bounded client queues, and the only command that must
//! wait (a bind or join awaiting the registries) hands its reply to a small task of its own.
//!
//! A worker is a cluster member, not a trusted one: every field is checked (keys, list
//! lengths, frame and session sizes, close codes) and a bad command gets a typed error (or,
//! when the caller asked for no reply, a counter and a debug log), never a panic or a failed
//! link.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use gatehouse_core::ClientId;
use gatehouse_core::limits::{check_close, check_key};
use gatehouse_proto::ErrorCode;
use gatehouse_proto::prost::Message as _;
use gatehouse_proto::v1::{
    BindUid, CloseConn, Command, ConnRecord, JoinGroup, Payload, Query, QueryOutput, QueryResult, Reply, RouteKind,
    SendToAll, SendToConns, SendToGroups, SendToUids, SetDeadline, SetSession, command, query,
};

use crate::conn::Conn;
use crate::hub::Hub;
use crate::queue::{Deadline, Outbound};
use crate::stats::Stats;
use crate::workers::{Down, WorkerLink};

/// Most entries in one list of a command (clients, uids, groups, exclusions). The SDK splits
/// longer lists over several commands; a peer that does not is refused.
pub const MAX_COMMAND_KEYS: usize = 4096;
/// Furthest deadline a worker may set.
const MAX_DEADLINE: Duration = Duration::from_secs(366 * 24 * 3600);

/// A command failure reported back to the caller.
#[derive(Debug)]
struct Failure(ErrorCode, String);

impl Failure {
    fn bad(message: impl Into<String>) -> Failure {
        Failure(ErrorCode::BadRequest, message.into())
    }
}

type Outcome = Result<Option<QueryResult>, Failure>;

/// Executes one command from `link`, replying when the caller asked for it.
pub(crate) fn execute(hub: &Hub, link: &Arc<WorkerLink>, command: Command) {
    Stats::inc(&hub.stats().commands);
    let request_id = command.request_id;
    let outcome = match command.op {
        None => Err(Failure::bad("empty command")),
        Some(command::Op::BindUid(bind)) => return bind_uid(hub, link, request_id, bind),
        Some(command::Op::JoinGroup(join)) => return join_group(hub, link, request_id, join),
        Some(op) => run(hub, op),
    };
    reply(hub, link, request_id, outcome);
}

/// The commands that complete at once.
fn run(hub: &Hub, op: command::Op) -> Outcome {
    match op {
        command::Op::SendToConns(send) => send_to_conns(hub, send),
        command::Op::SendToUids(send) => send_to_uids(hub, send),
        command::Op::SendToGroups(send) => send_to_groups(hub, send),
        command::Op::SendToAll(send) => send_to_all(hub, send),
        command::Op::UnbindUid(unbind) => {
            let conn = checked(hub, unbind.conn, "uid", &unbind.uid)?;
            hub.index().unbind_uid(&conn, &unbind.uid);
            Ok(None)
        }
        command::Op::LeaveGroup(leave) => {
            let conn = checked(hub, leave.conn, "group", &leave.group)?;
            hub.index().leave_group(&conn, &leave.group);
            Ok(None)
        }
        command::Op::Ungroup(ungroup) => {
            key("group", &ungroup.group)?;
            hub.index().ungroup(&ungroup.group);
            Ok(None)
        }
        command::Op::SetSession(set) => set_session(hub, set),
        command::Op::CloseConn(close) => close_conn(hub, close),
        command::Op::SetDeadline(deadline) => set_deadline(hub, deadline),
        command::Op::Query(query) => run_query(hub, query).map(Some),
        command::Op::BindUid(_) | command::Op::JoinGroup(_) => unreachable!("handled by execute"),
    }
}

fn reply(hub: &Hub, link: &WorkerLink, request_id: u64, outcome: Outcome) {
    if let Err(Failure(code, message)) = &outcome {
        Stats::inc(&hub.stats().commands_refused);
        if request_id == 0 {
            tracing::debug!(member = %link.node(), %code, %message, "command without reply refused");
            return;
        }
    }
    if request_id == 0 {
        return;
    }
    let reply = match outcome {
        Ok(result) => Reply {
            request_id,
            result,
            ..Default::default()
        },
        Err(Failure(code, message)) => Reply {
            request_id,
            error_code: code.as_u32(),
            error_message: message,
            result: None,
        },
    };
    let _ = link.down.send(Down::Reply(reply));
}

// ---------------------------------------------------------------------- sends

fn send_to_conns(hub: &Hub, send: SendToConns) -> Outcome {
    bounded("clients", send.conns.len())?;
    let frame = frame(hub, send.payload)?;
    for id in send.conns {
        if let Some(conn) = hub.conns().live(id) {
            hub.push(&conn, &frame);
        }
    }
    Ok(None)
}

fn send_to_uids(hub: &Hub, send: SendToUids) -> Outcome {
    bounded("uids", send.uids.len())?;
    bounded("exclusions", send.exclude.len())?;
    let frame = frame(hub, send.payload)?;
    for uid in &send.uids {
        hub.index().with_members(RouteKind::Uid, uid, |conns| {
            for conn in conns.iter().filter(|c| !send.exclude.contains(&c.id())) {
                hub.push(conn, &frame);
            }
        });
    }
    Ok(None)
}

fn send_to_groups(hub: &Hub, send: SendToGroups) -> Outcome {
    bounded("groups", send.groups.len())?;
    bounded("exclusions", send.exclude.len())?;
    let frame = frame(hub, send.payload)?;
    let exclude: HashSet<u64> = send.exclude.into_iter().collect();
    // A client in two of the groups gets one copy.
    let mut seen: HashSet<u64> = HashSet::new();
    let dedupe = send.groups.len() > 1;
    for group in &send.groups {
        hub.index().with_members(RouteKind::Group, group, |conns| {
            for conn in conns {
                if exclude.contains(&conn.id()) || (dedupe && !seen.insert(conn.id())) {
                    continue;
                }
                hub.push(conn, &frame);
            }
        });
    }
    Ok(None)
}

fn send_to_all(hub: &Hub, send: SendToAll) -> Outcome {
    bounded("exclusions", send.exclude.len())?;
    let frame = frame(hub, send.payload)?;
    let exclude: HashSet<u64> = send.exclude.into_iter().collect();
    hub.conns().for_each_live(|conn| {
        if !exclude.contains(&conn.id()) {
            hub.push(conn, &frame);
        }
    });
    Ok(None)
}

// ---------------------------------------------------------------------- uids and groups

fn bind_uid(hub: &Hub, link: &Arc<WorkerLink>, request_id: u64, bind: BindUid) {
    match checked(hub, bind.conn, "uid", &bind.uid) {
        Ok(conn) => {
            let generation = hub.index().bind_uid(&conn, &bind.uid);
            reply_when_confirmed(hub, link, request_id, generation);
        }
        Err(failure) => reply(hub, link, request_id, Err(failure)),
    }
}

fn join_group(hub: &Hub, link: &Arc<WorkerLink>, request_id: u64, join: JoinGroup) {
    let joined = checked(hub, join.conn, "group", &join.group).and_then(|conn| {
        hub.index().join_group(&conn, &join.group).map_err(|limit| {
            Failure(
                ErrorCode::TooManyRequests,
                format!("a client may be in at most {} groups", limit.0),
            )
        })
    });
    match joined {
        Ok(generation) => reply_when_confirmed(hub, link, request_id, generation),
        Err(failure) => reply(hub, link, request_id, Err(failure)),
    }
}

/// Replies once every attached registry confirmed `generation` (a bind or join).
fn reply_when_confirmed(hub: &Hub, link: &Arc<WorkerLink>, request_id: u64, generation: u64) {
    let routes = hub.routes().clone();
    let timeout = hub.config().bind_timeout;
    let link = link.clone();
    let respond = move |ok: bool| {
        if request_id == 0 {
            return;
        }
        let reply = if ok {
            Reply {
                request_id,
                ..Default::default()
            }
        } else {
            Reply {
                request_id,
                error_code: ErrorCode::Timeout.as_u32(),
                error_message: "the registries did not confirm in time".to_owned(),
                result: None,
            }
        };
        let _ = link.down.send(Down::Reply(reply));
    };
    if *routes.confirmed_now() >= generation {
        respond(true);
        return;
    }
    tokio::spawn(async move {
        let ok = routes.wait_confirmed(generation, timeout).await;
        respond(ok);
    });
}

// ---------------------------------------------------------------------- sessions, closes, deadlines

fn set_session(hub: &Hub, set: SetSession) -> Outcome {
    let limit = hub.config().max_session_bytes;
    if set.session.len() > limit {
        return Err(Failure::bad(format!("a session is at most {limit} bytes")));
    }
    let conn = live(hub, set.conn)?;
    let update: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&set.session).map_err(|_| Failure::bad("a session must be a json object"))?;
    let mut state = conn.lock();
    let merged = if set.merge && !state.session.is_empty() {
        let mut current: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&state.session).unwrap_or_default();
        current.extend(update);
        current
    } else {
        update
    };
    // An empty session is stored as nothing: events then carry no session bytes at all.
    let bytes = if merged.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(&merged).expect("json maps serialise"))
    };
    if bytes.len() > limit {
        return Err(Failure::bad(format!("the merged session would exceed {limit} bytes")));
    }
    state.session = bytes.clone();
    Ok(Some(QueryResult {
        session: bytes,
        session_after_seq: state.events.next_seq,
        ..Default::default()
    }))
}

fn close_conn(hub: &Hub, close: CloseConn) -> Outcome {
    let frame = close_frame(close.code, close.reason)?;
    let last = close.last.map(|p| self::frame(hub, Some(p))).transpose()?;
    let conn = live(hub, close.conn)?;
    if close.destroy {
        conn.queue().kill(frame.code, frame.reason);
        return Ok(None);
    }
    if conn
        .queue()
        .push(Outbound::Close {
            last,
            close: frame.clone(),
        })
        .is_err()
    {
        // The queue is full: draining would wait on a slow client; close now instead.
        conn.queue().kill(frame.code, frame.reason);
    }
    Ok(None)
}

fn set_deadline(hub: &Hub, set: SetDeadline) -> Outcome {
    let conn = live(hub, set.conn)?;
    if set.at_ms == 0 {
        hub.push_control(&conn, Outbound::Deadline(None));
        return Ok(None);
    }
    let close = close_frame(set.close_code, set.close_reason)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let remaining = Duration::from_millis(set.at_ms.saturating_sub(now_ms));
    if remaining > MAX_DEADLINE {
        return Err(Failure::bad("a deadline is at most 366 days away"));
    }
    let at = tokio::time::Instant::now() + remaining;
    let warning = match set.warning {
        Some(payload) if set.warn_before_ms > 0 => {
            let warn_at = at
                .checked_sub(Duration::from_millis(set.warn_before_ms))
                .unwrap_or_else(tokio::time::Instant::now)
                .max(tokio::time::Instant::now());
            Some((warn_at, frame(hub, Some(payload))?))
        }
        _ => None,
    };
    hub.push_control(&conn, Outbound::Deadline(Some(Deadline { at, warning, close })));
    Ok(None)
}

// ---------------------------------------------------------------------- queries

fn run_query(hub: &Hub, query: Query) -> Result<QueryResult, Failure> {
    let output = QueryOutput::try_from(query.output).unwrap_or(QueryOutput::Records);
    let mut result = QueryResult::default();
    let mut matched: Vec<(Arc<Conn>, String)> = Vec::new();
    match query.selector {
        Some(query::Selector::GroupNames(_)) => {
            result.group_names = hub.index().group_names();
            return within_budget(hub, result);
        }
        Some(query::Selector::Conns(list)) => {
            bounded("clients", list.conns.len())?;
            matched.extend(
                list.conns
                    .into_iter()
                    .filter_map(|id| hub.conns().live(id))
                    .map(|c| (c, String::new())),
            );
        }
        Some(query::Selector::Uids(list)) => matched_keys(hub, RouteKind::Uid, list.items, &mut matched)?,
        Some(query::Selector::Groups(list)) => matched_keys(hub, RouteKind::Group, list.items, &mut matched)?,
        Some(query::Selector::All(_)) | None => hub.conns().for_each_live(|c| matched.push((c.clone(), String::new()))),
    }
    result.count = matched.len() as u64;
    if output == QueryOutput::Count {
        return Ok(result);
    }
    let limit = hub.config().max_query_result_bytes;
    let mut bytes = 0;
    for (conn, matched_key) in matched {
        let state = conn.lock();
        let record = ConnRecord {
            conn: conn.id(),
            uid: state.uid.clone().unwrap_or_default(),
            matched: matched_key,
            session: if output == QueryOutput::Sessions {
                state.session.clone()
            } else {
                Bytes::new()
            },
        };
        bytes += record.encoded_len() + 4;
        if bytes > limit {
            return Err(too_large(limit));
        }
        result.records.push(record);
    }
    Ok(result)
}

fn matched_keys(
    hub: &Hub,
    kind: RouteKind,
    keys: Vec<String>,
    matched: &mut Vec<(Arc<Conn>, String)>,
) -> Result<(), Failure> {
    bounded("keys", keys.len())?;
    for key in keys {
        hub.index().with_members(kind, &key, |conns| {
            matched.extend(
                conns
                    .iter()
                    .filter(|c| !c.is_closed())
                    .map(|c| (c.clone(), key.clone())),
            );
        });
    }
    Ok(())
}

fn within_budget(hub: &Hub, result: QueryResult) -> Result<QueryResult, Failure> {
    let limit = hub.config().max_query_result_bytes;
    if result.encoded_len() > limit {
        return Err(too_large(limit));
    }
    Ok(result)
}

fn too_large(limit: usize) -> Failure {
    Failure::bad(format!(
        "the answer would exceed {limit} bytes; ask for counts or for fewer clients, uids or groups"
    ))
}

// ---------------------------------------------------------------------- checks

/// A client frame from a payload, within the outbound frame limit.
fn frame(hub: &Hub, payload: Option<Payload>) -> Result<Message, Failure> {
    let payload = payload.ok_or_else(|| Failure::bad("send without payload"))?;
    let limit = hub.config().max_frame_out_bytes;
    if payload.data.len() > limit {
        Stats::inc(&hub.stats().frames_too_large);
        return Err(Failure::bad(format!(
            "a frame of {} bytes exceeds this gateway's limit of {limit} bytes",
            payload.data.len()
        )));
    }
    if payload.binary {
        return Ok(Message::Binary(payload.data));
    }
    Utf8Bytes::try_from(payload.data)
        .map(Message::Text)
        .map_err(|_| Failure::bad("text payload is not valid utf-8"))
}

/// A close frame a worker may ask for: an application or policy code and a short reason.
fn close_frame(code: u32, reason: String) -> Result<CloseFrame, Failure> {
    let code = check_close(code, &reason).map_err(|e| Failure::bad(e.to_string()))?;
    Ok(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    })
}

fn bounded(what: &str, len: usize) -> Result<(), Failure> {
    if len > MAX_COMMAND_KEYS {
        return Err(Failure::bad(format!("at most {MAX_COMMAND_KEYS} {what} per command")));
    }
    Ok(())
}

fn key(what: &'static str, key: &str) -> Result<(), Failure> {
    check_key(what, key).map_err(|e| Failure::bad(e.to_string()))
}

fn checked(hub: &Hub, conn: u64, what: &'static str, name: &str) -> Result<Arc<Conn>, Failure> {
    key(what, name)?;
    live(hub, conn)
}

fn live(hub: &Hub, conn: u64) -> Result<Arc<Conn>, Failure> {
    hub.conns().live(conn).ok_or_else(|| {
        Failure(
            ErrorCode::NotFound,
            format!("client {} is not connected", ClientId::new(hub.id(), conn)),
        )
    })
}
