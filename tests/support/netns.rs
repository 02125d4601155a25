//! Network namespaces and veth links for partition tests, each a guard that removes what it made
//! when dropped (also when the test fails). The private servers are `throwaway_pg.rs` and
//! `private_nats.rs` in `examples/support`.
//!
//! Topology: one namespace per node, joined to the host by a veth pair on a /24 of its own
//! (`10.<net>.<i>.1` on the host, `10.<net>.<i>.2` in the namespace). The servers listen on the
//! host side, so a node reaches PostgreSQL and NATS only over its link, and the test reaches the
//! node only over it too. A cut puts the `blackhole` qdisc on a side's egress: packets are
//! dropped silently and the sender's stack is told they left, as in a real partition (no reset, no
//! unreachable). Needs root (`ip netns`, `tc`).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs `cmd`; its stderr on failure.
pub fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            cmd.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace joined to the host by a veth pair. Dropping it deletes both.
pub struct Link {
    /// The namespace's name.
    pub ns: String,
    host_if: String,
    ns_if: String,
    /// The host side's address (the servers listen there).
    pub host_ip: Ipv4Addr,
    /// The namespace side's address (the node listens there).
    pub ns_ip: Ipv4Addr,
}

impl Link {
    /// Namespace `<tag>n<i>`, veth `<tag>h<i>` / `<tag>c<i>`, addresses in `10.<net>.<i>.0/24`.
    pub fn create(tag: &str, net: u8, i: u8) -> Result<Link, String> {
        let link = Link {
            ns: format!("{tag}n{i}"),
            host_if: format!("{tag}h{i}"),
            ns_if: format!("{tag}c{i}"),
            host_ip: Ipv4Addr::new(10, net, i, 1),
            ns_ip: Ipv4Addr::new(10, net, i, 2),
        };
        // From here on the guard cleans up whatever part was made.
        run(&["ip", "netns", "add", &link.ns])?;
        let (h, c, ns) = (link.host_if.as_str(), link.ns_if.as_str(), link.ns.as_str());
        let host_cidr = format!("{}/24", link.host_ip);
        let ns_cidr = format!("{}/24", link.ns_ip);
        run(&["ip", "link", "add", h, "type", "veth", "peer", "name", c])?;
        run(&["ip", "link", "set", c, "netns", ns])?;
        run(&["ip", "addr", "add", &host_cidr, "dev", h])?;
        run(&["ip", "link", "set", h, "up"])?;
        run(&["ip", "netns", "exec", ns, "ip", "addr", "add", &ns_cidr, "dev", c])?;
        run(&["ip", "netns", "exec", ns, "ip", "link", "set", c, "up"])?;
        run(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        Ok(link)
    }

    /// Drops everything the node sends from now on (its side's egress).
    pub fn cut_from_node(&self) -> Result<(), String> {
        let (ns, c) = (self.ns.as_str(), self.ns_if.as_str());
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "tc",
            "qdisc",
            "add",
            "dev",
            c,
            "root",
            "blackhole",
        ])
    }

    /// Drops everything sent to the node from now on (the host side's egress).
    pub fn cut_to_node(&self) -> Result<(), String> {
        run(&["tc", "qdisc", "add", "dev", &self.host_if, "root", "blackhole"])
    }

    /// Both directions pass again (packets dropped meanwhile stay lost; TCP sends them again).
    pub fn heal(&self) -> Result<(), String> {
        let (ns, c) = (self.ns.as_str(), self.ns_if.as_str());
        run(&["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", c, "root"])?;
        run(&["tc", "qdisc", "del", "dev", &self.host_if, "root"])
    }

    /// `program args..` started in the namespace (`ip netns exec` execs it: the child's pid is the
    /// program's).
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the host's end.
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

/// Whether this process may make namespaces (it must be root).
pub fn netns_permitted(tag: &str) -> Result<(), String> {
    let probe = format!("{tag}probe");
    run(&["ip", "netns", "add", &probe])?;
    run(&["ip", "netns", "del", &probe])
}

/// Writes `marker` into the log of the PostgreSQL at `port` on loopback (as a statement of its
/// own), so the log can be split there.
pub async fn mark(port: u16, marker: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-Atqc", &format!("SELECT '{marker}'")])
        .output()
        .await
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)))
    }
}
