//! [`Api`]: what a request goes through on either transport — admission, the API key, its scope
//! and rate, the idempotency cache, the deadline — before and around [`crate::ops::execute`].
//!
//! One `Api` per process, shared by the HTTP and gRPC front ends behind an `Arc`. The request
//! path takes no process-wide lock: admission is one semaphore permit, the key set is read
//! through an atomic pointer, a key's bucket is one atomic, the cluster handle is shared, and
//! only requests that carry an idempotency key lock one shard of the cache, briefly.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gatehouse_proto::ErrorCode;
use gatehouse_sdk::Cluster;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::Limits;
use crate::error::Failure;
use crate::idempotency::{Begin, IdempotencyCache};
use crate::keys::{ApiKey, KeyStore};
use crate::ops::{self, Op, OpKind, Output};
use crate::ratelimit::Denied;
use crate::stats::Stats;

/// One operation to run, with its optional idempotency key (sends only).
#[derive(Debug, Clone)]
pub struct Call {
    /// The checked operation.
    pub op: Op,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
}

impl Call {
    /// A call without an idempotency key.
    pub fn new(op: Op) -> Call {
        Call {
            op,
            idempotency_key: None,
        }
    }

    /// Attaches an idempotency key after checking it belongs on this operation.
    pub fn with_idempotency_key(mut self, key: Option<String>) -> Result<Call, Failure> {
        let Some(key) = key else {
            return Ok(self);
        };
        if !self.op.kind().is_send() {
            return Err(Failure::bad_request(format!(
                "{} takes no idempotency key: only sends do",
                self.op.kind().name()
            )));
        }
        crate::idempotency::check_key(&key).map_err(Failure::bad_request)?;
        self.idempotency_key = Some(key);
        Ok(self)
    }
}

/// The shared state of the API process.
pub struct Api {
    cluster: OnceLock<Cluster>,
    keys: KeyStore,
    idempotency: IdempotencyCache,
    limits: Limits,
    stats: Stats,
    inflight: Arc<Semaphore>,
}

impl Api {
    /// Builds the state; the cluster handle is attached once connected ([`Api::connected`]).
    pub fn new(keys: KeyStore, limits: Limits) -> Api {
        Api {
            cluster: OnceLock::new(),
            idempotency: IdempotencyCache::new(limits.idempotency_window, limits.idempotency_capacity),
            inflight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            keys,
            limits,
            stats: Stats::default(),
        }
    }

    /// Attaches the cluster handle once `Cluster::connect` succeeded.
    pub fn connected(&self, cluster: Cluster) {
        let _ = self.cluster.set(cluster);
    }

    /// Whether the process has joined the cluster (readiness).
    pub fn is_connected(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The key store (reloaded on SIGHUP).
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Gauges for `/metrics`.
    pub fn gauges(&self) -> [(&'static str, &'static str, u64); 4] {
        [
            ("gatehouse_api_keys", "API keys in force", self.keys.len() as u64),
            (
                "gatehouse_api_connected",
                "1 once the process has joined the cluster",
                u64::from(self.is_connected()),
            ),
            (
                "gatehouse_api_requests_in_flight",
                "requests being executed",
                (self.limits.max_concurrent_requests - self.inflight.available_permits()) as u64,
            ),
            (
                "gatehouse_api_idempotency_evictions",
                "idempotency keys forgotten before their window ended (cache full)",
                self.idempotency.evictions(),
            ),
        ]
    }

    /// Takes a place among the requests in flight, or refuses with 503.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Failure> {
        Stats::inc(&self.stats.requests);
        self.inflight.clone().try_acquire_owned().map_err(|_| {
            Stats::inc(&self.stats.overloaded);
            Failure::new(
                ErrorCode::Unavailable,
                format!(
                    "this API process is running {} requests; retry shortly",
                    self.limits.max_concurrent_requests
                ),
            )
            .retry_after(Duration::from_secs(1))
        })
    }

