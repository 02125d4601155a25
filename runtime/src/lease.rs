//! Leases on in-memory resources: held for a bounded time, renewed while the owner lives, and
//! simply expiring when it crashes. Durable leases are the stores' (`store::Store::acquire_lease`).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::clock::{Clock, Instant};
use crate::rt::{AbortHandle, Executor};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

/// A lease: `holder` may use `resource` until `expires_at`, proven by a fencing `token` that only
/// grows, so that work done under an older lease can be refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The resource.
    pub resource: String,
    /// Who holds it.
    pub holder: String,
    /// The fencing token.
    pub token: u64,
    /// When it lapses unless renewed.
    pub expires_at: Instant,
}

/// Why a lease was not granted or renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseError {
    /// Another holder has it.
    Held {
        /// Its holder.
        holder: String,
        /// Until it lapses.
        remaining: Duration,
    },
    /// The lease expired or was taken over.
    Lost,
    /// A zero duration or an empty resource name.
    BadInput(String),
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseError::Held { holder, remaining } => {
                write!(f, "held by {holder} for {} ms more", remaining.as_millis())
            }
            LeaseError::Lost => write!(f, "lease lost"),
            LeaseError::BadInput(m) => write!(f, "bad lease request: {m}"),
        }
    }
}

impl std::error::Error for LeaseError {}

#[derive(Debug)]
struct Entry {
    holder: String,
    token: u64,
    expires_at: Instant,
}

/// The leases of one system.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    map: Mutex<HashMap<String, Entry>>,
    // Relaxed: only uniqueness and growth matter (taken under `map`'s lock).
    tokens: AtomicU64,
}

impl Leases {
    pub(crate) fn acquire(
        &self,
        resource: &str,
        holder: &str,
        ttl: Duration,
        now: Instant,
    ) -> Result<Lease, LeaseError> {
        if resource.is_empty() || ttl.is_zero() {
            return Err(LeaseError::BadInput(
                "the resource name and the duration must not be empty".into(),
            ));
        }
        let mut map = self.map.lock();
        if let Some(e) = map.get(resource)
            && e.expires_at > now
            && e.holder != holder
        {
            return Err(LeaseError::Held {
                holder: e.holder.clone(),
                remaining: e.expires_at - now,
            });
        }
        let token = self.tokens.fetch_add(1, Ordering::Relaxed) + 1;
        let expires_at = now + ttl;
        map.insert(
            resource.to_owned(),
            Entry {
                holder: holder.to_owned(),
                token,
                expires_at,
            },
        );
        Ok(Lease {
            resource: resource.to_owned(),
            holder: holder.to_owned(),
            token,
            expires_at,
        })
    }

    pub(crate) fn renew(&self, lease: &Lease, ttl: Duration, now: Instant) -> Result<Lease, LeaseError> {
        let mut map = self.map.lock();
        match map.get_mut(&lease.resource) {
            Some(e) if e.token == lease.token && e.expires_at > now => {
                e.expires_at = now + ttl;
                Ok(Lease {
                    expires_at: e.expires_at,
                    ..lease.clone()
                })
            }
            _ => Err(LeaseError::Lost),
        }
    }

    pub(crate) fn release(&self, lease: &Lease) {
        let mut map = self.map.lock();
        if map.get(&lease.resource).is_some_and(|e| e.token == lease.token) {
            map.remove(&lease.resource);
        }
    }

    /// The leases unexpired at `now`, as (resource, holder, time left), up to `limit`, and how
    /// many there are (the observer page).
    #[cfg(feature = "observer")]
    pub(crate) fn held(&self, now: Instant, limit: usize) -> (usize, Vec<(String, String, Duration)>) {
        let map = self.map.lock();
        let live = map.iter().filter(|(_, e)| e.expires_at > now);
        let shown = live
            .clone()
            .take(limit)
            .map(|(r, e)| (r.clone(), e.holder.clone(), e.expires_at - now))
            .collect();
        (live.count(), shown)
    }

    pub(crate) fn is_current(&self, lease: &Lease, now: Instant) -> bool {
        self.map
            .lock()
            .get(&lease.resource)
            .is_some_and(|e| e.token == lease.token && e.expires_at > now)
    }
}

/// Takes `resource` for `holder` for `ttl` (already cut to the policy's `max_lease`) and keeps
/// renewing it every third of `ttl` until the returned task is aborted: then it simply expires.
pub(crate) fn hold(
    leases: &Arc<Leases>,
    clock: &Clock,
    exec: &Executor,
    resource: &str,
    holder: &str,
    ttl: Duration,
) -> Result<(Lease, AbortHandle), LeaseError> {
    let lease = leases.acquire(resource, holder, ttl, clock.now())?;
    let (leases, clock) = (leases.clone(), clock.clone());
    let mut current = lease.clone();
    let renewals = exec.spawn(async move {
        loop {
            clock.sleep(ttl / 3).await;
            match leases.renew(&current, ttl, clock.now()) {
                Ok(l) => current = l,
                Err(_) => return,
            }
        }
    });
    Ok((lease, renewals.abort_handle()))
}

/// The lease table of a [`System`](crate::System), for code outside actors (actors use
/// [`Context::lease`](crate::Context::lease), which renews for them).
#[derive(Clone, Debug)]
pub struct LeaseTable {
    leases: Arc<Leases>,
    clock: Clock,
    max_lease: Duration,
}

impl LeaseTable {
    pub(crate) fn new(leases: Arc<Leases>, clock: Clock, max_lease: Duration) -> Self {
        LeaseTable {
            leases,
            clock,
            max_lease,
        }
    }

    /// Takes `resource` for `holder` for `ttl` (cut to the policy's `max_lease`). The same holder
    /// takes it over with a new token.
    pub fn acquire(&self, resource: &str, holder: &str, ttl: Duration) -> Result<Lease, LeaseError> {
        self.leases
            .acquire(resource, holder, ttl.min(self.max_lease), self.clock.now())
    }

    /// Extends a current lease.
    pub fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LeaseError> {
        self.leases.renew(lease, ttl.min(self.max_lease), self.clock.now())
    }

    /// Gives a lease up (a no-op when it is no longer current).
    pub fn release(&self, lease: &Lease) {
        self.leases.release(lease);
    }

    /// Whether `lease` is still the current one (the fencing check).
    pub fn is_current(&self, lease: &Lease) -> bool {
        self.leases.is_current(lease, self.clock.now())
    }
}
