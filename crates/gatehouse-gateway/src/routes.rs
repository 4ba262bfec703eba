//! The gateway's side of the routing table: it tells every registry which uids and groups it
//! holds, and decides when a bind or join is complete.
//!
//! Every appearance or disappearance of a key on this gateway is appended to a log under a
//! generation number (under the index shard lock of that key, so the log has the true order).
//! One task drains the log and sends it to every attached registry as a batch carrying the last
//! generation; a registry answers `BatchApplied(generation)` once all its route subscribers
//! have acknowledged. A bind that made its key appear at generation G completes when every
//! attached registry has confirmed G. A registry session that (re)starts first receives the
//! whole key set as a reset, so a restarted registry rebuilds its table from the gateways.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::attach::{RegistryPeer, RegistrySender};
use gatehouse_proto::v1::{AttachRequest, RouteBatch, RouteChange, RouteKind, attach_request, attach_response};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// Changes per batch sent to a registry (snapshot chunks too).
const BATCH_LIMIT: usize = 4096;

type Key = (i32, String);

#[derive(Default)]
struct Log {
    generation: u64,
    changes: Vec<(Key, bool)>,
}

struct RegistrySession {
    out: RegistrySender,
    /// The session still needs the full key set.
    needs_reset: bool,
    /// Highest generation this registry confirmed.
    applied: u64,
}

/// Announces this gateway's keys to the registries and tracks their confirmations.
pub(crate) struct RouteSync {
    log: Mutex<Log>,
    wake: Notify,
    registries: Mutex<Vec<Option<RegistrySession>>>,
    /// Generation of the last change sent everywhere, kept by the sync task.
    sent: Mutex<u64>,
    confirmed: watch::Sender<u64>,
    /// How many registry sessions are up (for `/readyz`).
    attached: watch::Sender<usize>,
    /// Per registry: the worker member ids of its last membership, when that registry is past
    /// its warm-up (absence is then real). Lets the gateway drop the link of a worker whose
    /// lease expired (frozen, partitioned) instead of waiting for HTTP/2 keep-alive.
    workers: Mutex<Vec<Option<HashSet<u64>>>>,
    /// Woken when a registry's membership changes.
    pub membership_changed: Notify,
}

impl RouteSync {
    pub(crate) fn new(registries: usize) -> Arc<RouteSync> {
        Arc::new(RouteSync {
            log: Mutex::new(Log::default()),
            wake: Notify::new(),
            registries: Mutex::new((0..registries).map(|_| None).collect()),
            sent: Mutex::new(0),
            confirmed: watch::Sender::new(0),
            attached: watch::Sender::new(0),
            workers: Mutex::new((0..registries).map(|_| None).collect()),
            membership_changed: Notify::new(),
        })
    }

    /// Records that a key appeared (`present`) or disappeared; returns its generation.
    pub(crate) fn record(&self, kind: RouteKind, key: &str, present: bool) -> u64 {
        let mut log = self.log.lock().expect("route log poisoned");
        log.generation += 1;
        log.changes.push(((kind as i32, key.to_owned()), present));
        let generation = log.generation;
        drop(log);
        self.wake.notify_one();
        generation
    }

    /// How many registry sessions are up.
    pub(crate) fn attached_count(&self) -> usize {
        *self.attached.borrow()
    }

    /// The changes recorded and not yet sent, as `(key, present)`.
    #[cfg(test)]
    pub(crate) fn recorded(&self) -> Vec<(String, bool)> {
        let log = self.log.lock().expect("route log poisoned");
        log.changes
            .iter()
            .map(|((_, key), present)| (key.clone(), *present))
            .collect()
    }

