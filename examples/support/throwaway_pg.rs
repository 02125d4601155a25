//! A throwaway PostgreSQL cluster of its own (`initdb` in a temporary directory, a free port),
//! for measurements that must not share the server with anyone: stopped and removed on drop,
//! also when the run fails. As root it runs PostgreSQL's binaries as the `postgres` user (initdb
//! refuses root), otherwise as the current user.

use std::process::{Command, Output};

/// A running throwaway PostgreSQL; dropping it stops it (`-m fast`) and removes its directory.
pub struct ThrowawayPg {
    dir: std::path::PathBuf,
    bin: String,
    /// Where it listens (127.0.0.1).
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

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl ThrowawayPg {
    /// Creates and starts one; `settings` are extra `-c name=value` server settings.
    pub fn start(settings: &[&str]) -> Result<ThrowawayPg, String> {
        let bin = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .map_err(|e| format!("pg_config (PostgreSQL's binaries are needed): {e}"))?;
        let bin = String::from_utf8_lossy(&bin.stdout).trim().to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("crashonly-throwaway-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let pg = ThrowawayPg { dir, bin, port };
        let root = is_root();
        if root {
            let ok = Command::new("chown")
                .args(["postgres:postgres", &pg.dir.to_string_lossy()])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("cannot give {} to the postgres user", pg.dir.display()));
            }
        }
        let (b, d) = (&pg.bin, pg.dir.display());
        let out = run(root, &format!("{b}/initdb -D {d}/data -U postgres -A trust --no-sync"))?;
        if !out.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let extra: String = settings.iter().map(|s| format!(" -c {s}")).collect();
        let out = run(
            root,
            &format!(
                "{b}/pg_ctl -D {d}/data -l {d}/pg.log -w -t 30 -o \"-c listen_addresses=127.0.0.1 -p {port} -k {d}{extra}\" start"
            ),
        )?;
        if !out.status.success() {
            return Err(format!("pg_ctl start: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(pg)
    }

    /// The URL of `database` on it (user `postgres`, trust).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        let _ = run(
            is_root(),
            &format!("{}/pg_ctl -D {}/data -m fast -w stop", self.bin, self.dir.display()),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
