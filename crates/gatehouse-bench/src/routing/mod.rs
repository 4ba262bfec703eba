//! The routing state at scale: how much memory a bound uid costs the registry and each worker,
//! how long a bind takes to be confirmed, how many bytes each worker receives per bind, and how
//! long the table takes to come back after a registry restart.
//!
//! Real gateways and workers would need a real connection per uid; a million of them do not fit
//! on one machine. So the generator plays the cluster's members itself, speaking the registry's
//! real gRPC protocol from outside: synthetic gateways announce their keys exactly as gateways
//! do (a resync on every session, one batch per bind, each confirmed by `BatchApplied`), and
//! synthetic subscribers acknowledge route updates as workers do. The registry under test and
//! any real worker processes next to them (their pids given) are the real thing; their memory
//! is read from /proc before and after the table is loaded.
//!
//! Phases: attach every member; load `uids` keys spread evenly over the gateways; measure the
//! memory; then `bind_rate` binds and unbinds per second for `bind_duration`, each timed to its
//! confirmation; then, with `resync`, announce `{"event":"restart-registry"}` on stdout and time
//! how long after the registry's streams broke the whole table is back (every gateway resynced,
//! every subscriber holding it, and a bind confirmed by all of them).

mod gateway;
mod member;
mod subscriber;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::BenchError;
use crate::proc;
use gateway::{Command, Event, Gateway};
use member::Registry;
use subscriber::Received;

/// What a routing run does, as a plain struct (the `gatehouse bench routing` flags map onto it).
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// `http://host:port` of the registry's gRPC listener.
    pub registry: String,
    /// The cluster secret, when the registry wants one.
    pub secret: Option<String>,
    /// `host:port` of the registry's admin listener: its `/metrics` tell when every subscriber
    /// (real workers included) is back after a restart. Without it, only the synthetic
    /// subscribers are waited for.
    pub registry_admin: Option<String>,
    /// Synthetic gateways; the uids are spread evenly over them.
    pub gateways: usize,
    /// Bound uids in the loaded table.
    pub uids: usize,
    /// Synthetic route subscribers (workers), besides any real ones.
    pub subscribers: usize,
    /// Route subscribers the registry should have in all (synthetic plus real workers).
    pub expect_subscribers: usize,
    /// uids are `{uid_prefix}{n}`.
    pub uid_prefix: String,
    /// Changes per batch of a resync.
    pub chunk: usize,
    /// Binds and unbinds per second in the bind phase (each one batch, as from an idle gateway).
    pub bind_rate: u32,
    /// Length of the bind phase.
    pub bind_duration: Duration,
    /// After the bind phase, ask for a registry restart and time the resync.
    pub resync: bool,
    /// The registry's pid, for its memory.
    pub registry_pid: Option<u32>,
    /// Real worker processes attached to the registry, for their route table's memory.
    pub worker_pids: Vec<u32>,
}

impl RoutingConfig {
    /// The scale: 1,000,000 uids over 100 gateways, 20 subscribers.
    pub fn new(registry: String) -> RoutingConfig {
        RoutingConfig {
            registry,
            secret: None,
            registry_admin: None,
            gateways: 100,
            uids: 1_000_000,
            subscribers: 20,
            expect_subscribers: 20,
            uid_prefix: "user-".to_owned(),
            chunk: 4096,
            bind_rate: 1000,
            bind_duration: Duration::from_secs(10),
            resync: false,
            registry_pid: None,
            worker_pids: Vec::new(),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |why: &str| Err(BenchError::Config(why.to_owned()));
        if self.gateways == 0 || self.gateways > 10_000 {
            return bad("--gateways must be 1..=10000");
        }
        if self.subscribers == 0 && self.worker_pids.is_empty() {
            return bad("a routing run needs at least one route subscriber");
        }
        if self.bind_rate == 0 || self.bind_rate > 100_000 {
            return bad("--bind-rate must be 1..=100000 per second");
        }
        Ok(())
    }
}

/// One process's resident memory before and after the table was loaded.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryGrowth {
    /// The process.
    pub pid: u32,
    /// Resident set size with the members attached and an empty table.
    pub before_bytes: u64,
    /// Resident set size with the whole table loaded.
    pub after_bytes: u64,
    /// Peak resident set size so far (the load's transient buffers show here).
    pub peak_bytes: u64,
    /// `(after - before) / uids`.
    pub bytes_per_uid: f64,
}

