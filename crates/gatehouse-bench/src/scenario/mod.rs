//! What each client does in each scenario: its uid, gateway and set-up frames, whether and how
//! it sends, what its frames look like, and how received frames are read.
//!
//! [`Plan`] is fixed before the first connection; [`Traffic`] is computed once set-up is over,
//! from the clients that actually became ready, so fan-outs and recipients never count a client
//! that failed to connect.

pub(crate) mod broadcast;
pub(crate) mod chat;
pub(crate) mod dm;
pub(crate) mod group;
pub(crate) mod relay;

use std::borrow::Cow;
use std::sync::atomic::AtomicUsize;

use tokio::sync::Semaphore;

use crate::accounting::Window;
use crate::client::client_url;
use crate::config::{BenchConfig, Mode, Scenario};

/// One received frame, as far as the accounting cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A data frame of this run: message `seq` of client `from`, stamped `ts` (ns).
    Data { from: u32, seq: u64, ts: u64 },
    /// A chat acknowledgement of message `seq` of client `from` (the receiver itself).
    Ack { from: u32, seq: u64, ts: u64 },
    /// A set-up answer (`login_ok`, `join_ok`).
    Reply(&'static str),
    /// An error frame, with its message.
    Error(Cow<'a, str>),
    /// Anything else: another run's frames, unknown types.
    Ignored,
}

/// The roles of all clients, fixed before connecting.
#[derive(Debug)]
pub(crate) struct Plan {
    pub scenario: Scenario,
    pub mode: Mode,
    pub clients: usize,
    pub gateways: usize,
    pub group_size: usize,
    /// Fixed partners per sender (dm, chat), if limited.
    pub peers: Option<usize>,
    /// Number of sending clients.
    pub senders: usize,
    /// `api-publish`: the publishers' closed loops (they send instead of the clients).
    pub api_loops: usize,
    /// `rank + 1` of each client among the senders; 0 for clients that only receive.
    sender_rank: Vec<u32>,
    /// Prefix of uids and group names.
    pub prefix: String,
    /// Padding appended to every message.
    pub pad: String,
    /// The run id stamped in every message.
    pub run: u32,
}

impl Plan {
    /// Lays out `config` for the run `run`.
    pub fn new(config: &BenchConfig, run: u32) -> Plan {
        let clients = config.clients;
        let senders = config.sender_count();
        let mut sender_rank = vec![0u32; clients];
        for rank in 0..senders {
            // Evenly spread: sender k is client ⌊k·N/S⌋, so senders cover every gateway and group.
            let client = (rank as u64 * clients as u64 / senders as u64) as usize;
            sender_rank[client] = rank as u32 + 1;
        }
        Plan {
            scenario: config.scenario,
            mode: config.mode,
            clients,
            gateways: config.urls.len(),
            group_size: config.group_size.max(1),
            peers: config.peers.filter(|p| *p > 0),
            senders,
            api_loops: config.api_loops(),
            sender_rank,
            prefix: config.uid_prefix.clone(),
            pad: "x".repeat(config.payload_bytes),
            run,
        }
    }

    /// The gateway (index into the URLs) client `index` connects to.
    pub fn gateway_of(&self, index: u32) -> usize {
        index as usize % self.gateways
    }

    /// The uid of client `index`.
    pub fn uid(&self, index: u32) -> String {
        format!("{}{index}", self.prefix)
    }

    /// The rank of client `index` among the senders, if it sends.
    pub fn sender_rank(&self, index: u32) -> Option<u32> {
        self.sender_rank[index as usize].checked_sub(1)
    }

    /// The URL client `index` connects to: its gateway's URL, plus `?uid=` in the chat
    /// scenario, plus the configured extra query.
    pub fn url(&self, index: u32, base: &str, extra_query: Option<&str>) -> String {
        let uid = match self.scenario {
            Scenario::Chat | Scenario::ChatMix => chat::uid_param(&self.uid(index)),
            _ => String::new(),
        };
        client_url(base, &[&uid, extra_query.unwrap_or_default()])
    }

    /// The frames client `index` sends after connecting, each with the reply type to await.
    pub fn setup(&self, index: u32) -> Vec<(String, &'static str)> {
        match self.scenario {
            Scenario::Chat | Scenario::ChatMix => Vec::new(),
            Scenario::Group => vec![
                (relay::login(&self.uid(index)), "login_ok"),
                (
                    relay::join(&group::name(&self.prefix, group::group_of(index, self.group_size))),
                    "join_ok",
                ),
            ],
            Scenario::Dm | Scenario::Broadcast | Scenario::Idle | Scenario::ApiPublish => {
                vec![(relay::login(&self.uid(index)), "login_ok")]
            }
        }
    }

    /// Classifies a received text frame.
    pub fn parse<'a>(&self, text: &'a str) -> Incoming<'a> {
        if self.scenario.is_relay() {
            relay::parse(text, self.run)
        } else {
            chat::parse(text, self.run)
        }
    }

    /// Whether each message goes to a freshly picked recipient (dm, chat).
    pub fn picks_recipients(&self) -> bool {
        matches!(self.scenario, Scenario::Dm | Scenario::Chat | Scenario::ChatMix)
    }

    /// Whether a message counts as answered when its ack arrives (chat) rather than when its
    /// deliveries arrive (relay scenarios).
    pub fn answered_by_ack(&self) -> bool {
        self.scenario.is_chat()
    }

    /// Whether each message comes with a `typing` before it and two receipts after its push
    /// (`chat-mix`).
    pub fn mixes_events(&self) -> bool {
        self.scenario == Scenario::ChatMix
    }

    /// Writes the `typing` frame sender `from` sends before its message to `to`.
    pub fn write_typing(&self, out: &mut String, from: u32, to: u32) {
        chat::write_typing(out, &self.uid(from), &self.uid(to));
    }

    /// Writes message `seq` of sender `from`, stamped `ts`, to recipient `to` (dm, chat).
    pub fn write_message(&self, out: &mut String, from: u32, to: u32, seq: u64, ts: u64) {
        let (prefix, run, pad) = (self.prefix.as_str(), self.run, self.pad.as_str());
        match self.scenario {
            Scenario::Dm => dm::write(out, prefix, to, from, seq, ts, run, pad),
            Scenario::Chat | Scenario::ChatMix => chat::write(out, prefix, to, from, seq, ts, run, pad),
            Scenario::Group => group::write(
                out,
                prefix,
                group::group_of(from, self.group_size),
                from,
                seq,
                ts,
                run,
                pad,
            ),
            Scenario::Broadcast => broadcast::write(out, from, seq, ts, run, pad),
            Scenario::Idle | Scenario::ApiPublish => unreachable!("idle and api-publish clients never send"),
        }
    }

    /// The traffic phase for the clients in `ready` (sorted or not), starting at `start_ns`.
    pub fn traffic(&self, ready: &[u32], start_ns: u64, window: Window) -> Traffic {
        let mut fanout = vec![0u32; self.clients];
        let group_members = match self.scenario {
            Scenario::Group => group::ready_members(self.clients, self.group_size, ready),
            _ => Vec::new(),
        };
        let mut active = 0;
        for &client in ready {
            if self.sender_rank(client).is_none() {
                continue;
            }
            active += 1;
            fanout[client as usize] = match self.scenario {
                Scenario::Dm | Scenario::Chat | Scenario::ChatMix => 1,
                Scenario::Group => group_members[group::group_of(client, self.group_size)],
                Scenario::Broadcast => ready.len() as u32,
                Scenario::Idle | Scenario::ApiPublish => 0,
            };
        }
        if self.scenario == Scenario::ApiPublish {
            // The publishers' loops are the senders: the drain waits for them.
            active = self.api_loops;
        }
        let permits = match self.mode {
            // api-publish: a request is answered by the API's response, not by deliveries.
            Mode::Closed { .. } if self.scenario == Scenario::ApiPublish => Vec::new(),
            Mode::Closed { inflight } => fanout
                .iter()
                .map(|&f| {
                    // Relay scenarios count a message's permits in deliveries; chat counts acks.
                    let per_message = if self.answered_by_ack() { 1 } else { f as usize };
                    Semaphore::new(inflight as usize * per_message)
                })
                .collect(),
            Mode::Open { .. } => Vec::new(),
        };
        let candidates = if self.picks_recipients() {
            dm::candidates(self.gateways, ready)
        } else if self.scenario == Scenario::ApiPublish {
            // The API reaches every gateway alike: any ready client is a recipient.
            vec![ready.to_vec()]
        } else {
            Vec::new()
        };
        let period_ns = match self.mode {
            Mode::Open { rate } => self.senders.max(1) as f64 * 1e9 / rate,
            Mode::Closed { .. } => 0.0,
        };
        Traffic {
            start_ns,
            window,
            candidates,
            fanout,
            permits,
            active_senders: AtomicUsize::new(active),
            period_ns,
        }
    }

    /// Open mode: the scheduled time (ns) of message `n` of the sender with rank `rank`.
    /// Senders are staggered over one period so the offered load is smooth, not bursty.
    pub fn scheduled_ns(&self, traffic: &Traffic, rank: u32, n: u64) -> u64 {
        let offset = traffic.period_ns * f64::from(rank) / self.senders.max(1) as f64;
        traffic.start_ns + (offset + traffic.period_ns * n as f64) as u64
    }
}

