//! Counters of the API process, served as Prometheus text at `/metrics` on the HTTP port.
//!
//! Plain relaxed atomics: a request adds to two or three of them and takes no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use gatehouse_proto::ErrorCode;

use crate::error::{Failure, Refusal};

macro_rules! counters {
    ($($field:ident => $name:literal, $help:literal;)*) => {
        /// The process's counters.
        #[derive(Debug, Default)]
        pub struct Stats {
            $(
                #[doc = $help]
                pub $field: AtomicU64,
            )*
            /// Failed operations, by error code (in [`ErrorCode::ALL`] order).
            errors: [AtomicU64; 7],
        }

        impl Stats {
            fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 0 $(+ { let _ = $name; 1 })*] {
                [$(($name, $help, &self.$field)),*]
            }
        }
    };
}

counters! {
    requests => "gatehouse_api_requests_total", "HTTP and gRPC requests to the API (a batch counts once)";
    operations => "gatehouse_api_operations_total", "operations run (each operation of a batch counts)";
    unauthenticated => "gatehouse_api_unauthenticated_total", "requests refused for a missing or unknown API key";
    forbidden => "gatehouse_api_forbidden_total", "requests refused because the key lacks the scope";
    rate_limited => "gatehouse_api_rate_limited_total", "requests refused over their key's rate (429)";
    too_large => "gatehouse_api_too_large_total", "requests refused over the body size limit (413)";
    overloaded => "gatehouse_api_overloaded_total", "requests refused over the concurrent request limit (503)";
    replays => "gatehouse_api_idempotent_replays_total", "sends answered from the idempotency cache (not sent again)";
    refused_connections => "gatehouse_api_refused_connections_total", "HTTP connections refused at accept (connection limit)";
    header_timeouts => "gatehouse_api_header_read_timeouts_total", "HTTP connections closed before their headers arrived";
}

impl Stats {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed request or operation under its code and, for refusals, its reason.
    pub fn failure(&self, failure: &Failure) {
        let index = ErrorCode::ALL
            .iter()
            .position(|c| *c == failure.code)
            .unwrap_or(ErrorCode::ALL.len() - 1);
        Stats::inc(&self.errors[index]);
        match failure.refusal {
            Refusal::Forbidden => Stats::inc(&self.forbidden),
            Refusal::TooLarge => Stats::inc(&self.too_large),
            Refusal::Plain if failure.code == ErrorCode::Unauthenticated => Stats::inc(&self.unauthenticated),
            _ => {}
        }
    }

    /// The number of failures with `code`.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// Renders every counter plus the given gauges as Prometheus text.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        for (name, help, value) in self.counters() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let name = "gatehouse_api_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} failed requests and batch operations, by error code\n# TYPE {name} counter"
        );
        for code in ErrorCode::ALL {
            let _ = writeln!(out, "{name}{{code=\"{code}\"}} {}", self.errors(code));
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_code_and_reason() {
        let stats = Stats::default();
        stats.failure(&Failure::forbidden("x"));
        stats.failure(&Failure::unauthenticated("x"));
        stats.failure(&Failure::too_large(1));
        assert_eq!(stats.errors(ErrorCode::Unauthenticated), 2);
        assert_eq!(stats.errors(ErrorCode::BadRequest), 1);
        assert_eq!(stats.forbidden.load(Ordering::Relaxed), 1);
        assert_eq!(stats.unauthenticated.load(Ordering::Relaxed), 1);
        let text = stats.render(&[("gatehouse_api_keys", "keys", 3)]);
        assert!(
            text.contains("gatehouse_api_errors_total{code=\"unauthenticated\"} 2"),
            "{text}"
        );
        assert!(text.contains("gatehouse_api_too_large_total 1"), "{text}");
        assert!(text.contains("gatehouse_api_keys 3"), "{text}");
    }
}
