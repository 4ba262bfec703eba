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
    link.send(Down::Reply(reply));
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
        link.send(Down::Reply(reply));
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
    let merged = if set.merge && !state.session().is_empty() {
        let mut current: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(state.session()).unwrap_or_default();
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
    state.set_session(bytes.clone());
    Ok(Some(QueryResult {
        session: bytes,
        session_after_seq: state.events().last_seq(),
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
            uid: state.uid().map(str::to_owned).unwrap_or_default(),
            matched: matched_key,
            session: if output == QueryOutput::Sessions {
                state.session().clone()
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use gatehouse_core::NodeId;
    use gatehouse_proto::v1::{
        ConnList, LeaveGroup, QueryAll, SendToAll, SendToConns, SendToGroups, SendToUids, StringList, UnbindUid,
        Ungroup,
    };
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::GatewayConfig;
    use crate::queue::Next;
    use crate::routes::RouteSync;

    /// A hub without listeners, one worker link whose replies the test reads, and clients made
    /// with [`Fixture::client`].
    struct Fixture {
        hub: Hub,
        link: Arc<WorkerLink>,
        down: mpsc::UnboundedReceiver<Down>,
    }

    fn fixture() -> Fixture {
        fixture_with(|_| {})
    }

    fn fixture_with(tune: impl FnOnce(&mut GatewayConfig)) -> Fixture {
        let any = "127.0.0.1:0".parse().unwrap();
        let mut config = GatewayConfig::new(
            any,
            any,
            vec!["127.0.0.1:1".into()],
            gatehouse_core::ClusterSecret::random(),
        );
        tune(&mut config);
        let hub = Hub::new(NodeId(9), config, RouteSync::new(0));
        let (tx, down) = mpsc::unbounded_channel();
        let link = Arc::new(WorkerLink::new(1, "w".into(), true, tx, CancellationToken::new()));
        Fixture { hub, link, down }
    }

    impl Fixture {
        fn client(&self) -> Arc<Conn> {
            self.hub.open(0).0
        }

        /// Executes `op` with a request id and returns the reply it got at once.
        fn call(&mut self, op: command::Op) -> Reply {
            execute(
                &self.hub,
                &self.link,
                Command {
                    request_id: 7,
                    op: Some(op),
                },
            );
            match self.down.try_recv() {
                Ok(Down::Reply(reply)) => {
                    assert_eq!(reply.request_id, 7);
                    reply
                }
                _ => panic!("no reply"),
            }
        }

        /// Executes `op` and expects success.
        fn ok(&mut self, op: command::Op) -> Option<QueryResult> {
            let reply = self.call(op);
            assert_eq!(reply.error_code, 0, "refused: {}", reply.error_message);
            reply.result
        }

        /// Executes `op` and expects a refusal with `code`; returns the message.
        fn refused(&mut self, op: command::Op, code: ErrorCode) -> String {
            let reply = self.call(op);
            assert_eq!(reply.error_code, code.as_u32(), "{}", reply.error_message);
            reply.error_message
        }
    }

    fn text(data: &str) -> Option<Payload> {
        Some(Payload {
            data: Bytes::copy_from_slice(data.as_bytes()),
            binary: false,
        })
    }

    /// What is queued for a client, taken without waiting.
    fn queued(conn: &Conn) -> VecDeque<Outbound> {
        let mut batch = VecDeque::new();
        {
            let next = std::pin::pin!(conn.queue().next(&mut batch));
            match next.poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(Next::Frames(_)) | Poll::Pending => {}
                Poll::Ready(Next::Kill(code)) => panic!("killed with {code}"),
            }
        }
        batch
    }

    /// The texts of the frames queued for a client.
    fn texts(conn: &Conn) -> Vec<String> {
        queued(conn)
            .into_iter()
            .map(|item| match item {
                Outbound::Frame(Message::Text(t)) => t.to_string(),
                _ => panic!("not a text frame"),
            })
            .collect()
    }

    fn to_conns(conns: Vec<u64>, payload: Option<Payload>) -> command::Op {
        command::Op::SendToConns(SendToConns { conns, payload })
    }

    fn bind(conn: &Conn, uid: &str) -> command::Op {
        command::Op::BindUid(BindUid {
            conn: conn.id(),
            uid: uid.into(),
        })
    }

    fn join(conn: &Conn, group: &str) -> command::Op {
        command::Op::JoinGroup(JoinGroup {
            conn: conn.id(),
            group: group.into(),
        })
    }

    fn query(selector: query::Selector, output: QueryOutput) -> command::Op {
        command::Op::Query(Query {
            selector: Some(selector),
            output: output as i32,
        })
    }

    // ------------------------------------------------------------------ replies

    #[test]
    fn an_empty_command_is_refused_as_a_bad_request() {
        let mut f = fixture();
        execute(
            &f.hub,
            &f.link,
            Command {
                request_id: 3,
                op: None,
            },
        );
        let Ok(Down::Reply(reply)) = f.down.try_recv() else {
            panic!("no reply")
        };
        assert_eq!(reply.error_code, ErrorCode::BadRequest.as_u32());
        assert_eq!(Stats::get(&f.hub.stats().commands_refused), 1);
    }

    #[test]
    fn a_command_without_a_request_id_is_never_answered_even_when_refused() {
        let mut f = fixture();
        let client = f.client();
        for op in [
            to_conns(vec![client.id()], text("hi")),
            to_conns(vec![client.id()], None),
        ] {
            execute(
                &f.hub,
                &f.link,
                Command {
                    request_id: 0,
                    op: Some(op),
                },
            );
        }
        assert!(f.down.try_recv().is_err(), "no reply at all");
        assert_eq!(texts(&client), ["hi"], "the valid one was executed");
        assert_eq!(Stats::get(&f.hub.stats().commands), 2);
        assert_eq!(Stats::get(&f.hub.stats().commands_refused), 1, "the refusal is counted");
    }

    // ------------------------------------------------------------------ sends

    #[test]
    fn a_send_to_clients_reaches_the_open_ones_and_skips_closed_and_unknown_ones() {
        let mut f = fixture();
        let (a, b) = (f.client(), f.client());
        f.hub.retire(&b, 1000, "bye");
        f.ok(to_conns(vec![a.id(), b.id(), 999], text("hello")));
        assert_eq!(texts(&a), ["hello"]);
        assert!(queued(&b).is_empty());
        assert_eq!(Stats::get(&f.hub.stats().frames_out), 1);
    }

    #[test]
    fn a_binary_payload_is_sent_as_a_binary_frame() {
        let mut f = fixture();
        let a = f.client();
        let payload = Payload {
            data: Bytes::from_static(&[0, 255]),
            binary: true,
        };
        f.ok(to_conns(vec![a.id()], Some(payload)));
        assert!(matches!(queued(&a).pop_front(), Some(Outbound::Frame(Message::Binary(b))) if b[..] == [0, 255]));
    }

    #[test]
    fn a_send_is_refused_without_payload_over_the_frame_limit_or_with_invalid_utf8() {
        let mut f = fixture_with(|c| c.max_frame_out_bytes = 4);
        let a = f.client();
        assert!(
            f.refused(to_conns(vec![a.id()], None), ErrorCode::BadRequest)
                .contains("payload")
        );
        assert!(
            f.refused(to_conns(vec![a.id()], text("12345")), ErrorCode::BadRequest)
                .contains("limit of 4")
        );
        assert_eq!(Stats::get(&f.hub.stats().frames_too_large), 1);
        let invalid = Payload {
            data: Bytes::from_static(&[0xff]),
            binary: false,
        };
        assert!(
            f.refused(to_conns(vec![a.id()], Some(invalid)), ErrorCode::BadRequest)
                .contains("utf-8")
        );
        f.ok(to_conns(vec![a.id()], text("1234")));
        assert_eq!(texts(&a), ["1234"], "only the valid frame was queued");
    }

    #[test]
    fn a_list_longer_than_the_command_key_limit_is_refused_before_anything_is_sent() {
        let mut f = fixture();
        let a = f.client();
        let mut ids = vec![a.id()];
        ids.resize(MAX_COMMAND_KEYS + 1, 999);
        f.refused(to_conns(ids, text("x")), ErrorCode::BadRequest);
        let exclude = vec![0; MAX_COMMAND_KEYS + 1];
        f.refused(
            command::Op::SendToAll(SendToAll {
                exclude,
                payload: text("x"),
            }),
            ErrorCode::BadRequest,
        );
        assert!(queued(&a).is_empty());
    }

    #[test]
    fn a_send_to_uids_reaches_every_device_of_each_uid_except_the_excluded() {
        let mut f = fixture();
        let (phone, laptop, other) = (f.client(), f.client(), f.client());
        f.hub.index().bind_uid(&phone, "ann");
        f.hub.index().bind_uid(&laptop, "ann");
        f.hub.index().bind_uid(&other, "bob");
        f.ok(command::Op::SendToUids(SendToUids {
            uids: vec!["ann".into(), "nobody".into()],
            exclude: vec![laptop.id()],
            payload: text("hi ann"),
        }));
        assert_eq!(texts(&phone), ["hi ann"]);
        assert!(queued(&laptop).is_empty(), "excluded");
        assert!(queued(&other).is_empty(), "another uid");
    }

    #[test]
    fn a_send_to_several_groups_gives_a_member_of_two_of_them_one_copy() {
        let mut f = fixture();
        let (both, one, excluded) = (f.client(), f.client(), f.client());
        for (conn, group) in [(&both, "a"), (&both, "b"), (&one, "b"), (&excluded, "a")] {
            f.hub.index().join_group(conn, group).unwrap();
        }
        f.ok(command::Op::SendToGroups(SendToGroups {
            groups: vec!["a".into(), "b".into()],
            exclude: vec![excluded.id()],
            payload: text("news"),
        }));
        assert_eq!(texts(&both), ["news"], "one copy");
        assert_eq!(texts(&one), ["news"]);
        assert!(queued(&excluded).is_empty());
    }

    #[test]
    fn a_send_to_all_reaches_every_open_client_but_the_excluded() {
        let mut f = fixture();
        let (a, b, gone) = (f.client(), f.client(), f.client());
        f.hub.retire(&gone, 1000, "bye");
        f.ok(command::Op::SendToAll(SendToAll {
            exclude: vec![b.id()],
            payload: text("all"),
        }));
        assert_eq!(texts(&a), ["all"]);
        assert!(queued(&b).is_empty());
        assert!(queued(&gone).is_empty());
    }

    #[test]
    fn a_client_whose_queue_is_full_is_closed_as_a_slow_consumer() {
        let mut f = fixture_with(|c| c.send_queue = 1);
        let a = f.client();
        f.ok(to_conns(vec![a.id()], text("1")));
        f.ok(to_conns(vec![a.id()], text("2")));
        assert_eq!(a.queue().kill_frame().map(|c| c.code), Some(1013));
        assert_eq!(Stats::get(&f.hub.stats().slow_consumers_closed), 1);
    }

    // ------------------------------------------------------------------ uids and groups

    #[test]
    fn a_bind_of_an_unknown_client_or_an_invalid_uid_is_refused_and_changes_nothing() {
        let mut f = fixture();
        let a = f.client();
        f.hub.retire(&a, 1000, "bye");
        f.refused(bind(&a, "ann"), ErrorCode::NotFound);
        let b = f.client();
        f.refused(bind(&b, ""), ErrorCode::BadRequest);
        assert_eq!(f.hub.index().uid_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bind_is_answered_once_the_registries_confirmed_its_key() {
        let mut f = fixture();
        let token = CancellationToken::new();
        tokio::spawn(f.hub.routes().clone().run(token.clone()));
        let a = f.client();
        execute(
            &f.hub,
            &f.link,
            Command {
                request_id: 5,
                op: Some(bind(&a, "ann")),
            },
        );
        assert!(f.down.try_recv().is_err(), "not before the confirmation");
        let Some(Down::Reply(reply)) = f.down.recv().await else {
            panic!("no reply")
        };
        assert_eq!((reply.request_id, reply.error_code), (5, 0));
        assert_eq!(a.lock().uid(), Some("ann"));
        token.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_join_the_registries_never_confirm_is_answered_with_a_timeout() {
        let mut f = fixture();
        let a = f.client();
        execute(
            &f.hub,
            &f.link,
            Command {
                request_id: 5,
                op: Some(join(&a, "room")),
            },
        );
        let Some(Down::Reply(reply)) = f.down.recv().await else {
            panic!("no reply")
        };
        assert_eq!(reply.error_code, ErrorCode::Timeout.as_u32());
        assert!(a.lock().in_group("room"), "the join itself stands");
    }

    #[test]
    fn a_join_past_the_group_limit_is_refused_as_too_many_requests() {
        let mut f = fixture_with(|c| c.max_groups_per_conn = 1);
        let a = f.client();
        f.hub.index().join_group(&a, "one").unwrap();
        let message = f.refused(join(&a, "two"), ErrorCode::TooManyRequests);
        assert!(message.contains("at most 1 groups"), "{message}");
        assert_eq!(f.hub.index().group_count(), 1);
    }

    #[test]
    fn unbind_leave_and_ungroup_take_clients_out_of_the_indexes() {
        let mut f = fixture();
        let (a, b) = (f.client(), f.client());
        f.hub.index().bind_uid(&a, "ann");
        for conn in [&a, &b] {
            f.hub.index().join_group(conn, "x").unwrap();
            f.hub.index().join_group(conn, "y").unwrap();
        }
        f.ok(command::Op::UnbindUid(UnbindUid {
            conn: a.id(),
            uid: "ann".into(),
        }));
        assert_eq!(f.hub.index().uid_count(), 0);
        f.ok(command::Op::LeaveGroup(LeaveGroup {
            conn: a.id(),
            group: "x".into(),
        }));
        assert!(!a.lock().in_group("x"));
        assert!(b.lock().in_group("x"), "only that client left");
        f.ok(command::Op::Ungroup(Ungroup { group: "y".into() }));
        assert_eq!(f.hub.index().group_names(), ["x"]);
        f.refused(
            command::Op::Ungroup(Ungroup { group: String::new() }),
            ErrorCode::BadRequest,
        );
        f.refused(
            command::Op::LeaveGroup(LeaveGroup {
                conn: 999,
                group: "x".into(),
            }),
            ErrorCode::NotFound,
        );
    }

    // ------------------------------------------------------------------ sessions

    fn set_session(conn: &Conn, json: &str, merge: bool) -> command::Op {
        command::Op::SetSession(SetSession {
            conn: conn.id(),
            session: Bytes::copy_from_slice(json.as_bytes()),
            merge,
        })
    }

    #[test]
    fn a_session_is_replaced_or_merged_and_the_answer_says_after_which_event() {
        let mut f = fixture();
        let a = f.client();
        f.hub
            .dispatch(&a, gatehouse_proto::v1::event::Kind::Open(Default::default()));
        let set = f.ok(set_session(&a, r#"{"a":1,"b":1}"#, false)).unwrap();
        assert_eq!(set.session_after_seq, 1, "the open event went out without it");
        let merged = f.ok(set_session(&a, r#"{"b":2}"#, true)).unwrap();
        assert_eq!(&merged.session[..], br#"{"a":1,"b":2}"#);
        let replaced = f.ok(set_session(&a, r#"{"c":3}"#, false)).unwrap();
        assert_eq!(&replaced.session[..], br#"{"c":3}"#);
        assert_eq!(*a.lock().session(), replaced.session);
        let cleared = f.ok(set_session(&a, "{}", false)).unwrap();
        assert!(
            cleared.session.is_empty() && a.lock().session().is_empty(),
            "an empty session is none"
        );
    }

    #[test]
    fn a_session_that_is_not_an_object_or_too_large_is_refused_and_the_old_one_kept() {
        let mut f = fixture_with(|c| c.max_session_bytes = 16);
        let a = f.client();
        f.ok(set_session(&a, r#"{"k":"0123"}"#, false));
        f.refused(set_session(&a, "[1]", false), ErrorCode::BadRequest);
        f.refused(
            set_session(&a, r#"{"long":"0123456789"}"#, false),
            ErrorCode::BadRequest,
        );
        let message = f.refused(set_session(&a, r#"{"j":"0123"}"#, true), ErrorCode::BadRequest);
        assert!(message.contains("merged"), "{message}");
        assert_eq!(&a.lock().session()[..], br#"{"k":"0123"}"#);
    }

    // ------------------------------------------------------------------ closes and deadlines

    fn close(conn: &Conn, code: u32, destroy: bool, last: Option<Payload>) -> command::Op {
        command::Op::CloseConn(CloseConn {
            conn: conn.id(),
            last,
            destroy,
            code,
            reason: "done".into(),
        })
    }

    #[test]
    fn a_graceful_close_is_queued_after_the_frames_before_it_and_a_destroy_kills_at_once() {
        let mut f = fixture();
        let (a, b) = (f.client(), f.client());
        f.ok(to_conns(vec![a.id()], text("first")));
        f.ok(close(&a, 4000, false, text("last")));
        let mut items = queued(&a);
        assert!(matches!(items.pop_front(), Some(Outbound::Frame(_))));
        match items.pop_front() {
            Some(Outbound::Close { last: Some(_), close }) => assert_eq!(close.code, 4000),
            _ => panic!("no close after the frame"),
        }
        assert!(a.queue().kill_frame().is_none());
        f.ok(close(&b, 4001, true, None));
        assert_eq!(b.queue().kill_frame().map(|c| c.code), Some(4001));
    }

    #[test]
    fn a_graceful_close_on_a_full_queue_kills_instead_of_waiting_for_the_client() {
        let mut f = fixture_with(|c| c.send_queue = 1);
        let a = f.client();
        f.ok(to_conns(vec![a.id()], text("fills it")));
        f.ok(close(&a, 4000, false, None));
        assert_eq!(a.queue().kill_frame().map(|c| c.code), Some(4000));
    }

    #[test]
    fn a_close_with_a_reserved_code_is_refused() {
        let mut f = fixture();
        let a = f.client();
        f.refused(close(&a, 1005, false, None), ErrorCode::BadRequest);
        assert!(queued(&a).is_empty() && a.queue().kill_frame().is_none());
    }

    fn deadline(conn: &Conn, at_ms: u64, warn_before_ms: u64) -> command::Op {
        command::Op::SetDeadline(SetDeadline {
            conn: conn.id(),
            at_ms,
            warn_before_ms,
            warning: text("soon"),
            close_code: 4001,
            close_reason: "expired".into(),
        })
    }

    fn now_ms() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_travels_through_the_queue_with_its_warning_and_zero_clears_it() {
        let mut f = fixture();
        let a = f.client();
        f.ok(deadline(&a, now_ms() + 60_000, 10_000));
        f.ok(deadline(&a, 0, 0));
        let mut items = queued(&a);
        match items.pop_front() {
            Some(Outbound::Deadline(Some(d))) => {
                assert_eq!(d.close.code, 4001);
                let (warn_at, _) = d.warning.expect("a warning");
                let before = d.at - warn_at;
                assert!(
                    before <= Duration::from_secs(10) && before > Duration::from_secs(9),
                    "{before:?}"
                );
            }
            _ => panic!("no deadline"),
        }
        assert!(
            matches!(items.pop_front(), Some(Outbound::Deadline(None))),
            "then cleared"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_more_than_a_year_away_or_with_a_reserved_code_is_refused() {
        let mut f = fixture();
        let a = f.client();
        f.refused(
            deadline(&a, now_ms() + 367 * 24 * 3600 * 1000, 0),
            ErrorCode::BadRequest,
        );
        let mut reserved = SetDeadline {
            conn: a.id(),
            at_ms: now_ms() + 1000,
            close_code: 1006,
            ..Default::default()
        };
        f.refused(command::Op::SetDeadline(reserved.clone()), ErrorCode::BadRequest);
        reserved.close_code = 4001;
        f.ok(command::Op::SetDeadline(reserved));
        assert_eq!(queued(&a).len(), 1, "only the valid deadline");
    }

    // ------------------------------------------------------------------ queries

    #[test]
    fn a_query_counts_or_lists_the_matching_open_clients_with_the_key_that_matched() {
        let mut f = fixture();
        let (a, b, gone) = (f.client(), f.client(), f.client());
        f.hub.index().bind_uid(&a, "ann");
        f.hub.index().bind_uid(&b, "bob");
        f.hub.index().bind_uid(&gone, "ann");
        f.hub.retire(&gone, 1000, "bye");
        let uids = |items: &[&str]| {
            query::Selector::Uids(StringList {
                items: items.iter().map(|s| (*s).to_owned()).collect(),
            })
        };
        let count = f.ok(query(uids(&["ann", "bob"]), QueryOutput::Count)).unwrap();
        assert_eq!(
            (count.count, count.records.len()),
            (2, 0),
            "counts only; the closed one not"
        );
        let records = f.ok(query(uids(&["bob"]), QueryOutput::Records)).unwrap();
        assert_eq!(records.records.len(), 1);
        assert_eq!(
            (
                records.records[0].conn,
                records.records[0].uid.as_str(),
                records.records[0].matched.as_str()
            ),
            (b.id(), "bob", "bob")
        );
        let all = f
            .ok(query(query::Selector::All(QueryAll {}), QueryOutput::Count))
            .unwrap();
        assert_eq!(all.count, 2);
        let listed = f
            .ok(query(
                query::Selector::Conns(ConnList {
                    conns: vec![a.id(), gone.id(), 999],
                }),
                QueryOutput::Records,
            ))
            .unwrap();
        assert_eq!(listed.records.iter().map(|r| r.conn).collect::<Vec<_>>(), [a.id()]);
    }

    #[test]
    fn a_query_returns_sessions_only_when_asked_for_them() {
        let mut f = fixture();
        let a = f.client();
        f.ok(set_session(&a, r#"{"x":1}"#, false));
        let selector = || query::Selector::Conns(ConnList { conns: vec![a.id()] });
        let records = f.ok(query(selector(), QueryOutput::Records)).unwrap();
        assert!(records.records[0].session.is_empty());
        let sessions = f.ok(query(selector(), QueryOutput::Sessions)).unwrap();
        assert_eq!(&sessions.records[0].session[..], br#"{"x":1}"#);
    }

    #[test]
    fn a_query_answer_over_the_byte_budget_is_refused_with_advice() {
        let mut f = fixture_with(|c| c.max_query_result_bytes = 40);
        for _ in 0..4 {
            let conn = f.client();
            f.hub.index().join_group(&conn, "a-rather-long-group-name").unwrap();
        }
        let message = f.refused(
            query(query::Selector::All(QueryAll {}), QueryOutput::Records),
            ErrorCode::BadRequest,
        );
        assert!(message.contains("ask for counts"), "{message}");
        f.ok(query(query::Selector::All(QueryAll {}), QueryOutput::Count));
        for n in 0..4 {
            f.hub.index().join_group(&f.client(), &format!("group-{n}")).unwrap();
        }
        f.refused(
            query(query::Selector::GroupNames(QueryAll {}), QueryOutput::Records),
            ErrorCode::BadRequest,
        );
    }

    #[test]
    fn a_query_lists_the_group_names_held_here() {
        let mut f = fixture();
        let a = f.client();
        f.hub.index().join_group(&a, "room").unwrap();
        let names = f
            .ok(query(query::Selector::GroupNames(QueryAll {}), QueryOutput::Records))
            .unwrap();
        assert_eq!(names.group_names, ["room"]);
    }
}