/// The traffic phase, shared by all clients once set-up is over.
#[derive(Debug)]
pub(crate) struct Traffic {
    /// When senders start (ns since the clock base).
    pub start_ns: u64,
    /// The measured window.
    pub window: Window,
    /// Recipients per gateway (dm, chat); api-publish: one list of every ready client.
    pub candidates: Vec<Vec<u32>>,
    /// Deliveries one message of each sender causes (0 for non-senders).
    pub fanout: Vec<u32>,
    /// Closed mode: each sender's budget of unanswered messages, in deliveries (relay) or acks
    /// (chat); receivers give permits back to the message's sender.
    pub permits: Vec<Semaphore>,
    /// Senders still sending; the drain may end early only once this is zero.
    pub active_senders: AtomicUsize,
    /// Open mode: interval between two messages of one sender, in ns.
    pub period_ns: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(scenario: Scenario, clients: usize, senders: Option<usize>, mode: Mode) -> Plan {
        let mut config = BenchConfig::new(scenario, vec!["ws://a/ws".into(), "ws://b/ws".into()], clients);
        config.senders = senders;
        config.group_size = 4;
        config.mode = mode;
        Plan::new(&config, 1)
    }

    #[test]
    fn senders_are_spread_over_clients() {
        let plan = plan(Scenario::Broadcast, 10, Some(3), Mode::Open { rate: 30.0 });
        let senders: Vec<u32> = (0..10).filter(|&i| plan.sender_rank(i).is_some()).collect();
        assert_eq!(senders, [0, 3, 6]);
        assert_eq!(plan.sender_rank(6), Some(2));
        assert_eq!(plan.gateway_of(3), 1);
    }

