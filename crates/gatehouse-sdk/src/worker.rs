//! The [`Worker`] trait applications implement, and what its handlers receive.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use gatehouse_core::ClientId;
use gatehouse_proto::v1::Open;
use serde_json::Value;

use crate::cluster::{Cluster, Session, parse_session};
use crate::error::ApiError;
use crate::frame::Frame;

/// What a handler returns. Errors are logged with the client id; the event still counts as
/// handled (it is not re-delivered), so a handler that must retry does so itself.
pub type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Application logic, called by the [`WorkerRuntime`](crate::WorkerRuntime).
///
/// Handlers of one client run one at a time in event order (unless one lets the next start,
/// [`Context::release_order`]); handlers of different clients run concurrently, so a slow
/// handler stalls only its own client. Events are delivered at least
/// once: after a worker dies its unfinished events are handled again elsewhere, and a worker may
/// see a client's messages without having seen its handshake. Every method has a default that
/// does nothing except [`Worker::on_message`].
pub trait Worker: Send + Sync + 'static {
    /// Runs once when the worker starts, before any event.
    fn on_start(&self, cluster: &Cluster) -> impl Future<Output = ()> + Send {
        let _ = cluster;
        async {}
    }

    /// Runs once when the worker stops.
    fn on_stop(&self, cluster: &Cluster) -> impl Future<Output = ()> + Send {
        let _ = cluster;
        async {}
    }

    /// Decides whether a WebSocket handshake is accepted. The client is not connected until
    /// this returns `Ok`; a `Reject` becomes the HTTP status and body of the handshake response.
    /// Binding a uid ([`Context::bind_uid`]) or joining groups here is allowed and completes
    /// before the client's first message is read; `on_connect` gets the same context.
    fn on_handshake(&self, ctx: &Context, handshake: &Handshake) -> impl Future<Output = Result<(), Reject>> + Send {
        let _ = (ctx, handshake);
        async { Ok(()) }
    }

    /// Runs after an accepted handshake.
    fn on_connect(&self, ctx: &Context) -> impl Future<Output = HandlerResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Runs for every frame the client sends.
    fn on_message(&self, ctx: &Context, frame: Frame) -> impl Future<Output = HandlerResult> + Send;

    /// Runs when the connection is gone. Its uid, groups and session are already released on
    /// the gateway, but the context still has the uid and session it had, and `close` the
    /// groups it was in. Runs on whichever worker handles the client's events at that time.
    fn on_close(&self, ctx: &Context, close: &CloseInfo) -> impl Future<Output = HandlerResult> + Send {
        let _ = (ctx, close);
        async { Ok(()) }
    }
}

/// The client an event belongs to, what the gateway knew about it when it read the event (uid,
/// session), and the per-client operations: [`reply`](Context::reply),
/// [`bind_uid`](Context::bind_uid), [`join_group`](Context::join_group),
/// [`set_session`](Context::set_session), [`close`](Context::close), ... For everything else
/// (other clients, uids, groups, presence) there is [`Context::cluster`].
///
/// A context lives for one event. Its uid and session are those the gateway attached to the
/// event, updated by what this handler changes through the context, so `on_connect` sees what
/// `on_handshake` set. The session of a client this worker wrote is also what its next events
/// carry, even those the gateway had already read before the write (read-your-writes); a write
/// from another process shows from the next event the gateway reads after it.
pub struct Context {
    client: ClientId,
    /// The uid as of the event, updated by [`Context::bind_uid`] and [`Context::unbind_uid`] so
    /// that `on_connect` sees a uid bound in `on_handshake`.
    uid: RwLock<Option<Arc<str>>>,
    /// The session as of the event (its JSON, parsed on first use), updated by this context's
    /// writes.
    session: Mutex<SessionView>,
    cluster: Cluster,
    /// The handler's place in its client's order, to give up.
    order: Order,
}

/// A handler's place in its client's order: what [`Context::release_order`] gives up.
pub(crate) struct Order {
    link: Arc<crate::link::GatewayLink>,
    conn: u64,
    ticket: crate::handlers::Ticket,
    /// Given up already: a second call does nothing.
    released: std::sync::atomic::AtomicBool,
}

