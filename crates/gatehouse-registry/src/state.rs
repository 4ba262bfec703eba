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

use gatehouse_core::NodeId;
use gatehouse_core::limits::check_key;
use gatehouse_proto::ErrorCode;
use gatehouse_proto::tonic::Status;
use gatehouse_proto::v1::{
    AttachResponse, BatchApplied, HeartbeatAck, Member, MemberKind, Membership, RouteBatch, RouteEntry, RouteUpdate,
    Welcome, attach_response,
};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::RegistryConfig;
use crate::stats::{Counters, Stats};

/// Messages queued towards one member before it counts as too slow and is cut off.
pub(crate) const OUTBOUND_QUEUE: usize = 1024;
/// Entries per route update (snapshot chunks and ordinary updates alike): with keys of at most
/// 256 bytes, about 1 MiB, far below the gRPC size limit, whatever a resync or a departure
/// changes at once.
const UPDATE_CHUNK: usize = 4096;

type Outbound = mpsc::Sender<Result<AttachResponse, Status>>;
type Key = (i32, String);

/// What the gRPC streams tell the state machine.
pub(crate) enum Input {
    Attach {
        session: u64,
        member: Member,
        subscribe: bool,
        tx: Outbound,
    },
    Heartbeat {
        session: u64,
        /// Echoed back in the HeartbeatAck that tells the member its lease was renewed.
        seq: u64,
    },
    Routes {
        session: u64,
        batch: RouteBatch,
    },
    RouteAck {
        session: u64,
        seq: u64,
    },
    Detach {
        session: u64,
        graceful: bool,
    },
}

struct Session {
    member: u64,
    tx: Outbound,
    subscribe: bool,
    /// Highest sequence number sent to this subscriber.
    sent: u64,
    /// Highest sequence number it acknowledged.
    acked: u64,
    /// Since when it has had unacknowledged updates (reset on progress).
    behind_since: Option<Instant>,
}

struct MemberState {
    member: Member,
    last_seen: Instant,
    session: Option<u64>,
    /// Gateways: the keys they hold.
    keys: HashSet<Key>,
    /// Gateways: the keys of a resync in progress.
    staging: Option<HashSet<Key>>,
}

