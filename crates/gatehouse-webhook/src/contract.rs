//! The JSON contract with the backend (docs/webhook.md): how an event is written into a
//! request body, and how one event's result in the response is read, bounded and turned into
//! typed [`Command`]s. Nothing here does I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use gatehouse_sdk::cluster::Session;
use gatehouse_sdk::{ClientId, CloseInfo, Frame, Handshake};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::WebhookConfig;

/// The kind of an event, as the backend sees it in `"type"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `handshake`: accept or reject the client.
    Handshake,
    /// `connect`: the client is connected.
    Connect,
    /// `message`: a frame from the client.
    Message,
    /// `close`: the connection is gone.
    Close,
}

impl Kind {
    /// The name in `"type"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Handshake => "handshake",
            Kind::Connect => "connect",
            Kind::Message => "message",
            Kind::Close => "close",
        }
    }
}

/// One event of a request body. Optional fields are left out when they do not apply.
#[derive(Serialize)]
struct EventOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    client: ClientId,
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    /// A binary frame, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    binary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<Vec<(&'a str, std::borrow::Cow<'a, str>)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insecure_dev: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> EventOut<'a> {
    fn new(kind: Kind, client: ClientId, uid: Option<&'a str>) -> EventOut<'a> {
        EventOut {
            kind: kind.as_str(),
            client,
            uid,
            text: None,
            binary: None,
            path: None,
            query: None,
            headers: None,
            remote_addr: None,
            insecure_dev: None,
            code: None,
            reason: None,
        }
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialise")
    }
}

/// Writes a `handshake` event.
pub fn handshake(client: ClientId, uid: Option<&str>, handshake: &Handshake) -> Vec<u8> {
    let headers = handshake
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value)))
        .collect();
    EventOut {
        path: Some(&handshake.path),
        query: Some(&handshake.query),
        headers: Some(headers),
        remote_addr: handshake.remote_addr.map(|a| a.to_string()),
        insecure_dev: Some(handshake.insecure_dev),
        ..EventOut::new(Kind::Handshake, client, uid)
    }
    .encode()
}

/// Writes a `connect` event.
pub fn connect(client: ClientId, uid: Option<&str>) -> Vec<u8> {
    EventOut::new(Kind::Connect, client, uid).encode()
}

/// Writes a `message` event: a text frame as `"text"`, a binary one as base64 `"binary"`.
pub fn message(client: ClientId, uid: Option<&str>, frame: &Frame) -> Vec<u8> {
    let mut event = EventOut::new(Kind::Message, client, uid);
    match frame.as_text() {
        Some(text) => event.text = Some(text),
        None => event.binary = Some(BASE64.encode(frame.data())),
    }
    event.encode()
}

/// Writes a `close` event.
pub fn close(client: ClientId, uid: Option<&str>, info: &CloseInfo) -> Vec<u8> {
    EventOut {
        code: Some(info.code),
        reason: Some(&info.reason),
        ..EventOut::new(Kind::Close, client, uid)
    }
    .encode()
}

/// The request body of a batch: `{"v":1,"events":[…]}` around already encoded events.
pub fn batch_body<'a>(events: impl ExactSizeIterator<Item = &'a [u8]>, bytes: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes + events.len() + 24);
    body.extend_from_slice(b"{\"v\":1,\"events\":[");
    for (i, event) in events.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    body
}

/// Why a response as a whole is not usable (the batch is retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not a JSON object with a `results` array.
    #[error("response is not {{\"results\": [...]}}: {0}")]
    Malformed(String),
    /// `results` does not hold one entry per event.
    #[error("response has {got} results for {want} events")]
    Count {
        /// Results in the response.
        got: usize,
        /// Events in the request.
        want: usize,
    },
}

#[derive(Deserialize)]
struct ResponseIn {
    results: Vec<Value>,
}

