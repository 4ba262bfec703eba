//! The admin listener of a `gatehouse` process (`--admin-listen`): parsing the flag and serving
//! the roles' health, readiness and metrics.

use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::{Context, Result};
use gatehouse_core::admin::{AdminHooks, AdminServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where the admin listener binds, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminListen(pub Option<SocketAddr>);

impl FromStr for AdminListen {
    type Err = String;

    fn from_str(value: &str) -> Result<AdminListen, String> {
        if value.eq_ignore_ascii_case("off") {
            return Ok(AdminListen(None));
        }
        value
            .parse()
            .map(|addr| AdminListen(Some(addr)))
            .map_err(|_| format!("{value:?} is neither an address (host:port) nor `off`"))
    }
}

impl AdminListen {
    /// Binds the listener (when not `off`), so that a taken port fails the start at once.
    pub async fn bind(self) -> Result<Option<AdminServer>> {
        let Some(addr) = self.0 else {
            return Ok(None);
        };
        let server = AdminServer::bind(addr).await.with_context(|| {
            format!("binding the admin listener {addr} (choose another with --admin-listen, or `off`)")
        })?;
        Ok(Some(server))
    }
}

/// Adds `hooks` to the listener and serves it until `token` is cancelled.
pub fn serve(admin: Option<AdminServer>, hooks: Vec<AdminHooks>, token: CancellationToken) -> Option<JoinHandle<()>> {
    let mut admin = admin?;
    for hook in hooks {
        admin.add(hook);
    }
    Some(tokio::spawn(async move {
        if let Err(error) = admin.run(token).await {
            tracing::error!(%error, "admin listener failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_or_off() {
        assert_eq!("off".parse::<AdminListen>(), Ok(AdminListen(None)));
        assert_eq!(
            "127.0.0.1:9100".parse::<AdminListen>(),
            Ok(AdminListen(Some("127.0.0.1:9100".parse().unwrap())))
        );
        assert!("nowhere".parse::<AdminListen>().is_err());
    }
}
