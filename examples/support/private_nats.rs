#![allow(dead_code)] // shared by the server tests; each uses a part
//! A private `nats-server` on a port of its own, for tests that kill it or cut it off: killed
//! (SIGKILL) and started again on the same port at will, killed on drop (also when the test
//! fails). It keeps nothing on disk.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or killed) private `nats-server`.
#[derive(Debug)]
pub struct PrivateNats {
    listen: String,
    log: Option<PathBuf>,
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl PrivateNats {
    /// Starts one listening on `listen` (`127.0.0.1`, or `0.0.0.0` for every address) at `port`,
    /// its output appended to `log` (or dropped); returns once it accepts connections.
    pub fn start(listen: &str, port: u16, log: Option<PathBuf>) -> Result<PrivateNats, String> {
        if let Some(log) = &log {
            std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        }
        let mut nats = PrivateNats {
            listen: listen.to_owned(),
            log,
            child: None,
            port,
        };
        nats.restart()?;
        Ok(nats)
    }

    /// Its URL over loopback.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`PrivateNats::kill`]); returns once it accepts
    /// connections, or an error after 10 s.
    pub fn restart(&mut self) -> Result<(), String> {
        let stderr = match &self.log {
            Some(log) => std::fs::OpenOptions::new()
                .append(true)
                .open(log)
                .map(Stdio::from)
                .map_err(|e| format!("{}: {e}", log.display()))?,
            None => Stdio::null(),
        };
        let child = Command::new("nats-server")
            .args(["-a", &self.listen, "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("nats-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("nats-server did not answer on port {} within 10 s", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}
