//! What a run does, as a plain struct: no flag parsing here (the `gatehouse bench` command maps
//! its flags onto [`BenchConfig`]), so tests and other programs can drive the generator directly.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use crate::error::BenchError;

/// Largest client count one run accepts: client indices travel in 24 bits of the duplicate
/// detector's key (and one process cannot hold that many sockets anyway).
pub const MAX_CLIENTS: usize = 1 << 24;

/// Above this many clients, and with no `source_ips` given, loopback clients are spread over
/// 127.0.0.2, 127.0.0.3, … so that no source address runs out of ephemeral ports (about 28k
/// per address).
pub const AUTO_SPREAD_CLIENTS: usize = 20_000;

/// The traffic pattern of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Every sender logs in and sends direct messages (`"to"`) to random other clients,
    /// preferably on another gateway: the cross-gateway routing path.
    Dm,
    /// Clients join groups spread over all gateways; senders send to their own group, so every
    /// message fans out to the whole group (the sender included).
    Group,
    /// A few senders send `"type":"broadcast"` frames that every client receives.
    Broadcast,
    /// Clients connect, log in and stay silent: measures connect rate and per-connection memory.
    Idle,
    /// The chat app protocol (`send` → `ack` to the sender, `message` to the recipient), with
    /// clients authenticated by `?uid=` in the URL.
    Chat,
    /// The chat protocol with what a live chat adds to each message: the sender sends one
    /// `typing` before it, the recipient answers its push with two receipts (`delivered`,
    /// `read`).
    ChatMix,
    /// Clients log in (binding their uid through the cluster, as in `dm`) and only receive;
    /// publishers in the generator push `send_to_uid` to random clients through the server API
    /// (`gatehouse api`, HTTP or gRPC, one send or a batch per request, see [`ApiTarget`]):
    /// the path of a backend that is not a Rust worker.
    ApiPublish,
}

impl Scenario {
    /// The lowercase name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Dm => "dm",
            Scenario::Group => "group",
            Scenario::Broadcast => "broadcast",
            Scenario::Idle => "idle",
            Scenario::Chat => "chat",
            Scenario::ChatMix => "chat-mix",
            Scenario::ApiPublish => "api-publish",
        }
    }

    /// Whether clients speak the chat protocol (`chat`, `chat-mix`).
    pub(crate) fn is_chat(self) -> bool {
        matches!(self, Scenario::Chat | Scenario::ChatMix)
    }

    /// Whether clients speak the relay protocol (login/join/to/group/broadcast).
    pub(crate) fn is_relay(self) -> bool {
        !self.is_chat()
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Scenario, BenchError> {
        Ok(match s {
            "dm" => Scenario::Dm,
            "group" => Scenario::Group,
            "broadcast" => Scenario::Broadcast,
            "idle" => Scenario::Idle,
            "chat" => Scenario::Chat,
            "chat-mix" => Scenario::ChatMix,
            "api-publish" => Scenario::ApiPublish,
            other => {
                return Err(BenchError::Config(format!(
                    "unknown scenario {other:?} (expected dm, group, broadcast, idle, chat, chat-mix or api-publish)"
                )));
            }
        })
    }
}

/// How senders decide when to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// A fixed offered load: `rate` messages per second in total, spread evenly over the
    /// senders and sent on schedule whatever the server does. A message that leaves more than
    /// 2 ms (timer slack) after its scheduled time carries the *scheduled* time, so a generator
    /// or server that falls behind shows up as latency instead of silently lowering the load
    /// (no coordinated omission).
    Open {
        /// Messages per second, all senders together.
        rate: f64,
    },
    /// Each sender keeps at most `inflight` messages unanswered (a message is answered when all
    /// its deliveries arrived; in the chat scenario, when its ack arrived). Finds the maximum
    /// throughput at that concurrency. In the `api-publish` scenario, each publisher keeps
    /// `inflight` API requests in flight instead (a request is answered by the API's response).
    Closed {
        /// Unanswered messages per sender.
        inflight: u32,
    },
}

impl Mode {
    /// `open` or `closed`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Open { .. } => "open",
            Mode::Closed { .. } => "closed",
        }
    }
}

