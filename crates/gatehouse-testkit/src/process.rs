//! One `gatehouse` child process: started with arguments, its stderr captured line by line,
//! its bound addresses parsed from `listening kind=… addr=…` lines, killed on drop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Locates the `gatehouse` binary next to the running test (`target/<profile>/gatehouse`).
/// The test command builds it first (`cargo build --workspace --bins`).
pub fn gatehouse_bin() -> PathBuf {
    if let Ok(path) = std::env::var("GATEHOUSE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps layout");
    profile_dir.join("gatehouse")
}

/// The path of an example program built next to the `gatehouse` binary
/// (`target/<profile>/examples/NAME`, built by `cargo build --workspace --examples`).
pub fn example_bin(name: &str) -> PathBuf {
    let bin = gatehouse_bin();
    bin.parent()
        .expect("the binary's directory")
        .join("examples")
        .join(name)
}

/// A running child process.
pub struct Process {
    /// A short name for messages (`gateway-1`).
    pub name: String,
    args: Vec<String>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    lines: watch::Receiver<usize>,
    addrs: HashMap<String, SocketAddr>,
}

impl Process {
    /// Starts `gatehouse ARGS` and waits until it logged one `listening` line per expected kind.
    pub async fn start(name: &str, args: Vec<String>, expect: &[&str]) -> Result<Process> {
        Process::start_in(None, name, &gatehouse_bin(), args, &[], expect).await
    }

    /// [`Process::start`] inside network namespace `netns` (`ip netns exec`, which execs the
    /// binary: the pid is still gatehouse's).
    pub async fn start_in_netns(netns: &str, name: &str, args: Vec<String>, expect: &[&str]) -> Result<Process> {
        Process::start_in(Some(netns), name, &gatehouse_bin(), args, &[], expect).await
    }

    /// Starts another program (an SDK example, `target/<profile>/examples/NAME`) with
    /// arguments and environment variables, like [`Process::start`].
    pub async fn start_program(
        name: &str,
        bin: &std::path::Path,
        args: Vec<String>,
        env: &[(&str, &str)],
        expect: &[&str],
    ) -> Result<Process> {
        Process::start_in(None, name, bin, args, env, expect).await
    }

    async fn start_in(
        netns: Option<&str>,
        name: &str,
        bin: &std::path::Path,
        args: Vec<String>,
        env: &[(&str, &str)],
        expect: &[&str],
    ) -> Result<Process> {
        if !bin.exists() {
            bail!(
                "{} not found: run `cargo build --workspace --bins --examples` first",
                bin.display()
            );
        }
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(&args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("GATEHOUSE_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, lines) = watch::channel(0usize);
        let sink = log.clone();
        let echo = std::env::var("GATEHOUSE_TEST_ECHO").is_ok();
        let label = name.to_owned();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if echo {
                    eprintln!("[{label}] {line}");
                }
                let mut log = sink.lock().expect("log poisoned");
                log.push(line);
                let _ = count_tx.send(log.len());
            }
        });
        let mut process = Process {
            name: name.to_owned(),
            args,
            child: Some(child),
            log,
            lines,
            addrs: HashMap::new(),
        };
        process.await_listening(expect).await?;
        Ok(process)
    }

    async fn await_listening(&mut self, expect: &[&str]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            for line in self.log.lock().expect("log poisoned").iter() {
                if let Some((kind, addr)) = parse_listening(line) {
                    self.addrs.entry(kind).or_insert(addr);
                }
            }
            if expect.iter().all(|kind| self.addrs.contains_key(*kind)) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited with {status} before listening:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if tokio::time::timeout_at(deadline, self.lines.changed()).await.is_err() {
                bail!(
                    "{} did not log its listening addresses in time:\n{}",
                    self.name,
                    self.log_text()
                );
            }
        }
    }

    /// The address logged for `kind` (`ws`, `grpc`).
    pub fn addr(&self, kind: &str) -> SocketAddr {
        *self
            .addrs
            .get(kind)
            .unwrap_or_else(|| panic!("{} has no {kind} address", self.name))
    }

    /// The operating-system process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The arguments it was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log poisoned").join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self
                .log
                .lock()
                .expect("log poisoned")
                .iter()
                .any(|l| l.contains(needle))
            {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, self.lines.changed()).await.is_err() {
                return Err(anyhow!("{} never logged {needle:?}:\n{}", self.name, self.log_text()));
            }
        }
    }

    /// Kills the process with SIGKILL and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Waits for the process to exit by itself and for its whole log to be read; returns the
    /// exit code (`None` if a signal ended it).
    pub async fn wait_exit(&mut self) -> Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let status = child.wait().await?;
        // The log reader ends (and drops its sender) at the end of stderr.
        while self.lines.changed().await.is_ok() {}
        Ok(status.code())
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the exit code.
    pub async fn terminate(&mut self) -> Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(status) => Ok(status?.code()),
            Err(_) => {
                let _ = child.kill().await;
                bail!("{} did not exit within 10s of SIGTERM", self.name)
            }
        }
    }
}

/// Parses `... listening kind=ws addr=127.0.0.1:1234 ...`.
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains("listening") {
        return None;
    }
    if line.starts_with('{') {
        // `--log-format json`: the event's fields are top-level keys.
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let kind = value.get("kind")?.as_str()?.to_owned();
        let addr = value.get("addr")?.as_str()?.parse().ok()?;
        return Some((kind, addr));
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(name))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let kind = field("kind=")?;
    let addr = field("addr=")?.parse().ok()?;
    Some((kind, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_are_parsed() {
        let line =
            "2026-01-01T00:00:00Z  INFO gatehouse_gateway::server: listening kind=ws addr=127.0.0.1:8080 gateway_id=ab";
        assert_eq!(
            parse_listening(line),
            Some(("ws".to_owned(), "127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(parse_listening("nothing here"), None);
    }
}