impl Order {
    pub(crate) fn new(link: Arc<crate::link::GatewayLink>, conn: u64, ticket: crate::handlers::Ticket) -> Order {
        Order {
            link,
            conn,
            ticket,
            released: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// A session as raw JSON and, once someone asked, parsed.
struct SessionView {
    raw: Bytes,
    parsed: Option<Session>,
}

impl Context {
    pub(crate) fn new(
        client: ClientId,
        uid: Option<Arc<str>>,
        session: Bytes,
        cluster: Cluster,
        order: Order,
    ) -> Context {
        Context {
            client,
            uid: RwLock::new(uid),
            session: Mutex::new(SessionView {
                raw: session,
                parsed: None,
            }),
            cluster,
            order,
        }
    }

    /// Lets the client's next events start before this handler ends: what a handler calls
    /// once it has done what later events of the client must see, and only waits (a receipt
    /// waiting for its commit round need not hold up the client's next message).
    ///
    /// Only the order is given up, not the guarantee: the event is still acknowledged to its
    /// gateway only after this handler returned, and the client's later events only after it
    /// (acknowledgements are cumulative per client). A worker that dies before leaves them all
    /// to be delivered again, and a transient failure of this handler gives back the later
    /// events too, even those that already ran. So the client's later events may run, and
    /// their effects show, before this one's: call it only where that is harmless (their
    /// handlers must not rely on this one's effects) and where running again is harmless
    /// (as for every handler). Called twice, it does nothing the second time.
    pub fn release_order(&self) {
        let order = &self.order;
        if !order.released.swap(true, std::sync::atomic::Ordering::Relaxed) {
            order.link.release_order(order.conn, order.ticket);
        }
    }

    /// The client's cluster-unique id.
    pub fn client_id(&self) -> ClientId {
        self.client
    }

    /// The uid the client is bound to: as of when the event was read, or as set through this
    /// context since. In `on_close`, the uid it had when the connection closed.
    pub fn uid(&self) -> Option<Arc<str>> {
        self.uid.read().expect("uid lock poisoned").clone()
    }

    /// The client's session (a JSON object; empty when none was set): the one that travelled
    /// with the event, no round trip. In `on_close`, the session it had when it closed.
    pub fn session(&self) -> Session {
        let mut view = self.session.lock().expect("session lock poisoned");
        let SessionView { raw, parsed } = &mut *view;
        parsed.get_or_insert_with(|| parse_session(raw)).clone()
    }

    /// One value of the client's session (see [`Context::session`]).
    pub fn session_value(&self, key: &str) -> Option<Value> {
        let mut view = self.session.lock().expect("session lock poisoned");
        let SessionView { raw, parsed } = &mut *view;
        parsed.get_or_insert_with(|| parse_session(raw)).get(key).cloned()
    }

    /// The cluster API, for what concerns other clients (sends to uids and groups, presence,
    /// lookups).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Sends a frame back to this client, after the frames already sent to it. Returns once
    /// queued (no round trip); errors as for [`Cluster::send_to_client`].
    pub async fn reply(&self, frame: Frame) -> Result<(), ApiError> {
        self.cluster.send_to_clients_now(&[self.client], &frame)
    }

    /// Binds this client to `uid` (see [`Cluster::bind_uid`]: returns once every sender would
    /// route to it) and remembers it in the context.
    pub async fn bind_uid(&self, uid: &str) -> Result<(), ApiError> {
        self.cluster.bind_uid(self.client, uid).await?;
        *self.uid.write().expect("uid lock poisoned") = Some(Arc::from(uid));
        Ok(())
    }

    /// Unbinds this client from `uid` (see [`Cluster::unbind_uid`]).
    pub async fn unbind_uid(&self, uid: &str) -> Result<(), ApiError> {
        self.cluster.unbind_uid(self.client, uid).await?;
        let mut current = self.uid.write().expect("uid lock poisoned");
        if current.as_deref() == Some(uid) {
            *current = None;
        }
        Ok(())
    }

    /// Adds this client to `group`; returns once every sender would reach it there (see
    /// [`Cluster::join_group`]).
    pub async fn join_group(&self, group: &str) -> Result<(), ApiError> {
        self.cluster.join_group(self.client, group).await
    }

    /// Takes this client out of `group` (see [`Cluster::leave_group`]).
    pub async fn leave_group(&self, group: &str) -> Result<(), ApiError> {
        self.cluster.leave_group(self.client, group).await
    }

    /// Replaces this client's session on its gateway (at most the gateway's
    /// `--max-session-bytes` of JSON, else `bad_request`). Its later events carry it, and so
    /// does [`Context::session`] from now on.
    pub async fn set_session(&self, session: &Session) -> Result<(), ApiError> {
        let stored = self.cluster.write_session(self.client, session, false).await?;
        self.remember(stored);
        Ok(())
    }

    /// Merges `update`'s top-level keys into this client's session (see
    /// [`Context::set_session`]).
    pub async fn update_session(&self, update: &Session) -> Result<(), ApiError> {
        let stored = self.cluster.write_session(self.client, update, true).await?;
        self.remember(stored);
        Ok(())
    }

    fn remember(&self, stored: Bytes) {
        *self.session.lock().expect("session lock poisoned") = SessionView {
            raw: stored,
            parsed: None,
        };
    }

    /// Sets or clears this client's deadline (see [`Cluster::set_deadline`]).
    pub async fn set_deadline(&self, deadline: Option<crate::cluster::Deadline>) -> Result<(), ApiError> {
        self.cluster.set_deadline(self.client, deadline).await
    }

    /// Closes this client, after what is already queued for it, with a close code and reason
    /// (see [`Cluster::close_client_with`]).
    pub async fn close(&self, code: u16, reason: &str) -> Result<(), ApiError> {
        self.cluster.close_client_with(self.client, code, reason, None).await
    }
}

/// A handshake refusal: the HTTP status (4xx or 5xx) and a reason for the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status code.
    pub status: u16,
    /// Response body.
    pub reason: String,
}

impl Reject {
    /// Builds a refusal.
    pub fn new(status: u16, reason: impl Into<String>) -> Reject {
        Reject {
            status,
            reason: reason.into(),
        }
    }
}

/// The WebSocket handshake request of a new client.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Request path (`/ws`).
    pub path: String,
    /// Raw query string, without `?`.
    pub query: String,
    /// Request headers (names lowercase).
    pub headers: Vec<(String, Bytes)>,
    /// The client's address as the gateway saw it.
    pub remote_addr: Option<SocketAddr>,
    /// The gateway runs in insecure development mode (`--insecure-dev-auth`): an application
    /// may accept a bare identity without a token. Always false in production.
    pub insecure_dev: bool,
}

impl Handshake {
    pub(crate) fn from_open(open: Open) -> Handshake {
        Handshake {
            path: open.path,
            query: open.query,
            headers: open.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            remote_addr: open.remote_addr.parse().ok(),
            insecure_dev: open.insecure_dev,
        }
    }