/// Everything a run needs. Build it with [`BenchConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The traffic pattern.
    pub scenario: Scenario,
    /// Gateway WebSocket URLs (`ws://host:port/ws` or `wss://…`); client `i` uses
    /// `urls[i % urls.len()]`.
    pub urls: Vec<String>,
    /// Number of WebSocket clients this process opens.
    pub clients: usize,
    /// Open (fixed rate) or closed (bounded in-flight) load.
    pub mode: Mode,
    /// Traffic before the measured window; absorbs connection warm-up and JIT-like effects
    /// (allocator growth, TCP windows) so they do not skew the figures.
    pub warmup: Duration,
    /// Length of the measured window: only messages stamped inside it are counted.
    pub duration: Duration,
    /// Longest wait after the window for measured messages still in flight before the rest is
    /// declared lost; the wait ends earlier once every expected delivery arrived.
    pub drain: Duration,
    /// Members per group in the group scenario.
    pub group_size: usize,
    /// dm and chat: each sender writes to at most this many fixed partners (its ongoing
    /// conversations) instead of anyone; `None`: a random recipient every time.
    pub peers: Option<usize>,
    /// Number of sending clients; `None` picks the scenario's default (every client for dm and
    /// chat, one per group for group, one for broadcast, none for idle). Senders are spread
    /// evenly over the client indices, hence over gateways and groups.
    pub senders: Option<usize>,
    /// Extra bytes of padding in each message, to test larger frames.
    pub payload_bytes: usize,
    /// Connection attempts in flight at once; bounds the SYN and handshake burst.
    pub connect_concurrency: usize,
    /// Time allowed for one TCP connect plus WebSocket handshake.
    pub connect_timeout: Duration,
    /// Time allowed for each set-up answer (`login_ok`, `join_ok`), which in a cluster waits
    /// for the route to reach every worker.
    pub setup_timeout: Duration,
    /// Local addresses the client sockets bind to, round-robin (empty: let the kernel choose,
    /// or spread over 127.0.0.x automatically above [`AUTO_SPREAD_CLIENTS`] clients).
    pub source_ips: Vec<IpAddr>,
    /// Text appended to every client URL's query (for example a token or a tenant).
    pub url_query: Option<String>,
    /// The CA certificate (PEM) `wss://` servers are verified against; `None`: the public
    /// web PKI roots.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Prefix of uids (`{prefix}{i}`) and group names (`{prefix}g{n}`): give each concurrent
    /// bench process its own prefix so their clients do not share uids.
    pub uid_prefix: String,
    /// Server processes whose memory and CPU are reported (read from /proc).
    pub server_pids: Vec<u32>,
    /// Database server processes (e.g. PostgreSQL's backends) reported apart from the servers,
    /// so that what storage costs per message shows on its own.
    pub database_pids: Vec<u32>,
    /// Chat only: a client whose connection ends during the traffic phase (a gateway drains
    /// with 1012, a restart) connects again, sends its unacknowledged messages again (same
    /// `cid`: the server stores each once) and catches up with `sync` from its cursors, as a
    /// real chat client does. Without it a lost connection ends the client.
    pub reconnect: bool,
    /// Chat only: signs a token for a uid, appended to that client's URL query (`token=…`), for
    /// servers that authenticate (no `--insecure-dev-auth`).
    pub token: Option<TokenSigner>,
    /// `api-publish` only: the server API the publishers call, and how.
    pub api: Option<ApiTarget>,
}

/// How `api-publish` publishers reach the server API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiTransport {
    /// HTTP/1.1 with keep-alive, JSON bodies: `POST /api/v1/send_to_uid` or `/api/v1/batch`.
    /// HTTP/1.1 has no pipelining, so each request in flight needs its own connection.
    Http,
    /// gRPC (`gatehouse.v1.ServerApi`): `SendToUid` or `Batch`; a publisher's requests in
    /// flight share its one HTTP/2 connection.
    Grpc,
}

impl ApiTransport {
    /// `http` or `grpc`.
    pub fn name(self) -> &'static str {
        match self {
            ApiTransport::Http => "http",
            ApiTransport::Grpc => "grpc",
        }
    }
}

