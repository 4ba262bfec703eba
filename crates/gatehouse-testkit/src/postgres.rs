//! [`TempDatabase`]: a fresh PostgreSQL database per test, dropped afterwards.
//!
//! Uses the `psql` client against the server at 127.0.0.1:5432 (override with
//! `GATEHOUSE_TEST_PG`, a libpq connection string for the maintenance database), so the tests
//! need no database driver of their own.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// A database that exists for the life of the value.
pub struct TempDatabase {
    name: String,
    admin: String,
}

impl TempDatabase {
    /// Creates a database with a unique name. The test needs PostgreSQL
    /// ([`require`](crate::require)`(Service::Postgres)`, which this calls).
    pub fn create() -> Result<TempDatabase> {
        crate::require(crate::Service::Postgres);
        let admin = crate::services::postgres_admin();
        let name = format!(
            "gatehouse_test_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
                % 1_000_000_000_000
        );
        psql(&admin, &format!("CREATE DATABASE {name}"))?;
        Ok(TempDatabase { name, admin })
    }

    /// The URL a gatehouse worker connects with.
    pub fn url(&self) -> String {
        let host = field(&self.admin, "host").unwrap_or("127.0.0.1");
        let port = field(&self.admin, "port").unwrap_or("5432");
        let user = field(&self.admin, "user").unwrap_or("postgres");
        format!("postgres://{user}@{host}:{port}/{}", self.name)
    }

    /// Runs one SQL statement in this database and returns its unaligned output.
    pub fn query(&self, sql: &str) -> Result<String> {
        let conn = self.admin.replace("dbname=postgres", &format!("dbname={}", self.name));
        psql(&conn, sql)
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn field<'a>(conn: &'a str, name: &str) -> Option<&'a str> {
    conn.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn psql(conn: &str, sql: &str) -> Result<String> {
    let output = Command::new("psql")
        .args([conn, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !output.status.success() {
        bail!("psql {sql:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
