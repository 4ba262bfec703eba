//! [`require`]: the one policy for tests that need a service the repository does not contain
//! (a database server, a load balancer, a browser, a tool, root).
//!
//! - A test that needs service S says so twice: in its name, with a path segment `needs_S`
//!   (or `needs_S_and_T` for several; [`Service::marker`]), and in its body, by calling
//!   [`require`]`(Service::S)` before using it.
//! - Under `CI`, a missing service fails the test with a message naming the service and how
//!   `scripts/services` provides it: CI must run every test.
//! - Outside CI, the runner reports the test as *skipped*, never as passed: `scripts/test` and
//!   `scripts/nextest` run `gatehouse-test-services`, which probes every service with the same
//!   code as [`require`] and writes a nextest default filter excluding the tests whose names
//!   carry a missing service's marker ([`skip_filter`]); nextest counts them as skipped and the
//!   script lists them. Run directly (plain `cargo nextest run`), such a test fails with the
//!   same message as under CI rather than pass without having run.
//! - [`require`] also checks the marker, always: a test that needs a service its name does not
//!   declare fails, so the runner can always skip what it cannot run.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A service some tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// A PostgreSQL server on 127.0.0.1:5432 (or `GATEHOUSE_TEST_PG`) where the `postgres`
    /// user connects without a password, and the `psql` client.
    Postgres,
    /// The PostgreSQL server above also serving TLS with a certificate from the test CA at
    /// `GATEHOUSE_TEST_PG_CA` (for `sslmode=verify-full`).
    PostgresTls,
    /// A MariaDB server on 127.0.0.1:3306 (or `TEST_MYSQL_URL`) where `root` connects without
    /// a password, and the `mariadb` client.
    Mariadb,
    /// Debian's HAProxy binary.
    Haproxy,
    /// Chromium (`/usr/bin/chromium`, or `$CHROMIUM`).
    Chromium,
    /// `python3`.
    Python3,
    /// `curl`.
    Curl,
    /// The `sqlite3` shell (tests count stored rows of a SQLite history with it).
    Sqlite3,
    /// The deployment checkers: check-jsonschema, kubernetes-validate and hadolint in the
    /// virtualenv at `GATEHOUSE_TOOLS_VENV` (default `/opt/gatehouse-tools`), and `promtool`.
    DeployTools,
    /// Root and `ip` (iproute2): network namespaces for real partitions.
    Root,
}

impl Service {
    /// Every service, in the order reports list them.
    pub const ALL: [Service; 10] = [
        Service::Postgres,
        Service::PostgresTls,
        Service::Mariadb,
        Service::Haproxy,
        Service::Chromium,
        Service::Python3,
        Service::Curl,
        Service::Sqlite3,
        Service::DeployTools,
        Service::Root,
    ];

