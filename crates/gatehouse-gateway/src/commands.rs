//! Execution of worker commands against this gateway's hub.
//!
//! Commands of one link run in the order they arrive, on the link's reader task, and never
//! await: deliveries are `try_send`s into bounded client queues, and the only command that must
//! wait (a bind or join awaiting the registries) hands its reply to a small task of its own.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use gatehouse_core::ClientId;
use gatehouse_core::limits::check_key;
use gatehouse_proto::ErrorCode;
use gatehouse_proto::v1::{Command, ConnRecord, Payload, Query, QueryOutput, QueryResult, Reply, command, query};

use crate::events::{Down, WorkerLink};
use crate::hub::{Conn, Hub, Outbound};
use crate::stats::Stats;

/// A command failure reported back to the caller.
struct Failure(ErrorCode, String);

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure(code, message.into())
    }
}

type Outcome = Result<Option<QueryResult>, Failure>;

impl Hub {
    /// Executes one command from `link`, replying when the caller asked for it.
    pub(crate) fn execute(&self, link: &Arc<WorkerLink>, command: Command) {
        Stats::inc(&self.stats.commands);
        let request_id = command.request_id;
        let Some(op) = command.op else {
            self.reply(
                link,
                request_id,
                Err(Failure::new(ErrorCode::BadRequest, "empty command")),
            );
            return;
        };
        let outcome = match op {
            command::Op::SendToConns(send) => self.frame(send.payload).map(|frame| {
                for id in send.conns {
                    if let Some(conn) = self.live_conn(id) {
                        self.push(&conn, &frame);
                    }
                }
                None
            }),
            command::Op::SendToUids(send) => self.frame(send.payload).map(|frame| {
                for uid in &send.uids {
                    if let Some(members) = self.uids.get(uid) {
                        for conn in &members.conns {
                            if !send.exclude.contains(&conn.id) {
                                self.push(conn, &frame);
                            }
                        }
                    }
                }
                None
            }),
            command::Op::SendToGroups(send) => self.frame(send.payload).map(|frame| {
                let exclude: HashSet<u64> = send.exclude.into_iter().collect();
                let mut seen: HashSet<u64> = HashSet::new();
                let dedupe = send.groups.len() > 1;
                for group in &send.groups {
                    if let Some(members) = self.groups.get(group) {
                        for conn in &members.conns {
                            if exclude.contains(&conn.id) || (dedupe && !seen.insert(conn.id)) {
                                continue;
                            }
                            self.push(conn, &frame);
                        }
                    }
                }
                None
            }),
            command::Op::SendToAll(send) => self.frame(send.payload).map(|frame| {
                let exclude: HashSet<u64> = send.exclude.into_iter().collect();
                for conn in self.conns.iter() {
                    if !exclude.contains(conn.key()) && !conn.closed.load(std::sync::atomic::Ordering::Acquire) {
                        self.push(&conn, &frame);
                    }
                }
                None
            }),
            command::Op::BindUid(bind) => match self.checked(bind.conn, "uid", &bind.uid) {
                Ok(conn) => {
                    let generation = self.bind_uid(&conn, &bind.uid);
                    self.reply_when_confirmed(link, request_id, generation);
                    return;
                }
                Err(failure) => Err(failure),
            },
            command::Op::UnbindUid(unbind) => self.checked(unbind.conn, "uid", &unbind.uid).map(|conn| {
                self.unbind_uid(&conn, &unbind.uid);
                None
            }),
            command::Op::JoinGroup(join) => match self.checked(join.conn, "group", &join.group) {
                Ok(conn) => {
                    let generation = self.join_group(&conn, &join.group);
                    self.reply_when_confirmed(link, request_id, generation);
                    return;
                }
                Err(failure) => Err(failure),
            },
            command::Op::LeaveGroup(leave) => self.checked(leave.conn, "group", &leave.group).map(|conn| {
                self.leave_group(&conn, &leave.group);
                None
            }),
            command::Op::Ungroup(ungroup) => {
                self.ungroup(&ungroup.group);
                Ok(None)
            }
            command::Op::SetSession(set) => self.set_session(set.conn, set.session, set.merge),
            command::Op::CloseConn(close) => self.close_conn(close.conn, close.last, close.destroy),
            command::Op::Query(query) => Ok(Some(self.query(query))),
        };
        self.reply(link, request_id, outcome);
    }

