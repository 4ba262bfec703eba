//! [`Compose`]: the services of `docker-compose.yml` started as real processes on loopback, from
//! the commands, environment and health checks the file holds, so that the file cannot drift
//! from what the tests run.
//!
//! There is no Docker engine where the tests run; what a container network would provide is
//! mapped instead:
//! - every `host:port` naming a service (or `0.0.0.0:port` inside the service itself) becomes
//!   `127.0.0.1:P`, one free port per service and container port, reserved up front so that
//!   commands naming another service's address are known before it starts;
//! - a service's fixed `ipv4_address` becomes `127.0.0.1`;
//! - the `/tls` volume becomes a temporary directory (removed on drop);
//! - the PostgreSQL service is the local server (a fresh database per run, dropped on drop);
//! - HAProxy is Debian's, with the repository's config file mapped the same way;
//! - `${VAR}`, `${VAR:-default}` and `${VAR:?message}` are interpolated from the variables the
//!   test gives, as `docker compose` does from the shell.
//!
//! Services start in `depends_on` order; a dependent waits for `service_healthy` by running the
//! service's own `healthcheck` command until it succeeds.
//!
//! The YAML is read by the Python interpreter of the deployment tools' virtualenv
//! (`scripts/services` installs it; see [`tool`]), which also holds `check-jsonschema`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::TestTls;
use crate::postgres::TempDatabase;
use crate::process::{Process, gatehouse_bin};

/// How long a service may take to pass its health check.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// A tool of the deployment checks: `$GATEHOUSE_TOOLS_VENV/bin/NAME` (default
/// `/opt/gatehouse-tools`, where `scripts/services` installs check-jsonschema, kubernetes-validate
/// and hadolint), else `NAME` on the PATH. The test needs them
/// ([`require`](crate::require)`(Service::DeployTools)`, which this calls).
pub fn tool(name: &str) -> Result<PathBuf> {
    crate::require(crate::Service::DeployTools);
    let venv = crate::services::tools_venv();
    let in_venv = venv.join("bin").join(name);
    if in_venv.exists() {
        return Ok(in_venv);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.exists())
        })
        .unwrap_or_default();
    on_path.ok_or_else(|| {
        anyhow!(
            "{name} is not installed (neither in {}/bin nor on PATH): run scripts/services",
            venv.display()
        )
    })
}

/// Reads a YAML file into JSON values (one per document), with the virtualenv's ruamel.yaml.
pub fn read_yaml(path: &Path) -> Result<Vec<Value>> {
    let script = "import sys, json\nfrom ruamel.yaml import YAML\n\
                  print(json.dumps(list(YAML(typ='safe', pure=True).load_all(open(sys.argv[1])))))";
    let output = std::process::Command::new(tool("python3")?)
        .args(["-c", script])
        .arg(path)
        .output()
        .context("running the tools' python")?;
    ensure!(
        output.status.success(),
        "reading {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The repository root (where `docker-compose.yml` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/gatehouse-testkit is two levels down")
        .to_path_buf()
}

/// What a service is, as far as running it on loopback goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The gatehouse image, with its entrypoint: a long-running role.
    Gatehouse,
    /// The gatehouse image with a shell entrypoint: a one-shot set-up step.
    Init,
    /// PostgreSQL: the local server.
    Postgres,
    /// HAProxy: Debian's, with `deploy/haproxy.cfg`.
    Haproxy,
}

/// A compose file's topology running on loopback; everything stops on drop.
pub struct Compose {
    services: serde_json::Map<String, Value>,
    vars: HashMap<String, String>,
    overrides: HashMap<(String, String), Option<String>>,
    ports: BTreeMap<(String, u16), u16>,
    ipv4: HashMap<String, String>,
    tls: TestTls,
    database: Option<TempDatabase>,
    /// The running gatehouse processes, by service name.
    pub processes: BTreeMap<String, Process>,
    haproxy: Option<(Child, PathBuf)>,
}

