//! [`Cluster`]: registries, gateways and workers as separate `gatehouse` processes on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::TEST_SECRET;
use crate::process::Process;

/// The apps a worker runs only with `--allow-unauthenticated`.
pub const UNAUTHENTICATED_APPS: [&str; 2] = ["relay", "api"];

/// Describes a cluster to start.
pub struct ClusterBuilder {
    registries: usize,
    gateways: usize,
    workers: Vec<String>,
    registry_args: Vec<String>,
    gateway_args: Vec<String>,
    worker_args: Vec<String>,
    credentials: Vec<String>,
    public_tls: bool,
    registry_host: std::net::IpAddr,
}

/// A running cluster; every process is killed when it is dropped.
pub struct Cluster {
    /// Registry processes, in start order.
    pub registries: Vec<Process>,
    /// Gateway processes, in start order.
    pub gateways: Vec<Process>,
    /// Worker processes, in start order.
    pub workers: Vec<Process>,
    registry_addrs: Vec<SocketAddr>,
    registry_args: Vec<String>,
    worker_args: Vec<String>,
    credentials: Vec<String>,
    public_tls: bool,
}

impl Cluster {
    /// Starts describing a cluster: by default one registry, two gateways and no workers.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            registries: 1,
            gateways: 2,
            workers: Vec::new(),
            // Short leases keep failure tests quick; production defaults are longer.
            registry_args: vec!["--lease".into(), "2s".into()],
            gateway_args: Vec::new(),
            worker_args: Vec::new(),
            credentials: vec!["--cluster-secret".into(), TEST_SECRET.into()],
            public_tls: false,
            registry_host: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }

    /// The WebSocket URL of gateway `index` (`wss://` when the cluster runs with TLS).
    pub fn ws_url(&self, index: usize) -> String {
        let scheme = if self.public_tls { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.gateways[index].addr("ws"))
    }

    /// The flags that make a process a member of this cluster (its secret, or its TLS files).
    pub fn credential_args(&self) -> &[String] {
        &self.credentials
    }

    /// The comma-separated registry list every member is given.
    pub fn registry_list(&self) -> String {
        self.registry_addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts one more worker running `app`.
    pub async fn add_worker(&mut self, app: &str) -> Result<()> {
        let name = format!("worker-{}", self.workers.len());
        let mut args: Vec<String> = vec![
            "worker".into(),
            "--registry".into(),
            self.registry_list(),
            "--app".into(),
            app.into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(self.credentials.iter().cloned());
        if UNAUTHENTICATED_APPS.contains(&app) {
            // The test apps authenticate nobody; a worker refuses to run them unless told.
            args.push("--allow-unauthenticated".into());
        }
        args.extend(self.worker_args.iter().cloned());
        let mut worker = Process::start(&name, args, &["admin"]).await?;
        worker.wait_for_log("worker started", Duration::from_secs(10)).await?;
        self.workers.push(worker);
        Ok(())
    }

    /// Waits until every gateway has exactly `count` workers attached and a registry session.
    pub async fn wait_workers(&self, count: usize) -> Result<()> {
        let want = format!("\"workers\":{count},");
        for gateway in &self.gateways {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (_, body) = http_get(gateway.addr("admin"), "/readyz").await.unwrap_or_default();
                if body.contains(&want) && !body.contains("\"registries\":0") {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("{} never reached {count} workers; last readiness: {body}", gateway.name);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(())
    }

    /// Kills registry `index` with SIGKILL.
    pub async fn kill_registry(&mut self, index: usize) {
        self.registries[index].kill().await;
    }

    /// Starts registry `index` again on its previous address (after [`Cluster::kill_registry`]).
    pub async fn restart_registry(&mut self, index: usize) -> Result<()> {
        let addr = self.registry_addrs[index];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match start_registry(index, addr, &self.credentials, &self.registry_args).await {
                Ok(process) => {
                    self.registries[index] = process;
                    return Ok(());
                }
                Err(error) if tokio::time::Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl ClusterBuilder {
    /// The registries' lease (the tests' default is 2 s, to keep failure tests quick).
    pub fn lease(mut self, lease: Duration) -> Self {
        if let Some(at) = self.registry_args.iter().position(|a| a == "--lease") {
            self.registry_args[at + 1] = format!("{}ms", lease.as_millis());
        }
        self
    }

    /// Where registries listen (default loopback): another host address lets processes in a
    /// network namespace reach them ([`crate::Netns::host`]); the registries then run with
    /// `--insecure-plaintext` (a test network, not a production one).
    pub fn registry_host(mut self, host: std::net::IpAddr) -> Self {
        self.registry_host = host;
        if !host.is_loopback() {
            self.registry_args.push("--insecure-plaintext".into());
        }
        self
    }

    /// Number of registries.
    pub fn registries(mut self, count: usize) -> Self {
        self.registries = count;
        self
    }

    /// Number of gateways.
    pub fn gateways(mut self, count: usize) -> Self {
        self.gateways = count;
        self
    }

    /// Adds `count` workers running `app`.
    pub fn workers(mut self, app: &str, count: usize) -> Self {
        self.workers.extend(std::iter::repeat_n(app.to_owned(), count));
        self
    }

    /// Extra arguments for every worker (for example `--database-url`).
    pub fn worker_args(mut self, args: &[&str]) -> Self {
        self.worker_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Extra arguments for every gateway.
    pub fn gateway_args(mut self, args: &[&str]) -> Self {
        self.gateway_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Runs the cluster with TLS everywhere, from `tls`'s certificates: mutual TLS between
    /// every member (no cluster secret at all: members are admitted by their certificates) and
    /// `wss://` on the gateways.
    pub fn tls(mut self, tls: &crate::TestTls) -> Self {
        self.credentials = vec!["--cluster-tls-dir".into(), tls.dir().display().to_string()];
        self.gateway_args.extend([
            "--tls-cert".into(),
            tls.file("server.pem").display().to_string(),
            "--tls-key".into(),
            tls.file("server-key.pem").display().to_string(),
        ]);
        self.public_tls = true;
        self
    }

    /// Runs every process with `count` runtime threads (`--threads`) instead of one per core.
    pub fn threads(mut self, count: u16) -> Self {
        for args in [&mut self.registry_args, &mut self.gateway_args, &mut self.worker_args] {
            args.extend(["--threads".to_owned(), count.to_string()]);
        }
        self
    }

    /// Starts everything and waits until every gateway sees every worker.
    pub async fn start(self) -> Result<Cluster> {
        let mut registries = Vec::new();
        for index in 0..self.registries {
            let addr = SocketAddr::new(self.registry_host, 0);
            registries.push(start_registry(index, addr, &self.credentials, &self.registry_args).await?);
        }
        let registry_addrs: Vec<SocketAddr> = registries.iter().map(|r| r.addr("grpc")).collect();
        let mut cluster = Cluster {
            registries,
            gateways: Vec::new(),
            workers: Vec::new(),
            registry_addrs,
            registry_args: self.registry_args,
            worker_args: self.worker_args,
            credentials: self.credentials,
            public_tls: self.public_tls,
        };
        for index in 0..self.gateways {
            let mut args: Vec<String> = vec![
                "gateway".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--internal".into(),
                "127.0.0.1:0".into(),
                "--registry".into(),
                cluster.registry_list(),
                "--admin-listen".into(),
                "127.0.0.1:0".into(),
            ];
            args.extend(cluster.credentials.iter().cloned());
            if !self.gateway_args.iter().any(|a| a == "--drain") {
                // Tests stop gateways with SIGTERM and wait for them: a short drain.
                args.extend(["--drain".into(), "1s".into()]);
            }
            args.extend(self.gateway_args.iter().cloned());
            cluster
                .gateways
                .push(Process::start(&format!("gateway-{index}"), args, &["ws", "grpc", "admin"]).await?);
        }
        for app in &self.workers {
            cluster.add_worker(app).await?;
        }
        cluster.wait_workers(self.workers.len()).await?;
        Ok(cluster)
    }
}

async fn start_registry(index: usize, addr: SocketAddr, credentials: &[String], extra: &[String]) -> Result<Process> {
    let mut args: Vec<String> = vec![
        "registry".into(),
        "--listen".into(),
        addr.to_string(),
        "--admin-listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(credentials.iter().cloned());
    args.extend(extra.iter().cloned());
    Process::start(&format!("registry-{index}"), args, &["grpc", "admin"]).await
}

/// Reads one counter or gauge from a gateway's `/metrics`; a metric that is not there is an
/// error, so an assertion on it cannot pass by comparing two absent values.
pub async fn metric(addr: SocketAddr, name: &str) -> Result<u64> {
    let (_, body) = http_get(addr, "/metrics").await?;
    match body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map(|value| value as u64)
    {
        Some(value) => Ok(value),
        None => bail!("{addr}/metrics has no {name}"),
    }
}

/// A minimal HTTP/1.0 GET, returning the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let response = http_request(addr, path).await?;
    Ok((response.status, response.body))
}

/// An HTTP response as [`http_request`] read it.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code (0 when the status line was unreadable).
    pub status: u16,
    /// The header lines, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl HttpResponse {
    /// The value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.0 GET, with the response's headers.
pub async fn http_request(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}
