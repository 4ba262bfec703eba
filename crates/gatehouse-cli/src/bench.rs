//! `gatehouse bench`: the load generator (`run`), the single-process baseline relay
//! (`baseline`) every cluster figure is compared with, and the hop of the two-hop reference
//! (`hop`). Flags map onto
//! [`gatehouse_bench::BenchConfig`]; all the work is in the `gatehouse-bench` crate.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use gatehouse_bench::{ApiTarget, ApiTransport, BaselineConfig, BenchConfig, Mode, Scenario};
use tokio::net::TcpListener;

/// Load-test a cluster with many WebSocket clients, or run the baseline relay.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Open many WebSocket clients against one or more gateways, drive a scenario and report
    /// throughput, loss, duplicates, latency percentiles, connect rate and server CPU and memory.
    ///
    /// Scenarios (all but chat speak the relay app's protocol, so run the servers with
    /// `--app relay`, or `gatehouse bench baseline`):
    ///   dm         every client logs in as uid {prefix}{i} and sends to random other clients,
    ///              preferably on another gateway
    ///   group      clients join groups of --group-size spread over all gateways; --senders
    ///              clients (default one per group) send to their group
    ///   broadcast  --senders clients (default 1) send broadcasts every client receives
    ///   idle       connect, log in and hold for --duration: connect rate and memory only
    ///   chat       the chat app: clients connect with ?uid=NAME and send
    ///              {"type":"send",...}; latency is measured send→push and send→ack
    ///   api-publish  clients log in as in dm and only receive; --publishers backends push
    ///              send_to_uid to random clients through the server API (`gatehouse api`)
    ///              at --api-url over --api-transport http or grpc, --batch sends per request
    ///              (1: the plain operation; more: one batch call), closed loop with
    ///              --inflight requests in flight per publisher (over HTTP, one keep-alive
    ///              connection each; over gRPC, one HTTP/2 connection per publisher); needs
    ///              --api-key with the publish scope and no rate limit below the load
    ///
    /// Load: `--mode open --rate R` offers R messages per second in total whatever the servers
    /// do (a message more than 2 ms late carries its scheduled time, so stalls count as
    /// latency); `--mode closed --inflight K` keeps at most K unanswered messages per sender
    /// and so finds the maximum throughput.
    ///
    /// Timeline: connect and set up every client; --warmup of traffic that is not counted;
    /// --duration measured (only messages stamped inside this window count); then up to --drain
    /// for the deliveries still in flight, after which whatever is missing counts as lost.
    ///
    /// Output: a progress line on stderr once a second, a human summary on stderr, and one
    /// JSON object on stdout (and in --json PATH).
    ///
    /// Open files: every client is a socket, and one process may hold at most `ulimit -n`
    /// open files (20000, also the hard limit, on the project's machines). The command refuses
    /// a --clients count above that limit minus a small reserve. For more clients, split the
    /// load over several `gatehouse bench run` processes started together with the same
    /// --warmup and --duration, each with its own --uid-prefix (so uids do not collide) and its
    /// own --source-ips range (one source address has about 28k ephemeral ports), and add up
    /// their results. Example for 54000 clients:
    ///   gatehouse bench run --clients 18000 --uid-prefix p1- --source-ips 127.0.0.2-127.0.0.3 ...
    ///   gatehouse bench run --clients 18000 --uid-prefix p2- --source-ips 127.0.0.4-127.0.0.5 ...
    ///   gatehouse bench run --clients 18000 --uid-prefix p3- --source-ips 127.0.0.6-127.0.0.7 ...
    #[command(
        verbatim_doc_comment,
        about = "Load-test gateways with many WebSocket clients: throughput, loss, latency, server cost"
    )]
    Run(Box<RunArgs>),
    /// Run the baseline relay: one process, one hop, the reference for every cluster figure.
    ///
    /// A minimal single-process WebSocket relay speaking the relay app's protocol (login, join,
    /// "to", "group", broadcast) with no cluster behind it: every cluster figure is divided by
    /// the same figure measured here. Logs `listening kind=ws addr=…` and serves
    /// `ws://ADDR/ws` until SIGINT or SIGTERM.
    Baseline(BaselineArgs),
    /// Run a hop of the two-hop reference (the cluster's topology without the cluster).
    ///
    /// `gatehouse bench baseline --hop ADDR` processes become edges that route direct messages
    /// through hop processes over plain TCP: three processes on a message's path, as in the
    /// cluster (gateway, worker, gateway), but no gRPC, acknowledgements or registry. Measured
    /// next to the baseline and the cluster, it shows what the split itself costs. Logs
    /// `listening kind=hop addr=…`; serves until SIGINT or SIGTERM. Direct messages only.
    Hop(HopArgs),
    /// Measure the routing state at scale with synthetic gateways and workers.
    ///
    /// Attaches --gateways synthetic gateways and --subscribers synthetic route subscribers to
    /// the registry at --registry, speaking its real gRPC protocol; loads --uids bound uids spread
    /// evenly over the gateways; reads the memory of the registry (--registry-pid) and of any
    /// real workers attached to it (--worker-pid) before and after; then offers --bind-rate
    /// binds and unbinds per second for --bind-seconds, each timed from its batch to the
    /// registry's confirmation (sent once every subscriber acknowledged it), and counts the
    /// route-update bytes each subscriber receives per bind. With --resync it prints
    /// {"event":"restart-registry"} on stdout, waits for the registry's streams to break and
    /// times how long the whole table takes to come back (restart the registry on the same
    /// address; bench/routing.py does all of this). The report is one JSON object on stdout.
    #[command(verbatim_doc_comment)]
    Routing(RoutingArgs),
}

