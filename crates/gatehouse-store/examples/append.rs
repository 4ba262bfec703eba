//! Measures the store alone: `--users` concurrent senders append direct messages through one
//! [`GroupCommitter`] as fast as commits come back, like the chat worker under the closed-loop
//! chat benchmark, and prints appended messages per second and the batching factor.
//!
//! ```text
//! cargo run --release -p gatehouse-store --example append -- [DATABASE_URL] [--users N] [--peers P] [--seconds S] [--every S]
//! ```
//!
//! Without a URL it uses a fresh SQLite file in a temporary directory. `--peers P` makes each
//! user talk to P fixed peers (ongoing conversations); without it every message goes to a
//! random user (almost every message starts a conversation). `--every S` prints the rate of
//! each S-second interval with the number of messages stored so far: a store's cost per message
//! grows with what it holds, and one long run shows how. `--vary-text` gives each message six
//! words drawn from a vocabulary of 2,000 (instead of one fixed phrase), so that a full-text
//! index sees realistic postings (bench/search_index.py uses it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_store::{ConversationRef, GroupCommitConfig, GroupCommitter, NewMessage, Store};

struct Options {
    url: Option<String>,
    users: u64,
    peers: Option<u64>,
    seconds: f64,
    every: Option<f64>,
    vary_text: bool,
}

fn options() -> Options {
    let mut options = Options {
        url: None,
        users: 1000,
        peers: None,
        seconds: 5.0,
        every: None,
        vary_text: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--users" => options.users = value().parse().expect("--users N"),
            "--peers" => options.peers = Some(value().parse().expect("--peers P")),
            "--seconds" => options.seconds = value().parse().expect("--seconds S"),
            "--every" => options.every = Some(value().parse().expect("--every S")),
            "--vary-text" => options.vary_text = true,
            url => options.url = Some(url.to_owned()),
        }
    }
    options
}

/// A message of six pseudo-words from a vocabulary of 2,000 (each word spells its number in
/// base 26, at least three letters so that every database's full-text index keeps it).
fn varied_text(rng: &mut u64) -> String {
    let mut text = String::with_capacity(48);
    for i in 0..6 {
        if i > 0 {
            text.push(' ');
        }
        let mut word = next(rng) % 2000 + 26 * 26;
        while word > 0 {
            text.push(char::from(b'a' + (word % 26) as u8));
            word /= 26;
        }
    }
    text
}

/// A small deterministic generator (xorshift), so that runs are comparable.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::main]
async fn main() {
    let options = options();
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = options
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("append.db").display()));
    let store = Store::open(&url).await.expect("open store");
    let committer = GroupCommitter::spawn(store.clone(), GroupCommitConfig::default())
        .await
        .expect("start the group committer");
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for user in 0..options.users {
        let (committer, stop, appended) = (committer.clone(), Arc::clone(&stop), Arc::clone(&appended));
        let (users, peers, vary_text) = (options.users, options.peers, options.vary_text);
        tasks.push(tokio::spawn(async move {
            let mut rng = user.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let to = match peers {
                    Some(p) => (user + 1 + next(&mut rng) % p.max(1)) % users,
                    None => next(&mut rng) % users,
                };
                let message = NewMessage {
                    conversation: ConversationRef::Direct { to: format!("u{to}") },
                    sender: format!("u{user}"),
                    cid: format!("{}.{user}.{n}", started.elapsed().as_nanos()),
                    text: if vary_text {
                        varied_text(&mut rng)
                    } else {
                        "hello from the store benchmark".to_owned()
                    },
                    ts_ms: 1,
                    reply_to: None,
                };
                committer.append(message).await.expect("append");
                appended.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    match options.every {
        Some(every) => {
            let mut last = (started, 0);
            while started.elapsed().as_secs_f64() < options.seconds {
                tokio::time::sleep(Duration::from_secs_f64(every.min(options.seconds))).await;
                let count = appended.load(Ordering::Relaxed);
                let rate = (count - last.1) as f64 / last.0.elapsed().as_secs_f64();
                println!(
                    "{:6.1} s  {count:>9} stored  {rate:>7.0}/s",
                    started.elapsed().as_secs_f64()
                );
                last = (Instant::now(), count);
            }
        }
        None => tokio::time::sleep(Duration::from_secs_f64(options.seconds)).await,
    }
    stop.store(true, Ordering::Relaxed);
    let count = appended.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        task.await.expect("sender");
    }
    println!(
        "{:?}: {count} messages in {elapsed:.1} s = {:.0}/s, {} batches (avg {:.0} per batch)",
        store.backend(),
        count as f64 / elapsed,
        committer.batches_committed(),
        committer.messages_stored() as f64 / committer.batches_committed().max(1) as f64,
    );
    store.close().await;
}