    /// The first value of a header, if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The decoded query parameters, in order.
    pub fn query_params(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes()).into_owned().collect()
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The cookies of every `Cookie` header.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                Some((name.trim().to_owned(), value.trim().to_owned()))
            })
            .collect()
    }
}

/// How a connection ended, and the groups it was in.
///
/// The gateway has already released the client's uid, groups and session when `on_close` runs
/// (sends to them no longer reach it), but the close event carries what they were, so whichever
/// worker handles it can say "X left room R": the uid is [`Context::uid`], the session
/// [`Context::session`], and the groups are here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// WebSocket close code (1000 normal, 1001 going away, 1006 lost, 1009 too big, ...).
    pub code: u16,
    /// Reason text.
    pub reason: String,
    /// The groups the client was in when it closed (in no particular order).
    pub groups: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_parses_query_headers_and_cookies() {
        let handshake = Handshake {
            path: "/ws".into(),
            query: "uid=ann%20b&x=1".into(),
            headers: vec![
                ("cookie".into(), Bytes::from_static(b"a=1; b = two")),
                ("authorization".into(), Bytes::from_static(b"Bearer t")),
            ],
            remote_addr: None,
            insecure_dev: false,
        };
        assert_eq!(handshake.query_param("uid").as_deref(), Some("ann b"));
        assert_eq!(handshake.header("Authorization"), Some("Bearer t"));
        assert_eq!(
            handshake.cookies(),
            vec![("a".into(), "1".into()), ("b".into(), "two".into())]
        );
    }
}