/// Latency of confirmed changes, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct ConfirmLatency {
    /// Changes timed.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// The resync after a registry restart, measured from the moment its streams broke.
#[derive(Debug, Clone, Serialize)]
pub struct Resync {
    /// Until the last gateway's resync was confirmed.
    pub gateways_seconds: f64,
    /// Until every subscriber held the whole table and a new bind was confirmed by all of them.
    pub table_seconds: f64,
    /// Until the registry declared its table authoritative (its warm-up; workers trust absence
    /// from then on), when its admin listener was given.
    pub authoritative_seconds: Option<f64>,
}

/// What a routing run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingReport {
    /// Synthetic gateways.
    pub gateways: usize,
    /// uids loaded.
    pub uids: usize,
    /// Synthetic subscribers.
    pub subscribers: usize,
    /// Seconds from the first load batch to the last gateway's confirmation.
    pub load_seconds: f64,
    /// The registry's memory, when its pid was given.
    pub registry_memory: Option<MemoryGrowth>,
    /// Each real worker's memory.
    pub worker_memory: Vec<MemoryGrowth>,
    /// Seconds from a new subscriber's attach (after the load) until it held the whole table:
    /// what a worker that starts or restarts waits for its snapshot.
    pub snapshot_seconds: f64,
    /// Offered binds plus unbinds per second.
    pub bind_rate: u32,
    /// Binds (a uid newly held by a gateway), from the batch's send to its confirmation.
    pub bind: ConfirmLatency,
    /// Unbinds, the same way.
    pub unbind: ConfirmLatency,
    /// Route update bytes (protobuf plus gRPC prefix) each subscriber received per bind or
    /// unbind in the bind phase.
    pub bytes_per_change: f64,
    /// The resync, when asked for.
    pub resync: Option<Resync>,
}

/// The running members and what they share with the coordinator.
struct Cluster {
    gateways: Vec<mpsc::Sender<Command>>,
    received: Vec<Arc<Received>>,
    events: mpsc::UnboundedReceiver<Event>,
}

/// Runs the phases and reports; `progress` hears one line per phase.
pub async fn run_routing(
    config: RoutingConfig,
    progress: &(dyn Fn(String) + Sync),
) -> Result<RoutingReport, BenchError> {
    config.validate()?;
    let token = CancellationToken::new();
    let _stop = token.clone().drop_guard();
    let mut cluster = start(&config, &token).await?;
    let pids: Vec<u32> = config.registry_pid.iter().chain(&config.worker_pids).copied().collect();
    let before = samples(&pids)?;
    progress(format!(
        "{} gateways and {} subscribers attached; loading {} uids",
        config.gateways, config.subscribers, config.uids
    ));
    let started = Instant::now();
    load(&config, &cluster).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    wait_for(&cluster.received, config.uids as i64, 1, Duration::from_secs(120)).await?;
    progress(format!("loaded in {load_seconds:.1} s"));
    let after = samples(&pids)?;
    let mut growth = growth(&pids, &before, &after, config.uids);
    let registry_memory = config.registry_pid.map(|_| growth.remove(0));
    let snapshot_seconds = late_subscriber(&config, &token).await?;
    progress(format!(
        "a subscriber attaching now holds the whole table after {snapshot_seconds:.1} s"
    ));
    let (bind, unbind, bytes_per_change) = bind_phase(&config, &cluster).await?;
    progress(format!("binds: p50 {:.2} ms, p99 {:.2} ms", bind.p50_ms, bind.p99_ms));
    let resync = match config.resync {
        true => Some(resync_phase(&config, &mut cluster, progress).await?),
        false => None,
    };
    Ok(RoutingReport {
        gateways: config.gateways,
        uids: config.uids,
        subscribers: config.subscribers,
        load_seconds,
        snapshot_seconds,
        registry_memory,
        worker_memory: growth,
        bind_rate: config.bind_rate,
        bind,
        unbind,
        bytes_per_change,
        resync,
    })
}