    /// The word of the service in test names: a test needing it has a path segment
    /// `needs_<word>` (or `needs_<word>_and_<other>`, `needs_<other>_and_<word>`).
    pub fn marker(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::PostgresTls => "postgrestls",
            Service::Mariadb => "mariadb",
            Service::Haproxy => "haproxy",
            Service::Chromium => "chromium",
            Service::Python3 => "python3",
            Service::Curl => "curl",
            Service::Sqlite3 => "sqlite3",
            Service::DeployTools => "deploytools",
            Service::Root => "root",
        }
    }

    /// How `scripts/services` provides it (or what else to do).
    pub fn provided_by(self) -> &'static str {
        match self {
            Service::Postgres => {
                "scripts/services installs PostgreSQL (as root, with apt-get), starts it, and lets the postgres user connect from loopback without a password"
            }
            Service::PostgresTls => {
                "scripts/services (as root) makes a test CA and a server certificate for the local PostgreSQL and turns TLS on"
            }
            Service::Mariadb => {
                "scripts/services installs MariaDB (as root, with apt-get), starts it, and lets root connect from loopback without a password"
            }
            Service::Haproxy => "scripts/services installs Debian's haproxy with apt-get",
            Service::Chromium => {
                "scripts/services installs Debian's chromium with apt-get (or set CHROMIUM to a Chromium binary)"
            }
            Service::Python3 => "scripts/services installs python3 with apt-get",
            Service::Curl => "scripts/services installs curl with apt-get",
            Service::Sqlite3 => "scripts/services installs the sqlite3 shell with apt-get",
            Service::DeployTools => {
                "scripts/services installs check-jsonschema, kubernetes-validate and hadolint into a virtualenv (GATEHOUSE_TOOLS_VENV, default /opt/gatehouse-tools) and promtool (Debian's prometheus) with apt-get"
            }
            Service::Root => "run the tests as root with iproute2 installed (CI machines are)",
        }
    }

    /// Whether the service is there now; the error says what is missing.
    pub fn probe(self) -> Result<(), String> {
        match self {
            Service::Postgres => runs("psql", &[&postgres_admin(), "-X", "-q", "-t", "-A", "-c", "SELECT 1"]),
            Service::PostgresTls => {
                Service::Postgres.probe()?;
                let ca = postgres_ca();
                if !ca.is_file() {
                    return Err(format!(
                        "the test CA of PostgreSQL's TLS certificate, {}, does not exist",
                        ca.display()
                    ));
                }
                let conn = format!("{} sslmode=verify-full sslrootcert={}", postgres_admin(), ca.display())
                    .replace("host=127.0.0.1", "host=localhost");
                runs("psql", &[&conn, "-X", "-q", "-t", "-A", "-c", "SELECT 1"])
            }
            Service::Mariadb => {
                let addr = mariadb_addr();
                reachable(addr)?;
                runs(
                    "mariadb",
                    &[
                        "-h",
                        &addr.ip().to_string(),
                        "-P",
                        &addr.port().to_string(),
                        "-u",
                        "root",
                        "-e",
                        "SELECT 1",
                    ],
                )
            }
            Service::Haproxy => executable(&["/usr/sbin/haproxy", "/usr/bin/haproxy"]),
            Service::Chromium => {
                let path = chromium_path();
                executable(&[path.to_str().unwrap_or_default()])
            }
            Service::Python3 => runs("python3", &["--version"]),
            Service::Curl => runs("curl", &["--version"]),
            Service::Sqlite3 => runs("sqlite3", &["-version"]),
            Service::DeployTools => {
                let venv = tools_venv();
                for tool in ["check-jsonschema", "kubernetes-validate", "hadolint"] {
                    let path = venv.join("bin").join(tool);
                    if !path.is_file() {
                        return Err(format!("{} does not exist", path.display()));
                    }
                }
                runs("promtool", &["--version"])
            }
            Service::Root => {
                let uid = Command::new("id")
                    .arg("-u")
                    .output()
                    .map_err(|e| format!("running id: {e}"))?;
                if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
                    return Err("the tests do not run as root".to_owned());
                }
                runs("ip", &["-V"])
            }
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Postgres => "PostgreSQL",
            Service::PostgresTls => "PostgreSQL over TLS",
            Service::Mariadb => "MariaDB",
            Service::Haproxy => "HAProxy",
            Service::Chromium => "Chromium",
            Service::Python3 => "python3",
            Service::Curl => "curl",
            Service::Sqlite3 => "the sqlite3 shell",
            Service::DeployTools => "the deployment checkers",
            Service::Root => "root",
        })
    }
}