/// `gatehouse bench routing` flags (see its help).
#[derive(Args, Debug)]
pub struct RoutingArgs {
    /// The registry's gRPC address.
    #[arg(long)]
    pub registry: String,
    /// The cluster secret the registry expects.
    #[arg(long = "cluster-secret", env = "GATEHOUSE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// The registry's admin listener (host:port), to wait for every subscriber after a restart.
    #[arg(long)]
    pub registry_admin: Option<String>,
    /// Synthetic gateways.
    #[arg(long, default_value_t = 100)]
    pub gateways: usize,
    /// Bound uids to load.
    #[arg(long, default_value_t = 1_000_000)]
    pub uids: usize,
    /// Synthetic route subscribers (workers) besides the real ones.
    #[arg(long, default_value_t = 18)]
    pub subscribers: usize,
    /// Binds and unbinds per second in the bind phase.
    #[arg(long, default_value_t = 1000)]
    pub bind_rate: u32,
    /// Length of the bind phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub bind_seconds: f64,
    /// After the bind phase, ask for a registry restart and time the resync.
    #[arg(long)]
    pub resync: bool,
    /// The registry's pid (for its memory).
    #[arg(long)]
    pub registry_pid: Option<u32>,
    /// Real worker processes attached to the registry (for their memory).
    #[arg(long = "worker-pid", value_delimiter = ',')]
    pub worker_pids: Vec<u32>,
}

/// Traffic patterns (see `gatehouse bench run --help`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScenarioArg {
    /// Direct messages to random other clients, preferably on another gateway.
    Dm,
    /// Fan-out to groups spread over all gateways.
    Group,
    /// Broadcasts every client receives.
    Broadcast,
    /// Connected, logged-in, silent clients.
    Idle,
    /// The chat app protocol with storage (send, ack, message).
    Chat,
    /// Chat with a live chat's extras: a typing event before each message, two receipts after
    /// each push.
    ChatMix,
    /// Backends push `send_to_uid` through the server API to logged-in clients.
    ApiPublish,
}

impl From<ScenarioArg> for Scenario {
    fn from(arg: ScenarioArg) -> Scenario {
        match arg {
            ScenarioArg::Dm => Scenario::Dm,
            ScenarioArg::Group => Scenario::Group,
            ScenarioArg::Broadcast => Scenario::Broadcast,
            ScenarioArg::Idle => Scenario::Idle,
            ScenarioArg::Chat => Scenario::Chat,
            ScenarioArg::ChatMix => Scenario::ChatMix,
            ScenarioArg::ApiPublish => Scenario::ApiPublish,
        }
    }
}

/// How senders decide when to send.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// A fixed offered rate (--rate), whatever the servers do.
    Open,
    /// At most --inflight unanswered messages per sender: finds the maximum.
    Closed,
}

/// How api-publish publishers call the server API.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ApiTransportArg {
    /// HTTP/JSON (`POST /api/v1/send_to_uid`, `/api/v1/batch`), HTTP/1.1 keep-alive.
    Http,
    /// gRPC (`gatehouse.v1.ServerApi`: `SendToUid`, `Batch`).
    Grpc,
}

impl From<ApiTransportArg> for ApiTransport {
    fn from(arg: ApiTransportArg) -> ApiTransport {
        match arg {
            ApiTransportArg::Http => ApiTransport::Http,
            ApiTransportArg::Grpc => ApiTransport::Grpc,
        }
    }
}

/// Source addresses parsed from `A-B,C,...`.
#[derive(Clone, Debug)]
pub struct SourceIps(Vec<IpAddr>);

