//! The admin listener every role serves on its own address (`--admin-listen`): `/healthz`,
//! `/readyz` and `/metrics`, kept off the public port so that a load balancer's or
//! Prometheus's access never shares a port (or its limits) with untrusted clients.
//!
//! Metrics go through the `metrics` facade and its Prometheus exporter: a role keeps handles
//! (`metrics::Counter`, `Histogram`) created once, so the per-message path costs an atomic add
//! (a lock-free push for a histogram), and gauges that describe state are set by a scrape hook
//! just before each render instead of on every change.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use metrics;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Latency buckets (seconds) of every `…_seconds` histogram: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Size buckets of every `…_items` histogram (batch sizes).
const SIZE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];
/// How often recorded histogram samples are folded into their buckets.
const UPKEEP: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Declares a struct of counters: one relaxed `AtomicU64` per field (what the hot path
/// increments), with a Prometheus name and help text, and a `publish` method that copies them
/// into the metrics recorder before a scrape.
///
/// ```
/// gatehouse_core::counters! {
///     /// What the role counts.
///     pub struct Stats {
///         /// Widgets made.
///         widgets => "example_widgets_total", "widgets made";
///     }
/// }
/// let stats = Stats::default();
/// Stats::inc(&stats.widgets);
/// stats.publish();
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$doc:meta])* $field:ident => $metric:literal, $help:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Default)]
        $vis struct $name {
            $( $(#[$doc])* pub $field: ::std::sync::atomic::AtomicU64, )*
        }

        impl $name {
            /// Adds one.
            #[allow(dead_code)]
            $vis fn inc(counter: &::std::sync::atomic::AtomicU64) {
                counter.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
            }

            /// Adds `n`.
            #[allow(dead_code)]
            $vis fn add(counter: &::std::sync::atomic::AtomicU64, n: u64) {
                counter.fetch_add(n, ::std::sync::atomic::Ordering::Relaxed);
            }

            /// Reads a counter.
            #[allow(dead_code)]
            $vis fn get(counter: &::std::sync::atomic::AtomicU64) -> u64 {
                counter.load(::std::sync::atomic::Ordering::Relaxed)
            }

            /// Copies every counter into the metrics recorder (absolute values: the atomics
            /// are the source of truth, so the hot path pays a relaxed add and nothing else).
            $vis fn publish(&self) {
                static DESCRIBED: ::std::sync::Once = ::std::sync::Once::new();
                DESCRIBED.call_once(|| {
                    $( $crate::admin::metrics::describe_counter!($metric, $help); )*
                });
                $( $crate::admin::metrics::counter!($metric).absolute(
                    self.$field.load(::std::sync::atomic::Ordering::Relaxed),
                ); )*
            }
        }
    };
}

/// Sets gauges in the metrics recorder (for a scrape hook).
pub fn set_gauges(gauges: &[(&'static str, f64)]) {
    for (name, value) in gauges {
        metrics::gauge!(*name).set(*value);
    }
}

/// Installs the process's metrics recorder (once; later calls return the same handle). Call it
/// before any role creates its metric handles: handles made before it record nothing.
pub fn install_metrics() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_items".into()), &SIZE_BUCKETS))
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (a test harness): ours still renders
            // what our handles record through it only if it is the global one, so say so.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only its own");
            }
            handle
        })
        .clone()
}

/// Whether a role is ready for traffic, and why (a JSON object for people and probes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Ready: `/readyz` answers 200; otherwise 503.
    pub ready: bool,
    /// A JSON object describing the state (`{"workers":2,...}`).
    pub detail: String,
}

/// Asks a role whether it is ready.
pub type ReadinessCheck = Arc<dyn Fn() -> Readiness + Send + Sync>;
/// Sets a role's state gauges just before a scrape.
pub type ScrapeHook = Arc<dyn Fn() + Send + Sync>;

/// What a role contributes to the admin listener.
#[derive(Clone)]
pub struct AdminHooks {
    /// The role's name in `/readyz` (`gateway`, `worker`, `registry`).
    pub role: &'static str,
    /// Its readiness.
    pub ready: ReadinessCheck,
    /// Its gauge refresher, if it has gauges.
    pub scrape: Option<ScrapeHook>,
}

/// A bound admin listener, not yet serving.
pub struct AdminServer {
    listener: TcpListener,
    roles: Vec<AdminHooks>,
    metrics: PrometheusHandle,
}

#[derive(Clone)]
struct AdminState {
    roles: Arc<Vec<AdminHooks>>,
    metrics: PrometheusHandle,
}

impl AdminServer {
    /// Binds `addr` (installing the metrics recorder if needed).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<AdminServer> {
        let metrics = install_metrics();
        let listener = TcpListener::bind(addr).await?;
        Ok(AdminServer {
            listener,
            roles: Vec::new(),
            metrics,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Adds a role (`gatehouse dev` serves three from one listener).
    pub fn add(&mut self, hooks: AdminHooks) {
        self.roles.push(hooks);
    }

    /// Serves until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) -> std::io::Result<()> {
        let addr = self.local_addr();
        tracing::info!(kind = %"admin", %addr, "listening");
        let state = AdminState {
            roles: Arc::new(self.roles),
            metrics: self.metrics.clone(),
        };
        let upkeep = self.metrics.clone();
        let upkeep_token = token.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP);
            loop {
                tokio::select! {
                    _ = upkeep_token.cancelled() => return,
                    _ = tick.tick() => upkeep.run_upkeep(),
                }
            }
        });
        let router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(render))
            .with_state(state);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    }
}

/// 200 when every role is ready, else 503; the body names each role's state.
async fn readyz(State(state): State<AdminState>) -> Response {
    let mut ready = true;
    let mut parts = Vec::new();
    for role in state.roles.iter() {
        let readiness = (role.ready)();
        ready &= readiness.ready;
        parts.push(format!("\"{}\":{}", role.role, readiness.detail));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = format!("{{{}}}\n", parts.join(","));
    (status, [("content-type", "application/json")], body).into_response()
}

async fn render(State(state): State<AdminState>) -> Response {
    for role in state.roles.iter() {
        if let Some(scrape) = &role.scrape {
            scrape();
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
