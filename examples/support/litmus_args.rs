//! litmus's command line (the kill -9 run; `--overload`, `--membership-cost` and `serve-cart`
//! have their own, see `litmus --overload --help` and the others).

use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::cart_service::cli;

/// The options of a kill -9 run.
pub struct Opts {
    /// How long the load runs.
    pub duration: Duration,
    /// Time between kills: at random between the two (`--kill-every A..B`), or this one.
    pub kill_every: (Duration, Duration),
    /// Clients writing at once.
    pub clients: usize,
    /// Carts each client writes by default.
    pub carts_per_client: usize,
    /// `--carts N`: the clients spread over N distinct carts instead.
    pub carts: Option<usize>,
    /// The service's `--idle` and `--max-active`.
    pub idle: Duration,
    /// The service's `--max-active`, if given.
    pub max_active: Option<usize>,
    /// One JSON report instead of the text.
    pub json: bool,
    /// The service acknowledges before it syncs (the harness must see loss).
    pub unsafe_store: bool,
    /// `--kill-every off`: no kills (for the faultload experiment).
    pub kill: bool,
    /// The service's fault injection, if any.
    pub fault_every_ms: Option<u64>,
    /// The injected fault aborts the whole process (instead of crashing one cart).
    pub fault_process: bool,
    /// Print the faultload table instead.
    pub faultload_table: bool,
    /// Print table 1 instead.
    pub table1: bool,
    /// `--cluster`: this many nodes (`--nodes`, 3).
    pub nodes: Option<usize>,
    /// `--lease`: the cluster's membership lease (2 s, the cluster's default).
    pub lease: Duration,
}

/// litmus: kill -9 the cart service every few seconds under load, then check that every
/// acknowledged write is there. Exit status 0 when nothing acknowledged was lost, nothing unexpected
/// or duplicated appeared and progress never stopped; 1 otherwise; 2 for bad arguments.
#[derive(Parser, Debug)]
#[command(
    name = "litmus",
    after_help = "Other modes: litmus --overload [...] (the front end under 10x its load), \
                  litmus --membership-cost [...] (PostgreSQL statements of idle nodes), \
                  litmus serve-cart [...] (the cart service itself); each takes --help."
)]
struct Args {
    /// How long the load runs, like 30s or 2m
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = cli::positive_duration)]
    duration: Duration,
    /// Time between kills: a duration (at least 100ms), a range A..B (at random within it), or off
    /// [default: 2s; 1s..2s with --cluster]
    #[arg(long, value_name = "DURATION|A..B|off", value_parser = kill_every)]
    kill_every: Option<KillEvery>,
    /// Clients writing at once (1 to 1024)
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    clients: u64,
    /// Spread the clients over N distinct carts, each picking one of its share at random per write
    /// [default: each client writes its own 4 in turn]
    #[arg(long, value_name = "N", value_parser = cli::positive)]
    carts: Option<u64>,
    /// The service's --idle: carts passivate after this long without a request
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = cli::positive_duration)]
    idle: Duration,
    /// The service's --max-active: carts passivate past this many live
    #[arg(long, value_name = "N", value_parser = cli::positive)]
    max_active: Option<u64>,
    /// Print one JSON report instead of the text
    #[arg(long)]
    json: bool,
    /// Run the service with acknowledgements before sync, to show the harness failing
    #[arg(long)]
    unsafe_store: bool,
    /// The service injects a fault every so many milliseconds
    #[arg(long, value_name = "MS", conflicts_with = "cluster")]
    fault_every_ms: Option<u64>,
    /// The injected fault: a random cart crashes, or the whole process aborts
    #[arg(long, value_enum, default_value_t = FaultMode::Actor)]
    fault_mode: FaultMode,
    /// Print the faultload table (fault rates against completed requests) instead
    #[arg(long, conflicts_with = "cluster")]
    faultload_table: bool,
    /// Print table 1 (crash versus polite restarts) instead
    #[arg(long, conflicts_with = "cluster")]
    table1: bool,
    /// Run the cart service clustered (on $CRASHONLY_PG_URL and $CRASHONLY_NATS_URL), killing a
    /// random node
    #[arg(long, conflicts_with = "unsafe_store")]
    cluster: bool,
    /// With --cluster: this many nodes (1 to 16) [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16))]
    nodes: Option<u64>,
    /// With --cluster: the membership lease, 100ms to 60s
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = lease)]
    lease: Duration,
}

/// What `--fault-mode` injects.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum FaultMode {
    /// A random live cart crashes.
    Actor,
    /// The whole process aborts.
    Process,
}

/// `--kill-every`: off, or between the two.
#[derive(Clone, Copy, Debug)]
enum KillEvery {
    Off,
    Between(Duration, Duration),
}

/// `off`, `A..B` (a range) or `A` (both ends the same), at least 100ms.
fn kill_every(s: &str) -> Result<KillEvery, String> {
    if s == "off" {
        return Ok(KillEvery::Off);
    }
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let (a, b) = (cli::duration(a)?, cli::duration(b)?);
    if a > b {
        return Err(format!("{s:?}: the range ends before it starts"));
    }
    if a < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(KillEvery::Between(a, b))
}

/// A membership lease: 100ms to 60s.
fn lease(s: &str) -> Result<Duration, String> {
    let d = cli::duration(s)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&d) {
        return Err("must be 100ms to 60s".into());
    }
    Ok(d)
}

impl Opts {
    /// Parses the process's arguments; on a bad one prints why and the usage and exits with
    /// status 2 (`--help` prints the help and exits 0).
    pub fn from_env() -> Opts {
        let a = Args::parse();
        let nodes = match (a.cluster, a.nodes) {
            (true, n) => Some(n.unwrap_or(3) as usize),
            // As before: --nodes alone runs the cluster too.
            (false, Some(n)) if !(a.unsafe_store || a.fault_every_ms.is_some() || a.faultload_table || a.table1) => {
                Some(n as usize)
            }
            (false, Some(_)) => cli::refuse::<Args>(
                "--nodes runs a cluster, which runs kill -9 only (no --unsafe-store, faults or tables)",
            ),
            (false, None) => None,
        };
        let clustered = (Duration::from_secs(1), Duration::from_secs(2));
        let (kill, kill_every) = match a.kill_every {
            Some(KillEvery::Off) => (false, (Duration::from_secs(2), Duration::from_secs(2))),
            Some(KillEvery::Between(lo, hi)) => (true, (lo, hi)),
            None if nodes.is_some() => (true, clustered),
            None => (true, (Duration::from_secs(2), Duration::from_secs(2))),
        };
        Opts {
            duration: a.duration,
            kill_every,
            clients: a.clients as usize,
            carts_per_client: 4,
            carts: a.carts.map(|n| n as usize),
            idle: a.idle,
            max_active: a.max_active.map(|n| n as usize),
            json: a.json,
            unsafe_store: a.unsafe_store,
            kill,
            fault_every_ms: a.fault_every_ms,
            fault_process: a.fault_mode == FaultMode::Process,
            faultload_table: a.faultload_table,
            table1: a.table1,
            nodes,
            lease: a.lease,
        }
    }
}
