//! The registry's state machine. One task owns membership and the routing table; the gRPC
//! streams talk to it through a channel, so there is no lock and every change has one order.
//!
//! Rules it keeps:
//! - A member lives while it heart-beats. A stream that ends gracefully (the member shut down)
//!   removes it at once; a broken stream only stops its session, and the member's routes stay
//!   until its lease runs out or it re-attaches and resynchronises, so a network blip between a
//!   live gateway and the registry never makes its uids unroutable.
//! - Every change to the table gets the next sequence number and goes to every route subscriber.
//!   A gateway's batch is confirmed once every subscriber has acknowledged that sequence number;
//!   a subscriber that stays behind longer than the ack timeout is cut off and must resync.
//! - A gateway's reset (a fresh session) is staged and applied as one diff when it is complete,
//!   so its keys never disappear in between.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use gatehouse_core::NodeId;
use gatehouse_core::limits::check_key;
use gatehouse_proto::ErrorCode;
use gatehouse_proto::tonic::Status;
use gatehouse_proto::v1::{
    AttachResponse, BatchApplied, HeartbeatAck, Member, MemberKind, Membership, RouteBatch, Welcome, attach_response,
};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::RegistryConfig;
use crate::keys::Keys;
use crate::packed::{Chunks, Outgoing, PackedUpdate};
use crate::stats::{Counters, Stats};

/// Messages queued towards one member before it counts as too slow and is cut off.
pub(crate) const OUTBOUND_QUEUE: usize = 1024;

/// A member's outbound queue. Messages are shared: a route update is queued for every
/// subscriber as one packed allocation, and each stream unpacks it only while encoding it, so
/// a burst of updates (a resync of a gateway with a million keys) is held once, and compactly,
/// not once per worker.
pub(crate) type Outbound = mpsc::Sender<Result<Outgoing, Status>>;

/// What the gRPC streams tell the state machine. Every input names its stream by `session`
/// (a number the service hands out per stream, never reused): a member that re-attached has a
/// new session, so late inputs of its old stream can be recognised and ignored.
pub(crate) enum Input {
    /// A stream said hello.
    Attach {
        session: u64,
        /// Who the member is (kind, id, internal address), as its hello says.
        member: Member,
        /// It wants the routing table (workers and API clients) and so holds back confirmations.
        subscribe: bool,
        /// Its outbound queue: bounded, so a member that stops reading is cut off, not buffered.
        tx: Outbound,
    },
    /// The member is alive: renews its lease.
    Heartbeat {
        session: u64,
        /// Echoed back in the HeartbeatAck that tells the member its lease was renewed.
        seq: u64,
    },
    /// A gateway's changes of the keys it holds (or a part of its resync).
    Routes { session: u64, batch: RouteBatch },
    /// A subscriber applied every route update up to `seq`.
    RouteAck { session: u64, seq: u64 },
    /// The stream ended: `graceful` when the member closed it (it is leaving), not when it broke.
    Detach { session: u64, graceful: bool },
}

/// One attached stream.
struct Session {
    /// The member it speaks for (one member has at most one current session).
    member: u64,
    /// Where its messages go; a full queue cuts it off.
    tx: Outbound,
    /// It receives route updates, and confirmations wait for its acknowledgements.
    subscribe: bool,
    /// Highest sequence number sent to this subscriber.
    sent: u64,
    /// Highest sequence number it acknowledged.
    acked: u64,
    /// Since when it has had unacknowledged updates (reset on progress).
    behind_since: Option<Instant>,
    /// Messages waiting for room in its queue, oldest first. A snapshot goes here whole, and
    /// moves into the queue as the stream makes room: a table of any size reaches a new
    /// subscriber, where a snapshot larger than the queue used to cut it off. While this is not
    /// empty every later message waits behind it, so the order holds; a subscriber that stops
    /// reading is still cut off, by its acknowledgement timeout.
    backlog: VecDeque<Outgoing>,
    /// The backlog's bound: the snapshot's chunks plus as many later messages as the queue
    /// holds, so a subscriber that falls behind during its snapshot is cut off at the same
    /// depth as one whose queue is full.
    backlog_limit: usize,
}

/// One member, whether or not its stream is up.
struct MemberState {
    /// What it announced (sent to everyone in the membership).
    member: Member,
    /// Its last sign of life: the lease runs from here.
    last_seen: Instant,
    /// Its current stream; `None` while it is disconnected but its lease holds (its routes stay).
    session: Option<u64>,
    /// Gateways: the keys they hold.
    keys: Keys,
    /// Gateways: the keys of a resync in progress.
    staging: Option<Keys>,
}