impl FromStr for ApiTransport {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<ApiTransport, BenchError> {
        match s {
            "http" => Ok(ApiTransport::Http),
            "grpc" => Ok(ApiTransport::Grpc),
            other => Err(BenchError::Config(format!(
                "unknown api transport {other:?} (expected http or grpc)"
            ))),
        }
    }
}

/// The server API an `api-publish` run pushes through. Publishers are the backends: each one
/// keeps [`Mode::Closed`]'s `inflight` requests in flight, every request carrying `batch`
/// sends (`batch` 1: the plain `send_to_uid` operation; more: one batch call).
#[derive(Debug, Clone)]
pub struct ApiTarget {
    /// HTTP or gRPC.
    pub transport: ApiTransport,
    /// `http://HOST:PORT` of the API's HTTP listener (`--listen`) or gRPC listener
    /// (`--grpc-listen`), whichever `transport` names.
    pub url: String,
    /// An API key with the `publish` scope, sent as `Authorization: Bearer …`. The key's rate
    /// limit applies: give the benchmark's key `rate` 0 or a rate above what it offers.
    pub key: String,
    /// Sends per request.
    pub batch: usize,
    /// Independent publishers (backend processes, as it were); each has its own connections.
    pub publishers: usize,
}

/// Makes the `token=…` query parameter of one uid (see [`BenchConfig::token`]).
#[derive(Clone)]
pub struct TokenSigner(pub std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>);

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl BenchConfig {
    /// A configuration with the usual defaults: open mode at 1000 msg/s, 1 s warm-up, 10 s
    /// measured, up to 2 s drain, groups of 10, 256 concurrent connects.
    pub fn new(scenario: Scenario, urls: Vec<String>, clients: usize) -> BenchConfig {
        BenchConfig {
            scenario,
            urls,
            clients,
            mode: Mode::Open { rate: 1000.0 },
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            group_size: 10,
            peers: None,
            senders: None,
            payload_bytes: 0,
            connect_concurrency: 256,
            connect_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(30),
            source_ips: Vec::new(),
            url_query: None,
            tls_ca: None,
            uid_prefix: "b".to_owned(),
            server_pids: Vec::new(),
            database_pids: Vec::new(),
            reconnect: false,
            token: None,
            api: None,
        }
    }

    /// Checks the configuration for contradictions, before any socket is opened.
    pub fn validate(&self) -> Result<(), BenchError> {
        let fail = |message: String| Err(BenchError::Config(message));
        if self.urls.is_empty() {
            return fail("at least one gateway url is needed".into());
        }
        for url in &self.urls {
            if !url.starts_with("ws://") && !url.starts_with("wss://") {
                return fail(format!("{url:?} is not a ws:// or wss:// url"));
            }
        }
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return fail(format!("clients must be between 1 and {MAX_CLIENTS}"));
        }
        if matches!(self.scenario, Scenario::Dm | Scenario::Chat | Scenario::ChatMix) && self.clients < 2 {
            return fail(format!("the {} scenario needs at least 2 clients", self.scenario));
        }
        if self.scenario == Scenario::Group && self.group_size == 0 {
            return fail("group size must be at least 1".into());
        }
        match self.mode {
            Mode::Open { rate } if !(rate.is_finite() && rate > 0.0) => {
                return fail(format!(
                    "rate must be a positive number of messages per second, not {rate}"
                ));
            }
            Mode::Closed { inflight: 0 } => return fail("inflight must be at least 1".into()),
            _ => {}
        }
        match (&self.api, self.scenario) {
            (None, Scenario::ApiPublish) => {
                return fail("the api-publish scenario needs the server API's url and key".into());
            }
            (Some(_), scenario) if scenario != Scenario::ApiPublish => {
                return fail(format!("the {scenario} scenario does not use the server API"));
            }
            (Some(api), _) => {
                if !api.url.starts_with("http://") {
                    return fail(format!("api url {:?} is not an http:// url", api.url));
                }
                if api.batch == 0 || api.publishers == 0 {
                    return fail("api batch and publishers must be at least 1".into());
                }
                if api.key.is_empty() || api.key.chars().any(|c| !c.is_ascii_graphic()) {
                    return fail("the api key must be printable ASCII without spaces".into());
                }
                if !matches!(self.mode, Mode::Closed { .. }) {
                    return fail("api-publish runs closed loop: --mode closed --inflight K".into());
                }
                if self.api_loops() > MAX_CLIENTS {
                    return fail(format!("publishers × inflight must be at most {MAX_CLIENTS}"));
                }
            }
            (None, _) => {}
        }
        if (self.reconnect || self.token.is_some()) && self.scenario != Scenario::Chat {
            return fail("reconnecting and signed tokens are for the chat scenario".into());
        }
        if self.duration.is_zero() {
            return fail("duration must be positive".into());
        }
        if self.connect_concurrency == 0 {
            return fail("connect concurrency must be at least 1".into());
        }
        if let Some(senders) = self.senders
            && self.scenario != Scenario::Idle
            && !(1..=self.clients).contains(&senders)
        {
            return fail(format!(
                "senders must be between 1 and the client count ({})",
                self.clients
            ));
        }
        if self.uid_prefix.is_empty() || self.uid_prefix.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
            return fail("uid prefix must be non-empty text without quotes, backslashes or control characters".into());
        }
        if let Some(query) = &self.url_query
            && query.contains(['#', ' '])
        {
            return fail("url query must not contain '#' or spaces (percent-encode them)".into());
        }
        Ok(())
    }

    /// `api-publish`: the publishers' closed loops (requests in flight, all publishers
    /// together), each of which counts as one sender; 0 otherwise.
    pub fn api_loops(&self) -> usize {
        match (&self.api, self.mode) {
            (Some(api), Mode::Closed { inflight }) if self.scenario == Scenario::ApiPublish => {
                api.publishers * inflight as usize
            }
            _ => 0,
        }
    }

    /// How many clients send, after applying the scenario's default.
    pub fn sender_count(&self) -> usize {
        let default = match self.scenario {
            Scenario::Dm | Scenario::Chat | Scenario::ChatMix => self.clients,
            Scenario::Group => self.clients.div_ceil(self.group_size.max(1)),
            Scenario::Broadcast => 1,
            Scenario::Idle | Scenario::ApiPublish => 0,
        };
        match self.scenario {
            // api-publish: the publishers send, not the WebSocket clients.
            Scenario::Idle | Scenario::ApiPublish => 0,
            _ => self.senders.unwrap_or(default).min(self.clients),
        }
    }

    /// The source addresses to bind, after applying the automatic loopback spread.
    pub(crate) fn effective_source_ips(&self, all_loopback_v4: bool) -> Vec<IpAddr> {
        if !self.source_ips.is_empty() || self.clients <= AUTO_SPREAD_CLIENTS || !all_loopback_v4 {
            return self.source_ips.clone();
        }
        let count = self.clients.div_ceil(AUTO_SPREAD_CLIENTS).min(250);
        (0..count)
            .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k as u8)))
            .collect()
    }
}

