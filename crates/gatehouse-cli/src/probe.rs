//! `gatehouse probe`: asks a running process's admin listener for `/healthz` or `/readyz` and
//! exits 0 only on HTTP 200. Container health checks (Dockerfile `HEALTHCHECK`, compose
//! `healthcheck`, a Kubernetes `exec` probe) run it, so the runtime image needs no curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::admin::AdminListen;

/// Largest answer read: a readiness body is a few hundred bytes.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The admin listener to ask; an unspecified address (0.0.0.0) is asked on loopback. It is
    /// read from GATEHOUSE_ADMIN_LISTEN, the variable the roles bind with.
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin: AdminListen,
    /// The path: /healthz (the process serves) or /readyz (it should get traffic).
    #[arg(long, default_value = "/healthz", value_parser = ["/healthz", "/readyz"])]
    pub path: String,
    /// Time allowed for the whole exchange.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Asks once; an error (and a non-zero exit) unless the answer is 200.
pub async fn run(args: &ProbeArgs) -> Result<()> {
    let Some(addr) = args.admin.0 else {
        bail!("the admin listener is off: nothing to probe");
    };
    let addr = dialable(addr);
    let (status, body) = tokio::time::timeout(args.timeout, get(addr, &args.path))
        .await
        .with_context(|| format!("{addr}{} did not answer within {:?}", args.path, args.timeout))??;
    if status != 200 {
        bail!("{addr}{} answered {status}: {}", args.path, body.trim());
    }
    println!("{}", body.trim());
    Ok(())
}

/// Where to dial a listener bound to `addr` from the same host.
fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    (&mut stream).take(MAX_ANSWER_BYTES).read_to_string(&mut answer).await?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{addr} did not answer HTTP"))?;
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_asked_on_loopback() {
        assert_eq!(
            dialable("0.0.0.0:9100".parse().unwrap()),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(dialable("[::]:9100".parse().unwrap()), "[::1]:9100".parse().unwrap());
        assert_eq!(
            dialable("10.0.0.5:9100".parse().unwrap()),
            "10.0.0.5:9100".parse().unwrap()
        );
    }
}
