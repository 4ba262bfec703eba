//! What the servers cost, read from Linux's /proc: resident memory and CPU time of a process,
//! and this process's open-file limit. The generator sees servers only from outside, so this is
//! the one place it learns about them besides their sockets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::BenchError;

/// Descriptors a run keeps free beyond one per client: the runtime, stdio, /proc reads, the
/// in-process baseline server of tests.
pub const FD_RESERVE: u64 = 64;

/// One reading of a process's memory and CPU counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSample {
    /// Resident set size (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub peak_rss_bytes: u64,
    /// Proportional set size from `smaps_rollup` (shared pages split between sharers), when
    /// readable: fairer than RSS when several server processes share libraries.
    pub pss_bytes: Option<u64>,
    /// User plus system CPU time in clock ticks (`utime + stime` of `stat`).
    pub cpu_ticks: u64,
    /// The same per thread name (`/proc/{pid}/task/*/stat`, threads of one name summed): shows
    /// which part of a server spent the time, e.g. a database driver's thread beside the
    /// runtime. Threads that ended before the reading are missing from it.
    pub thread_ticks: BTreeMap<String, u64>,
}

/// Reads `/proc/{pid}/status`, `stat` and (if allowed) `smaps_rollup`; `None` reads this process.
pub fn sample(pid: Option<u32>) -> Result<ProcSample, BenchError> {
    let dir = match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}")),
        None => PathBuf::from("/proc/self"),
    };
    let status = read(&dir.join("status"))?;
    let stat = read(&dir.join("stat"))?;
    let rss_kib = status_kib(&status, "VmRSS:").ok_or_else(|| proc_error(&dir.join("status"), "no VmRSS line"))?;
    let peak_kib = status_kib(&status, "VmHWM:").unwrap_or(rss_kib);
    let cpu_ticks = stat_cpu_ticks(&stat).ok_or_else(|| proc_error(&dir.join("stat"), "unexpected format"))?;
    let pss_bytes = std::fs::read_to_string(dir.join("smaps_rollup"))
        .ok()
        .and_then(|text| status_kib(&text, "Pss:"))
        .map(|kib| kib * 1024);
    Ok(ProcSample {
        rss_bytes: rss_kib * 1024,
        peak_rss_bytes: peak_kib * 1024,
        pss_bytes,
        cpu_ticks,
        thread_ticks: thread_ticks(&dir),
    })
}

/// CPU ticks per thread name of the process at `dir`; threads that vanish while being read are
/// skipped, and an unreadable task list gives an empty map (the totals stay available).
fn thread_ticks(dir: &Path) -> BTreeMap<String, u64> {
    let mut ticks = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(dir.join("task")) else {
        return ticks;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let (Some(name), Some(cpu)) = (stat_comm(&stat), stat_cpu_ticks(&stat)) {
            *ticks.entry(name.to_owned()).or_insert(0) += cpu;
        }
    }
    ticks
}

/// The soft and hard limits on open files of this process (`None` = unlimited), from
/// `/proc/self/limits`.
pub fn open_files_limit() -> Result<(Option<u64>, Option<u64>), BenchError> {
    let path = Path::new("/proc/self/limits");
    let text = read(path)?;
    parse_open_files_limit(&text).ok_or_else(|| proc_error(path, "no \"Max open files\" line"))
}

/// Fails when `clients` sockets plus [`FD_RESERVE`] exceed the soft open-file limit.
pub fn check_fd_limit(clients: usize) -> Result<(), BenchError> {
    let (soft, hard) = open_files_limit()?;
    let needed = clients as u64 + FD_RESERVE;
    match soft {
        Some(limit) if needed > limit => {
            let raise = match hard {
                None => " (the hard limit is unlimited: raise the soft one with `ulimit -n`)".to_owned(),
                Some(hard) if hard >= needed => {
                    format!(" (the hard limit is {hard}: `ulimit -n {hard}` in the shell would be enough)")
                }
                Some(_) => String::new(),
            };
            Err(BenchError::FdLimit {
                clients,
                needed,
                limit,
                raise,
            })
        }
        _ => Ok(()),
    }
}

/// Clock ticks per second, the unit of `stat`'s CPU times, from `getconf CLK_TCK` (100 on every
/// mainstream Linux, which is also the fallback when `getconf` is missing).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks: &u64| ticks > 0)
        .unwrap_or_else(|| {
            tracing::warn!("getconf CLK_TCK failed; assuming 100 clock ticks per second");
            100
        })
}

fn read(path: &Path) -> Result<String, BenchError> {
    std::fs::read_to_string(path).map_err(|e| proc_error(path, &e.to_string()))
}

fn proc_error(path: &Path, reason: &str) -> BenchError {
    BenchError::Proc {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The value of a `Key:   1234 kB` line.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The command (thread) name: field 2, between the first `(` and the last `)`.
fn stat_comm(text: &str) -> Option<&str> {
    text.get(text.find('(')? + 1..text.rfind(')')?)
}

/// `utime + stime` (fields 14 and 15). The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after its closing parenthesis.
fn stat_cpu_ticks(text: &str) -> Option<u64> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_open_files_limit(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    let line = text.lines().find(|line| line.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..].split_whitespace();
    let parse = |value: &str| match value {
        "unlimited" => Some(None),
        number => number.parse().ok().map(Some),
    };
    Some((parse(values.next()?)?, parse(values.next()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields_survive_odd_command_names() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 4 0 100 \
                    1000000 500 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(300));
        assert_eq!(stat_comm(stat), Some("my (odd) name"));
    }

    #[test]
    fn status_lines_are_read_in_kib() {
        let status = "Name:\tgatehouse\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn open_file_limits_are_parsed() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            1024                 unlimited            files     \n";
        assert_eq!(parse_open_files_limit(limits), Some((Some(1024), None)));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample(None).unwrap();
        assert!(sample.rss_bytes > 0);
        assert!(sample.peak_rss_bytes >= sample.rss_bytes);
        assert!(!sample.thread_ticks.is_empty(), "this test's own thread is listed");
        assert!(open_files_limit().is_ok());
        assert!(check_fd_limit(10).is_ok());
        assert!(
            matches!(check_fd_limit(usize::MAX >> 1), Err(BenchError::FdLimit { .. })) || {
                // An unlimited soft limit accepts any client count.
                open_files_limit().unwrap().0.is_none()
            }
        );
        assert!(clock_ticks_per_second() > 0);
    }
}
