//! Network namespaces, veth links and private servers for partition tests, each a guard that
//! removes what it made when dropped (also when the test fails).
//!
//! Topology: one namespace per node, joined to the host by a veth pair on a /24 of its own
//! (`10.<net>.<i>.1` on the host, `10.<net>.<i>.2` in the namespace). The servers listen on the
//! host side, so a node reaches PostgreSQL and NATS only over its link, and the test reaches the
//! node only over it too. A cut puts the `blackhole` qdisc on a side's egress: packets are
//! dropped silently and the sender's stack is told they left, as in a real partition (no reset, no
//! unreachable). Needs root (`ip netns`, `tc`).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A free TCP port on every address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for_port(port: u16, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{what} did not answer on port {port} within 10 s"))
}

/// A private `nats-server` on every address at a port of its own. Killed when dropped.
pub struct Nats {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Nats {
    /// Starts it and waits until it accepts connections.
    pub fn start(log: &std::path::Path) -> Result<Nats, String> {
        let port = free_port();
        let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let child = Command::new("nats-server")
            .args(["-a", "0.0.0.0", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("nats-server: {e}"))?;
        let nats = Nats { child, port };
        wait_for_port(port, "nats-server")?;
        Ok(nats)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway PostgreSQL cluster (initdb in a temporary directory, trust authentication),
/// listening on loopback and the given addresses, logging every statement with its client's
/// address and session. Stopped and deleted when dropped.
pub struct Pg {
    dir: PathBuf,
    log: PathBuf,
    bin: String,
    /// Its port.
    pub port: u16,
}

fn as_postgres(cmd: &str) -> Result<(), String> {
    run(&["su", "postgres", "-s", "/bin/sh", "-c", cmd])
}

impl Pg {
    /// `initdb` in `dir`, then `pg_ctl start` listening on 127.0.0.1 and `listen`, accepting
    /// clients from `10.0.0.0/8`, logging to `log` (which stays when `dir` is deleted).
    pub fn start(dir: PathBuf, log: PathBuf, listen: &[Ipv4Addr]) -> Result<Pg, String> {
        let out = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .map_err(|e| format!("pg_config: {e}"))?;
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let pg = Pg {
            dir,
            log,
            bin,
            port: free_port(),
        };
        std::fs::File::create(&pg.log).map_err(|e| e.to_string())?;
        run(&[
            "chown",
            "postgres:postgres",
            &pg.dir.display().to_string(),
            &pg.log.display().to_string(),
        ])?;
        let (d, b, l) = (pg.dir.display(), &pg.bin, pg.log.display());
        as_postgres(&format!(
            "{b}/initdb -D {d}/data -U postgres -A trust --no-sync >/dev/null"
        ))?;
        let hba = pg.dir.join("data/pg_hba.conf");
        let mut conf = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        conf.push_str("\nhost all all 10.0.0.0/8 trust\n");
        std::fs::write(&hba, conf).map_err(|e| e.to_string())?;
        let mut addrs = vec!["127.0.0.1".to_owned()];
        addrs.extend(listen.iter().map(|a| a.to_string()));
        // Every statement, with its time, client address and session: what a partitioned node's
        // connections still did after the partition healed is read from this log.
        let opts = format!(
            "-c listen_addresses={} -p {} -k {d} -c log_statement=all -c log_lock_waits=on \
             -c deadlock_timeout=200ms -c log_line_prefix='%m|%h|%c|'",
            addrs.join(","),
            pg.port
        );
        as_postgres(&format!(
            "{b}/pg_ctl -D {d}/data -l {l} -w -t 30 -o \"{opts}\" start >/dev/null"
        ))?;
        Ok(pg)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes `marker` into the log (as a statement of its own), so the log can be split there.
    pub async fn mark(&self, marker: &str) -> Result<(), String> {
        let out = tokio::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
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
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_postgres(&format!(
            "{}/pg_ctl -D {}/data -m immediate -w stop >/dev/null",
            self.bin,
            self.dir.display()
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
