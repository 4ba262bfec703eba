//! [`Haproxy`]: Debian's HAProxy in front of gateways, as in production.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// A running HAProxy balancing WebSockets over gateways, health-checking `/readyz`.
pub struct Haproxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    child: Child,
    config: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy round-robin over `gateways`: each one's public address, and its admin
    /// address, whose `/readyz` HAProxy health-checks (as a production load balancer would).
    /// The test needs HAProxy ([`require`](crate::require)`(Service::Haproxy)`, which this
    /// calls).
    pub async fn start(gateways: &[(SocketAddr, SocketAddr)]) -> Result<Haproxy> {
        crate::require(crate::Service::Haproxy);
        let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .context("haproxy is not installed (scripts/services installs it)")?;
        // HAProxy cannot report a port it chose, so take a free one and hand it over.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let servers: String = gateways
            .iter()
            .enumerate()
            .map(|(i, (gw, admin))| {
                format!(
                    "  server gw{i} {gw} check addr {} port {} inter 200ms fall 2 rise 1\n",
                    admin.ip(),
                    admin.port()
                )
            })
            .collect();
        let config = std::env::temp_dir().join(format!("gatehouse-haproxy-{}-{}.cfg", std::process::id(), addr.port()));
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 4096\n\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  timeout tunnel 1h\n\n\
                 frontend clients\n  bind {addr}\n  default_backend gateways\n\n\
                 backend gateways\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n{servers}"
            ),
        )?;
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy")?;
        let haproxy = Haproxy { addr, child, config };
        haproxy.wait_until_serving().await?;
        Ok(haproxy)
    }

    /// The WebSocket URL through the balancer.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Waits until the balancer passes requests to the gateways (every server starts up;
    /// failed readiness checks on the admin ports would take one out). A gateway answers `/`
    /// with its page or a 404 (`--page none`); HAProxy itself answers 503 while it has no
    /// server.
    async fn wait_until_serving(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut served = 0;
        loop {
            if let Ok((200 | 404, _)) = crate::cluster::http_get(self.addr, "/").await {
                served += 1;
                if served == 2 {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("haproxy at {} never passed a request to the gateways", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.config);
    }
}