fn parse_source_ips(text: &str) -> Result<SourceIps, String> {
    gatehouse_bench::parse_source_ips(text)
        .map(SourceIps)
        .map_err(|e| e.to_string())
}

/// Plain seconds (`10`, `0.5`) or a humantime duration (`500ms`, `2m`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Duration::from_secs_f64(seconds)),
        Ok(_) => Err(format!("{text:?} is not a non-negative duration")),
        Err(_) => humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}")),
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The traffic pattern.
    #[arg(long, env = "GATEHOUSE_BENCH_SCENARIO", value_enum)]
    pub scenario: ScenarioArg,
    /// Gateway WebSocket URL (ws://HOST:PORT/ws); repeat or comma-separate for several
    /// gateways: client i connects to url i mod count.
    #[arg(long = "url", env = "GATEHOUSE_BENCH_URL", value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    /// WebSocket clients this process opens (at most the open-file limit minus a small reserve;
    /// see the long help for splitting larger loads).
    #[arg(long, env = "GATEHOUSE_BENCH_CLIENTS", default_value_t = 100)]
    pub clients: usize,
    /// open: a fixed offered rate (--rate); closed: at most --inflight unanswered messages per
    /// sender.
    #[arg(long, env = "GATEHOUSE_BENCH_MODE", value_enum, default_value = "open")]
    pub mode: ModeArg,
    /// Open mode: messages per second offered by all senders together.
    #[arg(long, env = "GATEHOUSE_BENCH_RATE", default_value_t = 1000.0)]
    pub rate: f64,
    /// Closed mode: unanswered messages each sender may have (a message is answered when all its
    /// deliveries arrived; in chat, when its ack arrived); api-publish: requests in flight per
    /// publisher (a request is answered by the API's response).
    #[arg(long, env = "GATEHOUSE_BENCH_INFLIGHT", default_value_t = 1)]
    pub inflight: u32,
    /// Length of the measured window (seconds, or a duration such as 500ms or 2m).
    #[arg(long, env = "GATEHOUSE_BENCH_DURATION", default_value = "10", value_parser = parse_duration)]
    pub duration: Duration,
    /// Traffic before the measured window that is not counted (lets caches, allocators and TCP
    /// windows settle).
    #[arg(long, env = "GATEHOUSE_BENCH_WARMUP", default_value = "1", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Longest wait after the window for deliveries still in flight; ends early once every
    /// expected delivery arrived. Whatever is missing after it counts as lost.
    #[arg(long, env = "GATEHOUSE_BENCH_DRAIN", default_value = "2", value_parser = parse_duration)]
    pub drain: Duration,
    /// Group scenario: members per group (client i joins group i / size).
    #[arg(long, env = "GATEHOUSE_BENCH_GROUP_SIZE", default_value_t = 10)]
    pub group_size: usize,
    /// dm and chat: each sender writes only to this many fixed partners (its ongoing
    /// conversations) instead of a random client each time.
    #[arg(long, env = "GATEHOUSE_BENCH_PEERS")]
    pub peers: Option<usize>,
    /// Number of sending clients, spread evenly over the clients; default: all (dm, chat), one
    /// per group (group), one (broadcast).
    #[arg(long, env = "GATEHOUSE_BENCH_SENDERS")]
    pub senders: Option<usize>,
    /// Padding bytes added to every message, to measure larger frames.
    #[arg(long, env = "GATEHOUSE_BENCH_PAYLOAD_BYTES", default_value_t = 0)]
    pub payload_bytes: usize,
    /// Pid of a server process (gateway, worker, registry, dev or baseline) whose memory (VmRSS,
    /// Pss) and CPU time during the window are reported; repeatable.
    #[arg(long = "server-pid", env = "GATEHOUSE_BENCH_SERVER_PID", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Pid of a database server process (e.g. each PostgreSQL backend the chat workers use)
    /// whose CPU and memory are reported apart from the servers'; repeatable.
    #[arg(long = "db-pid", env = "GATEHOUSE_BENCH_DB_PID", value_delimiter = ',')]
    pub database_pids: Vec<u32>,
    /// Also write the JSON result to this file.
    #[arg(long, env = "GATEHOUSE_BENCH_JSON")]
    pub json: Option<PathBuf>,
    /// Local addresses client sockets bind to, round-robin: ranges and lists such as
    /// 127.0.0.2-127.0.0.50,127.0.1.1. Needed beyond ~28k connections to one server address;
    /// above 20000 clients to loopback, 127.0.0.2.. is used automatically.
    #[arg(long, env = "GATEHOUSE_BENCH_SOURCE_IPS", value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,
    /// Text appended to every client URL's query string, e.g. `token=...` (chat clients also
    /// get `uid=NAME`).
    #[arg(long, env = "GATEHOUSE_BENCH_URL_QUERY")]
    pub url_query: Option<String>,
    /// CA certificate (PEM) that `wss://` gateways are verified against (e.g. `ca.pem` from
    /// `gatehouse cert`); without it, the public web PKI roots.
    #[arg(long, env = "GATEHOUSE_BENCH_CA")]
    pub ca: Option<PathBuf>,
    /// Prefix of uids ({prefix}{i}) and group names ({prefix}g{n}); give each concurrent bench
    /// process its own.
    #[arg(long, env = "GATEHOUSE_BENCH_UID_PREFIX", default_value = "b")]
    pub uid_prefix: String,
    /// Connection attempts in flight at once (bounds the handshake burst the gateways see).
    #[arg(long, env = "GATEHOUSE_BENCH_CONNECT_CONCURRENCY", default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Time allowed for one TCP connect plus WebSocket handshake.
    #[arg(long, env = "GATEHOUSE_BENCH_CONNECT_TIMEOUT", default_value = "10", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Time allowed for each set-up answer (login_ok, join_ok), which in a cluster waits until
    /// every worker has the route.
    #[arg(long, env = "GATEHOUSE_BENCH_SETUP_TIMEOUT", default_value = "30", value_parser = parse_duration)]
    pub setup_timeout: Duration,
    /// Chat: a client whose connection ends (a gateway drains, a restart) connects again,
    /// resends its unacknowledged messages (same cid) and catches up with `sync`, as a real
    /// chat client does; the report counts reconnects. For rolling-restart runs.
    #[arg(long, env = "GATEHOUSE_BENCH_RECONNECT")]
    pub reconnect: bool,
    /// Chat: sign each client's token (`token=…` for its uid) with this HS256 secret, the chat
    /// workers' GATEHOUSE_JWT_SECRET, for clusters that authenticate.
    #[arg(long, env = "GATEHOUSE_BENCH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// api-publish: the server API's listener as http://HOST:PORT, its HTTP listener
    /// (`gatehouse api --listen`) or its gRPC listener (`--grpc-listen`) after
    /// --api-transport.
    #[arg(long, env = "GATEHOUSE_BENCH_API_URL")]
    pub api_url: Option<String>,
    /// api-publish: http (JSON over HTTP/1.1) or grpc.
    #[arg(long, env = "GATEHOUSE_BENCH_API_TRANSPORT", value_enum, default_value = "http")]
    pub api_transport: ApiTransportArg,
    /// api-publish: an API key with the publish scope (`gatehouse api-key create --scopes
    /// publish --rate 0` makes one without a rate limit).
    #[arg(long, env = "GATEHOUSE_BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// api-publish: sends per request (1: POST /api/v1/send_to_uid or SendToUid; more: one
    /// /api/v1/batch or Batch call; the API accepts at most --max-batch-ops, 100 by default).
    #[arg(long, env = "GATEHOUSE_BENCH_BATCH", default_value_t = 1)]
    pub batch: usize,
    /// api-publish: publishers, each running --inflight closed loops of one request at a time.
    #[arg(long, env = "GATEHOUSE_BENCH_PUBLISHERS", default_value_t = 4)]
    pub publishers: usize,
    /// No progress lines on stderr.
    #[arg(long, short, env = "GATEHOUSE_BENCH_QUIET")]
    pub quiet: bool,
}

