//! The state machine driven input by input, without a socket or a real clock: each test names
//! the transition it checks, and time (leases, ack timeouts, the warm-up) moves only when a test
//! advances tokio's paused clock.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;

use gatehouse_core::ClusterSecret;
use gatehouse_proto::tonic::Code;
use gatehouse_proto::v1::{RouteChange, RouteKind, RouteUpdate};

use crate::packed::UPDATE_CHUNK;

use super::*;

type Inbox = mpsc::Receiver<Result<Outgoing, Status>>;
type Received = Vec<Result<AttachResponse, Status>>;

const LEASE: Duration = Duration::from_secs(3);
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

const WORKER: u64 = 10;
const OTHER_WORKER: u64 = 11;
const GATEWAY: u64 = 20;

fn config() -> RegistryConfig {
    let mut config = RegistryConfig::new("127.0.0.1:0".parse().unwrap(), ClusterSecret::random());
    config.lease = LEASE;
    config.ack_timeout = ACK_TIMEOUT;
    config.warmup = Duration::ZERO;
    config.max_members = 3;
    config.max_keys_per_gateway = 10_000;
    config
}

fn state() -> State {
    state_with(config())
}

fn state_with(config: RegistryConfig) -> State {
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

/// Attaches a member (workers subscribe to routes, gateways do not); returns what it receives.
fn attach(state: &mut State, session: u64, id: u64, kind: MemberKind) -> Inbox {
    attach_member(
        state,
        session,
        member(id, kind),
        kind == MemberKind::Worker,
        OUTBOUND_QUEUE,
    )
}

fn attach_member(state: &mut State, session: u64, member: Member, subscribe: bool, queue: usize) -> Inbox {
    let (tx, rx) = mpsc::channel(queue);
    state.on_input(Input::Attach {
        session,
        member,
        subscribe,
        tx,
    });
    rx
}

fn change(key: &str, present: bool) -> RouteChange {
    RouteChange {
        kind: RouteKind::Uid as i32,
        key: key.to_owned(),
        present,
    }
}

fn add(keys: &[&str]) -> Vec<RouteChange> {
    keys.iter().map(|key| change(key, true)).collect()
}

fn remove(keys: &[&str]) -> Vec<RouteChange> {
    keys.iter().map(|key| change(key, false)).collect()
}

/// An ordinary batch of changes.
fn changes(generation: u64, changes: Vec<RouteChange>) -> RouteBatch {
    RouteBatch {
        generation,
        reset: false,
        synced: false,
        changes,
    }
}

/// A part of a resync: `reset` on the first, `synced` on the last.
fn resync(generation: u64, reset: bool, synced: bool, changes: Vec<RouteChange>) -> RouteBatch {
    RouteBatch {
        generation,
        reset,
        synced,
        changes,
    }
}

fn routes(state: &mut State, session: u64, batch: RouteBatch) {
    state.on_input(Input::Routes { session, batch });
}

fn ack(state: &mut State, session: u64, seq: u64) {
    state.on_input(Input::RouteAck { session, seq });
}

fn heartbeat(state: &mut State, session: u64, seq: u64) {
    state.on_input(Input::Heartbeat { session, seq });
}

fn detach(state: &mut State, session: u64, graceful: bool) {
    state.on_input(Input::Detach { session, graceful });
}

/// Everything queued for a member so far.
fn drain(inbox: &mut Inbox) -> Received {
    let mut out = Vec::new();
    while let Ok(message) = inbox.try_recv() {
        out.push(message.map(Outgoing::into_response));
    }
    out
}

fn messages(received: &Received) -> impl Iterator<Item = &attach_response::Msg> {
    received.iter().filter_map(|m| m.as_ref().ok()?.msg.as_ref())
}

fn updates(received: &Received) -> Vec<RouteUpdate> {
    messages(received)
        .filter_map(|m| match m {
            attach_response::Msg::RouteUpdate(update) => Some(update.clone()),
            _ => None,
        })
        .collect()
}

/// The route entries received, as `(key, gateway, present)`, sorted.
fn entries(received: &Received) -> Vec<(String, u64, bool)> {
    let mut out: Vec<_> = updates(received)
        .into_iter()
        .flat_map(|u| u.entries)
        .map(|e| (e.key, e.gateway, e.present))
        .collect();
    out.sort();
    out
}

fn listed(keys: &[&str], gateway: u64, present: bool) -> Vec<(String, u64, bool)> {
    let mut out: Vec<_> = keys.iter().map(|k| ((*k).to_owned(), gateway, present)).collect();
    out.sort();
    out
}

/// The generations confirmed to a gateway, in order.
fn confirmed(received: &Received) -> Vec<u64> {
    messages(received)
        .filter_map(|m| match m {
            attach_response::Msg::BatchApplied(applied) => Some(applied.generation),
            _ => None,
        })
        .collect()
}

fn memberships(received: &Received) -> Vec<Membership> {
    messages(received)
        .filter_map(|m| match m {
            attach_response::Msg::Membership(membership) => Some(membership.clone()),
            _ => None,
        })
        .collect()
}

fn member_ids(membership: &Membership) -> BTreeSet<u64> {
    membership.members.iter().map(|m| m.id).collect()
}

fn heartbeat_acks(received: &Received) -> Vec<u64> {
    messages(received)
        .filter_map(|m| match m {
            attach_response::Msg::HeartbeatAck(ack) => Some(ack.seq),
            _ => None,
        })
        .collect()
}

/// The code of the error that ended the stream, if one did.
fn ended_with(received: &Received) -> Option<Code> {
    received.iter().find_map(|m| m.as_ref().err().map(Status::code))
}

fn keys_of(state: &State, id: u64) -> BTreeSet<String> {
    state.members[&id].keys.iter().map(|(_, key)| key.to_string()).collect()
}

fn count(state: &State, counter: fn(&Counters) -> &AtomicU64) -> u64 {
    Counters::get(counter(state.counters()))
}

/// A worker (session 1, snapshot acknowledged) and a gateway (session 3), inboxes drained.
fn worker_and_gateway(state: &mut State) -> (Inbox, Inbox) {
    let mut worker = attach(state, 1, WORKER, MemberKind::Worker);
    ack(state, 1, 0);
    let mut gateway = attach(state, 3, GATEWAY, MemberKind::Gateway);
    drain(&mut worker);
    drain(&mut gateway);
    (worker, gateway)
}

// ----------------------------------------------------------------------------------- attach

#[test]
fn a_newcomer_is_welcomed_first_with_the_lease_it_must_keep() {
    let mut state = state();
    let received = drain(&mut attach(&mut state, 1, WORKER, MemberKind::Worker));
    let Some(Ok(AttachResponse {
        msg: Some(attach_response::Msg::Welcome(welcome)),
    })) = received.first()
    else {
        panic!("the first message is the welcome: {received:?}");
    };
    assert_eq!(welcome.registry_id, 1);
    assert_eq!(welcome.lease_ms, 3000);
    assert_eq!(welcome.heartbeat_interval_ms, 1000, "a third of the lease");
    assert!(welcome.acks_heartbeats);
}

#[test]
fn a_new_member_is_announced_to_everyone_and_told_who_is_there() {
    let mut state = state();
    let mut worker = attach(&mut state, 1, WORKER, MemberKind::Worker);
    drain(&mut worker);
    let mut gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    let announced = memberships(&drain(&mut worker));
    assert_eq!(announced.len(), 1);
    assert_eq!(member_ids(&announced[0]), BTreeSet::from([WORKER, GATEWAY]));
    let told = memberships(&drain(&mut gateway));
    assert_eq!(
        member_ids(told.last().expect("membership")),
        BTreeSet::from([WORKER, GATEWAY])
    );
}

#[test]
fn a_member_that_cannot_take_its_welcome_is_not_admitted() {
    let mut state = state();
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    state.on_input(Input::Attach {
        session: 1,
        member: member(WORKER, MemberKind::Worker),
        subscribe: true,
        tx,
    });
    assert!(state.members.is_empty());
    assert!(state.sessions.is_empty());
}

#[test]
fn members_beyond_the_limit_are_refused_and_known_ones_may_reattach() {
    let mut state = state();
    let _a = attach(&mut state, 1, 10, MemberKind::Worker);
    let _b = attach(&mut state, 2, 11, MemberKind::Worker);
    let _c = attach(&mut state, 3, 12, MemberKind::Worker);
    let mut refused = attach(&mut state, 4, 13, MemberKind::Worker);
    assert!(matches!(drain(&mut refused).as_slice(), [Err(status)] if status.code() == Code::ResourceExhausted));
    assert!(!state.members.contains_key(&13));
    assert_eq!(count(&state, |c| &c.members_refused), 1);
    let mut again = attach(&mut state, 5, 10, MemberKind::Worker);
    assert!(
        drain(&mut again).iter().all(Result::is_ok),
        "a member re-attaching is not a new member"
    );
}

#[test]
fn a_subscriber_gets_the_whole_table_as_one_complete_snapshot() {
    let mut state = state();
    let _gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    routes(&mut state, 3, changes(1, add(&["a", "b"])));
    let received = drain(&mut attach(&mut state, 1, WORKER, MemberKind::Worker));
    let snapshot = updates(&received);
    assert_eq!(snapshot.len(), 1);
    assert!(snapshot[0].reset && !snapshot[0].partial);
    assert_eq!(snapshot[0].seq, 1, "the sequence number the table is at");
    assert_eq!(entries(&received), listed(&["a", "b"], GATEWAY, true));
    assert_eq!(count(&state, |c| &c.snapshots), 1);
}

#[test]
fn a_snapshot_of_an_empty_table_is_one_empty_complete_reset() {
    let mut state = state();
    let snapshot = updates(&drain(&mut attach(&mut state, 1, WORKER, MemberKind::Worker)));
    assert_eq!(snapshot.len(), 1);
    assert!(snapshot[0].reset && !snapshot[0].partial && snapshot[0].entries.is_empty());
}

#[test]
fn a_large_snapshot_comes_in_chunks_marked_partial_until_the_last() {
    let mut state = state();
    let _gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    let keys: Vec<String> = (0..=UPDATE_CHUNK).map(|i| format!("u{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    routes(&mut state, 3, changes(1, add(&keys)));
    let received = drain(&mut attach(&mut state, 1, WORKER, MemberKind::Worker));
    let chunks = updates(&received);
    assert_eq!(chunks.len(), 2);
    assert!(
        chunks[0].reset && chunks[0].partial,
        "the first resets and announces more"
    );
    assert!(
        !chunks[1].reset && !chunks[1].partial,
        "the last completes the snapshot"
    );
    assert_eq!(chunks[0].seq, chunks[1].seq);
    assert_eq!(entries(&received).len(), keys.len());
}

#[test]
fn a_snapshot_larger_than_the_queue_arrives_whole_and_in_order_as_the_stream_reads() {
    let mut state = state();
    let _gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    let keys: Vec<String> = (0..UPDATE_CHUNK * 2 + 1).map(|i| format!("u{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    routes(&mut state, 3, changes(1, add(&keys)));
    // Room for the welcome, the membership and one of the snapshot's three chunks.
    let mut worker = attach_member(&mut state, 1, member(WORKER, MemberKind::Worker), true, 3);
    // A change published while the snapshot waits must come after all of it.
    routes(&mut state, 3, changes(2, add(&["late"])));
    let mut received = Vec::new();
    for _ in 0..10 {
        received.extend(drain(&mut worker));
        state.on_input(Input::Heartbeat { session: 1, seq: 1 });
    }
    received.extend(drain(&mut worker));
    assert_eq!(ended_with(&received), None, "not cut off");
    assert_eq!(count(&state, |c| &c.subscribers_cut_off), 0);
    let updates = updates(&received);
    assert_eq!(updates.len(), 4, "three chunks and the late change");
    assert!(updates[0].reset && updates[..2].iter().all(|u| u.partial) && !updates[2].partial);
    let last: Vec<&str> = updates[3].entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(last, ["late"], "the late change comes after the whole snapshot");
    let mut expected = listed(&keys, GATEWAY, true);
    expected.push(("late".to_owned(), GATEWAY, true));
    expected.sort();
    assert_eq!(entries(&received), expected, "every key of the table, once");
}

#[test]
fn a_subscriber_that_stops_reading_during_its_snapshot_is_cut_off_a_queue_behind_it() {
    let mut state = state();
    // Room for every confirmation the gateway gets once the worker is gone.
    let gateway = member(GATEWAY, MemberKind::Gateway);
    let _gateway = attach_member(&mut state, 3, gateway, false, OUTBOUND_QUEUE * 2);
    let keys: Vec<String> = (0..UPDATE_CHUNK * 2 + 1).map(|i| format!("u{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    routes(&mut state, 3, changes(1, add(&keys)));
    // The queue fills with the welcome and the memberships: the whole snapshot waits behind.
    let _worker = attach_member(&mut state, 1, member(WORKER, MemberKind::Worker), true, 3);
    let late: Vec<String> = (0..=OUTBOUND_QUEUE).map(|i| format!("late{i}")).collect();
    for (generation, key) in late[..OUTBOUND_QUEUE].iter().enumerate() {
        routes(&mut state, 3, changes(2 + generation as u64, add(&[key.as_str()])));
    }
    assert_eq!(
        count(&state, |c| &c.subscribers_cut_off),
        0,
        "a queue's worth of updates may wait behind the snapshot"
    );
    routes(&mut state, 3, changes(9_999, add(&[late[OUTBOUND_QUEUE].as_str()])));
    assert_eq!(count(&state, |c| &c.subscribers_cut_off), 1, "one more is too many");
}

#[test]
fn a_subscriber_is_sent_a_snapshot_and_a_gateway_is_not() {
    let mut state = state();
    let (_worker, _gateway) = worker_and_gateway(&mut state);
    let mut gateway = attach(&mut state, 4, GATEWAY + 1, MemberKind::Gateway);
    assert!(updates(&drain(&mut gateway)).is_empty());
}

#[test]
fn a_reattaching_member_replaces_its_old_session_and_keeps_its_routes() {
    let mut state = state();
    let (mut worker, mut old) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a"])));
    ack(&mut state, 1, 1);
    drain(&mut worker);
    drain(&mut old);
    let mut moved = member(GATEWAY, MemberKind::Gateway);
    moved.addr = "10.0.0.99:7100".into();
    let mut new = attach_member(&mut state, 4, moved, false, OUTBOUND_QUEUE);
    assert!(drain(&mut worker).is_empty(), "no withdrawal, no new membership");
    assert_eq!(keys_of(&state, GATEWAY), BTreeSet::from(["a".to_owned()]));
    assert_eq!(state.members[&GATEWAY].member.addr, "10.0.0.99:7100");
    heartbeat(&mut state, 3, 7);
    routes(&mut state, 3, changes(2, add(&["b"])));
    assert!(drain(&mut old).is_empty(), "the old session is heard no more");
    assert!(updates(&drain(&mut worker)).is_empty());
    heartbeat(&mut state, 4, 8);
    assert_eq!(heartbeat_acks(&drain(&mut new)), [8]);
}

#[test]
fn a_reattach_abandons_a_resync_in_progress() {
    let mut state = state();
    let (mut worker, _old) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a"])));
    ack(&mut state, 1, 1);
    routes(&mut state, 3, resync(2, true, false, add(&["b"])));
    let _new = attach(&mut state, 4, GATEWAY, MemberKind::Gateway);
    drain(&mut worker);
    routes(&mut state, 4, changes(3, add(&["c"])));
    assert_eq!(
        entries(&drain(&mut worker)),
        listed(&["c"], GATEWAY, true),
        "applied at once, not staged behind the abandoned resync"
    );
    assert_eq!(
        keys_of(&state, GATEWAY),
        BTreeSet::from(["a".to_owned(), "c".to_owned()])
    );
}

// -------------------------------------------------------------------------------- heartbeats

#[tokio::test(start_paused = true)]
async fn a_heartbeat_renews_the_lease_and_is_acknowledged_with_its_seq() {
    let mut state = state();
    let mut gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    drain(&mut gateway);
    tokio::time::advance(LEASE - MS).await;
    heartbeat(&mut state, 3, 41);
    assert_eq!(heartbeat_acks(&drain(&mut gateway)), [41]);
    tokio::time::advance(LEASE - MS).await;
    state.on_tick();
    assert!(state.members.contains_key(&GATEWAY), "renewed {:?} ago", LEASE - MS);
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_on_a_broken_session_is_neither_acknowledged_nor_renews_the_lease() {
    let mut state = state();
    let mut gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    detach(&mut state, 3, false);
    drain(&mut gateway);
    tokio::time::advance(LEASE).await;
    heartbeat(&mut state, 3, 1);
    assert!(heartbeat_acks(&drain(&mut gateway)).is_empty());
    tokio::time::advance(MS).await;
    state.on_tick();
    assert!(!state.members.contains_key(&GATEWAY));
}

#[test]
fn inputs_from_unknown_sessions_change_nothing() {
    let mut state = state();
    let (mut worker, mut gateway) = worker_and_gateway(&mut state);
    heartbeat(&mut state, 99, 1);
    routes(&mut state, 99, changes(1, add(&["a"])));
    ack(&mut state, 99, 5);
    detach(&mut state, 99, true);
    assert!(drain(&mut worker).is_empty());
    assert!(drain(&mut gateway).is_empty());
    assert_eq!(state.members.len(), 2);
    assert_eq!(state.seq, 0);
}

// ------------------------------------------------------------------------------- route batches

#[test]
fn route_batches_from_a_worker_are_ignored() {
    let mut state = state();
    let (mut worker, _gateway) = worker_and_gateway(&mut state);
    let mut other = attach(&mut state, 2, OTHER_WORKER, MemberKind::Worker);
    drain(&mut worker);
    drain(&mut other);
    routes(&mut state, 2, changes(1, add(&["a"])));
    assert!(drain(&mut worker).is_empty());
    assert!(drain(&mut other).is_empty(), "not even confirmed");
    assert!(state.pending.is_empty());
}

#[test]
fn changes_are_published_once_and_confirmed_after_every_subscriber_acknowledged_them() {
    let mut state = state();
    let (mut worker, mut gateway) = worker_and_gateway(&mut state);
    let mut other = attach(&mut state, 2, OTHER_WORKER, MemberKind::Worker);
    ack(&mut state, 2, 0);
    drain(&mut other);
    routes(&mut state, 3, changes(1, add(&["a", "b"])));
    for inbox in [&mut worker, &mut other] {
        let received = drain(inbox);
        assert_eq!(updates(&received).len(), 1);
        assert_eq!(updates(&received)[0].seq, 1);
        assert_eq!(entries(&received), listed(&["a", "b"], GATEWAY, true));
    }
    ack(&mut state, 1, 1);
    assert!(
        confirmed(&drain(&mut gateway)).is_empty(),
        "one subscriber still to acknowledge"
    );
    ack(&mut state, 2, 1);
    assert_eq!(confirmed(&drain(&mut gateway)), [1]);
    assert_eq!(
        keys_of(&state, GATEWAY),
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
}

#[test]
fn a_removal_withdraws_the_key_under_the_next_sequence_number() {
    let mut state = state();
    let (mut worker, _gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a", "b"])));
    drain(&mut worker);
    routes(&mut state, 3, changes(2, remove(&["a"])));
    let received = drain(&mut worker);
    assert_eq!(updates(&received)[0].seq, 2);
    assert_eq!(entries(&received), listed(&["a"], GATEWAY, false));
    assert_eq!(keys_of(&state, GATEWAY), BTreeSet::from(["b".to_owned()]));
}

#[test]
fn a_batch_that_changes_nothing_publishes_no_entry_and_is_confirmed_at_once() {
    let mut state = state();
    let (mut worker, mut gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a"])));
    ack(&mut state, 1, 1);
    drain(&mut worker);
    drain(&mut gateway);
    routes(&mut state, 3, changes(2, [add(&["a"]), remove(&["zz"])].concat()));
    let received = drain(&mut worker);
    assert!(entries(&received).is_empty());
    assert!(updates(&received).iter().all(|u| u.seq == 1), "no new sequence number");
    assert_eq!(confirmed(&drain(&mut gateway)), [2]);
    assert!(state.sessions[&1].behind_since.is_none(), "nothing new to acknowledge");
}

#[test]
fn without_subscribers_a_batch_is_confirmed_at_once() {
    let mut state = state();
    let mut gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    routes(&mut state, 3, changes(5, add(&["a"])));
    assert_eq!(confirmed(&drain(&mut gateway)), [5]);
}

#[test]
fn a_large_change_reaches_subscribers_in_bounded_chunks_and_is_confirmed_after_the_last() {
    let mut state = state();
    let (mut worker, mut gateway) = worker_and_gateway(&mut state);
    let keys: Vec<String> = (0..UPDATE_CHUNK * 2 + 10).map(|i| format!("u{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    routes(&mut state, 3, changes(7, add(&keys)));
    let chunks = updates(&drain(&mut worker));
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(|u| u.entries.len() <= UPDATE_CHUNK));
    assert_eq!(chunks.iter().map(|u| u.entries.len()).sum::<usize>(), keys.len());
    assert_eq!(
        chunks.iter().map(|u| u.seq).collect::<Vec<_>>(),
        [1, 2, 3],
        "each chunk under the next number"
    );
    assert_eq!(count(&state, |c| &c.entries_published), keys.len() as u64);
    assert_eq!(
        count(&state, |c| &c.updates_published),
        3,
        "three chunks to one subscriber"
    );
    ack(&mut state, 1, 2);
    assert!(
        confirmed(&drain(&mut gateway)).is_empty(),
        "not before the last chunk is acknowledged"
    );
    ack(&mut state, 1, 3);
    assert_eq!(confirmed(&drain(&mut gateway)), [7]);
}

#[test]
fn a_reset_replaces_the_gateways_keys_with_one_diff() {
    let mut state = state();
    let (mut worker, mut gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a", "b"])));
    ack(&mut state, 1, 1);
    drain(&mut worker);
    drain(&mut gateway);
    routes(&mut state, 3, resync(2, true, true, add(&["b", "c"])));
    let received = drain(&mut worker);
    assert_eq!(updates(&received).len(), 1, "one update");
    assert_eq!(
        entries(&received),
        [("a".to_owned(), GATEWAY, false), ("c".to_owned(), GATEWAY, true)],
        "b, held before and after, is not repeated"
    );
    assert_eq!(
        keys_of(&state, GATEWAY),
        BTreeSet::from(["b".to_owned(), "c".to_owned()])
    );
    assert_eq!(count(&state, |c| &c.resyncs), 1);
    ack(&mut state, 1, 2);
    assert_eq!(confirmed(&drain(&mut gateway)), [2]);
}

#[test]
fn a_staged_resync_publishes_nothing_until_synced_and_keeps_the_old_keys_meanwhile() {
    let mut state = state();
    let (mut worker, mut gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a", "b"])));
    ack(&mut state, 1, 1);
    drain(&mut worker);
    drain(&mut gateway);
    routes(&mut state, 3, resync(2, true, false, add(&["c"])));
    routes(
        &mut state,
        3,
        resync(3, false, false, [add(&["d"]), remove(&["c"])].concat()),
    );
    assert!(drain(&mut worker).is_empty(), "nothing published while staged");
    assert_eq!(
        keys_of(&state, GATEWAY),
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
    assert_eq!(count(&state, |c| &c.resyncs), 0);
    routes(&mut state, 3, resync(4, false, true, add(&["e"])));
    let received = drain(&mut worker);
    let mut expected = [listed(&["a", "b"], GATEWAY, false), listed(&["d", "e"], GATEWAY, true)].concat();
    expected.sort();
    assert_eq!(entries(&received), expected, "c came and went inside the resync");
    assert_eq!(
        keys_of(&state, GATEWAY),
        BTreeSet::from(["d".to_owned(), "e".to_owned()])
    );
    assert!(state.members[&GATEWAY].staging.is_none());
    ack(&mut state, 1, 2);
    assert_eq!(
        confirmed(&drain(&mut gateway)),
        [4],
        "the resync is confirmed by its last batch"
    );
}

#[test]
fn a_gateway_announcing_an_invalid_key_is_cut_off_and_nothing_is_published() {
    let mut state = state();
    let (mut worker, mut gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["ok", &"x".repeat(300)])));
    assert!(drain(&mut worker).is_empty());
    assert_eq!(ended_with(&drain(&mut gateway)), Some(Code::ResourceExhausted));
    assert!(keys_of(&state, GATEWAY).is_empty());
    assert_eq!(count(&state, |c| &c.batches_refused), 1);
}

#[test]
fn a_gateway_announcing_a_key_of_unknown_kind_is_cut_off_and_nothing_is_published() {
    let mut state = state();
    let (mut worker, mut gateway) = worker_and_gateway(&mut state);
    let mut batch = add(&["ok", "odd"]);
    batch[1].kind = 7;
    routes(&mut state, 3, changes(1, batch));
    assert!(drain(&mut worker).is_empty());
    assert_eq!(ended_with(&drain(&mut gateway)), Some(Code::ResourceExhausted));
    assert!(keys_of(&state, GATEWAY).is_empty());
    assert_eq!(count(&state, |c| &c.batches_refused), 1);
}

#[test]
fn a_refused_gateway_loses_its_session_but_keeps_its_routes_until_its_lease_ends() {
    let mut state = state();
    let (_worker, mut gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a"])));
    routes(&mut state, 3, resync(2, true, false, add(&["b"])));
    routes(&mut state, 3, changes(3, add(&[""])));
    assert_eq!(ended_with(&drain(&mut gateway)), Some(Code::ResourceExhausted));
    assert!(!state.sessions.contains_key(&3));
    let kept = &state.members[&GATEWAY];
    assert_eq!(kept.session, None);
    assert!(kept.staging.is_none(), "the resync in progress is abandoned");
    assert_eq!(keys_of(&state, GATEWAY), BTreeSet::from(["a".to_owned()]));
}

#[test]
fn a_gateway_may_hold_exactly_its_key_limit_and_is_cut_off_beyond_it() {
    let mut config = config();
    config.max_keys_per_gateway = 3;
    let mut state = state_with(config);
    let mut gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    routes(&mut state, 3, changes(1, add(&["a", "b"])));
    routes(&mut state, 3, changes(2, add(&["c"])));
    assert_eq!(confirmed(&drain(&mut gateway)), [1, 2], "three keys: at the limit");
    routes(&mut state, 3, changes(3, add(&["d"])));
    assert_eq!(ended_with(&drain(&mut gateway)), Some(Code::ResourceExhausted));
    assert_eq!(
        keys_of(&state, GATEWAY).len(),
        3,
        "nothing of the refused batch was applied"
    );
}

#[test]
fn during_a_resync_the_key_limit_counts_the_staged_keys_not_the_held_ones() {
    let mut config = config();
    config.max_keys_per_gateway = 3;
    let mut state = state_with(config);
    let mut gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    routes(&mut state, 3, changes(1, add(&["a", "b", "c"])));
    routes(&mut state, 3, resync(2, true, false, add(&["x"])));
    routes(&mut state, 3, resync(3, false, false, add(&["y", "z"])));
    assert!(
        ended_with(&drain(&mut gateway)).is_none(),
        "1 staged + 2 is within the limit"
    );
    routes(&mut state, 3, resync(4, false, true, add(&["w"])));
    assert_eq!(ended_with(&drain(&mut gateway)), Some(Code::ResourceExhausted));
}

#[test]
fn a_reset_may_announce_a_full_set_whatever_the_gateway_held_before() {
    let mut config = config();
    config.max_keys_per_gateway = 3;
    let mut state = state_with(config);
    let mut gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    routes(&mut state, 3, changes(1, add(&["a", "b", "c"])));
    routes(&mut state, 3, resync(2, true, true, add(&["x", "y", "z"])));
    assert_eq!(confirmed(&drain(&mut gateway)), [1, 2]);
    assert_eq!(keys_of(&state, GATEWAY).len(), 3);
}

#[test]
fn a_gateway_over_its_key_limit_in_one_batch_is_cut_off() {
    let mut state = state();
    let mut gateway = attach(&mut state, 2, GATEWAY, MemberKind::Gateway);
    drain(&mut gateway);
    let keys: Vec<String> = (0..10_001).map(|i| format!("u{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    routes(&mut state, 2, resync(1, true, true, add(&keys)));
    assert!(matches!(drain(&mut gateway).last(), Some(Err(_))));
    assert!(
        keys_of(&state, GATEWAY).is_empty(),
        "nothing of the refused batch was applied"
    );
}

// ---------------------------------------------------------------------------- confirmations

#[test]
fn confirmations_wait_for_the_slowest_subscriber_and_go_out_in_order() {
    let mut state = state();
    let (mut worker, mut gateway) = worker_and_gateway(&mut state);
    let _other = attach(&mut state, 2, OTHER_WORKER, MemberKind::Worker);
    ack(&mut state, 2, 0);
    routes(&mut state, 3, changes(1, add(&["a"])));
    routes(&mut state, 3, changes(2, add(&["b"])));
    ack(&mut state, 1, 2);
    ack(&mut state, 2, 1);
    assert_eq!(confirmed(&drain(&mut gateway)), [1]);
    ack(&mut state, 2, 2);
    assert_eq!(confirmed(&drain(&mut gateway)), [2]);
    drain(&mut worker);
}

#[test]
fn a_subscriber_that_goes_away_no_longer_holds_back_confirmations() {
    let mut state = state();
    let (_worker, mut gateway) = worker_and_gateway(&mut state);
    let _other = attach(&mut state, 2, OTHER_WORKER, MemberKind::Worker);
    ack(&mut state, 2, 0);
    routes(&mut state, 3, changes(1, add(&["a"])));
    ack(&mut state, 1, 1);
    assert!(confirmed(&drain(&mut gateway)).is_empty());
    detach(&mut state, 2, false);
    assert_eq!(confirmed(&drain(&mut gateway)), [1]);
}

#[test]
fn a_confirmation_for_a_gateway_that_went_away_is_dropped() {
    let mut state = state();
    let (_worker, _gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a"])));
    detach(&mut state, 3, false);
    ack(&mut state, 1, 1);
    assert!(state.pending.is_empty());
}

#[test]
fn an_ack_beyond_what_was_sent_counts_only_up_to_what_was_sent() {
    let mut state = state();
    let (_worker, mut gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a"])));
    ack(&mut state, 1, 5);
    assert_eq!(confirmed(&drain(&mut gateway)), [1]);
    routes(&mut state, 3, changes(2, add(&["b"])));
    assert!(
        confirmed(&drain(&mut gateway)).is_empty(),
        "seq 2 was not acknowledged by the early 5"
    );
    assert!(state.sessions[&1].behind_since.is_some());
}

#[test]
fn an_older_ack_never_moves_the_acknowledgement_back() {
    let mut state = state();
    let (_worker, mut gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a"])));
    routes(&mut state, 3, changes(2, add(&["b"])));
    ack(&mut state, 1, 2);
    ack(&mut state, 1, 1);
    assert_eq!(confirmed(&drain(&mut gateway)), [1, 2]);
    routes(&mut state, 3, changes(3, add(&["b"])));
    assert_eq!(confirmed(&drain(&mut gateway)), [3], "still acknowledged up to 2");
    assert!(state.sessions[&1].behind_since.is_none());
}

// ------------------------------------------------------------------------------ ack timeouts

/// A worker that will have left one update unacknowledged since now.
fn behind_by_one(state: &mut State) -> (Inbox, Inbox) {
    let (worker, gateway) = worker_and_gateway(state);
    routes(state, 3, changes(1, add(&["a"])));
    (worker, gateway)
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_leaves_an_update_unacknowledged_past_the_timeout_is_cut_off() {
    let mut state = state();
    let (mut worker, mut gateway) = behind_by_one(&mut state);
    tokio::time::advance(ACK_TIMEOUT).await;
    state.on_tick();
    assert!(state.sessions.contains_key(&1), "not at exactly the timeout");
    tokio::time::advance(MS).await;
    state.on_tick();
    assert_eq!(ended_with(&drain(&mut worker)), Some(Code::DeadlineExceeded));
    assert!(!state.sessions.contains_key(&1));
    assert_eq!(
        state.members[&WORKER].session, None,
        "the member stays until its lease ends"
    );
    assert_eq!(count(&state, |c| &c.subscribers_cut_off), 1);
    assert_eq!(
        confirmed(&drain(&mut gateway)),
        [1],
        "no longer held back by the cut-off subscriber"
    );
}

#[tokio::test(start_paused = true)]
async fn progress_restarts_the_ack_clock_and_a_repeated_ack_does_not() {
    let mut state = state();
    let (_worker, _gateway) = behind_by_one(&mut state);
    routes(&mut state, 3, changes(2, add(&["b"])));
    tokio::time::advance(ACK_TIMEOUT * 4 / 5).await;
    ack(&mut state, 1, 1);
    tokio::time::advance(ACK_TIMEOUT * 4 / 5).await;
    state.on_tick();
    assert!(state.sessions.contains_key(&1), "progress was made within the timeout");
    ack(&mut state, 1, 1);
    tokio::time::advance(ACK_TIMEOUT * 3 / 10).await;
    state.on_tick();
    assert!(!state.sessions.contains_key(&1), "the same ack again is no progress");
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_caught_up_is_never_cut_off() {
    let mut state = state();
    let (_worker, _gateway) = behind_by_one(&mut state);
    ack(&mut state, 1, 1);
    tokio::time::advance(ACK_TIMEOUT * 2).await;
    state.on_tick();
    assert!(state.sessions.contains_key(&1));
}

#[tokio::test(start_paused = true)]
async fn a_new_subscriber_must_acknowledge_its_snapshot_in_time() {
    let mut state = state();
    let mut worker = attach(&mut state, 1, WORKER, MemberKind::Worker);
    tokio::time::advance(ACK_TIMEOUT + MS).await;
    state.on_tick();
    assert_eq!(ended_with(&drain(&mut worker)), Some(Code::DeadlineExceeded));
}

// ------------------------------------------------------------------------------------ leases

#[tokio::test(start_paused = true)]
async fn a_silent_member_is_dropped_after_its_lease_and_its_keys_withdrawn() {
    let mut state = state();
    let (mut worker, _gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a", "b"])));
    ack(&mut state, 1, 1);
    drain(&mut worker);
    tokio::time::advance(LEASE).await;
    heartbeat(&mut state, 1, 1);
    state.on_tick();
    assert!(state.members.contains_key(&GATEWAY), "kept at exactly its lease");
    tokio::time::advance(MS).await;
    state.on_tick();
    assert!(!state.members.contains_key(&GATEWAY));
    assert!(state.members.contains_key(&WORKER), "the worker heart-beat");
    let received = drain(&mut worker);
    assert_eq!(entries(&received), listed(&["a", "b"], GATEWAY, false));
    assert_eq!(
        member_ids(memberships(&received).last().expect("membership")),
        BTreeSet::from([WORKER])
    );
    assert_eq!(count(&state, |c| &c.members_expired), 1);
}

#[tokio::test(start_paused = true)]
async fn a_broken_stream_keeps_the_members_routes_until_its_lease_ends() {
    let mut state = state();
    let (mut worker, _gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a"])));
    ack(&mut state, 1, 1);
    routes(&mut state, 3, resync(2, true, false, add(&["b"])));
    drain(&mut worker);
    detach(&mut state, 3, false);
    assert!(drain(&mut worker).is_empty(), "no withdrawal, no membership change");
    assert_eq!(keys_of(&state, GATEWAY), BTreeSet::from(["a".to_owned()]));
    assert!(
        state.members[&GATEWAY].staging.is_none(),
        "the resync in progress is abandoned"
    );
    tokio::time::advance(LEASE + MS).await;
    heartbeat(&mut state, 1, 1);
    state.on_tick();
    assert_eq!(entries(&drain(&mut worker)), listed(&["a"], GATEWAY, false));
}

#[test]
fn a_graceful_detach_removes_the_member_and_withdraws_its_keys_at_once() {
    let mut state = state();
    let (mut worker, _gateway) = worker_and_gateway(&mut state);
    routes(&mut state, 3, changes(1, add(&["a", "b"])));
    drain(&mut worker);
    detach(&mut state, 3, true);
    assert!(!state.members.contains_key(&GATEWAY));
    let received = drain(&mut worker);
    assert_eq!(entries(&received), listed(&["a", "b"], GATEWAY, false));
    assert_eq!(updates(&received)[0].seq, 2);
    assert_eq!(
        member_ids(memberships(&received).last().expect("membership")),
        BTreeSet::from([WORKER])
    );
}

#[test]
fn a_member_without_keys_leaves_without_a_route_update() {
    let mut state = state();
    let (mut worker, _gateway) = worker_and_gateway(&mut state);
    detach(&mut state, 3, true);
    let received = drain(&mut worker);
    assert!(updates(&received).is_empty());
    assert_eq!(memberships(&received).len(), 1);
    assert_eq!(state.seq, 0);
}

// ---------------------------------------------------------------------------------- warm-up

#[tokio::test(start_paused = true)]
async fn the_table_turns_authoritative_once_at_the_end_of_the_warmup_and_says_so() {
    let mut config = config();
    config.warmup = Duration::from_secs(2);
    let mut state = state_with(config);
    let mut worker = attach(&mut state, 1, WORKER, MemberKind::Worker);
    ack(&mut state, 1, 0);
    let received = drain(&mut worker);
    assert!(updates(&received).iter().all(|u| !u.authoritative));
    assert!(memberships(&received).iter().all(|m| !m.authoritative));
    tokio::time::advance(Duration::from_secs(2) - MS).await;
    state.on_tick();
    assert!(drain(&mut worker).is_empty(), "still warming up");
    tokio::time::advance(MS).await;
    state.on_tick();
    let received = drain(&mut worker);
    let flag = updates(&received);
    assert_eq!(flag.len(), 1);
    assert!(flag[0].authoritative && flag[0].entries.is_empty() && !flag[0].reset);
    assert_eq!(flag[0].seq, 0, "a flag change takes no sequence number");
    assert!(memberships(&received).iter().all(|m| m.authoritative));
    assert_eq!(memberships(&received).len(), 1);
    state.on_tick();
    assert!(drain(&mut worker).is_empty(), "said once");
    state.record_sizes();
    assert!(state.stats.is_authoritative());
}

// ------------------------------------------------------------------------------- slow readers

#[test]
fn a_member_whose_queue_is_full_is_cut_off() {
    let mut state = state();
    // Room for exactly what attaching sends: welcome, two memberships, the snapshot.
    let _unread = attach_member(&mut state, 1, member(WORKER, MemberKind::Worker), true, 4);
    let _gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    assert!(!state.sessions.contains_key(&1));
    assert_eq!(state.members[&WORKER].session, None);
    assert_eq!(count(&state, |c| &c.subscribers_cut_off), 1);
}

// --------------------------------------------------------------------------------- the loop

#[tokio::test(start_paused = true)]
async fn the_loop_handles_inputs_in_order_and_ends_when_its_inputs_close() {
    let stats = std::sync::Arc::new(Stats::default());
    let state = State::new(NodeId(1), config(), stats.clone());
    let (inputs, rx) = mpsc::channel(8);
    let task = tokio::spawn(state.run(rx, CancellationToken::new()));
    let (tx, mut inbox) = mpsc::channel(16);
    let attach = Input::Attach {
        session: 1,
        member: member(GATEWAY, MemberKind::Gateway),
        subscribe: false,
        tx,
    };
    inputs.send(attach).await.unwrap();
    inputs.send(Input::Heartbeat { session: 1, seq: 9 }).await.unwrap();
    drop(inputs);
    task.await.expect("the loop ends");
    assert_eq!(heartbeat_acks(&drain(&mut inbox)), [9]);
    assert_eq!(stats.members(), 1, "sizes recorded after each input");
}

#[tokio::test(start_paused = true)]
async fn the_loop_ends_when_cancelled() {
    let (_inputs, rx) = mpsc::channel(8);
    let token = CancellationToken::new();
    let task = tokio::spawn(state().run(rx, token.clone()));
    token.cancel();
    task.await.expect("the loop ends");
}

#[test]
fn a_reattaching_subscriber_no_longer_holds_back_confirmations_on_its_old_session() {
    let mut state = state();
    let _old = attach(&mut state, 1, WORKER, MemberKind::Worker);
    let mut gateway = attach(&mut state, 3, GATEWAY, MemberKind::Gateway);
    let _new = attach(&mut state, 2, WORKER, MemberKind::Worker);
    ack(&mut state, 2, 0);
    routes(&mut state, 3, changes(1, add(&["a"])));
    ack(&mut state, 2, 1);
    assert_eq!(
        confirmed(&drain(&mut gateway)),
        [1],
        "the old session, which never acknowledged, is gone"
    );
    assert!(!state.sessions.contains_key(&1));
}

#[tokio::test(start_paused = true)]
async fn the_loop_checks_leases_every_tenth_of_a_lease() {
    let stats = std::sync::Arc::new(Stats::default());
    let state = State::new(NodeId(1), config(), stats.clone());
    let (inputs, rx) = mpsc::channel(8);
    let _task = tokio::spawn(state.run(rx, CancellationToken::new()));
    let (tx, _inbox) = mpsc::channel(16);
    let attach = Input::Attach {
        session: 1,
        member: member(GATEWAY, MemberKind::Gateway),
        subscribe: false,
        tx,
    };
    inputs.send(attach).await.unwrap();
    inputs
        .send(Input::Detach {
            session: 1,
            graceful: false,
        })
        .await
        .unwrap();
    // The paused clock jumps from timer to timer: the loop's ticks up to then have run.
    tokio::time::sleep(LEASE).await;
    assert_eq!(stats.members(), 1, "within its lease");
    tokio::time::sleep(LEASE / 10 + MS).await;
    assert_eq!(stats.members(), 0, "expired by a tick at most a tenth of a lease late");
}
