//! The cart service's command line (`cart`, `litmus serve-cart`): one node with its redb store, or
//! with `--cluster` one node of a cluster; each mode's flags are refused in the other.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::cli;
use super::frontend::LimitArgs;

/// The cart service: an HTTP front end, one entity per cart, the carts in an embedded store (or,
/// with --cluster, in PostgreSQL, any node answering for any cart). Stop it with kill -9.
#[derive(Parser, Debug)]
#[command(name = "cart")]
pub struct CartArgs {
    /// The address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The store's directory [default: cart-data]
    #[arg(long, value_name = "DIR", conflicts_with = "cluster")]
    pub data: Option<PathBuf>,
    /// Acknowledge writes before they are synced (to show the litmus harness failing)
    #[arg(long, conflicts_with = "cluster")]
    pub ack_before_sync: bool,
    /// Inject a fault every so many milliseconds (see --fault-mode)
    #[arg(long, value_name = "MS", conflicts_with = "cluster")]
    pub fault_every_ms: Option<u64>,
    /// The injected fault: a random cart crashes, or the whole process aborts
    #[arg(long, value_enum, default_value_t = FaultMode::Actor, conflicts_with = "cluster")]
    pub fault_mode: FaultMode,
    /// The store's restart intensity: this many reopenings within the seconds, then exit non-zero
    /// [default: 5/30]
    #[arg(long, value_name = "N/SECONDS", value_parser = cli::intensity, conflicts_with = "cluster")]
    pub store_intensity: Option<(u32, Duration)>,
    /// Skip the page verification of the store's first open
    #[arg(long, conflicts_with = "cluster")]
    pub skip_verify: bool,
    /// The observer page's control token (without it, its controls are refused)
    #[arg(long, value_name = "TOKEN", value_parser = cli::non_empty, conflicts_with = "cluster")]
    pub observer_token: Option<String>,
    /// Passivate a cart after this long without a request, like 500ms, 2s, 1m [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = cli::positive_duration)]
    pub idle: Option<Duration>,
    /// At most this many carts live, least recently used passivated first [default: 100000]
    #[arg(long, value_name = "N", value_parser = cli::positive)]
    pub max_active: Option<u64>,
    /// The front end's admission control and timeouts.
    #[command(flatten)]
    pub frontend: LimitArgs,
    /// Run as one node of a cluster (PostgreSQL the store of record, NATS between nodes)
    #[arg(long)]
    pub cluster: bool,
    /// With --cluster: the PostgreSQL URL [default: $CRASHONLY_PG_URL]
    #[arg(long, value_name = "URL", requires = "cluster")]
    pub pg: Option<String>,
    /// With --cluster: the NATS URL [default: $CRASHONLY_NATS_URL]
    #[arg(long, value_name = "URL", requires = "cluster")]
    pub nats: Option<String>,
    /// With --cluster: the cluster's schema, 1 to 50 letters, digits or '_' [default: cart]
    #[arg(long, value_name = "NAME", requires = "cluster", value_parser = schema)]
    pub schema: Option<String>,
    /// With --cluster: this node's name [default: cart-PID]
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub node_name: Option<String>,
    /// With --cluster: the membership lease [default: 2s]
    #[arg(long, value_name = "DURATION", requires = "cluster", value_parser = cli::duration)]
    pub lease: Option<Duration>,
    /// With --cluster: how long a fenced node tries to rejoin before it gives up (exit 3)
    /// [default: 60s]
    #[arg(long, value_name = "DURATION", requires = "cluster", value_parser = cli::duration)]
    pub rejoin_within: Option<Duration>,
    /// With --cluster: at most N fences within the seconds, one more and the node gives up (exit 3)
    /// [default: 5/60]
    #[arg(long, value_name = "N/SECONDS", requires = "cluster", value_parser = cli::intensity)]
    pub fence_intensity: Option<(u32, Duration)>,
}

/// What `--fault-mode` injects.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// A random live cart's activation crashes (a microreboot follows).
    Actor,
    /// The whole process aborts (the world without microreboots).
    Process,
}

/// A cluster schema name: 1 to 50 letters, digits or '_'.
fn schema(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 50 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("must be 1 to 50 letters, digits or '_'".into());
    }
    Ok(s.to_owned())
}

impl CartArgs {
    /// Parses `args` (without the program's name); on a bad argument prints why and the usage and
    /// exits with status 2 (`--help` prints the help and exits 0).
    pub fn from_args(args: Vec<String>) -> CartArgs {
        CartArgs::parse_from(std::iter::once("cart".to_owned()).chain(args))
    }
}
