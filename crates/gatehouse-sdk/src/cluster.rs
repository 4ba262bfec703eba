//! [`Cluster`]: the API handle to every client of the cluster.
//!
//! One handle per process, cheap to clone. Workers get theirs from the runtime; any other
//! process (a web backend, a script) builds one with [`Cluster::connect`]. Under the hood it
//! attaches to every registry (membership and the routing table) and keeps one stream to every
//! gateway. Sends to a client go straight to the gateway its id names; sends to uids and groups
//! go to exactly the gateways the replicated table lists, with no lookup on the way.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use gatehouse_core::attach::{self, AttachConfig, RegistryPeer, RegistrySender};
use gatehouse_core::limits::{check_close, check_key};
use gatehouse_core::{ClientId, Credentials, NodeId};
use gatehouse_proto::ErrorCode;
use gatehouse_proto::v1::{
    AttachRequest, BindUid, CloseConn, Command, ConnList, JoinGroup, LeaveGroup, Member, MemberKind, Query, QueryAll,
    QueryOutput, QueryResult, RouteAck, RouteKind, SendToAll, SendToConns, SendToGroups, SendToUids, SetDeadline,
    SetSession, StringList, UnbindUid, Ungroup, attach_request, attach_response, command, query,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::frame::Frame;
use crate::link::{EventSink, GatewayLink, LinkIdentity};
use crate::routes::{MAX_REGISTRIES, RouteTable};

/// A JSON object: the shape of a client session.
pub type Session = Map<String, Value>;

/// A deadline the gateway enforces on one connection — for example the expiry of the token the
/// client signed in with. The gateway holds it with the connection, so it fires even if the
/// worker that set it is gone.
#[derive(Debug, Clone)]
pub struct Deadline {
    /// When the gateway closes the connection.
    pub at: SystemTime,
    /// A frame the gateway sends this long before `at` (for example "your token expires").
    pub warning: Option<(Duration, Frame)>,
    /// The close code sent at `at`: 1000, 1001, 1008, 1011-1013 or 3000-4999.
    pub close_code: u16,
    /// The close reason, at most 123 bytes.
    pub close_reason: String,
}

/// How a process joins the cluster as a worker or API client.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Registry addresses; the process attaches to all of them.
    pub registries: Vec<String>,
    /// How this process proves it belongs to the cluster: the shared secret, a certificate
    /// from the cluster CA (mutual TLS), or both ([`Credentials`]; a [`gatehouse_core::ClusterSecret`]
    /// converts into it).
    pub credentials: Credentials,
    /// The app name: a worker announces it to the gateways, which give it only clients of that
    /// app (`--app` on the gateway, or the `/ws/<app>` path); for an API client, a label for
    /// logs.
    pub name: String,
    /// Deadline of one query or bind.
    pub request_timeout: Duration,
    /// How long the first calls wait for the routing table before falling back to asking every
    /// gateway.
    pub ready_timeout: Duration,
    /// Upper bound of the registry reconnect back-off.
    pub registry_backoff: Duration,
}

impl ClusterConfig {
    /// Returns a configuration with production defaults.
    pub fn new(registries: Vec<String>, credentials: impl Into<Credentials>, name: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            registries,
            credentials: credentials.into(),
            name: name.into(),
            request_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(10),
            registry_backoff: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<(), ApiError> {
        if self.registries.is_empty() {
            return Err(ApiError::bad_request("no registry address given"));
        }
        if self.registries.len() > MAX_REGISTRIES {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_REGISTRIES} registries are supported"
            )));
        }
        Ok(())
    }
}

/// The cluster API. Clone it freely; all clones share one set of connections.
///
/// # Guarantees
/// - **Sends** ([`send_to_client`](Cluster::send_to_client), `send_to_uid(s)`,
///   `send_to_group(s)`, `send_to_all`) return once the frame is queued towards the gateways
///   concerned: no round trip. Frames from one process to one client arrive in the order they
///   were sent; a client in several targeted groups or uids gets one copy. Every fan-out send
///   takes `exclude`, the clients that must not get it.
/// - **Binds and joins** ([`bind_uid`](Cluster::bind_uid), [`join_group`](Cluster::join_group))
///   return once every worker and API client would route a send to the client: a send issued
///   afterwards, from anywhere, reaches it.
/// - **Queries** ask only the gateways concerned, in parallel, within
///   [`ClusterConfig::request_timeout`]; presence of uids ([`online_uids`](Cluster::online_uids))
///   is answered from this process's routing table without a round trip.
///
/// # Errors
/// Every call returns an [`ApiError`] whose [`ErrorCode`] says what to do:
/// - `bad_request`: the call itself is wrong (a uid or group name that is empty, longer than
///   256 bytes or has control characters; a frame over the gateway's limit; a bad close code;
///   a session that is not a JSON object or too large). Checked before anything is sent where
///   possible; retrying does not help.
/// - `not_found`: a client id that names a gateway not in the cluster (the client is gone).
/// - `unavailable`: a gateway is unreachable or left (sends fail at once after a second of
///   unreachability instead of queueing). Transient: a handler that returns it gives its event
///   back to be handled again.
/// - `timeout`: no answer within the request timeout (also transient).
/// - `too_many_requests`: the queue towards a gateway is full (it is not reading).
///
/// A fan-out send tries every gateway concerned: one that fails never costs the others their
/// copy, and the error names the ones that failed.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// What every clone of a [`Cluster`] shares; also the registry sessions' callback target.
struct Inner {
    /// This process's member id, announced to registries and gateways.
    id: NodeId,
    /// Registries, credentials and timeouts, as given.
    config: ClusterConfig,
    /// Which gateways hold which uids and groups, merged from every registry: sends go only
    /// where the keys are (or everywhere while it is not trusted).
    routes: RouteTable,
    /// One link per known gateway, by gateway id: sends and requests queue on them without a
    /// lock across gateways.
    links: DashMap<u64, Arc<GatewayLink>>,
    /// Per registry: the gateways (id → address) of its last membership message.
    memberships: Mutex<Vec<Option<HashMap<u64, String>>>>,
    /// Per registry: its session's outbound queue while connected, for route acknowledgements.
    registry_out: Mutex<Vec<Option<RegistrySender>>>,
    /// Runs the handlers of events (workers only); set once, before any link exists.
    sink: OnceLock<Arc<dyn EventSink>>,
    /// How new links introduce themselves to their gateway.
    identity: LinkIdentity,
    /// The worker is stopping: links (also ones made from now on) say so to their gateways.
    draining: std::sync::atomic::AtomicBool,
    /// The worker stopped handling events: links (also ones made from now on) give them back.
    closing: std::sync::atomic::AtomicBool,
    /// Ends the registry sessions and every link (links hold child tokens).
    token: CancellationToken,
}

