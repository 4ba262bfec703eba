//! [`TempMariaDb`]: a fresh MariaDB database per test, dropped afterwards.
//!
//! Uses the `mariadb` client against the server at 127.0.0.1:3306 as root without a password
//! (override with `GATEHOUSE_TEST_MARIADB`, a `mysql://user@host:port` URL), so the tests need
//! no database driver of their own.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// A database that exists for the life of the value.
pub struct TempMariaDb {
    name: String,
    user: String,
    host: String,
    port: String,
}

impl TempMariaDb {
    /// Creates a database with a unique name.
    pub fn create() -> Result<TempMariaDb> {
        let server =
            std::env::var("GATEHOUSE_TEST_MARIADB").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned());
        let address = server
            .strip_prefix("mysql://")
            .or_else(|| server.strip_prefix("mariadb://"))
            .context("GATEHOUSE_TEST_MARIADB must be mysql://user@host:port")?
            .trim_end_matches('/');
        let (user, host_port) = address.split_once('@').unwrap_or(("root", address));
        let (host, port) = host_port.split_once(':').unwrap_or((host_port, "3306"));
        let name = format!(
            "gatehouse_test_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
                % 1_000_000_000_000
        );
        let db = TempMariaDb {
            name,
            user: user.to_owned(),
            host: host.to_owned(),
            port: port.to_owned(),
        };
        db.run(None, &format!("CREATE DATABASE {}", db.name))?;
        Ok(db)
    }

    /// The URL a gatehouse worker connects with.
    pub fn url(&self) -> String {
        format!("mysql://{}@{}:{}/{}", self.user, self.host, self.port, self.name)
    }

    /// Runs one SQL statement in this database and returns its tab-separated output.
    pub fn query(&self, sql: &str) -> Result<String> {
        self.run(Some(&self.name), sql)
    }

    fn run(&self, database: Option<&str>, sql: &str) -> Result<String> {
        let mut command = Command::new("mariadb");
        command.args([
            "--protocol=tcp",
            "-h",
            &self.host,
            "-P",
            &self.port,
            "-u",
            &self.user,
            "-N",
            "-B",
            "-e",
            sql,
        ]);
        if let Some(database) = database {
            command.arg(database);
        }
        let output = command
            .output()
            .context("running mariadb (is the MariaDB client installed? scripts/services installs it)")?;
        if !output.status.success() {
            bail!("mariadb {sql:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for TempMariaDb {
    fn drop(&mut self) {
        let _ = self.run(None, &format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}