impl RunArgs {
    fn config(&self) -> Result<BenchConfig> {
        let mut config = BenchConfig::new(self.scenario.into(), self.urls.clone(), self.clients);
        config.mode = match self.mode {
            ModeArg::Open => Mode::Open { rate: self.rate },
            ModeArg::Closed => Mode::Closed {
                inflight: self.inflight,
            },
        };
        config.duration = self.duration;
        config.warmup = self.warmup;
        config.drain = self.drain;
        config.group_size = self.group_size;
        config.peers = self.peers;
        config.senders = self.senders;
        config.payload_bytes = self.payload_bytes;
        config.server_pids = self.server_pids.clone();
        config.database_pids = self.database_pids.clone();
        config.source_ips = self.source_ips.clone().map(|ips| ips.0).unwrap_or_default();
        config.url_query = self.url_query.clone();
        config.tls_ca = self.ca.clone();
        config.uid_prefix = self.uid_prefix.clone();
        config.connect_concurrency = self.connect_concurrency;
        config.connect_timeout = self.connect_timeout;
        config.setup_timeout = self.setup_timeout;
        config.reconnect = self.reconnect;
        config.token = self.jwt_secret.clone().map(|secret| {
            let key = gatehouse_chat::auth::SigningKey::Secret(secret);
            gatehouse_bench::config::TokenSigner(std::sync::Arc::new(move |uid: &str| {
                gatehouse_chat::auth::sign(&key, uid, Duration::from_secs(24 * 3600), None, None).unwrap_or_default()
            }))
        });
        config.api = match (&self.api_url, &self.api_key) {
            (Some(url), Some(key)) => Some(ApiTarget {
                transport: self.api_transport.into(),
                url: url.clone(),
                key: key.clone(),
                batch: self.batch,
                publishers: self.publishers,
            }),
            (Some(_), None) => bail!("--api-url needs --api-key (or GATEHOUSE_BENCH_API_KEY)"),
            // A key alone (say, exported for a series of runs) does nothing without a url.
            (None, _) => None,
        };
        Ok(config)
    }
}

