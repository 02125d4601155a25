//! The observer: a live page of a running system (feature `observer`).
//!
//! It shows the supervision tree as a tree: supervisors with their strategy and restart intensity
//! used against its limit; actors and entity families with their state (running, starting,
//! backing off, restarting, stopped, dead), restarts, last crash reason and how long ago, mailbox
//! depth against capacity, how long the current message has run, messages per second, expired and
//! `RetryAfter` counts; live activations of each family; the leases held; and a log of recent
//! crashes, restarts, escalations and watchdog firings that says how many events it dropped.
//! The page is one HTML file with plain JavaScript built into the crate; it is updated over
//! server-sent events (`events`), one frame every [`ObserverOptions::with_interval`].
//!
//! Controls (crash-reboot or rejuvenate a subtree, the paper's recovery manager) are refused
//! (`403`) unless a token is configured ([`ObserverOptions::with_token`]), and then refused
//! (`401`) without it in the `x-observer-token` header.
//!
//! With 100,000 actors the page stays small: each node shows at most
//! [`ObserverOptions::with_max_children`] children, the most interesting first, and a summary of
//! all of them; the rest are paged (`api/children?path=P&offset=N`).
//!
//! Routes, relative to where the router is mounted: `GET /` (the page), `GET /events` (SSE),
//! `GET /api/tree`, `GET /api/children?path=&offset=`, `POST /api/crash?path=`,
//! `POST /api/rejuvenate?path=`.
//!
//! ```no_run
//! use crashonly::observer::{self, ObserverOptions};
//! use crashonly::System;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let system = System::new();
//! // Mounted in the application's router...
//! let app = axum::Router::new().nest("/observer", observer::router(&system, ObserverOptions::default()));
//! # drop(app);
//! // ...or on a listener of its own, on loopback unless told otherwise.
//! let listener = observer::bind(&system, ObserverOptions::default()).await?;
//! println!("observer on http://{}/", listener.local_addr()?);
//! listener.serve().await
//! # }
//! ```

mod http;
mod model;
mod panel;

use std::net::SocketAddr;
use std::time::Duration;

use crate::sync::Arc;

pub use http::{bind, router, Listener};
pub use panel::{Panel, Table};

/// How the observer is served.
#[derive(Clone)]
#[non_exhaustive]
pub struct ObserverOptions {
    /// The token the controls require; `None` (the default): controls are refused.
    pub token: Option<String>,
    /// Time between two frames of the live page (default 500 ms).
    pub interval: Duration,
    /// Children shown per node before the rest are summarized and paged (default 50).
    pub max_children: usize,
    /// Where [`bind`] listens (default `127.0.0.1:7070`: loopback only).
    pub listen: SocketAddr,
    /// Sections shown below the tree (for example the cluster's nodes view), in order.
    pub panels: Vec<Arc<dyn Panel>>,
}

impl Default for ObserverOptions {
    fn default() -> Self {
        ObserverOptions {
            token: None,
            interval: Duration::from_millis(500),
            max_children: 50,
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            panels: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ObserverOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserverOptions")
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("interval", &self.interval)
            .field("max_children", &self.max_children)
            .field("listen", &self.listen)
            .field("panels", &self.panels.len())
            .finish()
    }
}

impl ObserverOptions {
    /// Adds a section to the page, below the tree (see [`Panel`]).
    pub fn with_panel(mut self, panel: impl Panel) -> Self {
        self.panels.push(Arc::new(panel));
        self
    }
}

with_setters!(ObserverOptions {
    /// Enables the controls, for requests carrying this token in `x-observer-token`.
    with_token => token: Option<String>,
    /// Sets the time between two frames.
    with_interval => interval: Duration,
    /// Sets how many children a node shows before summarizing.
    with_max_children => max_children: usize,
    /// Sets the standalone listener's address.
    with_listen => listen: SocketAddr,
});