impl Compose {
    /// Reads `docker-compose.yml`, with `vars` for its `${…}` interpolation.
    pub fn load(vars: &[(&str, &str)]) -> Result<Compose> {
        let path = repo_root().join("docker-compose.yml");
        let doc = read_yaml(&path)?.into_iter().next().context("an empty compose file")?;
        let services = doc["services"].as_object().context("no services")?.clone();
        let ipv4 = services
            .iter()
            .flat_map(|(name, service)| {
                let networks = service["networks"].as_object().cloned().unwrap_or_default();
                networks
                    .into_iter()
                    .filter_map(move |(_, network)| Some((network["ipv4_address"].as_str()?.to_owned(), name.clone())))
            })
            .collect();
        let tls_dir = std::env::temp_dir().join(format!("gatehouse-compose-tls-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&tls_dir)?;
        Ok(Compose {
            services,
            vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            overrides: HashMap::new(),
            ports: BTreeMap::new(),
            ipv4,
            tls: TestTls::adopt(tls_dir),
            database: None,
            processes: BTreeMap::new(),
            haproxy: None,
        })
    }

    /// Sets (or, with `None`, removes) one environment variable of a service: for what a test
    /// must change, such as a shorter drain. Everything else comes from the file.
    pub fn override_env(&mut self, service: &str, name: &str, value: Option<&str>) {
        self.overrides
            .insert((service.to_owned(), name.to_owned()), value.map(str::to_owned));
    }

    /// The service definitions.
    pub fn service(&self, name: &str) -> Result<&Value> {
        self.services.get(name).with_context(|| format!("no service {name}"))
    }

    /// Every service name, in an order that starts each one after its `depends_on`.
    pub fn start_order(&self) -> Result<Vec<String>> {
        let mut order: Vec<String> = Vec::new();
        while order.len() < self.services.len() {
            let before = order.len();
            for (name, service) in &self.services {
                if order.contains(name) {
                    continue;
                }
                if dependencies(service).iter().all(|dep| order.contains(dep)) {
                    order.push(name.clone());
                }
            }
            ensure!(
                order.len() > before,
                "depends_on has a cycle or names a missing service"
            );
        }
        Ok(order)
    }

    /// What `name` is.
    pub fn kind(&self, name: &str) -> Result<Kind> {
        let service = self.service(name)?;
        let image = service["image"].as_str().unwrap_or_default();
        Ok(match image {
            _ if image.starts_with("gatehouse") && service.get("entrypoint").is_some() => Kind::Init,
            _ if image.starts_with("gatehouse") => Kind::Gatehouse,
            _ if image.starts_with("postgres") => Kind::Postgres,
            _ if image.starts_with("haproxy") => Kind::Haproxy,
            other => bail!("service {name}: image {other:?} has no loopback stand-in"),
        })
    }

    /// The directory that stands for the `/tls` volume (certificates once `certs` ran).
    pub fn tls(&self) -> &TestTls {
        &self.tls
    }

    /// The fresh database the chat workers use (once the PostgreSQL service "started").
    pub fn database(&self) -> Option<&TempDatabase> {
        self.database.as_ref()
    }

    /// Loopback port standing for `service`'s container port `port`.
    pub fn port(&mut self, service: &str, port: u16) -> Result<u16> {
        if let Some(&mapped) = self.ports.get(&(service.to_owned(), port)) {
            return Ok(mapped);
        }
        let mapped = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        self.ports.insert((service.to_owned(), port), mapped);
        Ok(mapped)
    }

    /// The loopback address standing for `service:port`.
    pub fn addr(&mut self, service: &str, port: u16) -> Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], self.port(service, port)?)))
    }

    /// The admin listener of a gatehouse service (its GATEHOUSE_ADMIN_LISTEN).
    pub fn admin_addr(&mut self, service: &str) -> Result<SocketAddr> {
        let env = self.environment(service)?;
        let value = env
            .iter()
            .find(|(k, _)| k == "GATEHOUSE_ADMIN_LISTEN")
            .map(|(_, v)| v.clone())
            .with_context(|| format!("{service} sets no GATEHOUSE_ADMIN_LISTEN"))?;
        Ok(value.parse()?)
    }

    /// The command line of a service, mapped onto loopback.
    pub fn command(&mut self, service: &str) -> Result<Vec<String>> {
        let command = self.service(service)?["command"].clone();
        let words: Vec<String> = match command {
            Value::Array(words) => words
                .iter()
                .map(|w| w.as_str().unwrap_or_default().to_owned())
                .collect(),
            Value::String(line) => line.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        words.iter().map(|w| self.localize(service, w)).collect()
    }

    /// The environment of a service, interpolated and mapped onto loopback, with the test's
    /// overrides applied.
    pub fn environment(&mut self, service: &str) -> Result<Vec<(String, String)>> {
        let raw: Vec<(String, String)> = match &self.service(service)?["environment"] {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|item| {
                    item.as_str()?
                        .split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut env = Vec::new();
        for (name, value) in raw {
            env.push((name.clone(), self.localize(service, &value)?));
        }
        for ((for_service, name), value) in &self.overrides {
            if for_service != service {
                continue;
            }
            env.retain(|(k, _)| k != name);
            if let Some(value) = value {
                env.push((name.clone(), value.clone()));
            }
        }
        Ok(env)
    }

    /// Maps one word of a command or environment value onto loopback.
    fn localize(&mut self, service: &str, word: &str) -> Result<String> {
        let word = self.interpolate(word)?;
        if let Some(url) = self.database_url(&word)? {
            return Ok(url);
        }
        if word == "/tls" || word.starts_with("/tls/") {
            return Ok(format!("{}{}", self.tls.dir().display(), &word[4..]));
        }
        let mut items = Vec::new();
        for item in word.split(',') {
            items.push(self.localize_item(service, item)?);
        }
        Ok(items.join(","))
    }

    fn localize_item(&mut self, service: &str, item: &str) -> Result<String> {
        let (address, prefix) = item.split_once('/').map_or((item, None), |(a, p)| (a, Some(p)));
        if self.ipv4.contains_key(address) {
            return Ok(prefix.map_or_else(|| "127.0.0.1".to_owned(), |p| format!("127.0.0.1/{p}")));
        }
        if let Some((host, port)) = item.rsplit_once(':')
            && let Ok(port) = port.parse::<u16>()
        {
            if host == "0.0.0.0" {
                return Ok(self.addr(service, port)?.to_string());
            }
            if self.services.contains_key(host) {
                return Ok(self.addr(host, port)?.to_string());
            }
        }
        Ok(item.to_owned())
    }

    /// A PostgreSQL URL naming the compose file's PostgreSQL service becomes the URL of a fresh
    /// local database.
    fn database_url(&mut self, word: &str) -> Result<Option<String>> {
        let Some(rest) = word.strip_prefix("postgres://") else {
            return Ok(None);
        };
        let host = rest.split_once('@').map(|(_, h)| h).unwrap_or(rest);
        let host = host.split([':', '/']).next().unwrap_or_default();
        ensure!(
            self.kind(host)? == Kind::Postgres,
            "{word} does not point at the PostgreSQL service"
        );
        if self.database.is_none() {
            self.database = Some(TempDatabase::create()?);
        }
        Ok(self.database.as_ref().map(TempDatabase::url))
    }

    /// `${VAR}`, `${VAR:-default}`, `${VAR:?message}`.
    fn interpolate(&self, text: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').context("unclosed ${")? + start;
            let expr = &rest[start + 2..end];
            let (name, fallback) = match expr.find(":-").or_else(|| expr.find(":?")) {
                Some(at) => (&expr[..at], Some((&expr[at..at + 2], &expr[at + 2..]))),
                None => (expr, None),
            };
            let value = self.vars.get(name).filter(|v| !v.is_empty());
            match (value, fallback) {
                (Some(value), _) => out.push_str(value),
                (None, Some((":-", default))) => out.push_str(default),
                (None, Some((_, message))) => bail!("{name}: {message}"),
                (None, None) => {}
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Runs a one-shot (`Init`) service's entrypoint and command to completion.
    pub async fn run_init(&mut self, service: &str) -> Result<()> {
        let entrypoint: Vec<String> = self.service(service)?["entrypoint"]
            .as_array()
            .context("an init service has an entrypoint list")?
            .iter()
            .map(|w| w.as_str().unwrap_or_default().to_owned())
            .collect();
        let script = self.service(service)?["command"]
            .as_array()
            .and_then(|c| c.first())
            .and_then(Value::as_str)
            .context("an init service's command is one script")?
            .replace("/tls", &self.tls.dir().display().to_string());
        let bin_dir = gatehouse_bin().parent().context("binary dir")?.to_path_buf();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let output = Command::new(&entrypoint[0])
            .args(&entrypoint[1..])
            .arg(&script)
            .env("PATH", path)
            .output()
            .await
            .with_context(|| format!("running {service}"))?;
        ensure!(
            output.status.success(),
            "{service} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Starts a gatehouse service (without waiting for its health).
    pub async fn start_process(&mut self, service: &str) -> Result<()> {
        let args = self.command(service)?;
        let env = self.environment(service)?;
        let process = Process::start_with_env(service, args, &env, &[]).await?;
        self.processes.insert(service.to_owned(), process);
        Ok(())
    }

    /// Starts everything as `docker compose up` does: a service starts once each dependency
    /// meets its `depends_on` condition (`service_started`, `service_healthy`: its health check
    /// passes, `service_completed_successfully`: the one-shot ran); then waits until every
    /// service with a health check passes it.
    pub async fn up(&mut self) -> Result<()> {
        let order = self.start_order()?;
        for service in &order {
            for (dependency, condition) in conditions(self.service(service)?) {
                if condition == "service_healthy" {
                    self.wait_healthy(&dependency).await?;
                }
            }
            match self.kind(service)? {
                Kind::Init => self.run_init(service).await?,
                Kind::Postgres => {}
                Kind::Gatehouse => self.start_process(service).await?,
                Kind::Haproxy => self.start_haproxy(service).await?,
            }
        }
        for service in &order {
            if self.service(service)?.get("healthcheck").is_some() {
                self.wait_healthy(service).await?;
            }
        }
        Ok(())
    }

    /// Runs the service's `healthcheck` command until it succeeds (or fails for too long).
    pub async fn wait_healthy(&mut self, service: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match self.check_health(service).await? {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            if let Some(process) = self.processes.get_mut(service)
                && process.pid().is_none()
            {
                bail!("{service} is not running:\n{}", process.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self.processes.get(service).map(Process::log_text).unwrap_or_default();
        bail!("{service} never became healthy: {last}\n{log}")
    }

    /// Runs the service's health check once: `Ok(Err(output))` when it reports unhealthy.
    pub async fn check_health(&mut self, service: &str) -> Result<std::result::Result<(), String>> {
        let test: Vec<String> = self.service(service)?["healthcheck"]["test"]
            .as_array()
            .context("healthcheck.test is a list")?
            .iter()
            .map(|w| w.as_str().unwrap_or_default().to_owned())
            .collect();
        ensure!(
            test.first().map(String::as_str) == Some("CMD"),
            "{service}: healthcheck is not CMD"
        );
        let mut argv = Vec::new();
        for word in &test[1..] {
            argv.push(self.localize_probe(service, word)?);
        }
        let env = self.environment(service)?;
        let program = if argv[0] == "gatehouse" {
            gatehouse_bin()
        } else {
            PathBuf::from(&argv[0])
        };
        let output = Command::new(program)
            .args(&argv[1..])
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {service}'s health check {argv:?}"))?;
        if output.status.success() {
            Ok(Ok(()))
        } else {
            Ok(Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// A health check word: also maps bash's `/dev/tcp/127.0.0.1/PORT` (the container's own
    /// port) onto the service's loopback port.
    fn localize_probe(&mut self, service: &str, word: &str) -> Result<String> {
        let mut word = self.localize(service, word)?;
        if let Some(at) = word.find("/dev/tcp/127.0.0.1/") {
            let start = at + "/dev/tcp/127.0.0.1/".len();
            let digits: String = word[start..].chars().take_while(char::is_ascii_digit).collect();
            let mapped = self.port(service, digits.parse()?)?;
            word.replace_range(start..start + digits.len(), &mapped.to_string());
        }
        Ok(word)
    }

    /// Sends SIGTERM to a gatehouse service and waits for it to exit; returns its exit code.
    pub async fn stop(&mut self, service: &str) -> Result<Option<i32>> {
        let process = self
            .processes
            .get_mut(service)
            .with_context(|| format!("{service} is not running"))?;
        process.terminate().await
    }

    /// Starts `service` again with the same command and environment, and waits until healthy.
    pub async fn restart(&mut self, service: &str) -> Result<()> {
        self.start_process(service).await?;
        self.wait_healthy(service).await
    }

    /// Starts Debian's HAProxy with `deploy/haproxy.cfg`, its addresses and `/tls` mapped.
    async fn start_haproxy(&mut self, service: &str) -> Result<()> {
        crate::require(crate::Service::Haproxy);
        let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("haproxy is not installed (scripts/services installs it)")?;
        let mount = self.service(service)?["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|v| v.contains("haproxy.cfg"))
            .context("haproxy mounts no config")?
            .to_owned();
        let source = mount.split(':').next().unwrap_or_default();
        let text = std::fs::read_to_string(repo_root().join(source))?;
        let mapped = self.haproxy_config(service, &text)?;
        let config = self.tls.dir().join("haproxy.cfg");
        std::fs::write(&config, mapped)?;
        let check = std::process::Command::new(binary)
            .args(["-c", "-q", "-f"])
            .arg(&config)
            .output()?;
        ensure!(
            check.status.success(),
            "haproxy -c refused the config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
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
        self.haproxy = Some((child, config));
        Ok(())
    }

    /// `bind :PORT`, `server NAME HOST:PORT`, `addr HOST port PORT` and `/tls` mapped onto
    /// loopback; the Docker DNS resolver is dropped (addresses are literal here).
    fn haproxy_config(&mut self, service: &str, text: &str) -> Result<String> {
        let mut out = String::new();
        let mut in_resolvers = false;
        for line in text.lines() {
            if !line.is_empty() && !line.starts_with([' ', '#']) {
                in_resolvers = line.starts_with("resolvers ");
            }
            if in_resolvers {
                continue;
            }
            let line = line.replace(" resolvers docker", "");
            let words: Vec<&str> = line.split(' ').collect();
            let mut mapped = Vec::with_capacity(words.len());
            let mut i = 0;
            while i < words.len() {
                let word = words[i];
                if let Some(port) = word.strip_prefix(':')
                    && i > 0
                    && words[i - 1] == "bind"
                {
                    mapped.push(self.addr(service, port.parse()?)?.to_string());
                } else if word == "addr" && i + 3 < words.len() && words[i + 2] == "port" {
                    let addr = self.addr(words[i + 1], words[i + 3].parse()?)?;
                    mapped.push(format!("addr {} port {}", addr.ip(), addr.port()));
                    i += 4;
                    continue;
                } else if word.starts_with("/tls/") {
                    mapped.push(self.localize(service, word)?);
                } else {
                    mapped.push(self.localize_item(service, word)?);
                }
                i += 1;
            }
            out.push_str(&mapped.join(" "));
            out.push('\n');
        }
        Ok(out)
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if let Some((child, _)) = self.haproxy.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Each dependency of a service with its condition (the list form means `service_started`).
fn conditions(service: &Value) -> Vec<(String, String)> {
    match &service["depends_on"] {
        Value::Array(names) => names
            .iter()
            .filter_map(|n| Some((n.as_str()?.to_owned(), "service_started".to_owned())))
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(name, spec)| {
                let condition = spec["condition"].as_str().unwrap_or("service_started");
                (name.clone(), condition.to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The services a service depends on (list or map form).
fn dependencies(service: &Value) -> Vec<String> {
    match &service["depends_on"] {
        Value::Array(names) => names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect(),
        Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}
