//! [`Netns`]: a network namespace joined to the host by a veth pair, to cut a process off the
//! network (link down) without stopping it: a real partition, not a paused process.
//!
//! Needs root and `ip` (iproute2): a test using it needs [`Service::Root`](crate::Service::Root).

use std::net::IpAddr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A namespace `name` whose end of the veth pair has `inside`, the host's end `host`.
pub struct Netns {
    name: String,
    host_link: String,
    /// The host's address on the pair: processes outside listen here for the inside to reach.
    pub host: IpAddr,
    /// The namespace's address: processes inside listen here for the host to reach.
    pub inside: IpAddr,
}

impl Netns {
    /// Creates a namespace and a /30 veth pair, unique to this process (its pid picks the
    /// names and the subnet 10.231.N.0/30).
    /// The test needs root ([`require`](crate::require)`(Service::Root)`, which this calls).
    pub fn create() -> Result<Netns> {
        crate::require(crate::Service::Root);
        let id = std::process::id() % 250;
        let name = format!("gh-part-{}", std::process::id());
        let host_link = format!("ghh{id}");
        let inside_link = format!("ghi{id}");
        let (host, inside) = (format!("10.231.{id}.1"), format!("10.231.{id}.2"));
        // A namespace left behind by an earlier run of a process with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let _ = Command::new("ip").args(["link", "del", &host_link]).status();
        let netns = Netns {
            name: name.clone(),
            host_link: host_link.clone(),
            host: host.parse()?,
            inside: inside.parse()?,
        };
        ip(&["netns", "add", &name])?;
        ip(&["link", "add", &host_link, "type", "veth", "peer", "name", &inside_link])?;
        ip(&["link", "set", &inside_link, "netns", &name])?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", &host_link])?;
        ip(&["link", "set", &host_link, "up"])?;
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{inside}/30"),
            "dev",
            &inside_link,
        ])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", &inside_link, "up"])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the host's end of the pair down (`false`: nothing passes either way) or up again.
    pub fn set_link(&self, up: bool) -> Result<()> {
        ip(&["link", "set", &self.host_link, if up { "up" } else { "down" }])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the host's end.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).status();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let status = Command::new("ip")
        .args(args)
        .status()
        .context("running `ip` (iproute2; partition tests need it and root)")?;
    if !status.success() {
        bail!("`ip {}` failed ({status}): partition tests need root", args.join(" "));
    }
    Ok(())
}