/// Splits a response body into one raw result per event, in request order.
pub fn split_response(body: &[u8], events: usize) -> Result<Vec<Value>, ResponseError> {
    let response: ResponseIn = serde_json::from_slice(body).map_err(|e| ResponseError::Malformed(e.to_string()))?;
    if response.results.len() != events {
        return Err(ResponseError::Count {
            got: response.results.len(),
            want: events,
        });
    }
    Ok(response.results)
}

/// Why one event's result is refused. No command of a refused result runs; the event is
/// acknowledged, counted (`gatehouse_webhook_invalid_results_total`) and logged with
/// [`ContractError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// Not an object of the documented shape (a wrong type, an unknown field).
    #[error("malformed result: {0}")]
    Malformed(String),
    /// A `cmd` this worker does not know.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A field the command needs is missing, or one it does not take is present.
    #[error("{cmd}: {problem}")]
    Fields {
        /// The command.
        cmd: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// More commands than `max_commands`.
    #[error("{count} commands, at most {limit}")]
    TooManyCommands {
        /// Commands in the result.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A list of targets or exclusions longer than `max_targets`.
    #[error("{count} targets, at most {limit}")]
    TooManyTargets {
        /// Entries in the list.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A frame larger than `max_frame_bytes`.
    #[error("frame of {bytes} bytes, at most {limit}")]
    FrameTooLarge {
        /// The frame's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Not exactly one of `text`, `json`, `binary`, or bad base64.
    #[error("frame: {0}")]
    BadFrame(&'static str),
    /// A uid or group name the cluster refuses (empty, too long, control characters).
    #[error("{0}")]
    BadKey(String),
    /// A close code or reason an application may not send.
    #[error("{0}")]
    BadClose(String),
    /// `reject` on an event that is not a handshake, or a status that is not 4xx/5xx.
    #[error("reject: {0}")]
    BadReject(&'static str),
}

impl ContractError {
    /// The stable code logged and documented for this error.
    pub fn code(&self) -> &'static str {
        match self {
            ContractError::Malformed(_) => "malformed",
            ContractError::UnknownCommand(_) => "unknown_command",
            ContractError::Fields { .. } => "bad_fields",
            ContractError::TooManyCommands { .. } => "too_many_commands",
            ContractError::TooManyTargets { .. } => "too_many_targets",
            ContractError::FrameTooLarge { .. } => "frame_too_large",
            ContractError::BadFrame(_) => "bad_frame",
            ContractError::BadKey(_) => "bad_key",
            ContractError::BadClose(_) => "bad_close",
            ContractError::BadReject(_) => "bad_reject",
        }
    }
}

/// One command, validated: every name checked, every list and frame within its limit.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send a frame to the event's client.
    Reply(Frame),
    /// Send a frame to clients by id.
    SendToClients {
        /// The clients.
        clients: Vec<ClientId>,
        /// The frame.
        frame: Frame,
    },
    /// Send a frame to every connection of some uids, except some clients.
    SendToUids {
        /// The uids.
        uids: Vec<String>,
        /// Clients left out.
        exclude: Vec<ClientId>,
        /// The frame.
        frame: Frame,
    },
    /// Send a frame to every member of some groups (once per client), except some clients.
    SendToGroups {
        /// The groups.
        groups: Vec<String>,
        /// Clients left out.
        exclude: Vec<ClientId>,
        /// The frame.
        frame: Frame,
    },
    /// Send a frame to every client, except some.
    SendToAll {
        /// Clients left out.
        exclude: Vec<ClientId>,
        /// The frame.
        frame: Frame,
    },
    /// Bind a client (the event's by default) to a uid.
    BindUid {
        /// The client.
        client: Option<ClientId>,
        /// The uid.
        uid: String,
    },
    /// Unbind a client from a uid.
    UnbindUid {
        /// The client.
        client: Option<ClientId>,
        /// The uid.
        uid: String,
    },
    /// Add a client to a group.
    JoinGroup {
        /// The client.
        client: Option<ClientId>,
        /// The group.
        group: String,
    },
    /// Remove a client from a group.
    LeaveGroup {
        /// The client.
        client: Option<ClientId>,
        /// The group.
        group: String,
    },
    /// Dissolve a group: every member leaves it.
    Ungroup {
        /// The group.
        group: String,
    },
    /// Replace a client's session.
    SetSession {
        /// The client.
        client: Option<ClientId>,
        /// The new session.
        session: Session,
    },
    /// Merge keys into a client's session.
    UpdateSession {
        /// The client.
        client: Option<ClientId>,
        /// The keys to set.
        session: Session,
    },
    /// Close a client after what is queued for it (with an optional last frame).
    Close {
        /// The client.
        client: Option<ClientId>,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
        /// A last frame sent before the close.
        last: Option<Frame>,
    },
    /// Drop a client's connection at once.
    Destroy {
        /// The client.
        client: Option<ClientId>,
    },
}

/// One event's result, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventResult {
    /// A handshake refused: HTTP status and body.
    pub reject: Option<(u16, String)>,
    /// The backend asks for the event again later (its own transient failure).
    pub retry: bool,
    /// What to do, in order.
    pub commands: Vec<Command>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultIn {
    #[serde(default)]
    commands: Vec<Value>,
    #[serde(default)]
    reject: Option<RejectIn>,
    #[serde(default)]
    retry: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectIn {
    status: u16,
    #[serde(default)]
    reason: String,
}

/// Every field any command takes; each command checks it got what it needs and nothing else.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommandIn {
    cmd: String,
    client: Option<ClientId>,
    clients: Option<Vec<ClientId>>,
    uid: Option<String>,
    uids: Option<Vec<String>>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    exclude: Option<Vec<ClientId>>,
    text: Option<String>,
    json: Option<Value>,
    binary: Option<String>,
    session: Option<Session>,
    code: Option<u16>,
    reason: Option<String>,
}

/// Reads and validates one event's result (`null` counts as an empty result).
pub fn parse_result(raw: Value, kind: Kind, config: &WebhookConfig) -> Result<EventResult, ContractError> {
    if raw.is_null() {
        return Ok(EventResult::default());
    }
    let result: ResultIn = serde_json::from_value(raw).map_err(|e| ContractError::Malformed(e.to_string()))?;
    if result.commands.len() > config.max_commands {
        return Err(ContractError::TooManyCommands {
            count: result.commands.len(),
            limit: config.max_commands,
        });
    }
    let reject = match result.reject {
        None => None,
        Some(_) if kind != Kind::Handshake => return Err(ContractError::BadReject("only a handshake can be rejected")),
        Some(reject) if !(400..=599).contains(&reject.status) => {
            return Err(ContractError::BadReject("the status must be 4xx or 5xx"));
        }
        Some(reject) if reject.reason.len() > 1024 => {
            return Err(ContractError::BadReject("the reason is at most 1 KiB"));
        }
        Some(reject) => Some((reject.status, reject.reason)),
    };
    let commands = result
        .commands
        .into_iter()
        .map(|raw| parse_command(raw, config))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EventResult {
        reject,
        retry: result.retry,
        commands,
    })
}

fn parse_command(raw: Value, config: &WebhookConfig) -> Result<Command, ContractError> {
    let mut input: CommandIn = serde_json::from_value(raw).map_err(|e| ContractError::Malformed(e.to_string()))?;
    let limits = Limits(config);
    let command = match input.cmd.as_str() {
        "reply" => Command::Reply(limits.frame("reply", &mut input)?),
        "send_to_client" => Command::SendToClients {
            clients: limits.list(
                "send_to_client",
                input.client.take(),
                input.clients.take(),
                "needs client or clients",
            )?,
            frame: limits.frame("send_to_client", &mut input)?,
        },
        "send_to_uid" => Command::SendToUids {
            uids: limits.keys("uid", input.uid.take(), input.uids.take(), "send_to_uid")?,
            exclude: limits.exclude(input.exclude.take())?,
            frame: limits.frame("send_to_uid", &mut input)?,
        },
        "send_to_group" => Command::SendToGroups {
            groups: limits.keys("group", input.group.take(), input.groups.take(), "send_to_group")?,
            exclude: limits.exclude(input.exclude.take())?,
            frame: limits.frame("send_to_group", &mut input)?,
        },
        "send_to_all" => Command::SendToAll {
            exclude: limits.exclude(input.exclude.take())?,
            frame: limits.frame("send_to_all", &mut input)?,
        },
        "bind_uid" => Command::BindUid {
            client: input.client.take(),
            uid: key("uid", input.uid.take(), "bind_uid")?,
        },
        "unbind_uid" => Command::UnbindUid {
            client: input.client.take(),
            uid: key("uid", input.uid.take(), "unbind_uid")?,
        },
        "join_group" => Command::JoinGroup {
            client: input.client.take(),
            group: key("group", input.group.take(), "join_group")?,
        },
        "leave_group" => Command::LeaveGroup {
            client: input.client.take(),
            group: key("group", input.group.take(), "leave_group")?,
        },
        "ungroup" => Command::Ungroup {
            group: key("group", input.group.take(), "ungroup")?,
        },
        "set_session" | "update_session" => {
            let cmd = if input.cmd == "set_session" {
                "set_session"
            } else {
                "update_session"
            };
            let session = input.session.take().ok_or(ContractError::Fields {
                cmd,
                problem: "needs a session object",
            })?;
            let client = input.client.take();
            if cmd == "set_session" {
                Command::SetSession { client, session }
            } else {
                Command::UpdateSession { client, session }
            }
        }
        "close" => {
            let reason = input.reason.take().unwrap_or_default();
            let code = gatehouse_core::limits::check_close(u32::from(input.code.take().unwrap_or(1000)), &reason)
                .map_err(|e| ContractError::BadClose(e.to_string()))?;
            let has_frame = input.text.is_some() || input.json.is_some() || input.binary.is_some();
            Command::Close {
                client: input.client.take(),
                code,
                reason,
                last: if has_frame {
                    Some(limits.frame("close", &mut input)?)
                } else {
                    None
                },
            }
        }
        "destroy" => Command::Destroy {
            client: input.client.take(),
        },
        other => return Err(ContractError::UnknownCommand(other.to_owned())),
    };
    no_leftovers(&input, command.name())?;
    Ok(command)
}

impl Command {
    /// The command's name (its `cmd`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Reply(_) => "reply",
            Command::SendToClients { .. } => "send_to_client",
            Command::SendToUids { .. } => "send_to_uid",
            Command::SendToGroups { .. } => "send_to_group",
            Command::SendToAll { .. } => "send_to_all",
            Command::BindUid { .. } => "bind_uid",
            Command::UnbindUid { .. } => "unbind_uid",
            Command::JoinGroup { .. } => "join_group",
            Command::LeaveGroup { .. } => "leave_group",
            Command::Ungroup { .. } => "ungroup",
            Command::SetSession { .. } => "set_session",
            Command::UpdateSession { .. } => "update_session",
            Command::Close { .. } => "close",
            Command::Destroy { .. } => "destroy",
        }
    }
}