impl Cluster {
    /// Joins the cluster as an API client (no events) and waits until it can route.
    pub async fn connect(config: ClusterConfig, token: CancellationToken) -> Result<Cluster, ApiError> {
        let cluster = Cluster::start(config, MemberKind::Client, None, token)?;
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    pub(crate) fn start(
        config: ClusterConfig,
        kind: MemberKind,
        sink: Option<Arc<dyn EventSink>>,
        token: CancellationToken,
    ) -> Result<Cluster, ApiError> {
        config.validate()?;
        let id = NodeId::random();
        let registries = config.registries.len();
        let inner = Arc::new(Inner {
            id,
            routes: RouteTable::new(registries),
            links: DashMap::new(),
            memberships: Mutex::new(vec![None; registries]),
            registry_out: Mutex::new(vec![None; registries]),
            sink: OnceLock::new(),
            identity: LinkIdentity {
                member: id,
                name: config.name.clone(),
                app: if kind == MemberKind::Worker {
                    config.name.clone()
                } else {
                    String::new()
                },
                credentials: config.credentials.clone(),
            },
            draining: std::sync::atomic::AtomicBool::new(false),
            closing: std::sync::atomic::AtomicBool::new(false),
            token,
            config,
        });
        if let Some(sink) = sink {
            let _ = inner.sink.set(sink);
        }
        attach::spawn(
            AttachConfig {
                registries: inner.config.registries.clone(),
                credentials: inner.config.credentials.clone(),
                member: Member {
                    kind: kind as i32,
                    id: id.0,
                    addr: String::new(),
                    name: inner.config.name.clone(),
                },
                subscribe_routes: true,
                max_backoff: inner.config.registry_backoff,
                lease: None,
            },
            inner.clone(),
            inner.token.clone(),
        );
        Ok(Cluster { inner })
    }

    /// This process's member id.
    pub fn member_id(&self) -> NodeId {
        self.inner.id
    }

    /// Tells every gateway (also ones that appear later) that this worker is stopping.
    pub(crate) fn begin_drain(&self) {
        self.inner.draining.store(true, std::sync::atomic::Ordering::Release);
        for link in self.inner.links.iter() {
            link.begin_drain();
        }
    }

    /// Waits until every link has answered every event it received and sent the answers.
    pub(crate) async fn drained(&self) {
        loop {
            if self.inner.links.iter().all(|l| l.is_idle()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Makes every link give back the events that still arrive (a gateway may have sent them
    /// before it learnt of the drain) and waits, at most `timeout`, for the handlers that were
    /// running to end. Afterwards no handler runs, so closing the links cannot strand a send
    /// queued behind the close of another link while its event was acknowledged.
    pub(crate) async fn stop_handling(&self, timeout: Duration) -> bool {
        self.inner.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.inner.links.iter() {
            link.stop_handling();
        }
        tokio::time::timeout(timeout, self.drained()).await.is_ok()
    }

    /// Ends every link's outbound stream after what is queued (bounded), so that the last
    /// answers reach the gateways before the links go.
    pub(crate) async fn finish_links(&self) {
        let links: Vec<Arc<GatewayLink>> = self.inner.links.iter().map(|l| l.clone()).collect();
        futures_util::future::join_all(links.iter().map(|l| l.finish())).await;
    }

    /// Whether the routing table is trusted and every known gateway is linked right now.
    pub fn is_ready(&self) -> bool {
        self.inner.routes.is_trusted()
            && self
                .inner
                .links
                .iter()
                .all(|l| l.connected.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The number of gateways this process links to.
    pub fn gateway_count(&self) -> usize {
        self.inner.links.len()
    }

    /// Whether every known gateway (at least one) is linked: the process can serve, even
    /// while its routing table is not trusted yet (uid and group sends then go to every
    /// gateway).
    pub fn is_linked(&self) -> bool {
        !self.inner.links.is_empty()
            && self
                .inner
                .links
                .iter()
                .all(|l| l.connected.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Whether uid and group sends go by the routing table (rather than to every gateway).
    pub fn is_routing_trusted(&self) -> bool {
        self.inner.routes.is_trusted()
    }

    /// Waits until the routing table is complete and every known gateway is linked, or the
    /// ready timeout passes (then calls fall back to asking every gateway).
    pub async fn wait_ready(&self) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.ready_timeout;
        let mut trust = self.inner.routes.trust();
        if tokio::time::timeout_at(deadline, trust.wait_for(|t| *t)).await.is_err() {
            return Err(ApiError::unavailable(
                "no registry delivered a complete routing table in time",
            ));
        }
        while !self
            .inner
            .links
            .iter()
            .all(|l| l.connected.load(std::sync::atomic::Ordering::Acquire))
        {
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::unavailable("some gateways are not reachable"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ sends
    //
    // A send does all its work synchronously; only the first calls of a process may wait for the
    // routing table, and that wait is boxed. So each of these futures is little more than its
    // arguments: a handler's future, allocated with every event, stays small.

    /// Sends a frame to one client, straight to the gateway its id names.
    ///
    /// Returns once the frame is queued towards that gateway (no round trip). Frames sent to one
    /// client from one process arrive in the order they were sent. Errors: `not_found` when the
    /// id names a gateway that is not in the cluster, `bad_request` for a frame over the
    /// gateway's limit, `unavailable` or `too_many_requests` when the gateway is unreachable or
    /// not reading.
    pub async fn send_to_client(&self, client: ClientId, frame: &Frame) -> Result<(), ApiError> {
        self.send_to_clients_now(&[client], frame)
    }

    /// Sends a frame to each of `clients` (one command per gateway). The clients are named one
    /// by one, so there is nothing to exclude; the errors are those of
    /// [`Cluster::send_to_client`], naming every gateway that could not take its part.
    pub async fn send_to_clients(&self, clients: &[ClientId], frame: &Frame) -> Result<(), ApiError> {
        self.send_to_clients_now(clients, frame)
    }

    /// Sends a frame to every connection bound to `uid`, on whichever gateway, except the
    /// `exclude`d clients (for example the device that sent the message: `&[ctx.client_id()]`;
    /// `&[]` excludes nobody).
    ///
    /// Only the gateways that hold the uid get the command; a uid with no connection costs
    /// nothing. See [`Cluster::send_to_uids`] for the errors.
    pub async fn send_to_uid(&self, uid: &str, frame: &Frame, exclude: &[ClientId]) -> Result<(), ApiError> {
        let trusted = self.routable().await;
        self.send_to_uids_now(&[uid], frame, exclude, trusted)
    }

    /// Sends a frame once to every connection of each of `uids`, except the `exclude`d clients.
    ///
    /// Every gateway concerned is tried: one that cannot take the frame never costs the others
    /// their copy, and the error names the ones that failed. Errors: `bad_request` for an
    /// invalid uid (1–256 bytes, no control characters), a frame over a gateway's limit or too
    /// many exclusions; `unavailable` or `too_many_requests` when a gateway is unreachable or not
    /// reading.
    pub async fn send_to_uids<S: AsRef<str>>(
        &self,
        uids: &[S],
        frame: &Frame,
        exclude: &[ClientId],
    ) -> Result<(), ApiError> {
        let trusted = self.routable().await;
        self.send_to_uids_now(uids, frame, exclude, trusted)
    }

    /// Sends a frame to every member of `group` except the `exclude`d clients. Errors as for
    /// [`Cluster::send_to_uids`].
    pub async fn send_to_group(&self, group: &str, frame: &Frame, exclude: &[ClientId]) -> Result<(), ApiError> {
        let trusted = self.routable().await;
        self.send_to_groups_now(&[group], frame, exclude, trusted)
    }

    /// Sends a frame once to every member of any of `groups` (a client in two of them gets one
    /// copy), except the `exclude`d clients. Errors as for [`Cluster::send_to_uids`].
    pub async fn send_to_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
        frame: &Frame,
        exclude: &[ClientId],
    ) -> Result<(), ApiError> {
        let trusted = self.routable().await;
        self.send_to_groups_now(groups, frame, exclude, trusted)
    }

    /// Sends a frame to every client of the cluster except the `exclude`d ones.
    ///
    /// Every gateway is tried; if some cannot take the frame, the error names them (the others
    /// got it).
    pub async fn send_to_all(&self, frame: &Frame, exclude: &[ClientId]) -> Result<(), ApiError> {
        self.routable().await;
        let mut failures = Failures::default();
        for link in self.inner.links.iter() {
            let result = checked_frame(&link, frame).and_then(|()| {
                link.send(op(command::Op::SendToAll(SendToAll {
                    exclude: excluded_on(&link, exclude)?,
                    payload: Some(frame.to_payload()),
                })))
            });
            failures.record(link.gateway, result);
        }
        failures.into_result()
    }

    /// [`Cluster::send_to_clients`] without a future (also for [`crate::Context::reply`]).
    pub(crate) fn send_to_clients_now(&self, clients: &[ClientId], frame: &Frame) -> Result<(), ApiError> {
        let send = |gateway: NodeId, conns: &[u64]| {
            let link = self.link_of(gateway)?;
            checked_frame(&link, frame)?;
            for chunk in conns.chunks(link.max_command_keys()) {
                link.send(op(command::Op::SendToConns(SendToConns {
                    conns: chunk.to_vec(),
                    payload: Some(frame.to_payload()),
                })))?;
            }
            Ok(())
        };
        if let [client] = clients {
            // The common case, a reply to one client: no map.
            return send(client.gateway, &[client.conn]);
        }
        let mut failures = Failures::default();
        for (gateway, conns) in by_gateway(clients) {
            failures.record(gateway, send(gateway, &conns));
        }
        failures.into_result()
    }

    fn send_to_uids_now<S: AsRef<str>>(
        &self,
        uids: &[S],
        frame: &Frame,
        exclude: &[ClientId],
        trusted: bool,
    ) -> Result<(), ApiError> {
        self.for_each_target(RouteKind::Uid, uids, trusted, |link, uids| {
            checked_frame(link, frame)?;
            link.send(op(command::Op::SendToUids(SendToUids {
                uids,
                payload: Some(frame.to_payload()),
                exclude: excluded_on(link, exclude)?,
            })))
        })
    }

    fn send_to_groups_now<S: AsRef<str>>(
        &self,
        groups: &[S],
        frame: &Frame,
        exclude: &[ClientId],
        trusted: bool,
    ) -> Result<(), ApiError> {
        self.for_each_target(RouteKind::Group, groups, trusted, |link, groups| {
            checked_frame(link, frame)?;
            link.send(op(command::Op::SendToGroups(SendToGroups {
                groups,
                exclude: excluded_on(link, exclude)?,
                payload: Some(frame.to_payload()),
            })))
        })
    }

    // ------------------------------------------------------------------ uids and groups

    /// Binds a client to a uid (a client has at most one uid; a uid many clients). Returns once
    /// every worker and API client would route a send to `uid` to this client.
    pub async fn bind_uid(&self, client: ClientId, uid: &str) -> Result<(), ApiError> {
        self.key_command(client, "uid", uid, |conn, uid| {
            command::Op::BindUid(BindUid { conn, uid })
        })
        .await
    }

    /// Unbinds a client from a uid (a no-op if it is bound to another).
    pub async fn unbind_uid(&self, client: ClientId, uid: &str) -> Result<(), ApiError> {
        self.key_command(client, "uid", uid, |conn, uid| {
            command::Op::UnbindUid(UnbindUid { conn, uid })
        })
        .await
    }

    /// Adds a client to a group; returns once every sender would reach it (like `bind_uid`).
    pub async fn join_group(&self, client: ClientId, group: &str) -> Result<(), ApiError> {
        self.key_command(client, "group", group, |conn, group| {
            command::Op::JoinGroup(JoinGroup { conn, group })
        })
        .await
    }

    /// Removes a client from a group.
    pub async fn leave_group(&self, client: ClientId, group: &str) -> Result<(), ApiError> {
        self.key_command(client, "group", group, |conn, group| {
            command::Op::LeaveGroup(LeaveGroup { conn, group })
        })
        .await
    }

    /// Checks `key` and sends the command `op` builds for the client's gateway, waiting for its
    /// answer.
    async fn key_command(
        &self,
        client: ClientId,
        what: &'static str,
        key: &str,
        op: impl FnOnce(u64, String) -> command::Op,
    ) -> Result<(), ApiError> {
        check_key(what, key)?;
        self.request(client.gateway, self::op(op(client.conn, key.to_owned())))
            .await
            .map(drop)
    }

    /// Dissolves a group on every gateway that has members of it.
    pub async fn ungroup(&self, group: &str) -> Result<(), ApiError> {
        check_key("group", group)?;
        let trusted = self.routable().await;
        let mut targets = Vec::new();
        self.for_each_target(RouteKind::Group, &[group], trusted, |link, _| {
            targets.push(link.clone());
            Ok(())
        })?;
        let requests = targets.into_iter().map(|link| {
            let command = op(command::Op::Ungroup(Ungroup {
                group: group.to_owned(),
            }));
            let timeout = self.inner.config.request_timeout;
            async move { link.request(command, timeout).await }
        });
        futures_util::future::try_join_all(requests).await.map(drop)
    }

    // ------------------------------------------------------------------ sessions

    /// Replaces a client's session.
    pub async fn set_session(&self, client: ClientId, session: &Session) -> Result<(), ApiError> {
        self.write_session(client, session, false).await.map(drop)
    }

    /// Merges `update`'s top-level keys into a client's session.
    pub async fn update_session(&self, client: ClientId, update: &Session) -> Result<(), ApiError> {
        self.write_session(client, update, true).await.map(drop)
    }

    /// Writes a session and returns it as stored. A worker remembers it for the client's
    /// events the gateway read before the write, so that those carry it too.
    pub(crate) async fn write_session(
        &self,
        client: ClientId,
        session: &Session,
        merge: bool,
    ) -> Result<bytes::Bytes, ApiError> {
        let bytes = serde_json::to_vec(session).expect("json maps serialise");
        let command = op(command::Op::SetSession(SetSession {
            conn: client.conn,
            session: bytes.into(),
            merge,
        }));
        let result = self.request(client.gateway, command).await?;
        if self.inner.sink.get().is_some()
            && let Ok(link) = self.link_of(client.gateway)
        {
            link.sessions
                .remember(client.conn, result.session_after_seq, result.session.clone());
        }
        Ok(result.session)
    }

    /// Returns a client's session (`None` if the client is not connected).
    pub async fn get_session(&self, client: ClientId) -> Result<Option<Session>, ApiError> {
        let result = self.query_client(client, QueryOutput::Sessions).await?;
        Ok(result.records.first().map(|r| parse_session(&r.session)))
    }

    /// Returns the session of every client of the cluster.
    pub async fn all_sessions(&self) -> Result<HashMap<ClientId, Session>, ApiError> {
        let results = self.query_all(selector_all(), QueryOutput::Sessions).await?;
        Ok(records(&results)
            .map(|(client, r)| (client, parse_session(&r.session)))
            .collect())
    }

    /// Returns the session of every member of a group.
    pub async fn group_sessions(&self, group: &str) -> Result<HashMap<ClientId, Session>, ApiError> {
        let results = self
            .query_keys(RouteKind::Group, &[group], QueryOutput::Sessions)
            .await?;
        Ok(records(&results)
            .map(|(client, r)| (client, parse_session(&r.session)))
            .collect())
    }

    // ------------------------------------------------------------------ presence and lookups

    /// Whether a client is connected.
    pub async fn is_online(&self, client: ClientId) -> Result<bool, ApiError> {
        Ok(self.query_client(client, QueryOutput::Count).await?.count > 0)
    }

    /// Whether any connection is bound to `uid` (see [`Cluster::online_uids`]).
    pub async fn is_uid_online(&self, uid: &str) -> Result<bool, ApiError> {
        Ok(!self.online_uids(&[uid]).await?.is_empty())
    }

    /// Which of `uids` have at least one connection.
    ///
    /// Answered from this process's routing table, without a round trip, whenever the table is
    /// trusted: a uid is online while some gateway announces it. A uid whose last connection
    /// just closed may still count as online for as long as the gateway's announcement takes
    /// to arrive (milliseconds), or, if its gateway died, until that gateway's lease expires.
    /// While the table is not trusted (a registry warming up), the gateways are asked.
    pub async fn online_uids<S: AsRef<str>>(&self, uids: &[S]) -> Result<HashSet<String>, ApiError> {
        for uid in uids {
            check_key("uid", uid.as_ref())?;
        }
        if self.inner.routes.is_trusted() {
            return Ok(uids
                .iter()
                .map(AsRef::as_ref)
                .filter(|uid| self.inner.routes.holds(RouteKind::Uid, uid))
                .map(str::to_owned)
                .collect());
        }
        Ok(self.client_ids_by_uids(uids).await?.into_keys().collect())
    }

    /// The clients bound to `uid`.
    pub async fn client_ids_by_uid(&self, uid: &str) -> Result<Vec<ClientId>, ApiError> {
        Ok(self.client_ids_by_uids(&[uid]).await?.remove(uid).unwrap_or_default())
    }

    /// The clients bound to each uid; uids with none are absent from the map. Like every
    /// query, it answers for the gateways that can be reached: one that is gone or stopping
    /// (but still listed until its lease ends) counts as holding nothing.
    pub async fn client_ids_by_uids<S: AsRef<str>>(
        &self,
        uids: &[S],
    ) -> Result<HashMap<String, Vec<ClientId>>, ApiError> {
        let results = self.query_keys(RouteKind::Uid, uids, QueryOutput::Records).await?;
        let mut map: HashMap<String, Vec<ClientId>> = HashMap::new();
        for (client, record) in records(&results) {
            map.entry(record.matched.clone()).or_default().push(client);
        }
        Ok(map)
    }

    /// The uid a client is bound to.
    pub async fn uid_of(&self, client: ClientId) -> Result<Option<String>, ApiError> {
        let result = self.query_client(client, QueryOutput::Records).await?;
        Ok(result
            .records
            .into_iter()
            .next()
            .map(|r| r.uid)
            .filter(|uid| !uid.is_empty()))
    }

    /// Every client id of the cluster.
    pub async fn all_client_ids(&self) -> Result<Vec<ClientId>, ApiError> {
        let results = self.query_all(selector_all(), QueryOutput::Records).await?;
        Ok(records(&results).map(|(client, _)| client).collect())
    }

    /// The number of connected clients.
    pub async fn all_client_count(&self) -> Result<u64, ApiError> {
        let results = self.query_all(selector_all(), QueryOutput::Count).await?;
        Ok(results.iter().map(|(_, r)| r.count).sum())
    }

    /// Every bound uid of the cluster (each once).
    pub async fn all_uids(&self) -> Result<Vec<String>, ApiError> {
        let results = self.query_all(selector_all(), QueryOutput::Records).await?;
        Ok(distinct_uids(&results))
    }

    /// The number of distinct bound uids.
    pub async fn all_uid_count(&self) -> Result<u64, ApiError> {
        Ok(self.all_uids().await?.len() as u64)
    }

    /// Every group with at least one member.
    pub async fn all_groups(&self) -> Result<Vec<String>, ApiError> {
        let results = self
            .query_all(query::Selector::GroupNames(QueryAll {}), QueryOutput::Records)
            .await?;
        let names: HashSet<String> = results.into_iter().flat_map(|(_, r)| r.group_names).collect();
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        Ok(names)
    }

    /// The members of a group.
    pub async fn group_client_ids(&self, group: &str) -> Result<Vec<ClientId>, ApiError> {
        let results = self
            .query_keys(RouteKind::Group, &[group], QueryOutput::Records)
            .await?;
        Ok(records(&results).map(|(client, _)| client).collect())
    }

    /// The number of members of a group.
    pub async fn group_client_count(&self, group: &str) -> Result<u64, ApiError> {
        Ok(self
            .group_client_counts(&[group])
            .await?
            .get(group)
            .copied()
            .unwrap_or(0))
    }

    /// The number of members of each group (groups without members map to 0).
    pub async fn group_client_counts<S: AsRef<str>>(&self, groups: &[S]) -> Result<HashMap<String, u64>, ApiError> {
        let results = self.query_keys(RouteKind::Group, groups, QueryOutput::Records).await?;
        let mut counts: HashMap<String, u64> = groups.iter().map(|g| (g.as_ref().to_owned(), 0)).collect();
        for (_, record) in records(&results) {
            *counts.entry(record.matched.clone()).or_default() += 1;
        }
        Ok(counts)
    }

    /// The distinct uids among a group's members.
    pub async fn group_uids(&self, group: &str) -> Result<Vec<String>, ApiError> {
        let results = self
            .query_keys(RouteKind::Group, &[group], QueryOutput::Records)
            .await?;
        Ok(distinct_uids(&results))
    }

    /// The number of distinct uids among a group's members.
    pub async fn group_uid_count(&self, group: &str) -> Result<u64, ApiError> {
        Ok(self.group_uids(group).await?.len() as u64)
    }

    // ------------------------------------------------------------------ closing

    /// Closes a client after everything already queued for it, optionally with a last frame
    /// (close code 1000).
    pub async fn close_client(&self, client: ClientId, last: Option<&Frame>) -> Result<(), ApiError> {
        self.close_client_with(client, 1000, "", last).await
    }

    /// Closes a client after everything already queued for it (and `last`, if given) with a
    /// close code and reason: 1000, 1001, 1008 (policy violation), 1011-1013, or an
    /// application's own code in 3000-4999; the reason is at most 123 bytes.
    pub async fn close_client_with(
        &self,
        client: ClientId,
        code: u16,
        reason: &str,
        last: Option<&Frame>,
    ) -> Result<(), ApiError> {
        let code = check_close(u32::from(code), reason).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let command = op(command::Op::CloseConn(CloseConn {
            conn: client.conn,
            last: last.map(Frame::to_payload),
            destroy: false,
            code: u32::from(code),
            reason: reason.to_owned(),
        }));
        self.request(client.gateway, command).await.map(drop)
    }

    /// Closes a client at once (code 1000), dropping whatever is queued for it.
    pub async fn destroy_client(&self, client: ClientId) -> Result<(), ApiError> {
        let command = op(command::Op::CloseConn(CloseConn {
            conn: client.conn,
            last: None,
            destroy: true,
            code: 1000,
            reason: String::new(),
        }));
        self.request(client.gateway, command).await.map(drop)
    }

    /// Sets (replacing any earlier one) or, with `None`, clears a client's [`Deadline`]. The
    /// client's gateway enforces it: it sends the warning, then closes the connection.
    pub async fn set_deadline(&self, client: ClientId, deadline: Option<Deadline>) -> Result<(), ApiError> {
        let set = match &deadline {
            None => SetDeadline {
                conn: client.conn,
                ..Default::default()
            },
            Some(deadline) => {
                let code = check_close(u32::from(deadline.close_code), &deadline.close_reason)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                let at_ms = deadline
                    .at
                    .duration_since(UNIX_EPOCH)
                    .map_err(|_| ApiError::bad_request("a deadline before 1970"))?
                    .as_millis();
                SetDeadline {
                    conn: client.conn,
                    at_ms: u64::try_from(at_ms).unwrap_or(u64::MAX).max(1),
                    warn_before_ms: deadline
                        .warning
                        .as_ref()
                        .map_or(0, |(before, _)| before.as_millis().min(u128::from(u64::MAX)) as u64),
                    warning: deadline.warning.as_ref().map(|(_, frame)| frame.to_payload()),
                    close_code: u32::from(code),
                    close_reason: deadline.close_reason.clone(),
                }
            }
        };
        self.request(client.gateway, op(command::Op::SetDeadline(set)))
            .await
            .map(drop)
    }

    // ------------------------------------------------------------------ plumbing

    fn link_of(&self, gateway: NodeId) -> Result<Arc<GatewayLink>, ApiError> {
        self.inner
            .links
            .get(&gateway.0)
            .map(|l| l.clone())
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("gateway {gateway} is not in the cluster")))
    }

    /// One command with an answer, as a boxed future: a handler that might bind a uid would
    /// otherwise carry the command, the timer and the reply slot in the future allocated for
    /// every one of its events, even those that only send.
    fn request(
        &self,
        gateway: NodeId,
        command: Command,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<QueryResult, ApiError>> + Send>> {
        let link = self.link_of(gateway);
        let timeout = self.inner.config.request_timeout;
        Box::pin(async move {
            let reply = link?.request(command, timeout).await?;
            Ok(reply.result.unwrap_or_default())
        })
    }

    /// Waits (bounded) for the table the first time; afterwards returns at once.
    async fn ensure_ready(&self) -> bool {
        if self.inner.routes.is_trusted() {
            return true;
        }
        if !self.inner.links.is_empty() {
            // A running cluster without a trusted table (a registry warming up): send to every
            // gateway now rather than wait (and without arming a timer per call).
            return false;
        }
        let mut trust = self.inner.routes.trust();
        // Boxed like `request`: only the first calls of a process wait here.
        Box::pin(tokio::time::timeout(
            self.inner.config.ready_timeout,
            trust.wait_for(|t| *t),
        ))
        .await
        .is_ok()
    }

    async fn all_links(&self) -> Vec<Arc<GatewayLink>> {
        self.routable().await;
        self.inner.links.iter().map(|l| l.clone()).collect()
    }

    /// Whether uid and group sends may go by the routing table (otherwise they go to every
    /// gateway). Only the first calls of a process can wait, so that wait is boxed: the common
    /// case adds one flag test and no state to the caller's future.
    async fn routable(&self) -> bool {
        self.inner.routes.is_trusted() || Box::pin(self.ensure_ready()).await
    }

    /// Calls `send` once per gateway holding any of `keys` (more often when the keys exceed a
    /// command's list limit), with the keys it holds; with an untrusted table
    /// (`trusted == false`) every gateway gets every key. Every target is tried: a gateway that
    /// fails never costs the others their copy, and the error names the ones that failed.
    /// Synchronous: nothing on the send path waits.
    fn for_each_target<S: AsRef<str>>(
        &self,
        kind: RouteKind,
        keys: &[S],
        trusted: bool,
        mut send: impl FnMut(&Arc<GatewayLink>, Vec<String>) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let what = if kind == RouteKind::Group { "group" } else { "uid" };
        for key in keys {
            check_key(what, key.as_ref())?;
        }
        let mut failures = Failures::default();
        let mut send_chunked = |link: &Arc<GatewayLink>, keys: &[String]| -> Result<(), ApiError> {
            for chunk in keys.chunks(link.max_command_keys()) {
                send(link, chunk.to_vec())?;
            }
            Ok(())
        };
        if !trusted {
            let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_owned()).collect();
            for link in self.inner.links.iter() {
                failures.record(link.gateway, send_chunked(&link, &keys));
            }
            return failures.into_result();
        }
        if let [key] = keys {
            // The common case, one uid or group: no map, no list of gateways.
            let key = key.as_ref();
            self.inner.routes.for_each_gateway(kind, key, |gateway| {
                let result = self
                    .link_of(NodeId(gateway))
                    .and_then(|link| send(&link, vec![key.to_owned()]));
                failures.record(NodeId(gateway), result);
            });
            return failures.into_result();
        }
        let mut per_gateway: HashMap<u64, Vec<String>> = HashMap::new();
        for key in keys {
            self.inner.routes.for_each_gateway(kind, key.as_ref(), |gateway| {
                per_gateway.entry(gateway).or_default().push(key.as_ref().to_owned());
            });
        }
        for (gateway, keys) in per_gateway {
            let result = self
                .link_of(NodeId(gateway))
                .and_then(|link| send_chunked(&link, &keys));
            failures.record(NodeId(gateway), result);
        }
        failures.into_result()
    }

    async fn query_client(&self, client: ClientId, output: QueryOutput) -> Result<QueryResult, ApiError> {
        let query = Query {
            selector: Some(query::Selector::Conns(ConnList {
                conns: vec![client.conn],
            })),
            output: output as i32,
        };
        self.request(client.gateway, op(command::Op::Query(query))).await
    }

    async fn query_keys<S: AsRef<str>>(
        &self,
        kind: RouteKind,
        keys: &[S],
        output: QueryOutput,
    ) -> Result<Vec<(NodeId, QueryResult)>, ApiError> {
        let trusted = self.routable().await;
        let mut targets = Vec::new();
        let listed = self.for_each_target(kind, keys, trusted, |link, items| {
            targets.push((link.clone(), items));
            Ok(())
        });
        // A gateway the table still lists but this process has no link to holds nothing it
        // could reach either: the answer comes from the others (see `gather`).
        if let Err(error) = listed
            && error.code != ErrorCode::NotFound
        {
            return Err(error);
        }
        let timeout = self.inner.config.request_timeout;
        let requests = targets.into_iter().map(|(link, items)| {
            let list = StringList { items };
            let selector = if kind == RouteKind::Group {
                query::Selector::Groups(list)
            } else {
                query::Selector::Uids(list)
            };
            let command = op(command::Op::Query(Query {
                selector: Some(selector),
                output: output as i32,
            }));
            async move {
                let result = link.request(command, timeout).await;
                (link.gateway, result.map(|r| r.result.unwrap_or_default()))
            }
        });
        gather(requests).await
    }

    async fn query_all(
        &self,
        selector: query::Selector,
        output: QueryOutput,
    ) -> Result<Vec<(NodeId, QueryResult)>, ApiError> {
        let timeout = self.inner.config.request_timeout;
        let requests = self.all_links().await.into_iter().map(|link| {
            let command = op(command::Op::Query(Query {
                selector: Some(selector.clone()),
                output: output as i32,
            }));
            async move {
                let result = link.request(command, timeout).await;
                (link.gateway, result.map(|r| r.result.unwrap_or_default()))
            }
        });
        gather(requests).await
    }
}

/// The answers of every gateway asked, skipping those that are unreachable (`unavailable`: the
/// link broke, the gateway is stopping or left): a gateway nobody can reach holds no client
/// anybody can reach either, so a query answers for the reachable cluster instead of failing
/// for as long as a dead gateway stays listed (up to its lease). Any other failure (a timeout,
/// a refused command) fails the query: the answer would silently miss a live gateway.
async fn gather(
    requests: impl IntoIterator<Item = impl std::future::Future<Output = (NodeId, Result<QueryResult, ApiError>)>>,
) -> Result<Vec<(NodeId, QueryResult)>, ApiError> {
    let mut answers = Vec::new();
    for (gateway, result) in futures_util::future::join_all(requests).await {
        match result {
            Ok(answer) => answers.push((gateway, answer)),
            Err(error) if error.code == ErrorCode::Unavailable => {
                tracing::debug!(%gateway, %error, "query skipped an unreachable gateway");
            }
            Err(error) => {
                return Err(ApiError::new(
                    error.code,
                    format!("gateway {gateway}: {}", error.message),
                ));
            }
        }
    }
    Ok(answers)
}

fn op(op: command::Op) -> Command {
    Command {
        request_id: 0,
        op: Some(op),
    }
}

fn selector_all() -> query::Selector {
    query::Selector::All(QueryAll {})
}

/// The connections among `clients` that `link`'s gateway holds (no allocation when there are
/// none), within the gateway's list limit.
fn excluded_on(link: &GatewayLink, clients: &[ClientId]) -> Result<Vec<u64>, ApiError> {
    let excluded: Vec<u64> = clients
        .iter()
        .filter(|c| c.gateway == link.gateway)
        .map(|c| c.conn)
        .collect();
    if excluded.len() > link.max_command_keys() {
        return Err(ApiError::bad_request(format!(
            "at most {} excluded clients per gateway",
            link.max_command_keys()
        )));
    }
    Ok(excluded)
}

/// Refuses a frame larger than `link`'s gateway writes to clients, before it is queued.
fn checked_frame(link: &GatewayLink, frame: &Frame) -> Result<(), ApiError> {
    let limit = link.max_frame_bytes();
    if frame.data().len() > limit {
        return Err(ApiError::bad_request(format!(
            "a frame of {} bytes exceeds gateway {}'s limit of {limit} bytes",
            frame.data().len(),
            link.gateway
        )));
    }
    Ok(())
}

/// The gateways a send could not reach, reported together once every gateway was tried.
#[derive(Default)]
struct Failures(Vec<(NodeId, ApiError)>);

impl Failures {
    fn record(&mut self, gateway: NodeId, result: Result<(), ApiError>) {
        if let Err(error) = result {
            self.0.push((gateway, error));
        }
    }

    /// `Ok` when every gateway took its part; otherwise one error naming each gateway that
    /// failed and why. Its code is the failures' common code, or `unavailable` when they differ.
    fn into_result(self) -> Result<(), ApiError> {
        let Some((_, first)) = self.0.first() else {
            return Ok(());
        };
        if let [(gateway, error)] = self.0.as_slice() {
            return Err(ApiError::new(
                error.code,
                format!("gateway {gateway}: {}", error.message),
            ));
        }
        let code = if self.0.iter().all(|(_, e)| e.code == first.code) {
            first.code
        } else {
            ErrorCode::Unavailable
        };
        let details: Vec<String> = self
            .0
            .iter()
            .map(|(gateway, error)| format!("gateway {gateway}: {error}"))
            .collect();
        Err(ApiError::new(
            code,
            format!(
                "{} gateways could not take the send (the others did): {}",
                self.0.len(),
                details.join("; ")
            ),
        ))
    }
}

fn by_gateway(clients: &[ClientId]) -> HashMap<NodeId, Vec<u64>> {
    let mut map: HashMap<NodeId, Vec<u64>> = HashMap::new();
    for client in clients {
        map.entry(client.gateway).or_default().push(client.conn);
    }
    map
}

fn records(results: &[(NodeId, QueryResult)]) -> impl Iterator<Item = (ClientId, &gatehouse_proto::v1::ConnRecord)> {
    results
        .iter()
        .flat_map(|(gateway, result)| result.records.iter().map(move |r| (ClientId::new(*gateway, r.conn), r)))
}

fn distinct_uids(results: &[(NodeId, QueryResult)]) -> Vec<String> {
    let uids: HashSet<&str> = records(results)
        .map(|(_, r)| r.uid.as_str())
        .filter(|u| !u.is_empty())
        .collect();
    let mut uids: Vec<String> = uids.into_iter().map(str::to_owned).collect();
    uids.sort();
    uids
}

/// A session's JSON as a map (empty when there is none, or when it is not an object).
pub(crate) fn parse_session(bytes: &[u8]) -> Session {
    if bytes.is_empty() {
        return Session::new();
    }
    serde_json::from_slice(bytes).unwrap_or_default()
}

// ---------------------------------------------------------------------- registry callbacks

impl Inner {
    /// Creates links to new gateways; drops links to gateways that every authoritative registry
    /// has forgotten (a registry still warming up is not believed about absence).
    fn reconcile_links(&self) {
        let memberships = self.memberships.lock().expect("memberships poisoned");
        let mut known: HashMap<u64, String> = HashMap::new();
        for membership in memberships.iter().flatten() {
            known.extend(membership.iter().map(|(id, addr)| (*id, addr.clone())));
        }
        let authoritative: Vec<&HashMap<u64, String>> = memberships
            .iter()
            .enumerate()
            .filter(|(i, m)| m.is_some() && self.routes.is_authoritative(*i))
            .filter_map(|(_, m)| m.as_ref())
            .collect();
        let gone: Vec<u64> = if authoritative.is_empty() {
            Vec::new()
        } else {
            self.links
                .iter()
                .map(|l| *l.key())
                .filter(|id| !authoritative.iter().any(|m| m.contains_key(id)))
                .collect()
        };
        drop(memberships);
        for id in gone {
            if let Some((_, link)) = self.links.remove(&id) {
                tracing::info!(gateway = %NodeId(id), "gateway left the cluster; link dropped");
                link.cancel.cancel();
            }
        }
        for (id, addr) in known {
            // `entry` holds the shard lock: two registries announcing the same gateway at once
            // must not start two links.
            self.links.entry(id).or_insert_with(|| {
                let sink = self.sink.get().cloned();
                let link = GatewayLink::spawn(NodeId(id), addr, self.identity.clone(), sink, &self.token);
                if self.draining.load(std::sync::atomic::Ordering::Acquire) {
                    link.begin_drain();
                }
                if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    link.stop_handling();
                }
                link
            });
        }
    }
}

impl RegistryPeer for Inner {
    fn connected(&self, registry: usize, out: RegistrySender) {
        self.registry_out.lock().expect("registry out poisoned")[registry] = Some(out);
        self.routes.set_connected(registry, true);
    }

    fn message(&self, registry: usize, msg: attach_response::Msg) {
        match msg {
            attach_response::Msg::Membership(membership) => {
                let gateways = membership
                    .members
                    .into_iter()
                    .filter(|m| m.kind == MemberKind::Gateway as i32 && m.id != 0)
                    .map(|m| (m.id, m.addr))
                    .collect();
                self.memberships.lock().expect("memberships poisoned")[registry] = Some(gateways);
                self.reconcile_links();
            }
            attach_response::Msg::RouteUpdate(update) => {
                let seq = update.seq;
                let was_authoritative = self.routes.is_authoritative(registry);
                if self.routes.apply(registry, update) {
                    let ack = AttachRequest {
                        msg: Some(attach_request::Msg::RouteAck(RouteAck { seq })),
                    };
                    if let Some(out) = &self.registry_out.lock().expect("registry out poisoned")[registry] {
                        let _ = out.try_send(ack);
                    }
                }
                if !was_authoritative && self.routes.is_authoritative(registry) {
                    self.reconcile_links();
                }
            }
            // Heartbeat acks are consumed by the registry session itself.
            attach_response::Msg::Welcome(_)
            | attach_response::Msg::BatchApplied(_)
            | attach_response::Msg::HeartbeatAck(_) => {}
        }
    }

    fn disconnected(&self, registry: usize) {
        self.registry_out.lock().expect("registry out poisoned")[registry] = None;
        self.memberships.lock().expect("memberships poisoned")[registry] = None;
        self.routes.set_connected(registry, false);
    }
}