    fn reply(&self, link: &WorkerLink, request_id: u64, outcome: Outcome) {
        if request_id == 0 {
            if let Err(Failure(code, message)) = outcome {
                tracing::debug!(%code, %message, "command without reply failed");
            }
            return;
        }
        let reply = match outcome {
            Ok(result) => Reply {
                request_id,
                error_code: 0,
                error_message: String::new(),
                result,
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

    /// Replies once every attached registry confirmed `generation` (a bind or join).
    fn reply_when_confirmed(&self, link: &Arc<WorkerLink>, request_id: u64, generation: u64) {
        let routes = self.routes.clone();
        let timeout = self.config.bind_timeout;
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

    fn frame(&self, payload: Option<Payload>) -> Result<Message, Failure> {
        let payload = payload.ok_or_else(|| Failure::new(ErrorCode::BadRequest, "send without payload"))?;
        if payload.binary {
            return Ok(Message::Binary(payload.data));
        }
        Utf8Bytes::try_from(payload.data)
            .map(Message::Text)
            .map_err(|_| Failure::new(ErrorCode::BadRequest, "text payload is not valid utf-8"))
    }

    fn checked(&self, conn: u64, what: &'static str, key: &str) -> Result<Arc<Conn>, Failure> {
        check_key(what, key).map_err(|e| Failure::new(ErrorCode::BadRequest, e.to_string()))?;
        self.live_conn(conn).ok_or_else(|| self.not_found(conn))
    }

    fn not_found(&self, conn: u64) -> Failure {
        Failure::new(
            ErrorCode::NotFound,
            format!("client {} is not connected", ClientId::new(self.id, conn)),
        )
    }

    fn set_session(&self, conn_id: u64, session: Bytes, merge: bool) -> Outcome {
        let conn = self.live_conn(conn_id).ok_or_else(|| self.not_found(conn_id))?;
        let update: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&session)
            .map_err(|_| Failure::new(ErrorCode::BadRequest, "a session must be a json object"))?;
        let mut inner = conn.inner.lock().expect("conn mutex poisoned");
        let merged = if merge && !inner.session.is_empty() {
            let mut current: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&inner.session).unwrap_or_default();
            current.extend(update);
            current
        } else {
            update
        };
        inner.session = Bytes::from(serde_json::to_vec(&merged).expect("json map serialises"));
        Ok(None)
    }

    fn close_conn(&self, conn_id: u64, last: Option<Payload>, destroy: bool) -> Outcome {
        let conn = self.live_conn(conn_id).ok_or_else(|| self.not_found(conn_id))?;
        if destroy {
            self.kill(&conn, 1000);
            return Ok(None);
        }
        let last = last.map(|p| self.frame(Some(p))).transpose()?;
        if conn.queue.push(Outbound::Close { last }).is_err() {
            // The queue is full: draining would wait on a slow client; close now instead.
            self.kill(&conn, 1000);
        }
        Ok(None)
    }

    fn query(&self, query: Query) -> QueryResult {
        let output = QueryOutput::try_from(query.output).unwrap_or(QueryOutput::Records);
        let mut result = QueryResult::default();
        let mut matched: Vec<(u64, String)> = Vec::new();
        match query.selector {
            Some(query::Selector::GroupNames(_)) => {
                result.group_names = self.groups.iter().map(|g| g.key().clone()).collect();
                return result;
            }
            Some(query::Selector::Conns(list)) => {
                matched.extend(list.conns.into_iter().map(|id| (id, String::new())));
            }
            Some(query::Selector::Uids(list)) => {
                for uid in list.items {
                    if let Some(members) = self.uids.get(&uid) {
                        matched.extend(members.conns.iter().map(|c| (c.id, uid.clone())));
                    }
                }
            }
            Some(query::Selector::Groups(list)) => {
                for group in list.items {
                    if let Some(members) = self.groups.get(&group) {
                        matched.extend(members.conns.iter().map(|c| (c.id, group.clone())));
                    }
                }
            }
            Some(query::Selector::All(_)) | None => {
                matched.extend(self.conns.iter().map(|c| (*c.key(), String::new())));
            }
        }
        for (id, matched_key) in matched {
            let Some(conn) = self.live_conn(id) else {
                continue;
            };
            result.count += 1;
            if output == QueryOutput::Count {
                continue;
            }
            let inner = conn.inner.lock().expect("conn mutex poisoned");
            result.records.push(ConnRecord {
                conn: id,
                uid: inner.uid.clone().unwrap_or_default(),
                matched: matched_key,
                session: if output == QueryOutput::Sessions {
                    inner.session.clone()
                } else {
                    Bytes::new()
                },
            });
        }
        result
    }
}