/// Membership and the routing table, owned by the one task that handles every [`Input`].
pub(crate) struct State {
    /// This registry's id, in every welcome (members tell registries apart by it).
    id: NodeId,
    /// Lease, ack timeout, warm-up and the limits.
    config: RegistryConfig,
    /// When this registry started: the warm-up runs from here.
    started: Instant,
    /// Attached streams by session number.
    sessions: HashMap<u64, Session>,
    /// Members by id, connected or within their lease.
    members: HashMap<u64, MemberState>,
    /// The sequence number of the last route update: subscribers acknowledge by it and
    /// confirmations wait for it.
    seq: u64,
    /// Batches waiting for every subscriber's acknowledgement: (sequence, session, generation).
    pending: VecDeque<(u64, u64, u64)>,
    /// The warm-up is over: every gateway had the time to resync, so absence from the table is
    /// true (subscribers may stop broadcasting).
    authoritative: bool,
    /// Sessions with a non-empty backlog, moved into their queues after every input and tick.
    backlogged: HashSet<u64>,
    /// What the admin listener shows.
    stats: std::sync::Arc<Stats>,
}

impl State {
    pub(crate) fn new(id: NodeId, config: RegistryConfig, stats: std::sync::Arc<Stats>) -> State {
        State {
            stats,
            id,
            config,
            started: Instant::now(),
            sessions: HashMap::new(),
            members: HashMap::new(),
            seq: 0,
            pending: VecDeque::new(),
            authoritative: false,
            backlogged: HashSet::new(),
        }
    }