pub(crate) struct State {
    id: NodeId,
    config: RegistryConfig,
    started: Instant,
    sessions: HashMap<u64, Session>,
    members: HashMap<u64, MemberState>,
    seq: u64,
    /// Batches waiting for every subscriber's acknowledgement: (sequence, session, generation).
    pending: VecDeque<(u64, u64, u64)>,
    authoritative: bool,
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
                        keys: HashSet::new(),
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
        let mut entries = Vec::new();
        if batch.reset {
            state.staging = Some(HashSet::new());
        }
        if let Some(staging) = state.staging.as_mut() {
            for change in batch.changes {
                let key = (change.kind, change.key);
                if change.present {
                    staging.insert(key);
                } else {
                    staging.remove(&key);
                }
            }
            if !batch.synced {
                return;
            }
            let fresh = state.staging.take().expect("staging checked above");
            for key in state.keys.difference(&fresh) {
                entries.push(entry(key, gateway, false));
            }
            for key in fresh.difference(&state.keys) {
                entries.push(entry(key, gateway, true));
            }
            state.keys = fresh;
            Counters::inc(&self.stats.counters.resyncs);
            tracing::info!(gateway = %NodeId(gateway), keys = state.keys.len(), "gateway routes resynchronised");
        } else {
            for change in batch.changes {
                let key = (change.kind, change.key);
                let changed = if change.present {
                    state.keys.insert(key.clone())
                } else {
                    state.keys.remove(&key)
                };
                if changed {
                    entries.push(entry(&key, gateway, change.present));
                }
            }
        }
        self.publish(entries);
        self.pending.push_back((self.seq, session, batch.generation));
        self.confirm();
    }

    /// Why a gateway's route batch must not be applied: a key that is not a valid uid or group
    /// name, or more keys than one gateway may hold.
    fn refuse_routes(&self, gateway: u64, batch: &RouteBatch) -> Option<String> {
        for change in &batch.changes {
            if let Err(error) = check_key("route key", &change.key) {
                return Some(error.to_string());
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
            self.publish(Vec::new());
            self.broadcast_membership();
        }
        self.confirm();
    }

    fn remove_member(&mut self, member: u64) {
        let Some(state) = self.members.remove(&member) else {
            return;
        };
        if let Some(session) = state.session {
            self.sessions.remove(&session);
        }
        let entries: Vec<RouteEntry> = state.keys.iter().map(|k| entry(k, member, false)).collect();
        if !entries.is_empty() {
            self.publish(entries);
        }
        self.broadcast_membership();
    }

    /// Sends changes to every subscriber, in chunks of at most [`UPDATE_CHUNK`] entries, each
    /// under a new sequence number (or, with no entries, one update under the current number: a
    /// flag change only).
    fn publish(&mut self, entries: Vec<RouteEntry>) {
        let subscribers: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.subscribe)
            .map(|(id, _)| *id)
            .collect();
        let chunks: Vec<Vec<RouteEntry>> = if entries.is_empty() {
            vec![Vec::new()]
        } else {
            entries.chunks(UPDATE_CHUNK).map(<[RouteEntry]>::to_vec).collect()
        };
        Counters::add(&self.counters().entries_published, entries.len() as u64);
        for chunk in chunks {
            if !chunk.is_empty() {
                self.seq += 1;
                Counters::add(&self.counters().updates_published, subscribers.len() as u64);
            }
            let update = RouteUpdate {
                seq: self.seq,
                reset: false,
                authoritative: self.authoritative,
                entries: chunk,
                partial: false,
            };
            for session in &subscribers {
                self.send_update(*session, update.clone());
            }
        }
    }

    fn send_snapshot(&mut self, session: u64) {
        Counters::inc(&self.counters().snapshots);
        let mut entries: Vec<RouteEntry> = Vec::new();
        for (gateway, state) in &self.members {
            entries.extend(state.keys.iter().map(|k| entry(k, *gateway, true)));
        }
        let chunks: Vec<Vec<RouteEntry>> = if entries.is_empty() {
            vec![Vec::new()]
        } else {
            entries.chunks(UPDATE_CHUNK).map(<[RouteEntry]>::to_vec).collect()
        };
        let last = chunks.len() - 1;
        for (index, chunk) in chunks.into_iter().enumerate() {
            let update = RouteUpdate {
                seq: self.seq,
                reset: index == 0,
                authoritative: self.authoritative,
                entries: chunk,
                partial: index != last,
            };
            self.send_update(session, update);
        }
    }

    fn send_update(&mut self, session: u64, update: RouteUpdate) {
        let seq = update.seq;
        if let Some(state) = self.sessions.get_mut(&session)
            && (seq > state.acked || update.reset)
        {
            state.sent = state.sent.max(seq);
            state.behind_since.get_or_insert_with(Instant::now);
        }
        self.send(session, msg(attach_response::Msg::RouteUpdate(update)));
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

    fn membership(&self) -> AttachResponse {
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

    /// Queues a message for one session; a member whose queue is full is cut off.
    fn send(&mut self, session: u64, message: AttachResponse) {
        let Some(state) = self.sessions.get(&session) else {
            return;
        };
        if state.tx.try_send(Ok(message)).is_err() {
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

fn msg(msg: attach_response::Msg) -> AttachResponse {
    AttachResponse { msg: Some(msg) }
}

fn entry(key: &Key, gateway: u64, present: bool) -> RouteEntry {
    RouteEntry {
        kind: key.0,
        key: key.1.clone(),
        gateway,
        present,
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::ClusterSecret;
    use gatehouse_proto::tonic;
    use gatehouse_proto::v1::RouteChange;

    use super::*;

    type Inbox = mpsc::Receiver<Result<AttachResponse, Status>>;

    fn state() -> State {
        let mut config = RegistryConfig::new("127.0.0.1:0".parse().unwrap(), ClusterSecret::random());
        config.warmup = Duration::ZERO;
        config.max_members = 3;
        config.max_keys_per_gateway = 10_000;
        State::new(NodeId(1), config, Default::default())
    }

    fn member(id: u64, kind: MemberKind) -> Member {
        Member {
            kind: kind as i32,
            id,
            addr: format!("10.0.0.{id}:7100"),
            name: String::new(),
        }
    }

    fn attach(state: &mut State, session: u64, id: u64, kind: MemberKind) -> Inbox {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        state.on_input(Input::Attach {
            session,
            member: member(id, kind),
            subscribe: kind == MemberKind::Worker,
            tx,
        });
        rx
    }

    fn routes(keys: impl Iterator<Item = String>, reset: bool, generation: u64) -> RouteBatch {
        RouteBatch {
            generation,
            reset,
            synced: reset,
            changes: keys
                .map(|key| RouteChange {
                    kind: gatehouse_proto::v1::RouteKind::Uid as i32,
                    key,
                    present: true,
                })
                .collect(),
        }
    }

    /// Everything queued for a member so far.
    fn drain(inbox: &mut Inbox) -> Vec<Result<AttachResponse, Status>> {
        let mut out = Vec::new();
        while let Ok(message) = inbox.try_recv() {
            out.push(message);
        }
        out
    }

    fn updates(messages: &[Result<AttachResponse, Status>]) -> Vec<&RouteUpdate> {
        messages
            .iter()
            .filter_map(|m| match m.as_ref().ok()?.msg.as_ref()? {
                attach_response::Msg::RouteUpdate(update) => Some(update),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_large_change_reaches_subscribers_in_bounded_chunks_and_is_confirmed_after_the_last() {
        let mut state = state();
        let mut worker = attach(&mut state, 1, 10, MemberKind::Worker);
        let mut gateway = attach(&mut state, 2, 20, MemberKind::Gateway);
        drain(&mut worker);
        drain(&mut gateway);
        let keys = UPDATE_CHUNK * 2 + 10;
        state.on_input(Input::Routes {
            session: 2,
            batch: routes((0..keys).map(|i| format!("u{i}")), false, 7),
        });
        let received = drain(&mut worker);
        let chunks = updates(&received);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|u| u.entries.len() <= UPDATE_CHUNK));
        assert_eq!(chunks.iter().map(|u| u.entries.len()).sum::<usize>(), keys);
        let last = chunks.last().unwrap().seq;
        let confirmed = |inbox: &mut Inbox| {
            drain(inbox).into_iter().any(|m| {
                matches!(
                    m.unwrap().msg,
                    Some(attach_response::Msg::BatchApplied(BatchApplied { generation: 7 }))
                )
            })
        };
        state.on_input(Input::RouteAck {
            session: 1,
            seq: last - 1,
        });
        assert!(!confirmed(&mut gateway), "not before the last chunk is acknowledged");
        state.on_input(Input::RouteAck { session: 1, seq: last });
        assert!(confirmed(&mut gateway));
    }

    #[test]
    fn a_gateway_announcing_an_invalid_key_is_cut_off_and_nothing_is_published() {
        let mut state = state();
        let mut worker = attach(&mut state, 1, 10, MemberKind::Worker);
        let mut gateway = attach(&mut state, 2, 20, MemberKind::Gateway);
        drain(&mut worker);
        drain(&mut gateway);
        state.on_input(Input::Routes {
            session: 2,
            batch: routes(["ok".to_owned(), "x".repeat(300)].into_iter(), false, 1),
        });
        assert!(updates(&drain(&mut worker)).is_empty());
        let ended = drain(&mut gateway);
        assert!(matches!(ended.last(), Some(Err(status)) if status.code() == tonic::Code::ResourceExhausted));
    }

    #[test]
    fn a_gateway_over_its_key_limit_is_cut_off() {
        let mut state = state();
        let mut gateway = attach(&mut state, 2, 20, MemberKind::Gateway);
        drain(&mut gateway);
        state.on_input(Input::Routes {
            session: 2,
            batch: routes((0..10_001).map(|i| format!("u{i}")), true, 1),
        });
        assert!(matches!(drain(&mut gateway).last(), Some(Err(_))));
        assert!(
            state.members[&20].keys.is_empty(),
            "nothing of the refused batch was applied"
        );
    }

    #[test]
    fn members_beyond_the_limit_are_refused_and_known_ones_may_reattach() {
        let mut state = state();
        let _a = attach(&mut state, 1, 10, MemberKind::Worker);
        let _b = attach(&mut state, 2, 11, MemberKind::Worker);
        let _c = attach(&mut state, 3, 12, MemberKind::Worker);
        let mut refused = attach(&mut state, 4, 13, MemberKind::Worker);
        assert!(
            matches!(drain(&mut refused).as_slice(), [Err(status)] if status.code() == tonic::Code::ResourceExhausted)
        );
        let mut again = attach(&mut state, 5, 10, MemberKind::Worker);
        assert!(
            drain(&mut again).iter().all(Result::is_ok),
            "a member re-attaching is not a new member"
        );
    }
}