fn failed(why: impl Into<String>) -> BenchError {
    BenchError::Routing(why.into())
}

async fn start(config: &RoutingConfig, token: &CancellationToken) -> Result<Cluster, BenchError> {
    let registry = registry(config);
    let received: Vec<Arc<Received>> = (0..config.subscribers).map(|_| Arc::default()).collect();
    for (index, received) in received.iter().enumerate() {
        tokio::spawn(subscriber::run(
            registry.clone(),
            index,
            received.clone(),
            token.clone(),
        ));
    }
    let (events_tx, events) = mpsc::unbounded_channel();
    let attached = Arc::new(Semaphore::new(0));
    let mut gateways = Vec::with_capacity(config.gateways);
    for index in 0..config.gateways {
        let (tx, rx) = mpsc::channel(64);
        let gateway = Gateway::new(registry.clone(), index, config.chunk, events_tx.clone());
        tokio::spawn(gateway.run(rx, attached.clone(), token.clone()));
        gateways.push(tx);
    }
    let all = u32::try_from(config.gateways).expect("validated");
    tokio::time::timeout(Duration::from_secs(30), attached.acquire_many(all))
        .await
        .map_err(|_| {
            failed(format!(
                "the gateways did not attach to {} within 30 s",
                config.registry
            ))
        })?
        .expect("never closed")
        .forget();
    wait_for(&received, 0, 1, Duration::from_secs(30)).await?;
    Ok(Cluster {
        gateways,
        received,
        events,
    })
}

/// Attaches one more subscriber to the loaded table and times its snapshot; it leaves again
/// (gracefully) before the bind phase, so the phases after it see the configured subscribers.
async fn late_subscriber(config: &RoutingConfig, token: &CancellationToken) -> Result<f64, BenchError> {
    let received = Arc::new(Received::default());
    let stop = token.child_token();
    let started = Instant::now();
    tokio::spawn(subscriber::run(
        registry(config),
        usize::MAX,
        received.clone(),
        stop.clone(),
    ));
    wait_for(&[received], config.uids as i64, 1, Duration::from_secs(300)).await?;
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    Ok(seconds)
}

fn registry(config: &RoutingConfig) -> Registry {
    Registry {
        url: match config.registry.starts_with("http") {
            true => config.registry.clone(),
            false => format!("http://{}", config.registry),
        },
        secret: config.secret.clone(),
    }
}

