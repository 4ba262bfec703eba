//! RFC 6455 conformance of the gateway, through the whole cluster path: a raw-frame client
//! talks to a real gateway whose echo worker sends every message back, so each case crosses
//! gateway → worker → gateway. The sections mirror the Autobahn fuzzing suite's (1-7 and a
//! smaller 9; 10, auto-fragmentation, is not required of a server, and the client accepts
//! fragmented answers everywhere). Each test starts its own cluster and runs its section's
//! cases one after the other, each on a fresh connection; it fails on any FAILED case (a MUST
//! of the RFC, or a documented gateway limit, broken) and prints a table of every case that
//! was not OK. `WS_CONFORMANCE_STRICT=1` fails on NON-STRICT cases too.
//!
//! The same case tables run against a reference server on tokio-tungstenite (which passes
//! Autobahn), which proves the cases and the judge: every case must pass there, except the
//! documented [`reference::KNOWN_EXCEPTIONS`].
//!
//! The end-to-end tests spawn `target/debug/gatehouse`: run `cargo build --workspace --bins`
//! first.

#[path = "websocket_conformance/case.rs"]
mod case;
#[path = "websocket_conformance/closing.rs"]
mod closing;
#[path = "websocket_conformance/crosscheck.rs"]
mod crosscheck;
#[path = "websocket_conformance/fragments.rs"]
mod fragments;
#[path = "websocket_conformance/framing.rs"]
mod framing;
#[path = "websocket_conformance/large.rs"]
mod large;
#[path = "websocket_conformance/payload.rs"]
mod payload;
#[path = "websocket_conformance/pings.rs"]
mod pings;
#[path = "websocket_conformance/reference.rs"]
mod reference;
#[path = "websocket_conformance/report.rs"]
mod report;
#[path = "websocket_conformance/reserved.rs"]
mod reserved;
#[path = "websocket_conformance/utf8.rs"]
mod utf8;

use anyhow::Result;
use gatehouse_testkit::Cluster;

use crate::report::Section;

/// Runs `section` against a fresh cluster (one gateway, one echo worker) with the section's
/// message limit, and fails on any case that counts as a failure.
async fn against_the_gateway(section: Section) -> Result<()> {
    let limit = section.max_message_bytes.to_string();
    let cluster = Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        // The echo sends back what it got: the outbound frame limit must match the inbound one.
        // Cases pipeline up to a thousand messages in one write: the per-client rate limits
        // (tests/abuse.rs) would only make them slow, not different.
        .gateway_args(&[
            "--max-message-bytes",
            &limit,
            "--max-frame-out-bytes",
            &limit,
            "--message-rate",
            "0",
            "--byte-rate",
            "0",
        ])
        .start()
        .await?;
    let results = report::run(&cluster.ws_url(0), &section).await;
    let table = report::render("the gateway (gateway → echo worker → gateway)", &section, &results);
    println!("{table}");
    // The gateway speaks WebSocket through tungstenite, so it shares tungstenite's known
    // exceptions (and nothing else may fail).
    assert_eq!(
        report::failures(&results),
        known_exceptions(&section),
        "failing cases (table above)"
    );
    Ok(())
}

/// The ids of the known tungstenite exceptions among `section`'s cases.
fn known_exceptions(section: &Section) -> Vec<String> {
    reference::KNOWN_EXCEPTIONS
        .iter()
        .map(|(id, _)| id.to_string())
        .filter(|id| section.cases.iter().any(|c| &c.id == id))
        .collect()
}

/// Runs `section` against the tungstenite reference server: exactly the known exceptions may
/// fail.
async fn against_the_reference(section: Section) -> Result<()> {
    let addr = reference::start(section.max_message_bytes).await;
    let results = report::run(&format!("ws://{addr}/"), &section).await;
    let table = report::render("the tungstenite reference server", &section, &results);
    println!("{table}");
    assert_eq!(
        report::failures(&results),
        known_exceptions(&section),
        "the suite misjudges a conformant server (table above)"
    );
    Ok(())
}

/// Runs the cross-check probes with both clients against `url`; they must see the same.
async fn clients_agree(url: &str) {
    for probe in crosscheck::PROBES {
        let raw = crosscheck::with_raw_client(url, probe).await;
        let tungstenite = crosscheck::with_tungstenite(url, probe).await;
        println!("{probe:?}: raw client {raw:?}, tungstenite client {tungstenite:?}");
        assert_eq!(raw, tungstenite, "the two clients disagree on {probe:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_and_tungstenite_client_see_the_gateway_alike() -> Result<()> {
    let cluster = Cluster::builder().gateways(1).workers("echo", 1).start().await?;
    clients_agree(&cluster.ws_url(0)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_and_tungstenite_client_see_the_reference_server_alike() {
    let addr = reference::start(64 * 1024).await;
    clients_agree(&format!("ws://{addr}/")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_echoes_text_and_binary_of_every_length_form_and_answers_oversize_with_1009() -> Result<()> {
    against_the_gateway(framing::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_pings_and_ignores_unsolicited_pongs() -> Result<()> {
    against_the_gateway(pings::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_fails_frames_with_reserved_bits() -> Result<()> {
    against_the_gateway(reserved::reserved_bits()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_fails_frames_with_reserved_opcodes() -> Result<()> {
    against_the_gateway(reserved::reserved_opcodes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_reassembles_fragments_and_fails_broken_fragmentation() -> Result<()> {
    against_the_gateway(fragments::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_echoes_valid_utf8_and_fails_invalid_utf8() -> Result<()> {
    against_the_gateway(utf8::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_completes_the_closing_handshake() -> Result<()> {
    against_the_gateway(closing::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_echoes_large_messages_however_they_are_cut() -> Result<()> {
    against_the_gateway(large::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_section_1_framing() -> Result<()> {
    against_the_reference(framing::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_section_2_pings() -> Result<()> {
    against_the_reference(pings::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_section_3_reserved_bits() -> Result<()> {
    against_the_reference(reserved::reserved_bits()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_section_4_reserved_opcodes() -> Result<()> {
    against_the_reference(reserved::reserved_opcodes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_section_5_fragmentation() -> Result<()> {
    against_the_reference(fragments::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_section_6_utf8() -> Result<()> {
    against_the_reference(utf8::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_section_7_closing() -> Result<()> {
    against_the_reference(closing::section()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_section_9_large_messages() -> Result<()> {
    against_the_reference(large::section()).await
}

#[test]
fn case_ids_are_unique_within_every_section() {
    for section in [
        framing::section(),
        pings::section(),
        reserved::reserved_bits(),
        reserved::reserved_opcodes(),
        fragments::section(),
        utf8::section(),
        closing::section(),
        large::section(),
    ] {
        let mut ids: Vec<&str> = section.cases.iter().map(|c| c.id.as_str()).collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "duplicate case ids in section {}", section.number);
    }
}