    /// Finds the caller's key from an `Authorization` value (`Bearer <key>`).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<ApiKey>, Failure> {
        let Some(value) = authorization else {
            return Err(Failure::unauthenticated(
                "missing API key: send Authorization: Bearer <key>",
            ));
        };
        let key = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| Failure::unauthenticated("the Authorization value must be Bearer <key>"))?;
        self.keys.verify(key).ok_or_else(|| {
            tracing::debug!("request with an unknown API key refused");
            Failure::unauthenticated("unknown API key")
        })
    }

    /// Checks the key may run `kind`.
    pub fn authorize(&self, key: &ApiKey, kind: OpKind) -> Result<(), Failure> {
        if key.scopes.allows(kind.scope()) {
            return Ok(());
        }
        Err(Failure::forbidden(format!(
            "key {:?} lacks the {} scope that {} needs",
            key.name,
            kind.scope(),
            kind.name()
        )))
    }

    /// Takes `cost` tokens from the key's bucket, or refuses with 429 and when to retry.
    pub fn charge(&self, key: &ApiKey, cost: u32) -> Result<(), Failure> {
        key.limiter.check(cost).map_err(|denied| {
            Stats::inc(&self.stats.rate_limited);
            match denied {
                Denied::RetryAfter(after) => Failure::new(
                    ErrorCode::TooManyRequests,
                    format!("key {:?} is over its rate limit", key.name),
                )
                .retry_after(after),
                Denied::Exceeds { cost, burst } => Failure::bad_request(format!(
                    "this request costs {cost} operations but key {:?} may burst only {burst}",
                    key.name
                )),
            }
        })
    }

    /// The deadline of a request starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.limits.request_timeout
    }

    /// Runs one call under `deadline`, through the idempotency cache when it has a key.
    pub async fn run(&self, key: &ApiKey, call: Call, deadline: Instant) -> Result<Output, Failure> {
        Stats::inc(&self.stats.operations);
        let Some(cluster) = self.cluster.get() else {
            return Err(Failure::new(
                ErrorCode::Unavailable,
                "this API process has not joined the cluster yet",
            )
            .retry_after(Duration::from_secs(1)));
        };
        let timeout = self.limits.request_timeout;
        let timed_out = || {
            Failure::new(
                ErrorCode::Timeout,
                format!("the request's deadline ({timeout:?}) passed"),
            )
        };
        if Instant::now() >= deadline {
            return Err(Failure::new(
                ErrorCode::Timeout,
                "not run: the request's deadline passed before this operation started",
            ));
        }
        let Some(idempotency_key) = call.idempotency_key else {
            return tokio::time::timeout_at(deadline, ops::execute(cluster, call.op))
                .await
                .map_err(|_| timed_out())?
                .map_err(Failure::from);
        };
        let fingerprint = call
            .op
            .fingerprint()
            .ok_or_else(|| Failure::internal("an idempotency key reached an operation that is no send"))?;
        let mut op = Some(call.op);
        loop {
            match self.idempotency.begin(&key.name, &idempotency_key, fingerprint) {
                Begin::Run(claim) => {
                    let op = op.take().ok_or_else(|| Failure::internal("operation ran twice"))?;
                    let output = tokio::time::timeout_at(deadline, ops::execute(cluster, op))
                        .await
                        .map_err(|_| timed_out())??;
                    claim.succeed();
                    return Ok(output);
                }
                Begin::Replay => {
                    Stats::inc(&self.stats.replays);
                    return Ok(Output::Sent { replayed: true });
                }
                Begin::Mismatch => {
                    return Err(Failure::bad_request(format!(
                        "idempotency key {idempotency_key:?} was used for a different request"
                    )));
                }
                Begin::Wait(mut waiter) => {
                    tokio::time::timeout_at(deadline, waiter.changed())
                        .await
                        .map_err(|_| timed_out())?
                        .ok();
                }
            }
        }
    }
}
