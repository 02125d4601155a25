#![allow(dead_code)] // shared by litmus and the server tests; each uses a part
//! A throwaway PostgreSQL cluster of its own (`initdb` in a temporary directory, trust
//! authentication), for measurements and crash tests that must not share the server with anyone:
//! started on a port of its own, crashed (`pg_ctl -m immediate`) and started again at will, and
//! stopped and removed on drop, also when the run fails. As root it runs PostgreSQL's binaries as
//! the `postgres` user (initdb refuses root), otherwise as the current user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How to set one up; `Setup::default()` is a free port on loopback, no extra settings, a
/// directory in the system's temporary directory, the log inside it.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// The port; a free one when `None`.
    pub port: Option<u16>,
    /// Addresses to listen on besides 127.0.0.1.
    pub listen: Vec<String>,
    /// Extra `-c name=value` server settings (a value with spaces or `|` in single quotes).
    pub settings: Vec<String>,
    /// Extra `pg_hba.conf` lines (e.g. `host all all 10.0.0.0/8 trust`).
    pub hba: Vec<String>,
    /// Its directory (deleted on drop); a fresh `crashonly-pg-<port>-*` in the temporary directory
    /// when `None`.
    pub dir: Option<PathBuf>,
    /// Its server log; `pg.log` in its directory when `None` (one given outlives the cluster).
    pub log: Option<PathBuf>,
}

/// A throwaway PostgreSQL; dropping it stops it (`-m immediate`) and removes its directory.
#[derive(Debug)]
pub struct ThrowawayPg {
    dir: PathBuf,
    log: PathBuf,
    bin: String,
    opts: String,
    root: bool,
    /// Where it listens.
    pub port: u16,
}

fn run(as_postgres: bool, cmd: &str) -> Result<Output, String> {
    let out = if as_postgres {
        Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", cmd])
            .output()
    } else {
        Command::new("/bin/sh").args(["-c", cmd]).output()
    };
    out.map_err(|e| format!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` (as `postgres` when `root`); its stderr on failure, named `what`.
fn checked(root: bool, what: &str, cmd: &str) -> Result<(), String> {
    let out = run(root, cmd)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A TCP port free on every address.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl ThrowawayPg {
    /// Creates one as `setup` says and starts it.
    pub fn create(setup: Setup) -> Result<ThrowawayPg, String> {
        let bin = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .map_err(|e| format!("pg_config (PostgreSQL's binaries are needed): {e}"))?;
        let bin = String::from_utf8_lossy(&bin.stdout).trim().to_owned();
        let port = match setup.port {
            Some(p) => p,
            None => free_port()?,
        };
        let dir = match setup.dir {
            Some(dir) => dir,
            // Kept by tempfile: the guard below removes it once the server is stopped.
            None => tempfile::Builder::new()
                .prefix(&format!("crashonly-pg-{port}-"))
                .tempdir()
                .map_err(|e| format!("a temporary directory: {e}"))?
                .keep(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log = setup.log.unwrap_or_else(|| dir.join("pg.log"));
        let mut addrs = vec!["127.0.0.1".to_owned()];
        addrs.extend(setup.listen);
        let extra: String = setup.settings.iter().map(|s| format!(" -c {s}")).collect();
        let opts = format!(
            "-c listen_addresses={} -p {port} -k {}{extra}",
            addrs.join(","),
            dir.display()
        );
        // From here on the guard removes the directory, whatever fails below.
        let pg = ThrowawayPg {
            dir,
            log,
            bin,
            opts,
            root: is_root(),
            port,
        };
        std::fs::File::create(&pg.log).map_err(|e| format!("{}: {e}", pg.log.display()))?;
        if pg.root {
            let ok = Command::new("chown")
                .args([
                    "postgres:postgres",
                    &pg.dir.to_string_lossy(),
                    &pg.log.to_string_lossy(),
                ])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("cannot give {} to the postgres user", pg.dir.display()));
            }
        }
        let (b, d) = (&pg.bin, pg.dir.display());
        checked(
            pg.root,
            "initdb",
            &format!("{b}/initdb -D {d}/data -U postgres -A trust --no-sync"),
        )?;
        if !setup.hba.is_empty() {
            let hba = pg.dir.join("data/pg_hba.conf");
            let mut conf = std::fs::read_to_string(&hba).map_err(|e| format!("{}: {e}", hba.display()))?;
            for line in &setup.hba {
                conf.push_str(&format!("\n{line}\n"));
            }
            std::fs::write(&hba, conf).map_err(|e| format!("{}: {e}", hba.display()))?;
        }
        pg.start()?;
        Ok(pg)
    }

    /// Creates one on a free port with extra `-c name=value` `settings`, and starts it.
    pub fn with_settings(settings: &[&str]) -> Result<ThrowawayPg, String> {
        ThrowawayPg::create(Setup {
            settings: settings.iter().map(|s| s.to_string()).collect(),
            ..Setup::default()
        })
    }

    /// Starts the server (again, after [`ThrowawayPg::crash`]); returns once it accepts
    /// connections.
    pub fn start(&self) -> Result<(), String> {
        let (b, d, l, o) = (&self.bin, self.dir.display(), self.log.display(), &self.opts);
        checked(
            self.root,
            "pg_ctl start",
            &format!("{b}/pg_ctl -D {d}/data -l {l} -w -t 30 -o \"{o}\" start"),
        )
    }

    /// A crash of the server: no shutdown checkpoint, connections cut.
    pub fn crash(&self) -> Result<(), String> {
        let (b, d) = (&self.bin, self.dir.display());
        checked(
            self.root,
            "pg_ctl stop -m immediate",
            &format!("{b}/pg_ctl -D {d}/data -m immediate -w stop"),
        )
    }

    /// The URL of `database` on it over loopback (user `postgres`, trust).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Its server log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
