//! [`ApiServer`]: a `gatehouse api` process joined to a test [`Cluster`], its API keys, and a
//! minimal HTTP/1.1 client ([`HttpResponse`], [`http_request`]) to call it as a backend would.
//!
//! Keys are made by the binary itself (`gatehouse api-key create`), so the tests exercise the
//! same path an operator takes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{Cluster, http_get};
use crate::process::{Process, gatehouse_bin};

/// A key made with `gatehouse api-key create`.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The secret to present (`Authorization: Bearer …`).
    pub secret: String,
    /// The key file entry.
    pub entry: Value,
}

/// Creates a key by running `gatehouse api-key create --name NAME --scopes SCOPES`.
pub fn create_key(name: &str, scopes: &str, extra: &[&str]) -> Result<ApiKey> {
    let output = std::process::Command::new(gatehouse_bin())
        .args(["api-key", "create", "--name", name, "--scopes", scopes])
        .args(extra)
        .output()
        .context("running gatehouse api-key create")?;
    if !output.status.success() {
        bail!("api-key create failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8(output.stdout)?;
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no {prefix:?} line in {stdout}"))
    };
    Ok(ApiKey {
        secret: field("key: ")?,
        entry: serde_json::from_str(&field("entry: ")?)?,
    })
}

/// A running `gatehouse api` process and the keys it accepts, by name.
pub struct ApiServer {
    /// The process.
    pub process: Process,
    keys: HashMap<String, ApiKey>,
    dir: PathBuf,
}

impl ApiServer {
    /// Starts an API process for `cluster` with keys `(name, scopes)` and extra flags, and
    /// waits until it has joined the cluster (`/readyz`).
    pub async fn start(cluster: &Cluster, keys: &[(&str, &str)], extra: &[&str]) -> Result<ApiServer> {
        let dir = std::env::temp_dir().join(format!("gatehouse-api-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let mut made = HashMap::new();
        for (name, scopes) in keys {
            made.insert(name.to_string(), create_key(name, scopes, &[])?);
        }
        let file = dir.join("keys.json");
        write_key_file(&file, made.values())?;
        let mut args: Vec<String> = vec![
            "api".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
            "--registry".into(),
            cluster.registry_list(),
            "--api-keys".into(),
            file.display().to_string(),
        ];
        args.extend(cluster.credential_args().iter().cloned());
        args.extend(extra.iter().map(|a| a.to_string()));
        let process = Process::start("api", args, &["http", "grpc"]).await?;
        let server = ApiServer {
            process,
            keys: made,
            dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = http_get(self.http_addr(), "/readyz").await.unwrap_or_default();
            if status == 200 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the API never became ready ({status} {body}):\n{}",
                    self.process.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.process.addr("http")
    }

    /// The gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.process.addr("grpc")
    }

    /// The HTTP base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr())
    }

    /// The secret of the key named `name`.
    pub fn key(&self, name: &str) -> &str {
        &self
            .keys
            .get(name)
            .unwrap_or_else(|| panic!("no key named {name}"))
            .secret
    }

    /// `POST path` with a JSON body and the key named `key` (or none).
    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Result<HttpResponse> {
        self.post_raw(path, key, &[], body.to_string().as_bytes()).await
    }

    /// `POST path` with raw body bytes and extra headers.
    pub async fn post_raw(
        &self,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let auth = key.map(|k| format!("Bearer {}", self.key(k)));
        let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            all.push(("authorization", auth));
        }
        all.extend_from_slice(headers);
        http_request(self.http_addr(), "POST", path, &all, body).await
    }

    /// Calls operation `op` with the key named `key`; returns the `result` of a 200 answer.
    pub async fn ok(&self, op: &str, key: &str, body: Value) -> Result<Value> {
        let response = self.post(&format!("/api/v1/{op}"), Some(key), &body).await?;
        if response.status != 200 {
            bail!("{op} answered {}: {}", response.status, response.text());
        }
        Ok(response.json()?["result"].clone())
    }

    /// Replaces the key file with keys `(name, scopes)` (new secrets), sends SIGHUP and waits
    /// for the reload to be logged.
    pub async fn replace_keys(&mut self, keys: &[(&str, &str)]) -> Result<()> {
        let mut made = HashMap::new();
        for (name, scopes) in keys {
            made.insert(name.to_string(), create_key(name, scopes, &[])?);
        }
        write_key_file(&self.dir.join("keys.json"), made.values())?;
        self.keys = made;
        self.sighup_and_wait("api keys reloaded").await
    }

    /// Writes `text` as the key file, sends SIGHUP and waits for the log line `needle`.
    pub async fn write_key_file_and_reload(&mut self, text: &str, needle: &str) -> Result<()> {
        std::fs::write(self.dir.join("keys.json"), text)?;
        self.sighup_and_wait(needle).await
    }

    async fn sighup_and_wait(&mut self, needle: &str) -> Result<()> {
        let count = |p: &Process| p.log_text().matches(needle).count();
        let before = count(&self.process);
        let pid = self.process.pid().ok_or_else(|| anyhow!("the API process is gone"))?;
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while count(&self.process) == before {
            if tokio::time::Instant::now() > deadline {
                bail!("no {needle:?} after SIGHUP:\n{}", self.process.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_key_file<'a>(path: &Path, keys: impl Iterator<Item = &'a ApiKey>) -> Result<()> {
    let entries: Vec<&Value> = keys.map(|k| &k.entry).collect();
    std::fs::write(path, serde_json::json!({ "keys": entries }).to_string())?;
    Ok(())
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("not json ({}): {}", self.status, self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to its end.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    // A server may answer (413) before reading the body and close: a failed write is fine.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no complete answer from {addr}{path} within 15s"))?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head in {:?}", String::from_utf8_lossy(raw)))?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk"))?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end])?.trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?);
        data = data.get(size + 2..).ok_or_else(|| anyhow!("truncated chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_with_length_or_chunks() {
        let plain =
            parse_response(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(plain.status, 429);
        assert_eq!(plain.header("retry-after"), Some("2"));
        assert_eq!(plain.body, b"{}");
        let chunked =
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(chunked.body, b"abcde");
    }
}
