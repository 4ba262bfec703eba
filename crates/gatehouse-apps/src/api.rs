//! `api`: every cluster API call, reachable by a WebSocket client as a JSON request.
//!
//! Request: `{"id": N, "op": "<name>", ...arguments}`. Answer: `{"id": N, "ok": true,
//! "result": …}` or `{"id": N, "ok": false, "error": {"code": "…", "message": "…"}}`.
//! On connect the client receives `{"event": "hello", "client": "<client id>"}`; a handshake
//! with `?uid=U` binds U before the connection opens, `?reject=STATUS` is refused with that
//! status. Binary frames are echoed.
//!
//! Client ids default to the caller's own; `data` is the text frame to deliver. This app lets
//! any client act on any other: it exists for end-to-end tests and diagnostics, never for
//! untrusted clients.

use gatehouse_sdk::cluster::Session;
use gatehouse_sdk::{ApiError, ClientId, Context, Deadline, Frame, HandlerResult, Handshake, Reject, Worker};
use serde::Deserialize;
use serde_json::{Value, json};

/// The api app.
pub struct Api;

#[derive(Deserialize)]
struct Request {
    op: String,
    #[serde(default)]
    client: Option<ClientId>,
    #[serde(default)]
    clients: Vec<ClientId>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    uids: Vec<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    exclude: Vec<ClientId>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    session: Option<Session>,
    /// Close code (close_client_with, set_deadline).
    #[serde(default)]
    code: Option<u16>,
    /// Close reason (close_client_with, set_deadline).
    #[serde(default)]
    reason: Option<String>,
    /// Deadline from now, in milliseconds (set_deadline; absent clears it).
    #[serde(default)]
    in_ms: Option<u64>,
    /// How long before the deadline `data` is sent as a warning (set_deadline).
    #[serde(default)]
    warn_before_ms: Option<u64>,
    /// A worker's member id (fail_on_worker).
    #[serde(default)]
    worker: Option<String>,
}

/// Why a request could not be executed.
enum Failure {
    Api(ApiError),
    Usage(String),
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        Failure::Api(error)
    }
}

fn need<T>(value: Option<T>, what: &str) -> Result<T, Failure> {
    value.ok_or_else(|| Failure::Usage(format!("missing field {what}")))
}

impl Api {
    async fn execute(&self, ctx: &Context, request: &Request) -> Result<Value, Failure> {
        let cluster = ctx.cluster();
        let me = ctx.client_id();
        let client = request.client.unwrap_or(me);
        let frame = || need(request.data.clone(), "data").map(Frame::text);
        let uid = || need(request.uid.as_deref(), "uid");
        let group = || need(request.group.as_deref(), "group");
        let value = match request.op.as_str() {
            "whoami" => json!({"client": me, "uid": ctx.uid().as_deref(), "worker": cluster.member_id().to_string()}),
            "fail_on_worker" => json!({"worker": cluster.member_id().to_string()}),
            "send_to_client" => json!(cluster.send_to_client(client, &frame()?).await?),
            "send_to_clients" => json!(cluster.send_to_clients(&request.clients, &frame()?).await?),
            "send_to_uid" => json!(cluster.send_to_uid(uid()?, &frame()?, &request.exclude).await?),
            "send_to_uids" => json!(cluster.send_to_uids(&request.uids, &frame()?, &request.exclude).await?),
            "send_to_group" => json!(cluster.send_to_group(group()?, &frame()?, &request.exclude).await?),
            "send_to_groups" => json!(
                cluster
                    .send_to_groups(&request.groups, &frame()?, &request.exclude)
                    .await?
            ),
            "send_to_all" => json!(cluster.send_to_all(&frame()?, &request.exclude).await?),
            "bind_uid" => json!(cluster.bind_uid(client, uid()?).await?),
            "unbind_uid" => json!(cluster.unbind_uid(client, uid()?).await?),
            "join_group" => json!(cluster.join_group(client, group()?).await?),
            "leave_group" => json!(cluster.leave_group(client, group()?).await?),
            "ungroup" => json!(cluster.ungroup(group()?).await?),
            "set_session" => json!(
                cluster
                    .set_session(client, &need(request.session.clone(), "session")?)
                    .await?
            ),
            "update_session" => json!(
                cluster
                    .update_session(client, &need(request.session.clone(), "session")?)
                    .await?
            ),
            "get_session" => json!(cluster.get_session(client).await?),
            "is_online" => json!(cluster.is_online(client).await?),
            "is_uid_online" => json!(cluster.is_uid_online(uid()?).await?),
            "online_uids" => json!(sorted(cluster.online_uids(&request.uids).await?)),
            "client_ids_by_uid" => json!(cluster.client_ids_by_uid(uid()?).await?),
            "client_ids_by_uids" => json!(cluster.client_ids_by_uids(&request.uids).await?),
            "uid_of" => json!(cluster.uid_of(client).await?),
            "all_client_ids" => json!(cluster.all_client_ids().await?),
            "all_client_count" => json!(cluster.all_client_count().await?),
            "all_uids" => json!(cluster.all_uids().await?),
            "all_uid_count" => json!(cluster.all_uid_count().await?),
            "all_groups" => json!(cluster.all_groups().await?),
            "group_client_ids" => json!(cluster.group_client_ids(group()?).await?),
            "group_client_count" => json!(cluster.group_client_count(group()?).await?),
            "group_client_counts" => json!(cluster.group_client_counts(&request.groups).await?),
            "group_uids" => json!(cluster.group_uids(group()?).await?),
            "group_uid_count" => json!(cluster.group_uid_count(group()?).await?),
            "all_sessions" => json!(stringify_keys(cluster.all_sessions().await?)),
            "group_sessions" => json!(stringify_keys(cluster.group_sessions(group()?).await?)),
            "close_client" => json!(
                cluster
                    .close_client(client, request.data.clone().map(Frame::text).as_ref())
                    .await?
            ),
            "destroy_client" => json!(cluster.destroy_client(client).await?),
            "close_client_with" => json!(
                cluster
                    .close_client_with(
                        client,
                        request.code.unwrap_or(1000),
                        request.reason.as_deref().unwrap_or_default(),
                        request.data.clone().map(Frame::text).as_ref(),
                    )
                    .await?
            ),
            "set_deadline" => {
                let deadline = request.in_ms.map(|in_ms| Deadline {
                    at: std::time::SystemTime::now() + std::time::Duration::from_millis(in_ms),
                    warning: request.data.clone().map(|text| {
                        (
                            std::time::Duration::from_millis(request.warn_before_ms.unwrap_or(0)),
                            Frame::text(text),
                        )
                    }),
                    close_code: request.code.unwrap_or(1000),
                    close_reason: request.reason.clone().unwrap_or_default(),
                });
                json!(cluster.set_deadline(client, deadline).await?)
            }
            other => return Err(Failure::Usage(format!("unknown op {other}"))),
        };
        Ok(value)
    }
}