    #[test]
    fn fanouts_count_only_ready_clients() {
        let plan = plan(Scenario::Group, 8, None, Mode::Closed { inflight: 2 });
        // Groups {0..4} and {4..8}; senders 0 and 4; client 5 never became ready.
        let ready = [0, 1, 2, 3, 4, 6, 7];
        let traffic = plan.traffic(&ready, 0, Window { start_ns: 0, end_ns: 1 });
        assert_eq!(traffic.fanout[0], 4);
        assert_eq!(traffic.fanout[4], 3);
        assert_eq!(traffic.fanout[1], 0);
        assert_eq!(traffic.permits[4].available_permits(), 6);
        assert_eq!(traffic.active_senders.into_inner(), 2);

        let broadcast = plan_traffic(Scenario::Broadcast, &ready);
        assert_eq!(broadcast.fanout[0], 7);
    }

    fn plan_traffic(scenario: Scenario, ready: &[u32]) -> Traffic {
        plan(scenario, 8, None, Mode::Open { rate: 10.0 }).traffic(ready, 0, Window { start_ns: 0, end_ns: 1 })
    }

    #[test]
    fn open_mode_schedules_are_staggered() {
        // 4 senders at 400 msg/s in total: each sends every 10 ms, a quarter period apart.
        let plan = plan(Scenario::Dm, 4, None, Mode::Open { rate: 400.0 });
        let traffic = plan.traffic(&[0, 1, 2, 3], 1_000, Window { start_ns: 0, end_ns: 1 });
        assert_eq!(plan.scheduled_ns(&traffic, 0, 0), 1_000);
        assert_eq!(plan.scheduled_ns(&traffic, 1, 0), 1_000 + 2_500_000);
        assert_eq!(plan.scheduled_ns(&traffic, 0, 3), 1_000 + 30_000_000);
    }

    #[test]
    fn setup_and_urls_follow_the_protocol() {
        let group = plan(Scenario::Group, 8, None, Mode::Open { rate: 1.0 });
        let frames = group.setup(5);
        assert_eq!(frames.len(), 2);
        assert!(frames[1].0.contains(r#""group":"bg1""#));
        assert_eq!(group.url(5, "ws://a/ws", Some("x=1")), "ws://a/ws?x=1");
        let chat = plan(Scenario::Chat, 8, None, Mode::Open { rate: 1.0 });
        assert!(chat.setup(1).is_empty());
        assert_eq!(chat.url(5, "ws://a/ws", None), "ws://a/ws?uid=b5");
    }
}
