//! Runs a section against a server and reports: a count per verdict and a table of every case
//! that was not OK, with what was expected and what was observed.

use std::fmt::Write as _;

use crate::case::{self, Case, CaseResult, Verdict};

/// A group of cases, run on one server configured with one message limit.
pub struct Section {
    /// The Autobahn section number it mirrors.
    pub number: &'static str,
    /// What it covers.
    pub title: &'static str,
    /// The message limit the server runs with (the gateway's `--max-message-bytes`).
    pub max_message_bytes: usize,
    /// The cases, run in order, each on a fresh connection.
    pub cases: Vec<Case>,
}

/// Runs every case of `section` against `url`, one after the other.
pub async fn run(url: &str, section: &Section) -> Vec<CaseResult> {
    let mut results = Vec::with_capacity(section.cases.len());
    for case in &section.cases {
        results.push(case::run(url, case).await);
    }
    results
}

/// The report: counts, then one table row per case that was not OK.
pub fn render(target: &str, section: &Section, results: &[CaseResult]) -> String {
    let count = |name: &str| results.iter().filter(|r| r.verdict.to_string() == name).count();
    let mut out = format!(
        "RFC 6455 conformance, section {} ({}), against {target}: {} cases, {} OK, {} NON-STRICT, {} FAILED\n",
        section.number,
        section.title,
        results.len(),
        count("OK"),
        count("NON-STRICT"),
        count("FAILED"),
    );
    let mut slowest: Vec<&CaseResult> = results.iter().collect();
    slowest.sort_by_key(|r| std::cmp::Reverse(r.elapsed));
    let slowest: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|r| format!("{} {:.2?}", r.id, r.elapsed))
        .collect();
    let total: std::time::Duration = results.iter().map(|r| r.elapsed).sum();
    let _ = writeln!(out, "{total:.2?} in all; slowest: {}", slowest.join(", "));
    for verdict in ["FAILED", "NON-STRICT"] {
        let rows: Vec<&CaseResult> = results.iter().filter(|r| r.verdict.to_string() == verdict).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{verdict}:\n| case | sent | expected | observed | why |\n|---|---|---|---|---|"
        );
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.id,
                r.title,
                r.expected,
                r.observed,
                r.verdict.why()
            );
        }
    }
    out
}

/// Whether NON-STRICT verdicts count as failures (`WS_CONFORMANCE_STRICT=1`), for working
/// towards full marks; by default only MUST violations fail the test.
pub fn strict() -> bool {
    std::env::var("WS_CONFORMANCE_STRICT").is_ok_and(|v| v == "1")
}

/// The ids of the cases that count as failures.
pub fn failures(results: &[CaseResult]) -> Vec<String> {
    results
        .iter()
        .filter(|r| match r.verdict {
            Verdict::Failed(_) => true,
            Verdict::NonStrict(_) => strict(),
            Verdict::Ok => false,
        })
        .map(|r| r.id.clone())
        .collect()
}
