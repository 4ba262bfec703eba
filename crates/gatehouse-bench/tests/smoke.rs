//! The generator against the in-process baseline relay: every relay scenario, briefly, with a
//! few clients. Asserts counts (nothing lost, nothing duplicated), not speed.

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse_bench::{
    BaselineConfig, BenchConfig, Mode, Report, Scenario, serve_baseline, serve_baseline_with, serve_hop,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const CLIENTS: usize = 20;

/// A baseline server on a free port; dropping the guard stops it.
struct Baseline {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn baseline() -> Baseline {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_baseline(listener, async move {
        let _ = stopped.await;
    }));
    Baseline { addr, _stop: stop }
}

/// The two-hop reference on free ports: two hops and two edges routing through both; dropping
/// the guards shuts them down (each server then stops its per-peer tasks).
async fn two_hop() -> (Vec<Baseline>, Vec<oneshot::Sender<()>>) {
    let mut stops = Vec::new();
    let mut hops = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        hops.push(listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve_hop(listener, async move {
            let _ = stopped.await;
        }));
        stops.push(stop);
    }
    let mut edges = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = BaselineConfig {
            hops: hops.clone(),
            ..BaselineConfig::default()
        };
        tokio::spawn(serve_baseline_with(listener, config, async move {
            let _ = stopped.await;
        }));
        edges.push(Baseline { addr, _stop: stop });
    }
    (edges, stops)
}

fn config(server: &Baseline, scenario: Scenario) -> BenchConfig {
    let url = format!("ws://{}/ws", server.addr);
    // Two URLs to the same server exercise the round-robin and cross-gateway recipient choice.
    config_for(vec![url.clone(), url], scenario)
}

fn config_for(urls: Vec<String>, scenario: Scenario) -> BenchConfig {
    let mut config = BenchConfig::new(scenario, urls, CLIENTS);
    config.warmup = Duration::from_millis(200);
    config.duration = Duration::from_secs(1);
    config.drain = Duration::from_secs(3);
    config.mode = Mode::Open { rate: 400.0 };
    config.server_pids = vec![std::process::id()];
    // The in-process servers stand in for a database process as well, to prove that path.
    config.database_pids = vec![std::process::id()];
    config
}

async fn run(config: BenchConfig) -> Report {
    let report = gatehouse_bench::run(config, |p| eprintln!("{p}")).await.unwrap();
    println!("{report}\n{}", report.to_json());
    report
}

fn assert_clean(report: &Report) {
    assert_eq!(report.ready, CLIENTS, "{report}");
    assert_eq!(report.connect.count, CLIENTS as u64);
    assert_eq!(report.connect.failures, 0);
    assert!(report.sent > 0, "{report}");
    assert_eq!(report.delivered, report.expected, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicated, 0, "{report}");
    assert_eq!(report.errors.error_frames, 0, "{report}");
    assert_eq!(report.errors.disconnects, 0, "{report}");
    assert_eq!(report.latency_us.count, report.delivered);
    assert!(report.latency_us.p50 > 0 && report.latency_us.p50 <= report.latency_us.max);
    assert_eq!(report.servers.len(), 1);
    assert!(report.servers[0].cpu_seconds.is_some());
    assert_eq!(report.databases.len(), 1);
    assert!(report.database_cpu_us_per_delivered.is_some(), "{report}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["delivered"], report.delivered);
    // Which threads used CPU depends on timing (a tick is 10 ms); that the split is reported
    // does not. Its arithmetic is unit-tested in `report`.
    assert!(json["servers"][0]["threads"].is_array(), "{report}");
    assert!(json["databases"][0]["cpu_seconds"].is_number(), "{report}");
    assert!(json["latency_us"]["p999"].is_u64());
    let curve = &report.latency_distribution_us;
    assert_eq!(curve.len(), gatehouse_bench::PLOT_QUANTILES.len(), "{report}");
    assert_eq!(curve.last().map(|p| p.us), Some(report.latency_us.max));
    assert_eq!(json["latency_distribution_us"][0]["quantile"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_open_and_closed() {
    let server = baseline().await;
    let report = run(config(&server, Scenario::Dm)).await;
    assert_clean(&report);
    assert_eq!(report.expected, report.sent);
    assert_eq!(report.senders, CLIENTS);
    // 400 msg/s offered for one second.
    assert!((300..=500).contains(&report.sent), "{report}");

    let mut closed = config(&server, Scenario::Dm);
    closed.mode = Mode::Closed { inflight: 2 };
    closed.duration = Duration::from_millis(500);
    let report = run(closed).await;
    assert_clean(&report);
    assert_eq!(report.inflight, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_hop_reference_routes_every_direct_message_through_a_hop() {
    let (edges, _hops) = two_hop().await;
    let urls: Vec<String> = edges.iter().map(|e| format!("ws://{}/ws", e.addr)).collect();
    let report = run(config_for(urls.clone(), Scenario::Dm)).await;
    assert_clean(&report);
    assert_eq!(report.expected, report.sent);

    let mut closed = config_for(urls.clone(), Scenario::Dm);
    closed.mode = Mode::Closed { inflight: 2 };
    closed.duration = Duration::from_millis(500);
    assert_clean(&run(closed).await);

    // Anything but a direct message (here: joining a group) is refused with an error frame.
    let mut group = config_for(urls, Scenario::Group);
    group.group_size = 5;
    let error = gatehouse_bench::run(group, |_| {}).await.unwrap_err().to_string();
    assert!(
        error.contains("set-up refused: the two-hop reference routes direct messages only"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_fan_out() {
    let server = baseline().await;
    let mut config = config(&server, Scenario::Group);
    config.group_size = 5;
    let report = run(config).await;
    assert_clean(&report);
    // Four groups of five, one sender each, every member (the sender too) receives.
    assert_eq!(report.senders, 4);
    assert_eq!(report.expected, report.sent * 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_everyone() {
    let server = baseline().await;
    let mut config = config(&server, Scenario::Broadcast);
    config.senders = Some(2);
    config.mode = Mode::Open { rate: 50.0 };
    config.payload_bytes = 200;
    let report = run(config).await;
    assert_clean(&report);
    assert_eq!(report.senders, 2);
    assert_eq!(report.expected, report.sent * CLIENTS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_connections() {
    let server = baseline().await;
    let mut config = config(&server, Scenario::Idle);
    config.warmup = Duration::ZERO;
    config.duration = Duration::from_millis(500);
    let report = run(config).await;
    assert_eq!(report.ready, CLIENTS);
    assert_eq!(report.connect.count, CLIENTS as u64);
    assert!(report.connect.per_sec > 0.0);
    assert_eq!(
        (report.sent, report.expected, report.delivered, report.lost),
        (0, 0, 0, 0)
    );
    assert!(report.servers[0].rss_bytes.unwrap() > 0);
    assert!(report.drain_seconds < 0.5, "nothing to drain: {report}");
}

#[tokio::test]
async fn too_many_clients_for_the_fd_limit_are_refused() {
    let (soft, _) = gatehouse_bench::proc::open_files_limit().unwrap();
    let Some(soft) = soft else { return };
    let config = BenchConfig::new(Scenario::Idle, vec!["ws://127.0.0.1:9/ws".into()], soft as usize + 1);
    let error = gatehouse_bench::run(config, |_| {}).await.unwrap_err().to_string();
    assert!(error.contains("split the load over several"), "{error}");
}
