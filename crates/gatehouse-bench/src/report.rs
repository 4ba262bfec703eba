//! The result of a run: one serde object (printed as a single JSON line so results can be
//! compared across commits) and a human summary, plus the live progress line.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::proc::ProcSample;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `dm`, `group`, `broadcast`, `idle`, `chat`, `chat-mix` or `api-publish`.
    pub scenario: String,
    /// `open` or `closed`.
    pub mode: String,
    /// Offered messages per second (open mode).
    pub rate: Option<f64>,
    /// Unanswered messages per sender (closed mode); `api-publish`: requests in flight per
    /// publisher.
    pub inflight: Option<u32>,
    /// Clients requested.
    pub clients: usize,
    /// Clients that connected and completed set-up.
    pub ready: usize,
    /// Sending clients among the ready ones; `api-publish`: the publishers' closed loops.
    pub senders: usize,
    /// Gateway URLs the clients were spread over.
    pub gateways: usize,
    /// Traffic before the measured window, in seconds.
    pub warmup_seconds: f64,
    /// The measured window, in seconds.
    pub duration_seconds: f64,
    /// How long the drain actually waited, in seconds.
    pub drain_seconds: f64,
    /// Messages stamped inside the window.
    pub sent: u64,
    /// Distinct deliveries of those messages.
    pub delivered: u64,
    /// Deliveries those messages should cause (fan-out included).
    pub expected: u64,
    /// `expected - delivered`, after the drain.
    pub lost: u64,
    /// Extra copies of measured deliveries.
    pub duplicated: u64,
    /// `sent / duration`.
    pub sent_per_sec: f64,
    /// `delivered / duration`.
    pub delivered_per_sec: f64,
    /// Delivery latency (send → receive), µs.
    pub latency_us: Latency,
    /// The whole delivery latency distribution at [`PLOT_QUANTILES`], for plots: a tail is
    /// only visible as a curve, and two systems' curves can cross between the percentiles
    /// `latency_us` names.
    pub latency_distribution_us: Vec<QuantileValue>,
    /// Chat only: distinct acknowledgements of measured messages.
    pub acked: Option<u64>,
    /// Chat only: send → ack latency, µs.
    pub ack_latency_us: Option<Latency>,
    /// Chat only: the send → ack distribution at [`PLOT_QUANTILES`].
    pub ack_latency_distribution_us: Option<Vec<QuantileValue>>,
    /// How connecting went.
    pub connect: ConnectStats,
    /// How set-up (login, join) went.
    pub setup: SetupStats,
    /// What went wrong on the way.
    pub errors: ErrorStats,
    /// Reconnecting chat clients only: reconnects and repeated copies.
    pub reconnect: Option<ReconnectStats>,
    /// `api-publish` only: the publishers' requests.
    pub api: Option<ApiStats>,
    /// Each `--server-pid` process.
    pub servers: Vec<ProcessStats>,
    /// CPU time of all server processes in the window per delivered message, µs: the figure to
    /// compare between the cluster and the baseline.
    pub server_cpu_us_per_delivered: Option<f64>,
    /// Each `--db-pid` process: an external database server's processes (PostgreSQL runs one
    /// per connection), kept apart from the servers so that what storage costs shows on its own.
    pub databases: Vec<ProcessStats>,
    /// CPU time of all `--db-pid` processes in the window per delivered message, µs.
    pub database_cpu_us_per_delivered: Option<f64>,
    /// This process, to tell when the generator itself was the bottleneck.
    pub load_generator: ProcessStats,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Latency {
    /// Summarises a histogram of microseconds (all zero when it is empty).
    pub fn from_histogram(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// Quantiles a distribution is reported at: dense in the "nines" (0.9, 0.99, 0.999, …), where
/// latency distributions differ, and including the minimum and maximum.
pub const PLOT_QUANTILES: [f64; 21] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995, 0.997, 0.999, 0.9995,
    0.9999, 1.0,
];

/// One point of a latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QuantileValue {
    /// Fraction of the samples at or below `us` (0 is the minimum, 1 the maximum).
    pub quantile: f64,
    /// Latency in microseconds.
    pub us: u64,
}

/// Returns `histogram` at [`PLOT_QUANTILES`] (empty when the histogram is).
pub fn distribution(histogram: &Histogram<u64>) -> Vec<QuantileValue> {
    if histogram.is_empty() {
        return Vec::new();
    }
    PLOT_QUANTILES
        .iter()
        .map(|&quantile| QuantileValue {
            quantile,
            us: histogram.value_at_quantile(quantile),
        })
        .collect()
}

/// The connect phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConnectStats {
    /// Completed WebSocket handshakes.
    pub count: u64,
    /// From the first attempt to the last completed handshake.
    pub seconds: f64,
    /// `count / seconds`.
    pub per_sec: f64,
    /// Connections that failed (refused, timed out, handshake rejected).
    pub failures: u64,
}