    pub(crate) async fn run(mut self, mut inputs: mpsc::Receiver<Input>, token: CancellationToken) {
        let tick_every = (self.config.lease / 10).max(Duration::from_millis(20));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => self.on_tick(),
                input = inputs.recv() => match input {
                    Some(input) => self.on_input(input),
                    None => return,
                },
            }
            self.record_sizes();
        }
    }

    fn record_sizes(&self) {
        let gateways = self
            .members
            .values()
            .filter(|m| m.member.kind == MemberKind::Gateway as i32);
        let (gateways, keys) = gateways.fold((0, 0), |(g, k), m| (g + 1, k + m.keys.len()));
        let subscribers = self.sessions.values().filter(|s| s.subscribe).count();
        self.stats
            .set_sizes(self.members.len(), gateways, subscribers, keys, self.authoritative);
    }

    fn counters(&self) -> &Counters {
        &self.stats.counters
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Attach {
                session,
                member,
                subscribe,
                tx,
            } => self.on_attach(session, member, subscribe, tx),
            Input::Heartbeat { session, seq } => self.on_heartbeat(session, seq),
            Input::Routes { session, batch } => self.on_routes(session, batch),
            Input::RouteAck { session, seq } => self.on_ack(session, seq),
            Input::Detach { session, graceful } => self.on_detach(session, graceful),
        }
        // Every input may be the stream's read that made room (the registry cannot see reads).
        self.flush_backlogs();
    }

    fn on_attach(&mut self, session: u64, member: Member, subscribe: bool, tx: Outbound) {
        let id = member.id;
        if !self.members.contains_key(&id) && self.members.len() >= self.config.max_members {
            tracing::warn!(member = %NodeId(id), max = self.config.max_members, "member refused: the registry holds its maximum of members");
            Counters::inc(&self.counters().members_refused);
            let _ = tx.try_send(Err(ErrorCode::TooManyRequests.status(format!(
                "the registry holds its maximum of {} members",
                self.config.max_members
            ))));
            return;
        }
        let welcome = Welcome {
            registry_id: self.id.0,
            heartbeat_interval_ms: self.config.heartbeat_interval().as_millis() as u64,
            lease_ms: self.config.lease.as_millis() as u64,
            acks_heartbeats: true,
        };
        if tx.try_send(Ok(msg(attach_response::Msg::Welcome(welcome)))).is_err() {
            return;
        }
        self.sessions.insert(
            session,
            Session {
                member: id,
                tx,
                subscribe,
                sent: 0,
                acked: 0,
                behind_since: None,
                backlog: VecDeque::new(),
                backlog_limit: 0,
            },
        );
        let now = Instant::now();
        match self.members.get_mut(&id) {
            Some(existing) => {
                // A re-attach: the old session, if still open, is replaced; routes stay until the
                // new session's resync says otherwise.
                if let Some(old) = existing.session.replace(session)
                    && old != session
                {
                    self.sessions.remove(&old);
                }
                existing.member = member;
                existing.last_seen = now;
                existing.staging = None;
            }
            None => {
                self.members.insert(
                    id,
                    MemberState {
                        member,
                        last_seen: now,
                        session: Some(session),
                        keys: Keys::default(),
                        staging: None,
                    },
                );
                self.broadcast_membership();
            }
        }
        // Always tell the newcomer who is here, even when nobody else needed an update.
        let membership = self.membership();
        self.send(session, membership);
        if subscribe {
            self.send_snapshot(session);
        }
        self.confirm();
    }

    /// Renews the member's lease and says so: only a member that still holds its lease (the
    /// current session of a live member) gets the ack it fences itself without.
    fn on_heartbeat(&mut self, session: u64, seq: u64) {
        if self.touch(session).is_none() {
            return;
        }
        if let Some(state) = self.sessions.get(&session) {
            let ack = msg(attach_response::Msg::HeartbeatAck(HeartbeatAck { seq }));
            // A full queue means the member stopped reading: its missing acks make it fence
            // itself, which is what a member that cannot hear the registry should do.
            let _ = state.tx.try_send(Ok(ack));
        }
    }

    fn touch(&mut self, session: u64) -> Option<u64> {
        let member = self.sessions.get(&session)?.member;
        let state = self.members.get_mut(&member)?;
        if state.session != Some(session) {
            return None;
        }
        state.last_seen = Instant::now();
        Some(member)
    }

    fn on_routes(&mut self, session: u64, batch: RouteBatch) {
        let Some(member) = self.touch(session) else {
            return;
        };
        if self.members[&member].member.kind != MemberKind::Gateway as i32 {
            tracing::warn!(member = %NodeId(member), "route batch from a non-gateway ignored");
            return;
        }
        let gateway = member;
        if let Some(refusal) = self.refuse_routes(gateway, &batch) {
            tracing::warn!(gateway = %NodeId(gateway), %refusal, "route batch refused; cutting the gateway off");
            Counters::inc(&self.counters().batches_refused);
            self.cut_off(session, ErrorCode::TooManyRequests.status(refusal));
            return;
        }
        let state = self.members.get_mut(&member).expect("touched member exists");
        let mut entries = Chunks::default();
        if batch.reset {
            state.staging = Some(Keys::default());
        }
        if let Some(staging) = state.staging.as_mut() {
            for change in batch.changes {
                if change.present {
                    staging.insert(change.kind, &change.key);
                } else {
                    staging.remove(change.kind, &change.key);
                }
            }
            if !batch.synced {
                return;
            }
            let fresh = state.staging.take().expect("staging checked above");
            for (kind, key) in state.keys.difference(&fresh) {
                entries.push(kind as i32, key, gateway, false);
            }
            for (kind, key) in fresh.difference(&state.keys) {
                entries.push(kind as i32, key, gateway, true);
            }
            state.keys = fresh;
            Counters::inc(&self.stats.counters.resyncs);
            tracing::info!(gateway = %NodeId(gateway), keys = state.keys.len(), "gateway routes resynchronised");
        } else {
            for change in batch.changes {
                let changed = if change.present {
                    state.keys.insert(change.kind, &change.key)
                } else {
                    state.keys.remove(change.kind, &change.key)
                };
                if changed {
                    entries.push(change.kind, &change.key, gateway, change.present);
                }
            }
        }
        self.publish(entries);
        self.pending.push_back((self.seq, session, batch.generation));
        self.confirm();
    }

    /// Why a gateway's route batch must not be applied: a key that is not a valid uid or group
    /// name or of no known kind, or more keys than one gateway may hold.
    fn refuse_routes(&self, gateway: u64, batch: &RouteBatch) -> Option<String> {
        for change in &batch.changes {
            if let Err(error) = check_key("route key", &change.key) {
                return Some(error.to_string());
            }
            if !Keys::known_kind(change.kind) {
                return Some(format!("unknown route kind {}", change.kind));
            }
        }
        let state = self.members.get(&gateway)?;
        let held = if batch.reset {
            0
        } else {
            state.staging.as_ref().unwrap_or(&state.keys).len()
        };
        let added = batch.changes.iter().filter(|c| c.present).count();
        let limit = self.config.max_keys_per_gateway;
        (held + added > limit).then(|| format!("a gateway may announce at most {limit} keys"))
    }

    /// Ends a session with an error; the member stays until its lease ends or it re-attaches.
    fn cut_off(&mut self, session: u64, status: Status) {
        if let Some(state) = self.sessions.remove(&session) {
            let _ = state.tx.try_send(Err(status));
            if let Some(m) = self.members.get_mut(&state.member)
                && m.session == Some(session)
            {
                m.session = None;
                m.staging = None;
            }
        }
    }

    fn on_ack(&mut self, session: u64, seq: u64) {
        let Some(state) = self.sessions.get_mut(&session) else {
            return;
        };
        let acked = seq.min(state.sent).max(state.acked);
        if acked >= state.sent {
            state.behind_since = None;
        } else if acked > state.acked {
            // Progress restarts the clock; a repeated old ack does not.
            state.behind_since = Some(Instant::now());
        }
        state.acked = acked;
        self.confirm();
    }

    fn on_detach(&mut self, session: u64, graceful: bool) {
        let Some(state) = self.sessions.remove(&session) else {
            return;
        };
        let member = state.member;
        let current = self.members.get(&member).and_then(|m| m.session);
        if current == Some(session) {
            if graceful {
                tracing::info!(member = %NodeId(member), "member left");
                self.remove_member(member);
            } else if let Some(m) = self.members.get_mut(&member) {
                tracing::info!(member = %NodeId(member), "member stream broke; keeping it until its lease ends");
                m.session = None;
                m.staging = None;
            }
        }
        self.confirm();
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let lease = self.config.lease;
        let expired: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > lease)
            .map(|(id, _)| *id)
            .collect();
        for member in expired {
            tracing::warn!(member = %NodeId(member), lease_ms = lease.as_millis() as u64, "member lease expired");
            Counters::inc(&self.counters().members_expired);
            self.remove_member(member);
        }
        let ack_timeout = self.config.ack_timeout;
        let laggards: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.behind_since.is_some_and(|t| now.duration_since(t) > ack_timeout))
            .map(|(id, _)| *id)
            .collect();
        for session in laggards {
            if let Some(state) = self.sessions.remove(&session) {
                tracing::warn!(member = %NodeId(state.member), "route subscriber too slow to acknowledge; cut off");
                Counters::inc(&self.stats.counters.subscribers_cut_off);
                let _ = state
                    .tx
                    .try_send(Err(ErrorCode::Timeout.status("route updates not acknowledged in time")));
                if let Some(m) = self.members.get_mut(&state.member)
                    && m.session == Some(session)
                {
                    m.session = None;
                }
            }
        }
        if !self.authoritative && self.started.elapsed() >= self.config.warmup {
            self.authoritative = true;
            tracing::info!("routing table complete (warm-up over)");
            self.publish(Chunks::default());
            self.broadcast_membership();
        }
        self.confirm();
        self.flush_backlogs();
    }

    fn remove_member(&mut self, member: u64) {
        let Some(state) = self.members.remove(&member) else {
            return;
        };
        if let Some(session) = state.session {
            self.sessions.remove(&session);
        }
        let mut entries = Chunks::default();
        for (kind, key) in state.keys.iter() {
            entries.push(kind as i32, key, member, false);
        }
        if entries.total() > 0 {
            self.publish(entries);
        }
        self.broadcast_membership();
    }

    /// Sends changes to every subscriber, in chunks of at most
    /// [`UPDATE_CHUNK`](crate::packed::UPDATE_CHUNK) entries, each under a new sequence number
    /// (or, with no entries, one update under the current number: a flag change only).
    fn publish(&mut self, entries: Chunks) {
        let subscribers: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.subscribe)
            .map(|(id, _)| *id)
            .collect();
        Counters::add(&self.counters().entries_published, entries.total() as u64);
        for chunk in entries.finish() {
            if !chunk.is_empty() {
                self.seq += 1;
                Counters::add(&self.counters().updates_published, subscribers.len() as u64);
            }
            let update = Outgoing::Update(Arc::new(PackedUpdate {
                seq: self.seq,
                reset: false,
                authoritative: self.authoritative,
                partial: false,
                chunk,
            }));
            for session in &subscribers {
                self.send_update(*session, self.seq, false, update.clone());
            }
        }
    }

    /// Sends the whole table to one subscriber, in chunks of
    /// [`UPDATE_CHUNK`](crate::packed::UPDATE_CHUNK) entries, through its backlog.
    fn send_snapshot(&mut self, session: u64) {
        Counters::inc(&self.counters().snapshots);
        let mut entries = Chunks::default();
        for (gateway, state) in &self.members {
            for (kind, key) in state.keys.iter() {
                entries.push(kind as i32, key, *gateway, true);
            }
        }
        let chunks = entries.finish();
        let last = chunks.len() - 1;
        for (index, chunk) in chunks.into_iter().enumerate() {
            let update = PackedUpdate {
                seq: self.seq,
                reset: index == 0,
                authoritative: self.authoritative,
                partial: index != last,
                chunk,
            };
            if let Some(state) = self.note_update(session, self.seq, true) {
                state.backlog.push_back(Outgoing::Update(Arc::new(update)));
            }
        }
        if let Some(state) = self.sessions.get_mut(&session) {
            state.backlog_limit = state.backlog.len() + OUTBOUND_QUEUE;
        }
        self.backlogged.insert(session);
        self.flush_backlog(session);
    }

    /// Queues a route update (`update`, numbered `seq`, a snapshot's first chunk if `reset`).
    fn send_update(&mut self, session: u64, seq: u64, reset: bool, update: Outgoing) {
        self.note_update(session, seq, reset);
        self.send(session, update);
    }

    /// Records that update `seq` goes to `session`: it now waits for that acknowledgement.
    fn note_update(&mut self, session: u64, seq: u64, reset: bool) -> Option<&mut Session> {
        let state = self.sessions.get_mut(&session)?;
        if seq > state.acked || reset {
            state.sent = state.sent.max(seq);
            state.behind_since.get_or_insert_with(Instant::now);
        }
        Some(state)
    }

    /// Confirms every pending batch that all subscribers have acknowledged.
    fn confirm(&mut self) {
        let floor = self
            .sessions
            .values()
            .filter(|s| s.subscribe)
            .map(|s| s.acked)
            .min()
            .unwrap_or(u64::MAX);
        while let Some(&(seq, session, generation)) = self.pending.front() {
            if seq > floor {
                break;
            }
            self.pending.pop_front();
            self.send(
                session,
                msg(attach_response::Msg::BatchApplied(BatchApplied { generation })),
            );
        }
    }

    fn membership(&self) -> Outgoing {
        let members = self.members.values().map(|m| m.member.clone()).collect();
        msg(attach_response::Msg::Membership(Membership {
            members,
            authoritative: self.authoritative,
        }))
    }

    fn broadcast_membership(&mut self) {
        let membership = self.membership();
        let sessions: Vec<u64> = self.sessions.keys().copied().collect();
        for session in sessions {
            self.send(session, membership.clone());
        }
    }

    /// Queues a message for one session (behind its backlog, if it has one); a member whose
    /// queue or backlog is full is cut off.
    fn send(&mut self, session: u64, message: Outgoing) {
        let Some(state) = self.sessions.get_mut(&session) else {
            return;
        };
        let queued = if state.backlog.is_empty() {
            state.tx.try_send(Ok(message)).is_ok()
        } else if state.backlog.len() < state.backlog_limit {
            state.backlog.push_back(message);
            true
        } else {
            false
        };
        if !queued {
            let member = state.member;
            tracing::warn!(member = %NodeId(member), "member not reading its registry stream; cut off");
            Counters::inc(&self.stats.counters.subscribers_cut_off);
            self.sessions.remove(&session);
            if let Some(m) = self.members.get_mut(&member)
                && m.session == Some(session)
            {
                m.session = None;
            }
        }
    }
}

impl State {
    /// Moves what waits in every backlog into the queues, as far as they have room.
    fn flush_backlogs(&mut self) {
        if self.backlogged.is_empty() {
            return;
        }
        let sessions: Vec<u64> = self.backlogged.iter().copied().collect();
        for session in sessions {
            self.flush_backlog(session);
        }
    }

    fn flush_backlog(&mut self, session: u64) {
        let Some(state) = self.sessions.get_mut(&session) else {
            self.backlogged.remove(&session);
            return;
        };
        while !state.backlog.is_empty() {
            let Ok(permit) = state.tx.try_reserve() else {
                // Full: more room after the stream's next reads. Closed: the detach follows.
                return;
            };
            permit.send(Ok(state.backlog.pop_front().expect("checked non-empty")));
        }
        self.backlogged.remove(&session);
    }
}

fn msg(msg: attach_response::Msg) -> Outgoing {
    Outgoing::Message(Arc::new(AttachResponse { msg: Some(msg) }))
}

#[cfg(test)]
mod tests;