/// Parses source addresses: a comma-separated list of single IPv4/IPv6 addresses and IPv4
/// ranges `A-B` (inclusive, e.g. `127.0.0.2-127.0.0.50`).
pub fn parse_source_ips(text: &str) -> Result<Vec<IpAddr>, BenchError> {
    let bad = |part: &str, why: &str| BenchError::Config(format!("source ips {part:?}: {why}"));
    let mut ips = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((from, to)) = part.split_once('-') {
            let from: Ipv4Addr = from.trim().parse().map_err(|_| bad(part, "not an ipv4 range"))?;
            let to: Ipv4Addr = to.trim().parse().map_err(|_| bad(part, "not an ipv4 range"))?;
            let (from, to) = (u32::from(from), u32::from(to));
            if from > to {
                return Err(bad(part, "the range is reversed"));
            }
            if to - from >= 1 << 16 {
                return Err(bad(part, "the range is larger than 65536 addresses"));
            }
            ips.extend((from..=to).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))));
        } else {
            ips.push(part.parse().map_err(|_| bad(part, "not an ip address"))?);
        }
    }
    if ips.is_empty() {
        return Err(bad(text, "no address given"));
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scenario: Scenario, clients: usize) -> BenchConfig {
        BenchConfig::new(scenario, vec!["ws://127.0.0.1:1/ws".into()], clients)
    }

    #[test]
    fn source_ip_ranges_are_expanded() {
        let ips = parse_source_ips("127.0.0.2-127.0.0.4, 10.0.0.1").unwrap();
        let text: Vec<String> = ips.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "10.0.0.1"]);
        assert!(parse_source_ips("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_source_ips("nope").is_err());
        assert!(parse_source_ips("").is_err());
    }

    #[test]
    fn sender_defaults_follow_the_scenario() {
        assert_eq!(config(Scenario::Dm, 20).sender_count(), 20);
        let mut group = config(Scenario::Group, 25);
        group.group_size = 10;
        assert_eq!(group.sender_count(), 3);
        assert_eq!(config(Scenario::Broadcast, 20).sender_count(), 1);
        assert_eq!(config(Scenario::Idle, 20).sender_count(), 0);
        let mut limited = config(Scenario::Dm, 20);
        limited.senders = Some(5);
        assert_eq!(limited.sender_count(), 5);
    }

    #[test]
    fn contradictions_are_refused() {
        assert!(config(Scenario::Dm, 20).validate().is_ok());
        assert!(config(Scenario::Dm, 1).validate().is_err());
        let mut no_rate = config(Scenario::Dm, 20);
        no_rate.mode = Mode::Open { rate: 0.0 };
        assert!(no_rate.validate().is_err());
        let mut wss = config(Scenario::Dm, 20);
        wss.urls = vec!["wss://example.com/ws".into()];
        assert!(wss.validate().is_ok());
        let mut http = config(Scenario::Dm, 20);
        http.urls = vec!["http://example.com/ws".into()];
        assert!(http.validate().is_err());
        let mut quote = config(Scenario::Dm, 20);
        quote.uid_prefix = "a\"b".into();
        assert!(quote.validate().is_err());
    }

    fn api(transport: ApiTransport) -> ApiTarget {
        ApiTarget {
            transport,
            url: "http://127.0.0.1:8090".into(),
            key: "ghk_x".into(),
            batch: 64,
            publishers: 4,
        }
    }

    #[test]
    fn api_publish_needs_the_api_and_a_closed_loop() {
        let mut publish = config(Scenario::ApiPublish, 20);
        assert!(publish.validate().is_err(), "no api target");
        publish.api = Some(api(ApiTransport::Grpc));
        assert!(publish.validate().is_err(), "open mode");
        publish.mode = Mode::Closed { inflight: 3 };
        assert!(publish.validate().is_ok());
        assert_eq!(publish.sender_count(), 0);
        assert_eq!(publish.api_loops(), 12);
        let mut https = publish.clone();
        https.api.as_mut().unwrap().url = "https://example.com".into();
        assert!(https.validate().is_err());
        let mut no_batch = publish.clone();
        no_batch.api.as_mut().unwrap().batch = 0;
        assert!(no_batch.validate().is_err());
        let mut dm = config(Scenario::Dm, 20);
        dm.api = Some(api(ApiTransport::Http));
        assert!(dm.validate().is_err(), "dm does not use the api");
        assert_eq!("grpc".parse::<ApiTransport>().unwrap(), ApiTransport::Grpc);
        assert!("h2".parse::<ApiTransport>().is_err());
        assert_eq!("api-publish".parse::<Scenario>().unwrap(), Scenario::ApiPublish);
    }

    #[test]
    fn large_loopback_runs_spread_sources() {
        let small = config(Scenario::Idle, 100);
        assert!(small.effective_source_ips(true).is_empty());
        let large = config(Scenario::Idle, 45_000);
        let ips = large.effective_source_ips(true);
        assert_eq!(ips.len(), 3);
        assert_eq!(ips[0].to_string(), "127.0.0.2");
        assert!(large.effective_source_ips(false).is_empty());
    }
}