/// The set-up phase (login, join) after connecting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SetupStats {
    /// Clients ready for traffic.
    pub ready: u64,
    /// Connected clients whose set-up failed or timed out.
    pub failures: u64,
    /// From the first connect attempt until every client was ready or failed.
    pub seconds: f64,
}

/// Chat clients that reconnect (`--reconnect`): how often they had to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReconnectStats {
    /// Connections opened again after one ended.
    pub reconnects: u64,
    /// Clients that reconnected at least once.
    pub clients: u64,
    /// Copies of messages a client already had (allowed by the protocol, dropped by position).
    pub repeated: u64,
}

/// The server API requests of an `api-publish` run. Like messages, only requests stamped inside
/// the measured window are counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiStats {
    /// `http` or `grpc`.
    pub transport: String,
    /// Sends per request (1: the plain `send_to_uid` operation; more: one batch call).
    pub batch: usize,
    /// Publishers (each with its own connections).
    pub publishers: usize,
    /// Requests in flight, all publishers together (`publishers × inflight`).
    pub loops: usize,
    /// Requests sent.
    pub requests: u64,
    /// `requests / duration`.
    pub requests_per_sec: f64,
    /// Requests that failed as a whole (an error status, a broken connection, no answer).
    pub failed_requests: u64,
    /// Sends the API refused: those of failed requests and batch entries answered with an
    /// error. They are lost as well.
    pub failed_sends: u64,
    /// Request round trip (request written → whole answer read), µs.
    pub request_latency_us: Latency,
}

/// Problems seen during the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorStats {
    /// `{"type":"error"}` frames received.
    pub error_frames: u64,
    /// Ready clients whose connection ended before the run did.
    pub disconnects: u64,
    /// The first error any client saw, verbatim.
    pub first_error: Option<String>,
}

/// Memory and CPU of one process over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessStats {
    /// Process id.
    pub pid: u32,
    /// Resident memory before the first client connected.
    pub rss_before_bytes: u64,
    /// Resident memory at the end of the measured window (`None` if the process was gone).
    pub rss_bytes: Option<u64>,
    /// Peak resident memory (`VmHWM`) at the end of the window.
    pub peak_rss_bytes: Option<u64>,
    /// Proportional set size at the end of the window, when readable.
    pub pss_bytes: Option<u64>,
    /// `(rss - rss_before) / ready clients`: the memory cost of one connection, meaningful
    /// for the idle scenario.
    pub rss_per_client_bytes: Option<f64>,
    /// User plus system CPU seconds used during the measured window.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds / duration`, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// CPU µs per delivered message.
    pub cpu_us_per_delivered: Option<f64>,
    /// `cpu_seconds` split by thread name, busiest first (names that used no CPU in the window
    /// are left out): tells a worker's runtime from its database driver's threads. These are
    /// the kernel's per-thread times, which it scales separately from the process total, and
    /// threads that ended in the window are missing, so they add up to about `cpu_seconds`.
    pub threads: Vec<ThreadCpu>,
}

/// The CPU of one process's threads of one name during the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadCpu {
    /// The thread name (`comm`, at most 15 bytes), e.g. `group-commit` or `sqlx-sqlite-wor`.
    pub name: String,
    /// User plus system CPU seconds in the window.
    pub cpu_seconds: f64,
    /// CPU µs per delivered message.
    pub cpu_us_per_delivered: Option<f64>,
}