/// Whether the tests run under CI (the `CI` environment variable is set, as CI systems do).
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Call at the start of a test (on the test's own thread) that needs `service`: returns when
/// the service is there, and fails the test otherwise, naming the service and how
/// `scripts/services` provides it. It fails too when the test's name lacks the service's
/// marker, whether or not the service is there: without it, the runner could not skip the test.
/// Outside CI, `scripts/test` and `scripts/nextest` never run a test whose service is missing:
/// they report it as skipped.
pub fn require(service: Service) {
    if let Some(name) = current_test_name()
        && !declares(&name, service)
    {
        panic!(
            "test {name} needs {service} but its name has no `needs_{}` segment: put it in a \
             module of that name (see gatehouse_testkit::services), so that runners can skip it",
            service.marker()
        );
    }
    if let Err(why) = service.probe() {
        let context = if under_ci() {
            "CI is set, so every test must run"
        } else {
            "run the tests through scripts/test or scripts/nextest to have them reported as skipped"
        };
        panic!("{service} is missing: {why}. {}. ({context})", service.provided_by());
    }
}

/// Whether test `name` (its path, `module::test`) declares that it needs `service`. PostgreSQL
/// over TLS implies PostgreSQL (its probe includes PostgreSQL's, so a runner skipping the one
/// skips the other).
pub fn declares(name: &str, service: Service) -> bool {
    let implied = |word: &str| word == service.marker() || (service == Service::Postgres && word == "postgrestls");
    name.split("::").any(|segment| {
        segment
            .strip_prefix("needs_")
            .is_some_and(|list| list.split("_and_").any(implied))
    })
}

/// The nextest filterset of the tests that need `service` (the ones [`declares`] matches).
pub fn filterset(service: Service) -> String {
    format!(
        "test(/(^|::)needs_([a-z0-9]+_and_)*{}(_and_[a-z0-9_]+)?(::|$)/)",
        service.marker()
    )
}

/// The nextest filterset of the tests to run when `missing` services are missing: `None` when
/// every test may run.
pub fn skip_filter(missing: &[Service]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let excluded: Vec<String> = missing.iter().map(|s| filterset(*s)).collect();
    Some(format!("not ({})", excluded.join(" | ")))
}

/// The running test's name: libtest names each test's thread after it; nextest runs one test
/// per process and passes its name after `--exact`.
fn current_test_name() -> Option<String> {
    let thread = std::thread::current();
    if let Some(name) = thread.name()
        && name != "main"
        && !name.starts_with("tokio-runtime")
    {
        return Some(name.to_owned());
    }
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--exact")
        .and_then(|at| args.get(at + 1))
        .cloned()
}

/// The libpq connection string of the maintenance database the tests use.
pub fn postgres_admin() -> String {
    std::env::var("GATEHOUSE_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned())
}

/// The CA of the local PostgreSQL's TLS certificate (`scripts/services` makes it).
pub fn postgres_ca() -> PathBuf {
    std::env::var_os("GATEHOUSE_TEST_PG_CA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let dir = std::env::var("GATEHOUSE_TEST_PG_TLS_DIR")
                .unwrap_or_else(|_| "/var/lib/postgresql/gatehouse-tls".to_owned());
            Path::new(&dir).join("ca.pem")
        })
}

/// The MariaDB server's address, from `TEST_MYSQL_URL` (default 127.0.0.1:3306).
pub fn mariadb_addr() -> SocketAddr {
    mariadb_addr_in(&std::env::var("TEST_MYSQL_URL").unwrap_or_default())
}

/// The address in a `mysql://user@host:port/db` URL (127.0.0.1:3306 where it names none).
fn mariadb_addr_in(url: &str) -> SocketAddr {
    let default = SocketAddr::from(([127, 0, 0, 1], 3306));
    let Some((_, rest)) = url.split_once("://") else {
        return default;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port
        .parse()
        .or_else(|_| format!("{host_port}:3306").parse())
        .unwrap_or(default)
}

/// The Chromium executable: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The virtualenv of the deployment checkers.
pub fn tools_venv() -> PathBuf {
    PathBuf::from(std::env::var("GATEHOUSE_TOOLS_VENV").unwrap_or_else(|_| "/opt/gatehouse-tools".to_owned()))
}

fn reachable(addr: SocketAddr) -> Result<(), String> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map(drop)
        .map_err(|e| format!("nothing accepts connections at {addr} ({e})"))
}

fn executable(candidates: &[&str]) -> Result<(), String> {
    candidates
        .iter()
        .find(|c| !c.is_empty() && Path::new(c).is_file())
        .map(drop)
        .ok_or_else(|| format!("{} does not exist", candidates.join(" nor ")))
}

/// Runs `program args` quietly; an error says why it did not succeed.
fn runs(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} does not run ({e})"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("`{program} {}` failed: {}", args.join(" "), stderr.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_a_whole_word_of_a_needs_segment() {
        assert!(declares("needs_postgres::history_pages_backwards", Service::Postgres));
        assert!(declares(
            "fencing::needs_root_and_postgres::partition",
            Service::Postgres
        ));
        assert!(declares("fencing::needs_root_and_postgres::partition", Service::Root));
        assert!(declares("needs_chromium", Service::Chromium));
        assert!(declares("needs_postgrestls::verify_full", Service::Postgres));
        assert!(!declares("needs_postgres::plain", Service::PostgresTls));
        assert!(!declares("postgres::history", Service::Postgres));
        assert!(!declares("a_test_that_needs_postgres", Service::Postgres));
    }

    #[test]
    fn the_skip_filter_excludes_exactly_the_declared_tests() {
        assert_eq!(skip_filter(&[]), None);
        let filter = skip_filter(&[Service::Postgres, Service::Root]).unwrap();
        assert!(filter.starts_with("not (test(/"), "{filter}");
        assert!(
            filter.contains("postgres(_and_") && filter.contains(")*root("),
            "{filter}"
        );
    }

    #[test]
    fn the_mariadb_address_comes_from_the_test_url() {
        assert_eq!(
            mariadb_addr_in("mysql://root@127.0.0.1:3307/mysql"),
            SocketAddr::from(([127, 0, 0, 1], 3307))
        );
        assert_eq!(
            mariadb_addr_in("mysql://root:pw@localhost/mysql"),
            SocketAddr::from(([127, 0, 0, 1], 3306))
        );
        assert_eq!(mariadb_addr_in(""), SocketAddr::from(([127, 0, 0, 1], 3306)));
    }
}