    /// Returns the generation every attached registry has confirmed.
    pub(crate) fn confirmed_now(&self) -> watch::Ref<'_, u64> {
        self.confirmed.borrow()
    }

    /// Whether worker `member` has left the cluster: absent from every registry that knows
    /// (is past its warm-up); `false` when no registry knows.
    pub(crate) fn worker_left(&self, member: u64) -> bool {
        let workers = self.workers.lock().expect("workers poisoned");
        let mut knowing = workers.iter().flatten().peekable();
        knowing.peek().is_some() && knowing.all(|set| !set.contains(&member))
    }

    /// Waits until every attached registry has confirmed `generation`.
    pub(crate) async fn wait_confirmed(&self, generation: u64, timeout: Duration) -> bool {
        let mut rx = self.confirmed.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= generation))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Runs the sync task until `token` is cancelled.
    pub(crate) async fn run(self: Arc<Self>, token: CancellationToken) {
        let mut present: HashSet<Key> = HashSet::new();
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            let (generation, changes) = {
                let mut log = self.log.lock().expect("route log poisoned");
                (log.generation, std::mem::take(&mut log.changes))
            };
            for (key, is_present) in &changes {
                if *is_present {
                    present.insert(key.clone());
                } else {
                    present.remove(key);
                }
            }
            *self.sent.lock().expect("sent poisoned") = generation;
            let targets: Vec<(usize, RegistrySender, bool)> = {
                let mut registries = self.registries.lock().expect("registries poisoned");
                registries
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        s.as_mut().map(|s| {
                            let reset = std::mem::take(&mut s.needs_reset);
                            (i, s.out.clone(), reset)
                        })
                    })
                    .collect()
            };
            for (index, out, reset) in targets {
                let sent = if reset {
                    send_snapshot(&out, &present, generation).await
                } else {
                    send_changes(&out, &changes, generation).await
                };
                if !sent {
                    tracing::warn!(registry = index, "registry queue closed while sending routes");
                }
            }
            self.recompute();
        }
    }

    /// Recomputes the confirmed generation: the minimum over attached registries, or everything
    /// sent when none is attached (no subscriber can then hold an authoritative table).
    fn recompute(&self) {
        let sent = *self.sent.lock().expect("sent poisoned");
        let registries = self.registries.lock().expect("registries poisoned");
        let confirmed = registries.iter().flatten().map(|s| s.applied).min().unwrap_or(sent);
        drop(registries);
        self.confirmed.send_if_modified(|current| {
            if confirmed > *current {
                *current = confirmed;
                true
            } else {
                false
            }
        });
    }
}

async fn send_changes(out: &RegistrySender, changes: &[(Key, bool)], generation: u64) -> bool {
    if changes.is_empty() {
        return true;
    }
    let chunks: Vec<&[(Key, bool)]> = changes.chunks(BATCH_LIMIT).collect();
    for chunk in chunks {
        let batch = RouteBatch {
            generation,
            reset: false,
            synced: false,
            changes: chunk.iter().map(|(k, p)| change(k, *p)).collect(),
        };
        if out.send(request(batch)).await.is_err() {
            return false;
        }
    }
    true
}

async fn send_snapshot(out: &RegistrySender, present: &HashSet<Key>, generation: u64) -> bool {
    let keys: Vec<&Key> = present.iter().collect();
    let mut chunks: Vec<&[&Key]> = keys.chunks(BATCH_LIMIT).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (index, chunk) in chunks.into_iter().enumerate() {
        let batch = RouteBatch {
            generation,
            reset: index == 0,
            synced: index == last,
            changes: chunk.iter().map(|k| change(k, true)).collect(),
        };
        if out.send(request(batch)).await.is_err() {
            return false;
        }
    }
    true
}

fn change(key: &Key, present: bool) -> RouteChange {
    RouteChange {
        kind: key.0,
        key: key.1.clone(),
        present,
    }
}

fn request(batch: RouteBatch) -> AttachRequest {
    AttachRequest {
        msg: Some(attach_request::Msg::Routes(batch)),
    }
}

impl RegistryPeer for RouteSync {
    fn connected(&self, registry: usize, out: RegistrySender) {
        let mut registries = self.registries.lock().expect("registries poisoned");
        registries[registry] = Some(RegistrySession {
            out,
            needs_reset: true,
            applied: 0,
        });
        let attached = registries.iter().flatten().count();
        drop(registries);
        self.attached.send_replace(attached);
        self.wake.notify_one();
    }

    fn message(&self, registry: usize, msg: attach_response::Msg) {
        if let attach_response::Msg::Membership(membership) = &msg {
            let workers = membership.authoritative.then(|| {
                membership
                    .members
                    .iter()
                    .filter(|m| m.kind == gatehouse_proto::v1::MemberKind::Worker as i32)
                    .map(|m| m.id)
                    .collect()
            });
            self.workers.lock().expect("workers poisoned")[registry] = workers;
            self.membership_changed.notify_one();
            return;
        }
        if let attach_response::Msg::BatchApplied(applied) = msg {
            if let Some(session) = self.registries.lock().expect("registries poisoned")[registry].as_mut() {
                session.applied = session.applied.max(applied.generation);
            }
            self.recompute();
        }
    }

    fn disconnected(&self, registry: usize) {
        self.workers.lock().expect("workers poisoned")[registry] = None;
        let mut registries = self.registries.lock().expect("registries poisoned");
        registries[registry] = None;
        let attached = registries.iter().flatten().count();
        drop(registries);
        self.attached.send_replace(attached);
        self.recompute();
    }
}
