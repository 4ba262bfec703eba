//! `gatehouse-test-services CONFIG`: probes every service the tests may need, with the same
//! code as `gatehouse_testkit::require`, reports each one on stderr, and writes a nextest tool
//! config file at `CONFIG` (an absolute path) with a profile, [`PROFILE`], whose default filter
//! leaves out the tests that need a missing service, so that nextest reports them as skipped.
//! Under `CI` the filter leaves out nothing: there, a missing service fails its tests.
//!
//! `scripts/test` and `scripts/nextest` run it and pass the file to nextest with
//! `--tool-config-file gatehouse:CONFIG --profile gatehouse-services` (nextest takes a default
//! filter from a tool config only in a profile of its own; the profile inherits the settings
//! of the repository's `[profile.default]`). Exits 0 when every service is there, 3 when tests
//! will be skipped (so scripts can say so), 2 on a usage error.

use std::process::ExitCode;

use gatehouse_testkit::services::{Service, skip_filter, under_ci};

/// The nextest profile the config file defines.
const PROFILE: &str = "gatehouse-services";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config] = args.as_slice() else {
        eprintln!("usage: gatehouse-test-services CONFIG (an absolute path for nextest's --tool-config-file)");
        return ExitCode::from(2);
    };
    let mut missing = Vec::new();
    for service in Service::ALL {
        match service.probe() {
            Ok(()) => eprintln!("services: {service}: there"),
            Err(why) => {
                eprintln!("services: {service}: MISSING ({why}); {}", service.provided_by());
                missing.push(service);
            }
        }
    }
    let filter = if under_ci() { None } else { skip_filter(&missing) };
    let mut text = String::from(
        "# Written by gatehouse-test-services (crates/gatehouse-testkit): the tests whose services\n\
         # are missing on this machine are left out, and nextest reports them as skipped.\n",
    );
    text.push_str(&format!("[profile.{PROFILE}]\n"));
    if let Some(filter) = &filter {
        // A TOML basic string: the filter holds no quote, and its backslash-free regexes need
        // no escaping.
        text.push_str(&format!("default-filter = \"{filter}\"\n"));
    }
    if let Err(e) = std::fs::write(config, text) {
        eprintln!("gatehouse-test-services: writing {config}: {e}");
        return ExitCode::from(2);
    }
    match (&filter, missing.is_empty()) {
        (_, true) => ExitCode::SUCCESS,
        (None, false) => {
            eprintln!("services: CI is set: the tests of the missing services will run and fail");
            ExitCode::SUCCESS
        }
        (Some(_), false) => {
            let words: Vec<&str> = missing.iter().map(|s| s.marker()).collect();
            eprintln!(
                "services: the tests marked needs_{{{}}} will be reported as SKIPPED",
                words.join(",")
            );
            ExitCode::from(3)
        }
    }
}
