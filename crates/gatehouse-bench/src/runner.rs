//! The coordinator of a run: checks limits, spawns one task per client, waits for set-up, opens
//! the traffic phase, samples the servers at the window's edges, drains, and assembles the
//! [`Report`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::accounting::{Counters, LatencyRecorder, Window};
use crate::api::{self, ApiRun};
use crate::client;
use crate::config::{BenchConfig, Mode};
use crate::error::BenchError;
use crate::proc::{self, ProcSample};
use crate::report::{
    ApiStats, ConnectStats, ErrorStats, Latency, ProcessStats, Progress, ReconnectStats, Report, SetupStats,
    distribution,
};
use crate::scenario::Plan;
use crate::session::{self, Phase, SetupState, Shared};

/// How often the drain checks whether every expected delivery has arrived.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How long stopped clients get to close their sockets politely before they are aborted.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Runs the load described by `config` and returns what it measured. `progress` is called
/// about once a second with a snapshot for a live progress line.
///
/// Fails before opening any socket when the configuration is invalid, the process may not open
/// enough files for `config.clients` sockets, a URL does not resolve or a server pid cannot be
/// read; fails after set-up if no client at all became ready. Individual client failures are
/// counted in the report instead.
pub async fn run(config: BenchConfig, progress: impl FnMut(&Progress) + Send) -> Result<Report, BenchError> {
    config.validate()?;
    proc::check_fd_limit(config.clients)?;
    let endpoints = client::resolve(&config.urls).await?;
    let tls = match config.urls.iter().any(|url| url.starts_with("wss://")) {
        true => Some(client::tls_config(config.tls_ca.as_deref())?),
        false => None,
    };
    let loopback_v4 = endpoints
        .iter()
        .all(|e| matches!(e.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
    let source_ips = config.effective_source_ips(loopback_v4);
    let ticks_per_second = proc::clock_ticks_per_second();
    let sample_before = |pids: &[u32]| {
        pids.iter()
            .map(|&pid| proc::sample(Some(pid)))
            .collect::<Result<Vec<_>, _>>()
    };
    let servers_before = sample_before(&config.server_pids)?;
    let databases_before = sample_before(&config.database_pids)?;
    let generator_before = proc::sample(None)?;

    let plan = Plan::new(&config, rand::random());
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let shared = Arc::new(Shared {
        plan,
        endpoints,
        source_ips,
        url_query: config.url_query.clone(),
        tls,
        connect_timeout: config.connect_timeout,
        setup_timeout: config.setup_timeout,
        reconnect: config.reconnect,
        token: config.token.clone(),
        drain: config.drain,
        base: Instant::now(),
        counters: Counters::default(),
        latency: LatencyRecorder::new(),
        ack_latency: LatencyRecorder::new(),
        connect_gate: Semaphore::new(config.connect_concurrency),
        setup: SetupState::default(),
        phase: phase_rx,
    });
    let mut monitor = Monitor::new(shared.clone(), progress);

    // Connect and set up every client.
    let connect_start_ns = shared.now_ns();
    let mut tasks = JoinSet::new();
    for index in 0..config.clients as u32 {
        tasks.spawn(session::run_client(shared.clone(), index));
    }
    while shared.setup.settled.load(Ordering::Acquire) < config.clients {
        tokio::select! {
            () = shared.setup.all_settled.notified() => {}
            _ = monitor.interval.tick() => monitor.emit("connect"),
        }
    }
    let setup_seconds = seconds_between(connect_start_ns, shared.now_ns());
    let mut ready = shared.setup.ready.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ready.sort_unstable();
    if ready.is_empty() {
        let first_error = shared
            .setup
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        return Err(BenchError::NoClients {
            first_error: first_error.unwrap_or_else(|| "none recorded".to_owned()),
        });
    }

    // api-publish: the publishers' connections, before anything is measured.
    let api_run = config.api.clone().map(|target| Arc::new(ApiRun::new(target)));
    let api_conns = match &api_run {
        Some(run) => api::connect(run, config.api_loops(), config.connect_timeout).await?,
        None => Vec::new(),
    };

    // Traffic: warm-up, measured window, drain.
    let start_ns = shared.now_ns();
    let window_start = start_ns + config.warmup.as_nanos() as u64;
    let window = Window {
        start_ns: window_start,
        end_ns: window_start + config.duration.as_nanos() as u64,
    };
    let traffic = Arc::new(shared.plan.traffic(&ready, start_ns, window));
    let senders = traffic.active_senders.load(Ordering::Acquire);
    phase_tx.send_replace(Phase::Traffic(traffic.clone()));
    if let Some(run) = &api_run {
        for (from, conn) in api_conns.into_iter().enumerate() {
            tasks.spawn(api::run_loop(
                shared.clone(),
                traffic.clone(),
                run.clone(),
                from as u32,
                conn,
            ));
        }
    }

    monitor.hold("warmup", window.start_ns, None).await;
    let servers_start = sample_all(&config.server_pids);
    let databases_start = sample_all(&config.database_pids);
    let generator_start = proc::sample(None).ok();
    monitor.hold("measure", window.end_ns, None).await;
    let servers_end = sample_all(&config.server_pids);
    let databases_end = sample_all(&config.database_pids);
    let generator_end = proc::sample(None).ok();

    let chat = config.scenario.is_chat();
    let drain_until = window.end_ns + config.drain.as_nanos() as u64;
    let counters = &shared.counters;
    let drained = || {
        let totals = counters.totals();
        traffic.active_senders.load(Ordering::Acquire) == 0
            && totals.delivered >= totals.expected
            && (!chat || Counters::get(&counters.acked) >= totals.sent)
    };
    monitor.hold("drain", drain_until, Some(&drained)).await;
    let drain_seconds = seconds_between(window.end_ns, shared.now_ns());

    phase_tx.send_replace(Phase::Stop);
    let _ = tokio::time::timeout(CLOSE_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.shutdown().await;

    // The report.
    let totals = counters.totals();
    let duration = config.duration;
    let process = |pid, before: &ProcSample, start: Option<&ProcSample>, end: Option<&ProcSample>| {
        ProcessStats::from_samples(
            pid,
            before,
            (start, end),
            ticks_per_second,
            duration,
            ready.len(),
            totals.delivered,
        )
    };
    let processes = |pids: &[u32], before: &[ProcSample], start: &[Option<ProcSample>], end: &[Option<ProcSample>]| {
        pids.iter()
            .enumerate()
            .map(|(i, &pid)| process(pid, &before[i], start[i].as_ref(), end[i].as_ref()))
            .collect::<Vec<ProcessStats>>()
    };
    let servers = processes(&config.server_pids, &servers_before, &servers_start, &servers_end);
    let databases = processes(
        &config.database_pids,
        &databases_before,
        &databases_start,
        &databases_end,
    );
    let cpu_us_per_delivered = |stats: &[ProcessStats]| {
        let cpu: Option<f64> = stats.iter().map(|s| s.cpu_seconds).sum();
        cpu.filter(|_| totals.delivered > 0 && !stats.is_empty())
            .map(|cpu| cpu * 1e6 / totals.delivered as f64)
    };
    let server_cpu_us_per_delivered = cpu_us_per_delivered(&servers);
    let database_cpu_us_per_delivered = cpu_us_per_delivered(&databases);
    let load_generator = process(
        std::process::id(),
        &generator_before,
        generator_start.as_ref(),
        generator_end.as_ref(),
    );
    let connected = Counters::get(&shared.setup.connected);
    let connect_seconds = seconds_between(connect_start_ns, shared.setup.last_connect_ns.load(Ordering::Relaxed));
    let window_seconds = duration.as_secs_f64();
    let (rate, inflight) = match config.mode {
        Mode::Open { rate } => (Some(rate), None),
        Mode::Closed { inflight } => (None, Some(inflight)),
    };
    let latency = shared.latency.merged();
    let ack_latency = shared.ack_latency.merged();
    Ok(Report {
        scenario: config.scenario.name().to_owned(),
        mode: config.mode.name().to_owned(),
        rate,
        inflight,
        clients: config.clients,
        ready: ready.len(),
        senders,
        gateways: config.urls.len(),
        warmup_seconds: config.warmup.as_secs_f64(),
        duration_seconds: window_seconds,
        drain_seconds,
        sent: totals.sent,
        delivered: totals.delivered,
        expected: totals.expected,
        lost: totals.lost(),
        duplicated: totals.duplicated,
        sent_per_sec: totals.sent as f64 / window_seconds,
        delivered_per_sec: totals.delivered as f64 / window_seconds,
        latency_us: Latency::from_histogram(&latency),
        latency_distribution_us: distribution(&latency),
        acked: chat.then(|| Counters::get(&counters.acked)),
        ack_latency_us: chat.then(|| Latency::from_histogram(&ack_latency)),
        ack_latency_distribution_us: chat.then(|| distribution(&ack_latency)),
        connect: ConnectStats {
            count: connected,
            seconds: connect_seconds,
            per_sec: if connect_seconds > 0.0 {
                connected as f64 / connect_seconds
            } else {
                0.0
            },
            failures: Counters::get(&shared.setup.connect_failures),
        },
        setup: SetupStats {
            ready: ready.len() as u64,
            failures: Counters::get(&shared.setup.setup_failures),
            seconds: setup_seconds,
        },
        errors: ErrorStats {
            error_frames: Counters::get(&counters.error_frames),
            disconnects: Counters::get(&counters.disconnects),
            first_error: shared
                .setup
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        },
        api: api_run.map(|run| {
            let requests = Counters::get(&run.counters.requests);
            ApiStats {
                transport: run.target.transport.name().to_owned(),
                batch: run.target.batch,
                publishers: run.target.publishers,
                loops: config.api_loops(),
                requests,
                requests_per_sec: requests as f64 / window_seconds,
                failed_requests: Counters::get(&run.counters.failed_requests),
                failed_sends: Counters::get(&run.counters.failed_sends),
                request_latency_us: Latency::from_histogram(&run.request_latency.merged()),
            }
        }),
        reconnect: config.reconnect.then(|| ReconnectStats {
            reconnects: Counters::get(&counters.reconnects),
            clients: Counters::get(&counters.reconnected_clients),
            repeated: Counters::get(&counters.repeated),
        }),
        servers,
        server_cpu_us_per_delivered,
        databases,
        database_cpu_us_per_delivered,
        load_generator,
    })
}

fn seconds_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}

/// Samples each pid; a process that is gone yields `None` rather than failing the run.
fn sample_all(pids: &[u32]) -> Vec<Option<ProcSample>> {
    pids.iter()
        .map(|&pid| match proc::sample(Some(pid)) {
            Ok(sample) => Some(sample),
            Err(error) => {
                tracing::warn!(pid, %error, "cannot sample server process");
                None
            }
        })
        .collect()
}

/// Emits progress snapshots once a second while the coordinator waits.
struct Monitor<F> {
    shared: Arc<Shared>,
    progress: F,
    interval: tokio::time::Interval,
    last_at: Instant,
    last_received: u64,
}

impl<F: FnMut(&Progress)> Monitor<F> {
    fn new(shared: Arc<Shared>, progress: F) -> Monitor<F> {
        let start = Instant::now();
        let mut interval = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Monitor {
            shared,
            progress,
            interval,
            last_at: start,
            last_received: 0,
        }
    }

    fn emit(&mut self, phase: &'static str) {
        let shared = &*self.shared;
        let now = Instant::now();
        let received = Counters::get(&shared.counters.received_total);
        let interval = now.duration_since(self.last_at).as_secs_f64();
        let rate = if interval > 0.0 {
            received.saturating_sub(self.last_received) as f64 / interval
        } else {
            0.0
        };
        self.last_at = now;
        self.last_received = received;
        let snapshot = Progress {
            phase,
            elapsed: now.duration_since(shared.base),
            clients: shared.plan.clients,
            connected: Counters::get(&shared.setup.connected),
            ready: shared.setup.ready.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
            sent: Counters::get(&shared.counters.sent_total),
            received,
            rate,
        };
        (self.progress)(&snapshot);
    }

    /// Waits until `until_ns` (on the run's clock), or until `done` holds (checked every
    /// [`DRAIN_POLL`]), emitting progress.
    async fn hold(&mut self, phase: &'static str, until_ns: u64, done: Option<&(dyn Fn() -> bool + Sync)>) {
        let until = self.shared.base + Duration::from_nanos(until_ns);
        loop {
            let now = Instant::now();
            if now >= until || done.is_some_and(|done| done()) {
                return;
            }
            let wake = if done.is_some() {
                until.min(now + DRAIN_POLL)
            } else {
                until
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                _ = self.interval.tick() => self.emit(phase),
            }
        }
    }
}