/// Refuses a field the command did not take (each parser takes what it uses).
fn no_leftovers(input: &CommandIn, cmd: &'static str) -> Result<(), ContractError> {
    let leftover = input.client.is_some()
        || input.clients.is_some()
        || input.uid.is_some()
        || input.uids.is_some()
        || input.group.is_some()
        || input.groups.is_some()
        || input.exclude.is_some()
        || input.text.is_some()
        || input.json.is_some()
        || input.binary.is_some()
        || input.session.is_some()
        || input.code.is_some()
        || input.reason.is_some();
    if leftover {
        return Err(ContractError::Fields {
            cmd,
            problem: "has a field this command does not take",
        });
    }
    Ok(())
}

fn key(what: &'static str, value: Option<String>, cmd: &'static str) -> Result<String, ContractError> {
    let value = value.ok_or(ContractError::Fields {
        cmd,
        problem: if what == "uid" { "needs a uid" } else { "needs a group" },
    })?;
    gatehouse_core::limits::check_key(what, &value).map_err(|e| ContractError::BadKey(e.to_string()))?;
    Ok(value)
}

struct Limits<'a>(&'a WebhookConfig);

impl Limits<'_> {
    /// Takes exactly one of `text`, `json`, `binary` as a frame within the size limit.
    fn frame(&self, cmd: &'static str, input: &mut CommandIn) -> Result<Frame, ContractError> {
        let frame = match (input.text.take(), input.json.take(), input.binary.take()) {
            (Some(text), None, None) => Frame::text(text),
            (None, Some(json), None) => Frame::json(&json),
            (None, None, Some(binary)) => Frame::binary(
                BASE64
                    .decode(binary.as_bytes())
                    .map_err(|_| ContractError::BadFrame("binary is not base64"))?,
            ),
            (None, None, None) => {
                return Err(ContractError::Fields {
                    cmd,
                    problem: "needs a frame: text, json or binary",
                });
            }
            _ => return Err(ContractError::BadFrame("give exactly one of text, json, binary")),
        };
        if frame.data().len() > self.0.max_frame_bytes {
            return Err(ContractError::FrameTooLarge {
                bytes: frame.data().len(),
                limit: self.0.max_frame_bytes,
            });
        }
        Ok(frame)
    }

    /// One value or a list of them (not both, not neither), within the target limit.
    fn list<T>(
        &self,
        cmd: &'static str,
        one: Option<T>,
        many: Option<Vec<T>>,
        missing: &'static str,
    ) -> Result<Vec<T>, ContractError> {
        let list = match (one, many) {
            (Some(one), None) => vec![one],
            (None, Some(many)) => many,
            (None, None) => {
                return Err(ContractError::Fields { cmd, problem: missing });
            }
            (Some(_), Some(_)) => {
                return Err(ContractError::Fields {
                    cmd,
                    problem: "give one of the singular and the plural field, not both",
                });
            }
        };
        self.bounded(list.len())?;
        Ok(list)
    }

    /// Checked uids or groups from the singular or the plural field.
    fn keys(
        &self,
        what: &'static str,
        one: Option<String>,
        many: Option<Vec<String>>,
        cmd: &'static str,
    ) -> Result<Vec<String>, ContractError> {
        let missing = if what == "uid" {
            "needs uid or uids"
        } else {
            "needs group or groups"
        };
        let list = self.list(cmd, one, many, missing)?;
        for key in &list {
            gatehouse_core::limits::check_key(what, key).map_err(|e| ContractError::BadKey(e.to_string()))?;
        }
        Ok(list)
    }

    fn exclude(&self, exclude: Option<Vec<ClientId>>) -> Result<Vec<ClientId>, ContractError> {
        let exclude = exclude.unwrap_or_default();
        self.bounded(exclude.len())?;
        Ok(exclude)
    }

    fn bounded(&self, count: usize) -> Result<(), ContractError> {
        if count > self.0.max_targets {
            return Err(ContractError::TooManyTargets {
                count,
                limit: self.0.max_targets,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> WebhookConfig {
        let mut config = WebhookConfig::new("http://127.0.0.1:1/", vec![b'k'; 32]).unwrap();
        config.max_commands = 3;
        config.max_targets = 2;
        config.max_frame_bytes = 8;
        config
    }

    fn parse(kind: Kind, raw: Value) -> Result<EventResult, ContractError> {
        parse_result(raw, kind, &config())
    }

    const CLIENT: &str = "00000000000000070000000000000001";

    #[test]
    fn events_are_written_with_their_kind_client_and_payload() {
        let client: ClientId = CLIENT.parse().unwrap();
        let text: Value = serde_json::from_slice(&message(client, Some("ann"), &Frame::text("hi"))).unwrap();
        assert_eq!(
            text,
            json!({"type": "message", "client": CLIENT, "uid": "ann", "text": "hi"})
        );
        let binary: Value = serde_json::from_slice(&message(client, None, &Frame::binary(vec![0u8, 255]))).unwrap();
        assert_eq!(
            binary,
            json!({"type": "message", "client": CLIENT, "uid": null, "binary": "AP8="})
        );
        let closed: Value = serde_json::from_slice(&close(
            client,
            None,
            &CloseInfo {
                code: 1001,
                reason: "bye".into(),
                groups: Vec::new(),
            },
        ))
        .unwrap();
        assert_eq!(closed["code"], 1001);
        let events = [connect(client, None), connect(client, None)];
        let body = batch_body(events.iter().map(Vec::as_slice), 100);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["v"], 1);
        assert_eq!(body["events"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_response_needs_one_result_per_event() {
        assert_eq!(split_response(br#"{"results":[null,{}]}"#, 2).unwrap().len(), 2);
        assert_eq!(
            split_response(br#"{"results":[{}]}"#, 2),
            Err(ResponseError::Count { got: 1, want: 2 })
        );
        assert!(matches!(split_response(b"<html>", 1), Err(ResponseError::Malformed(_))));
    }

    #[test]
    fn commands_parse_into_their_typed_form() {
        let result = parse(
            Kind::Message,
            json!({"commands": [
                {"cmd": "reply", "text": "hi"},
                {"cmd": "send_to_group", "group": "room", "exclude": [CLIENT], "json": {"a": 1}},
                {"cmd": "close", "code": 4000, "reason": "bye"},
            ]}),
        )
        .unwrap();
        let client: ClientId = CLIENT.parse().unwrap();
        assert_eq!(
            result.commands,
            vec![
                Command::Reply(Frame::text("hi")),
                Command::SendToGroups {
                    groups: vec!["room".into()],
                    exclude: vec![client],
                    frame: Frame::text("{\"a\":1}"),
                },
                Command::Close {
                    client: None,
                    code: 4000,
                    reason: "bye".into(),
                    last: None
                },
            ]
        );
        assert_eq!(parse(Kind::Close, Value::Null), Ok(EventResult::default()));
    }

    #[test]
    fn every_bound_and_shape_error_is_typed() {
        let code = |raw: Value| parse(Kind::Message, raw).unwrap_err().code();
        assert_eq!(code(json!({"commands": [{"cmd": "launch"}]})), "unknown_command");
        assert_eq!(code(json!({"commands": [{"cmd": "reply"}]})), "bad_fields");
        assert_eq!(
            code(json!({"commands": [{"cmd": "reply", "text": "a", "uid": "x"}]})),
            "bad_fields"
        );
        assert_eq!(
            code(json!({"commands": [{"cmd": "reply", "text": "a", "json": 1}]})),
            "bad_frame"
        );
        assert_eq!(
            code(json!({"commands": [{"cmd": "reply", "binary": "%%"}]})),
            "bad_frame"
        );
        assert_eq!(
            code(json!({"commands": [{"cmd": "reply", "text": "123456789"}]})),
            "frame_too_large"
        );
        assert_eq!(
            code(json!({"commands": [{"cmd": "send_to_uid", "uids": ["a", "b", "c"], "text": "x"}]})),
            "too_many_targets"
        );
        assert_eq!(code(json!({"commands": [{"cmd": "bind_uid", "uid": ""}]})), "bad_key");
        assert_eq!(code(json!({"commands": [{"cmd": "close", "code": 1006}]})), "bad_close");
        assert_eq!(code(json!({"commands": [{}, {}, {}, {}]})), "too_many_commands");
        assert_eq!(code(json!({"reject": {"status": 403}})), "bad_reject");
        assert_eq!(code(json!({"commnds": []})), "malformed");
        assert_eq!(code(json!([1])), "malformed");
        assert_eq!(
            parse(Kind::Handshake, json!({"reject": {"status": 200}}))
                .unwrap_err()
                .code(),
            "bad_reject"
        );
        assert_eq!(
            parse(Kind::Handshake, json!({"reject": {"status": 401, "reason": "no"}}))
                .unwrap()
                .reject,
            Some((401, "no".into()))
        );
    }
}