impl ProcessStats {
    /// Derives the figures from samples taken before connecting and at the window's edges.
    pub fn from_samples(
        pid: u32,
        before: &ProcSample,
        window: (Option<&ProcSample>, Option<&ProcSample>),
        ticks_per_second: u64,
        duration: Duration,
        ready: usize,
        delivered: u64,
    ) -> ProcessStats {
        let (start, end) = window;
        let cpu_seconds = match (start, end) {
            (Some(start), Some(end)) => {
                Some(end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / ticks_per_second.max(1) as f64)
            }
            _ => None,
        };
        let seconds = duration.as_secs_f64();
        let tick = 1.0 / ticks_per_second.max(1) as f64;
        let per_delivered = |cpu: f64| (delivered > 0).then(|| cpu * 1e6 / delivered as f64);
        let mut threads: Vec<ThreadCpu> = match (start, end) {
            (Some(start), Some(end)) => end
                .thread_ticks
                .iter()
                .map(|(name, &ticks)| {
                    let used = ticks.saturating_sub(start.thread_ticks.get(name).copied().unwrap_or(0));
                    (name, used as f64 * tick)
                })
                .filter(|&(_, cpu)| cpu > 0.0)
                .map(|(name, cpu)| ThreadCpu {
                    name: name.clone(),
                    cpu_seconds: cpu,
                    cpu_us_per_delivered: per_delivered(cpu),
                })
                .collect(),
            _ => Vec::new(),
        };
        threads.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds));
        ProcessStats {
            pid,
            rss_before_bytes: before.rss_bytes,
            rss_bytes: end.map(|s| s.rss_bytes),
            peak_rss_bytes: end.map(|s| s.peak_rss_bytes),
            pss_bytes: end.and_then(|s| s.pss_bytes),
            rss_per_client_bytes: end
                .filter(|_| ready > 0)
                .map(|s| (s.rss_bytes as f64 - before.rss_bytes as f64) / ready as f64),
            cpu_seconds,
            cpu_percent: cpu_seconds.filter(|_| seconds > 0.0).map(|cpu| cpu / seconds * 100.0),
            cpu_us_per_delivered: cpu_seconds.and_then(per_delivered),
            threads,
        }
    }
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = match (self.rate, self.inflight) {
            (Some(rate), _) => format!("open at {rate} msg/s"),
            (_, Some(inflight)) if self.api.is_some() => {
                format!("closed with {inflight} request(s) in flight per publisher")
            }
            (_, Some(inflight)) => format!("closed with {inflight} in flight per sender"),
            _ => self.mode.clone(),
        };
        writeln!(
            f,
            "scenario {} ({load}), {}/{} clients ready on {} gateway(s), {} sender(s)",
            self.scenario, self.ready, self.clients, self.gateways, self.senders
        )?;
        writeln!(
            f,
            "connect   {} in {:.2} s = {:.0}/s, {} failed; set-up {:.2} s, {} failed",
            self.connect.count,
            self.connect.seconds,
            self.connect.per_sec,
            self.connect.failures,
            self.setup.seconds,
            self.setup.failures
        )?;
        if self.scenario != "idle" {
            writeln!(
                f,
                "window    {:.1} s after {:.1} s warm-up, drained {:.2} s",
                self.duration_seconds, self.warmup_seconds, self.drain_seconds
            )?;
            writeln!(
                f,
                "messages  sent {} ({:.0}/s), delivered {} of {} expected ({:.0}/s), lost {}, duplicated {}",
                self.sent,
                self.sent_per_sec,
                self.delivered,
                self.expected,
                self.delivered_per_sec,
                self.lost,
                self.duplicated
            )?;
            let l = &self.latency_us;
            writeln!(
                f,
                "latency   µs p50 {} p90 {} p99 {} p99.9 {} max {} (mean {:.0})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            )?;
            if let (Some(acked), Some(l)) = (self.acked, &self.ack_latency_us) {
                writeln!(
                    f,
                    "acks      {acked}; µs p50 {} p90 {} p99 {} p99.9 {} max {}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                )?;
            }
        } else {
            writeln!(f, "held      {:.1} s", self.duration_seconds)?;
        }
        let labelled = self.servers.iter().map(|s| (format!("pid {}", s.pid), s));
        let databases = self.databases.iter().map(|s| (format!("db {}", s.pid), s));
        let generator = std::iter::once(("generator".to_owned(), &self.load_generator));
        for (label, server) in labelled.chain(databases).chain(generator) {
            write!(f, "{label:<9} rss {:.1} MiB", mib(server.rss_bytes.unwrap_or(0)))?;
            if let Some(per_client) = server.rss_per_client_bytes {
                write!(f, " ({per_client:.0} B/client)")?;
            }
            if let (Some(cpu), Some(percent)) = (server.cpu_seconds, server.cpu_percent) {
                write!(f, ", cpu {cpu:.2} s ({percent:.0}%)")?;
            }
            if let Some(per) = server.cpu_us_per_delivered {
                write!(f, ", {per:.1} µs/delivered")?;
            }
            writeln!(f)?;
            if server.threads.len() > 1 {
                let threads: Vec<String> = server
                    .threads
                    .iter()
                    .map(|t| match t.cpu_us_per_delivered {
                        Some(per) => format!("{} {per:.1}", t.name),
                        None => format!("{} {:.2} s", t.name, t.cpu_seconds),
                    })
                    .collect();
                writeln!(f, "          threads (µs/delivered): {}", threads.join(", "))?;
            }
        }
        if let Some(per) = self.server_cpu_us_per_delivered {
            writeln!(f, "servers   {per:.1} cpu µs per delivered message")?;
        }
        if let Some(per) = self.database_cpu_us_per_delivered {
            writeln!(f, "databases {per:.1} cpu µs per delivered message")?;
        }
        if let Some(api) = &self.api {
            let l = &api.request_latency_us;
            writeln!(
                f,
                "api       {} × {} send(s) per request over {} ({:.0}/s, {} loop(s) of {} publisher(s)), {} failed request(s), {} failed send(s); round trip µs p50 {} p99 {} max {}",
                api.requests,
                api.batch,
                api.transport,
                api.requests_per_sec,
                api.loops,
                api.publishers,
                api.failed_requests,
                api.failed_sends,
                l.p50,
                l.p99,
                l.max
            )?;
        }
        if let Some(reconnect) = self.reconnect {
            writeln!(
                f,
                "reconnect {} reconnect(s) by {} client(s), {} repeated cop(ies) dropped",
                reconnect.reconnects, reconnect.clients, reconnect.repeated
            )?;
        }
        if self.errors.error_frames > 0 || self.errors.disconnects > 0 || self.errors.first_error.is_some() {
            writeln!(
                f,
                "errors    {} error frame(s), {} disconnect(s); first: {}",
                self.errors.error_frames,
                self.errors.disconnects,
                self.errors.first_error.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    }
}

/// A snapshot for the live progress line, produced about once a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// `connect`, `warmup`, `measure` or `drain`.
    pub phase: &'static str,
    /// Since the run started.
    pub elapsed: Duration,
    /// Clients requested.
    pub clients: usize,
    /// Completed handshakes so far.
    pub connected: u64,
    /// Clients ready for traffic so far.
    pub ready: u64,
    /// Messages sent so far (warm-up included).
    pub sent: u64,
    /// Data frames received so far (warm-up included).
    pub received: u64,
    /// Frames received per second since the previous snapshot.
    pub rate: f64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>6.1}s] {:<7} connected {}/{} ready {} sent {} received {} ({:.0}/s)",
            self.elapsed.as_secs_f64(),
            self.phase,
            self.connected,
            self.clients,
            self.ready,
            self.sent,
            self.received,
            self.rate
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for micros in 1..=10_000u64 {
            histogram.record(micros).unwrap();
        }
        let latency = Latency::from_histogram(&histogram);
        assert_eq!(latency.count, 10_000);
        assert!((4_990..=5_010).contains(&latency.p50), "{latency:?}");
        assert!((8_990..=9_010).contains(&latency.p90), "{latency:?}");
        assert!((9_890..=9_910).contains(&latency.p99), "{latency:?}");
        assert!((9_980..=10_000).contains(&latency.p999), "{latency:?}");
        assert!((9_995..=10_010).contains(&latency.max), "{latency:?}");
        assert_eq!(Latency::from_histogram(&Histogram::new(3).unwrap()), Latency::default());

        let points = distribution(&histogram);
        assert_eq!(points.len(), PLOT_QUANTILES.len());
        assert!(
            points
                .windows(2)
                .all(|w| w[0].quantile < w[1].quantile && w[0].us <= w[1].us)
        );
        assert_eq!(points[0].us, histogram.min());
        assert_eq!(points.last().map(|p| p.us), Some(histogram.max()));
        let median = points.iter().find(|p| p.quantile == 0.5).map(|p| p.us);
        assert_eq!(median, Some(latency.p50));
        assert!(distribution(&Histogram::new(3).unwrap()).is_empty());
    }

    #[test]
    fn process_figures_are_derived() {
        let sample = |rss_mib: u64, ticks: u64| ProcSample {
            rss_bytes: rss_mib << 20,
            peak_rss_bytes: rss_mib << 20,
            pss_bytes: None,
            cpu_ticks: ticks,
            // A runtime thread with three quarters of the time, a driver thread with the rest;
            // an idle thread is left out of the split.
            thread_ticks: [("main", ticks * 3 / 4), ("db", ticks / 4), ("idle", 0)]
                .into_iter()
                .map(|(name, t)| (name.to_owned(), t))
                .collect(),
        };
        let stats = ProcessStats::from_samples(
            7,
            &sample(10, 0),
            (Some(&sample(20, 100)), Some(&sample(30, 300))),
            100,
            Duration::from_secs(4),
            1024,
            1_000_000,
        );
        assert_eq!(stats.cpu_seconds, Some(2.0));
        assert_eq!(stats.cpu_percent, Some(50.0));
        assert_eq!(stats.cpu_us_per_delivered, Some(2.0));
        assert_eq!(stats.rss_per_client_bytes, Some(20.0 * 1024.0));
        let split: Vec<(&str, f64)> = stats.threads.iter().map(|t| (t.name.as_str(), t.cpu_seconds)).collect();
        assert_eq!(split, [("main", 1.5), ("db", 0.5)]);
        assert_eq!(stats.threads[1].cpu_us_per_delivered, Some(0.5));
        let gone = ProcessStats::from_samples(
            7,
            &sample(10, 0),
            (Some(&sample(20, 100)), None),
            100,
            Duration::from_secs(4),
            1,
            1,
        );
        assert_eq!(gone.cpu_seconds, None);
        assert_eq!(gone.rss_bytes, None);
        assert!(gone.threads.is_empty());
    }
}