fn sorted(set: std::collections::HashSet<String>) -> Vec<String> {
    let mut list: Vec<String> = set.into_iter().collect();
    list.sort();
    list
}

fn stringify_keys(map: std::collections::HashMap<ClientId, Session>) -> serde_json::Map<String, Value> {
    map.into_iter()
        .map(|(k, v)| (k.to_string(), Value::Object(v)))
        .collect()
}

impl Worker for Api {
    async fn on_handshake(&self, ctx: &Context, handshake: &Handshake) -> Result<(), Reject> {
        if let Some(status) = handshake.query_param("reject") {
            return Err(Reject::new(status.parse().unwrap_or(403), "rejected on request"));
        }
        if let Some(uid) = handshake.query_param("uid") {
            ctx.bind_uid(&uid)
                .await
                .map_err(|e| Reject::new(e.code.http_status().as_u16(), e.to_string()))?;
        }
        Ok(())
    }

    async fn on_connect(&self, ctx: &Context) -> HandlerResult {
        ctx.reply(Frame::json(&json!({"event": "hello", "client": ctx.client_id()})))
            .await?;
        Ok(())
    }

    async fn on_message(&self, ctx: &Context, frame: Frame) -> HandlerResult {
        let Some(text) = frame.as_text() else {
            ctx.reply(frame).await?;
            return Ok(());
        };
        // The id is read first so that a request with a malformed field still gets its answer.
        let (id, parsed) = match serde_json::from_str::<Value>(text) {
            Ok(value) => (
                value.get("id").cloned().unwrap_or(Value::Null),
                serde_json::from_value::<Request>(value),
            ),
            Err(error) => (Value::Null, Err(error)),
        };
        // `fail_on_worker`: the named worker's handler fails with a transient cluster error, so
        // the event goes back to its gateway and is handled by another worker (tests of that).
        if let Ok(request) = &parsed
            && request.op == "fail_on_worker"
            && request.worker.as_deref() == Some(ctx.cluster().member_id().to_string().as_str())
        {
            return Err(Box::new(ApiError::new(
                gatehouse_sdk::ErrorCode::Unavailable,
                "fail_on_worker: this worker was asked to fail",
            )));
        }
        let outcome = match parsed {
            Ok(request) => self.execute(ctx, &request).await,
            Err(error) => Err(Failure::Usage(error.to_string())),
        };
        let answer = match outcome {
            Ok(result) => json!({"id": id, "ok": true, "result": result}),
            Err(Failure::Api(error)) => {
                json!({"id": id, "ok": false, "error": {"code": error.code.as_str(), "message": error.message}})
            }
            Err(Failure::Usage(message)) => {
                json!({"id": id, "ok": false, "error": {"code": "bad_request", "message": message}})
            }
        };
        ctx.reply(Frame::json(&answer)).await?;
        Ok(())
    }
}