#[derive(Args, Debug)]
pub struct BaselineArgs {
    /// Address of the WebSocket endpoint (`/ws`) and `/healthz`.
    #[arg(long, env = "GATEHOUSE_BENCH_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Frames queued towards one client before it is closed as a slow consumer (1013), as on
    /// a gateway.
    #[arg(long, env = "GATEHOUSE_BENCH_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,
    /// Largest client message in bytes, as on a gateway.
    #[arg(long, env = "GATEHOUSE_BENCH_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    pub max_message_bytes: usize,
    /// Route direct messages through this `gatehouse bench hop` process instead of delivering
    /// them here (repeat for several hops; each client uses one, logins go to all). Makes this
    /// process an edge of the two-hop reference, which handles direct messages only.
    #[arg(long = "hop", value_name = "ADDR")]
    pub hops: Vec<SocketAddr>,
}

#[derive(Args, Debug)]
pub struct HopArgs {
    /// Address the edges (`gatehouse bench baseline --hop`) connect to.
    #[arg(long, env = "GATEHOUSE_BENCH_HOP_LISTEN", default_value = "127.0.0.1:8091")]
    pub listen: SocketAddr,
}

/// Runs `gatehouse bench run`, `gatehouse bench baseline` or `gatehouse bench hop`.
pub async fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Run(args) => run_load(*args).await,
        BenchCommand::Baseline(args) => run_baseline(args).await,
        BenchCommand::Hop(args) => run_hop(args).await,
        BenchCommand::Routing(args) => run_routing(args).await,
    }
}

async fn run_load(args: RunArgs) -> Result<()> {
    let config = args.config()?;
    let quiet = args.quiet;
    let progress = move |progress: &gatehouse_bench::Progress| {
        if !quiet {
            eprintln!("{progress}");
        }
    };
    let report = tokio::select! {
        report = gatehouse_bench::run(config, progress) => report?,
        () = shutdown_signal() => bail!("interrupted before the run finished; no result"),
    };
    eprint!("{report}");
    let json = report.to_json();
    println!("{json}");
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{json}\n")).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Binds `--listen`, with advice in the error when the address is taken.
async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (is something else listening there? try --listen)"))
}

async fn run_baseline(args: BaselineArgs) -> Result<()> {
    let listener = bind(args.listen).await?;
    let config = BaselineConfig {
        send_queue: args.send_queue,
        max_message_bytes: args.max_message_bytes,
        hops: args.hops,
        ..BaselineConfig::default()
    };
    gatehouse_bench::serve_baseline_with(listener, config, shutdown_signal()).await?;
    Ok(())
}

async fn run_hop(args: HopArgs) -> Result<()> {
    let listener = bind(args.listen).await?;
    gatehouse_bench::serve_hop(listener, shutdown_signal()).await?;
    Ok(())
}

async fn run_routing(args: RoutingArgs) -> Result<()> {
    let mut config = gatehouse_bench::routing::RoutingConfig::new(args.registry);
    config.secret = args.cluster_secret;
    config.registry_admin = args.registry_admin;
    config.gateways = args.gateways;
    config.uids = args.uids;
    config.subscribers = args.subscribers;
    config.expect_subscribers = args.subscribers + args.worker_pids.len();
    config.bind_rate = args.bind_rate;
    config.bind_duration = Duration::from_secs_f64(args.bind_seconds.max(0.0));
    config.resync = args.resync;
    config.registry_pid = args.registry_pid;
    config.worker_pids = args.worker_pids;
    let progress = |line: String| eprintln!("{line}");
    let report = tokio::select! {
        report = gatehouse_bench::routing::run_routing(config, &progress) => report?,
        () = shutdown_signal() => bail!("interrupted before the run finished; no result"),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
