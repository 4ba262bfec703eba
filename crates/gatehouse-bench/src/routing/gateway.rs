//! A synthetic gateway: holds a set of keys and announces them as a real gateway does. On every
//! new session it resynchronises (a `reset` batch, the keys in chunks, `synced` on the last);
//! single binds and unbinds go one per batch, and each is timed from the send of its batch to
//! the registry's `BatchApplied`, which the registry sends only once every route subscriber has
//! acknowledged the change: the part of `bind_uid` the routing state is responsible for.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use gatehouse_proto::v1::{MemberKind, RouteBatch, RouteChange, RouteKind, attach_request, attach_response};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::member::{self, Registry, Session};

/// What the coordinator asks a gateway to do.
pub(super) enum Command {
    /// Hold `keys` from now on and announce them as a resync; `done` hears when the last batch
    /// is confirmed (the time since that batch was sent).
    Load {
        keys: Vec<String>,
        done: oneshot::Sender<std::time::Duration>,
    },
    /// Bind (`present`) or unbind one uid; `done` gets the confirmation latency.
    Toggle {
        key: String,
        present: bool,
        done: oneshot::Sender<std::time::Duration>,
    },
}

/// What a gateway tells the coordinator about its sessions.
pub(super) enum Event {
    /// Its session with the registry broke (the registry is gone), at this instant.
    Broken(Instant),
    /// A resync after a broken session was confirmed, at this instant.
    Resynced(Instant),
}

/// A confirmation the gateway waits for: the batch's generation and who wants to know.
struct Pending {
    generation: u64,
    sent: Instant,
    done: Done,
}

enum Done {
    Reply(oneshot::Sender<std::time::Duration>),
    Resynced,
}

/// One synthetic gateway's task state.
pub(super) struct Gateway {
    registry: Registry,
    index: usize,
    /// Changes per batch of a resync (a real gateway's chunk size).
    chunk: usize,
    held: HashSet<String>,
    generation: u64,
    pending: VecDeque<Pending>,
    events: mpsc::UnboundedSender<Event>,
}

impl Gateway {
    pub(super) fn new(registry: Registry, index: usize, chunk: usize, events: mpsc::UnboundedSender<Event>) -> Gateway {
        Gateway {
            registry,
            index,
            chunk: chunk.max(1),
            held: HashSet::new(),
            generation: 0,
            pending: VecDeque::new(),
            events,
        }
    }

    /// Attaches and serves commands until `token` is cancelled, re-attaching and resyncing
    /// whenever the session breaks. `attached` is told once the first session is up.
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        attached: Arc<tokio::sync::Semaphore>,
        token: CancellationToken,
    ) {
        let me = member::member(MemberKind::Gateway, format!("synthetic-gateway-{}", self.index));
        let mut first = true;
        while let Some(mut session) = member::attach_until(&self.registry, &me, false, &token).await {
            if first {
                attached.add_permits(1);
                first = false;
            } else if !self.resync(&session, Done::Resynced).await {
                continue;
            }
            self.serve(&mut session, &mut commands, &token).await;
            if token.is_cancelled() {
                return;
            }
            let _ = self.events.send(Event::Broken(Instant::now()));
            self.pending.clear();
        }
    }

    async fn serve(
        &mut self,
        session: &mut Session,
        commands: &mut mpsc::Receiver<Command>,
        token: &CancellationToken,
    ) {
        let mut heartbeat = tokio::time::interval(session.heartbeat_every);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = heartbeat.tick() => if !session.beat().await { return },
                command = commands.recv() => match command {
                    Some(command) => if !self.command(session, command).await { return },
                    None => return,
                },
                message = session.inbound.message() => match message {
                    Ok(Some(response)) => {
                        if let Some(attach_response::Msg::BatchApplied(applied)) = response.msg {
                            self.applied(applied.generation);
                        }
                    }
                    _ => return,
                },
            }
        }
    }

    async fn command(&mut self, session: &Session, command: Command) -> bool {
        match command {
            Command::Load { keys, done } => {
                self.held = keys.into_iter().collect();
                self.resync(session, Done::Reply(done)).await
            }
            Command::Toggle { key, present, done } => {
                if present {
                    self.held.insert(key.clone());
                } else {
                    self.held.remove(&key);
                }
                let change = RouteChange {
                    kind: RouteKind::Uid as i32,
                    key,
                    present,
                };
                self.send_batch(session, false, false, vec![change], Some(Done::Reply(done)))
                    .await
            }
        }
    }

    /// Announces every held key as one resync: `reset` on the first batch, `synced` on the last.
    async fn resync(&mut self, session: &Session, done: Done) -> bool {
        let keys: Vec<&String> = self.held.iter().collect();
        let mut changes: Vec<Vec<RouteChange>> = keys
            .chunks(self.chunk)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|key| RouteChange {
                        kind: RouteKind::Uid as i32,
                        key: (*key).clone(),
                        present: true,
                    })
                    .collect()
            })
            .collect();
        if changes.is_empty() {
            changes.push(Vec::new());
        }
        let last = changes.len() - 1;
        let mut done = Some(done);
        for (index, chunk) in changes.into_iter().enumerate() {
            let notify = if index == last { done.take() } else { None };
            if !self.send_batch(session, index == 0, index == last, chunk, notify).await {
                return false;
            }
        }
        true
    }

    async fn send_batch(
        &mut self,
        session: &Session,
        reset: bool,
        synced: bool,
        changes: Vec<RouteChange>,
        done: Option<Done>,
    ) -> bool {
        self.generation += 1;
        if let Some(done) = done {
            self.pending.push_back(Pending {
                generation: self.generation,
                sent: Instant::now(),
                done,
            });
        }
        let batch = RouteBatch {
            generation: self.generation,
            reset,
            synced,
            changes,
        };
        session.send(attach_request::Msg::Routes(batch)).await
    }

    fn applied(&mut self, generation: u64) {
        while self.pending.front().is_some_and(|p| p.generation <= generation) {
            let pending = self.pending.pop_front().expect("checked above");
            match pending.done {
                Done::Reply(reply) => {
                    let _ = reply.send(pending.sent.elapsed());
                }
                Done::Resynced => {
                    let _ = self.events.send(Event::Resynced(Instant::now()));
                }
            }
        }
    }
}