/// Waits until every subscriber has attached `sessions` times and holds exactly `routes` routes
/// in a complete view.
async fn wait_for(received: &[Arc<Received>], routes: i64, sessions: u64, limit: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    loop {
        let ready = received.iter().all(|r| {
            r.sessions.load(Ordering::Acquire) >= sessions
                && r.complete.load(Ordering::Acquire)
                && r.routes.load(Ordering::Relaxed) == routes
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            let counts: Vec<i64> = received.iter().map(|r| r.routes.load(Ordering::Relaxed)).collect();
            return Err(failed(format!(
                "the subscribers did not reach {routes} routes within {limit:?}: {counts:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Spreads the uids over the gateways (uid n on gateway n mod gateways) and waits for every
/// gateway's resync to be confirmed.
async fn load(config: &RoutingConfig, cluster: &Cluster) -> Result<(), BenchError> {
    let gateways = cluster.gateways.len();
    let mut waiting = Vec::with_capacity(gateways);
    for (index, gateway) in cluster.gateways.iter().enumerate() {
        let keys = (index..config.uids)
            .step_by(gateways)
            .map(|n| format!("{}{n}", config.uid_prefix))
            .collect();
        let (done, confirmed) = oneshot::channel();
        gateway
            .send(Command::Load { keys, done })
            .await
            .map_err(|_| failed("a synthetic gateway stopped"))?;
        waiting.push(confirmed);
    }
    for confirmed in waiting {
        tokio::time::timeout(Duration::from_secs(600), confirmed)
            .await
            .map_err(|_| failed("a gateway's load was not confirmed within 600 s"))?
            .map_err(|_| failed("a gateway's session broke during the load"))?;
    }
    Ok(())
}

fn samples(pids: &[u32]) -> Result<Vec<proc::ProcSample>, BenchError> {
    pids.iter().map(|pid| proc::sample(Some(*pid))).collect()
}

fn growth(pids: &[u32], before: &[proc::ProcSample], after: &[proc::ProcSample], uids: usize) -> Vec<MemoryGrowth> {
    pids.iter()
        .zip(before.iter().zip(after))
        .map(|(pid, (before, after))| MemoryGrowth {
            pid: *pid,
            before_bytes: before.rss_bytes,
            after_bytes: after.rss_bytes,
            peak_bytes: after.peak_rss_bytes,
            bytes_per_uid: (after.rss_bytes as f64 - before.rss_bytes as f64) / uids.max(1) as f64,
        })
        .collect()
}

/// Open loop: operation n goes to gateway n mod gateways and unbinds the uid that gateway bound
/// last, or binds a new one; so the table's size stays put. Every one is timed.
async fn bind_phase(
    config: &RoutingConfig,
    cluster: &Cluster,
) -> Result<(ConfirmLatency, ConfirmLatency, f64), BenchError> {
    let bytes_before: u64 = cluster.received.iter().map(|r| r.bytes.load(Ordering::Relaxed)).sum();
    let histograms = Arc::new(Mutex::new((histogram(), histogram())));
    let mut bound: Vec<Option<String>> = vec![None; cluster.gateways.len()];
    let mut waiting = tokio::task::JoinSet::new();
    let total = (f64::from(config.bind_rate) * config.bind_duration.as_secs_f64()) as u64;
    let started = tokio::time::Instant::now();
    let mut ops = 0u64;
    for n in 0..total + bound.len() as u64 {
        // After the timed operations, one more round unbinds what is still bound.
        let slot = (n % bound.len() as u64) as usize;
        if n >= total && bound[slot].is_none() {
            continue;
        }
        let due = started + Duration::from_secs_f64(n.min(total) as f64 / f64::from(config.bind_rate));
        tokio::time::sleep_until(due).await;
        let (key, present) = match bound[slot].take() {
            Some(key) => (key, false),
            None => {
                let key = format!("{}bind-{n}", config.uid_prefix);
                bound[slot] = Some(key.clone());
                (key, true)
            }
        };
        ops += 1;
        let (done, confirmed) = oneshot::channel();
        cluster.gateways[slot]
            .send(Command::Toggle { key, present, done })
            .await
            .map_err(|_| failed("a synthetic gateway stopped"))?;
        let histograms = histograms.clone();
        waiting.spawn(async move {
            let latency = tokio::time::timeout(Duration::from_secs(60), confirmed).await;
            let micros = match latency {
                Ok(Ok(latency)) => latency.as_micros() as u64,
                _ => return false,
            };
            let mut histograms = histograms.lock().await;
            let histogram = if present { &mut histograms.0 } else { &mut histograms.1 };
            let _ = histogram.record(micros.max(1));
            true
        });
    }
    while let Some(confirmed) = waiting.join_next().await {
        if !matches!(confirmed, Ok(true)) {
            return Err(failed("a bind was not confirmed within 60 s"));
        }
    }
    let bytes_after: u64 = cluster.received.iter().map(|r| r.bytes.load(Ordering::Relaxed)).sum();
    let per_change = (bytes_after - bytes_before) as f64 / cluster.received.len().max(1) as f64 / ops.max(1) as f64;
    let histograms = histograms.lock().await;
    Ok((latency(&histograms.0), latency(&histograms.1), per_change))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn latency(histogram: &Histogram<u64>) -> ConfirmLatency {
    let ms = |micros: u64| micros as f64 / 1000.0;
    ConfirmLatency {
        count: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
    }
}

/// Asks for a registry restart (a line on stdout) and times the way back to a whole table.
async fn resync_phase(
    config: &RoutingConfig,
    cluster: &mut Cluster,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Resync, BenchError> {
    while cluster.events.try_recv().is_ok() {}
    println!("{{\"event\":\"restart-registry\"}}");
    let _ = std::io::stdout().flush();
    progress("waiting for the registry to be restarted".to_owned());
    let broken = loop {
        match tokio::time::timeout(Duration::from_secs(120), cluster.events.recv()).await {
            Ok(Some(Event::Broken(at))) => break at,
            Ok(Some(Event::Resynced(_))) => continue,
            _ => return Err(failed("the registry's streams did not break within 120 s")),
        }
    };
    let mut resynced = 0;
    let mut last = broken;
    while resynced < cluster.gateways.len() {
        match tokio::time::timeout(Duration::from_secs(300), cluster.events.recv()).await {
            Ok(Some(Event::Resynced(at))) => {
                resynced += 1;
                last = last.max(at);
            }
            Ok(Some(Event::Broken(_))) => continue,
            _ => return Err(failed("the gateways did not resync within 300 s")),
        }
    }
    let gateways_seconds = last.duration_since(broken).as_secs_f64();
    wait_for(&cluster.received, config.uids as i64, 2, Duration::from_secs(300)).await?;
    if let Some(admin) = &config.registry_admin {
        wait_metric(
            admin,
            "gatehouse_registry_route_subscribers",
            config.expect_subscribers as f64,
        )
        .await?;
    }
    probe(config, cluster).await?;
    let table_seconds = broken.elapsed().as_secs_f64();
    let authoritative_seconds = match &config.registry_admin {
        Some(admin) => {
            wait_metric(admin, "gatehouse_registry_authoritative", 1.0).await?;
            Some(broken.elapsed().as_secs_f64())
        }
        None => None,
    };
    Ok(Resync {
        gateways_seconds,
        table_seconds,
        authoritative_seconds,
    })
}

/// One bind and its unbind through the first gateway: confirmed only once every subscriber
/// attached to the registry has acknowledged it, so every one of them holds the table before.
async fn probe(config: &RoutingConfig, cluster: &Cluster) -> Result<(), BenchError> {
    for present in [true, false] {
        let (done, confirmed) = oneshot::channel();
        let key = format!("{}probe", config.uid_prefix);
        cluster.gateways[0]
            .send(Command::Toggle { key, present, done })
            .await
            .map_err(|_| failed("a synthetic gateway stopped"))?;
        tokio::time::timeout(Duration::from_secs(60), confirmed)
            .await
            .map_err(|_| failed("the probe bind was not confirmed within 60 s"))?
            .map_err(|_| failed("the probe's session broke"))?;
    }
    Ok(())
}

/// Polls the registry's `/metrics` until `name` reaches at least `value` (up to 120 s).
async fn wait_metric(admin: &str, name: &str, value: f64) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let admin = admin.to_owned();
        let metrics = tokio::task::spawn_blocking(move || http_get(&admin, "/metrics"))
            .await
            .expect("metrics read panicked");
        let current = metrics.ok().and_then(|text| metric(&text, name));
        if current.is_some_and(|current| current >= value) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(failed(format!(
                "{name} did not reach {value} within 120 s (last: {current:?})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of an unlabelled Prometheus sample.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn an_unlabelled_sample_is_read_and_a_longer_name_is_not_taken_for_it() {
        let text = "# TYPE gatehouse_registry_keys gauge\n\
                    gatehouse_registry_keys_total 9\n\
                    gatehouse_registry_keys 1000000\n";
        assert_eq!(metric(text, "gatehouse_registry_keys"), Some(1_000_000.0));
        assert_eq!(metric(text, "gatehouse_registry_members"), None);
    }
}
