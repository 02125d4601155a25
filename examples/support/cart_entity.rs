//! The cart entity: one per cart id, activated by the first request for it, passivated when it is
//! idle or when the service is over its cap of live carts.
//!
//! Its state lives in the store: every acknowledged add is committed there before it is answered,
//! so an activation is only a cache. Activation is `#[start]`, the same recovery a crash takes, and
//! passivation (dropping the instance, no stop hook) loses nothing.
//!
//! Clustered (`cart --cluster`), a cart lives on one node at a time: its `#[start]` takes the
//! node's placement token for it and records it in the store ([`Fence::acquire`]), and every write
//! carries that fence ([`Fence::guard`]). A write refused because a newer activation elsewhere
//! took the cart is a crash of this activation, never an acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::store::{Conflict, Store, StoreError, TimeSource, Txn};
use crashonly_cluster::{is_fenced_out, Fence, Node};
use serde::{Deserialize, Serialize};

/// How long an untouched cart lives (session state).
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// Longest cart id, in bytes (also the runtime's bound on entity keys in the service).
pub const MAX_ID: usize = 64;
/// Most items in a cart.
const MAX_ITEMS: usize = 10_000;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CartState {
    items: Vec<String>,
}

/// One shopping cart. Volatile copy of the session state; `#[start]` reloads it from the store.
/// The session expires in the store `SESSION_TTL` after its last write; the live copy follows it
/// (a crash-free transition to an empty cart), on the store's clock.
#[derive(Actor)]
#[actor(args = CartArgs, entity)]
pub struct Cart {
    key: Vec<u8>,
    store: Arc<dyn Store>,
    time: Arc<dyn TimeSource>,
    state: CartState,
    version: u64,
    /// When the stored session expires (store clock, ms), if it is stored.
    expires_at_ms: u64,
    /// Clustered: this activation's fence, carried by every write, and its node's incarnation.
    fence: Option<(Fence, u64)>,
}

/// The cart's id, the store, the store's clock, and the node it lives on when clustered.
pub type CartArgs = (String, Arc<dyn Store>, Arc<dyn TimeSource>, Option<Node>);

/// The family name of the carts, in the tree and in the cluster.
pub const FAMILY: &str = "carts";

/// What the cart answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CartView {
    id: String,
    items: Vec<String>,
    version: u64,
    /// Clustered: the incarnation of the node the cart lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<u64>,
}

/// Why a cart request failed (a reply, not a crash).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CartError {
    Full,
    Store(#[serde(with = "wire_store_error")] StoreError),
}

/// How many carts stay in memory, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Residency {
    /// A cart with no request for this long is passivated.
    pub idle: Duration,
    /// At most this many live carts; past it the least recently used idle ones are passivated.
    pub max_active: usize,
}

impl Default for Residency {
    fn default() -> Self {
        Residency {
            idle: Duration::from_secs(60),
            max_active: 100_000,
        }
    }
}

/// The family of carts, `carts` in the tree: cart `id` is activated from `store` (whose clock,
/// `time`, sessions expire on) by its first request.
pub fn family(store: Arc<dyn Store>, time: Arc<dyn TimeSource>, residency: Residency) -> EntitySpec<Cart> {
    family_on(store, time, residency, None)
}

/// [`family`], clustered when `node` is given: each activation fences its writes with the
/// node's placement token for the cart.
pub fn family_on(
    store: Arc<dyn Store>,
    time: Arc<dyn TimeSource>,
    residency: Residency,
    node: Option<Node>,
) -> EntitySpec<Cart> {
    Cart::entities(FAMILY, move |id: &String| {
        (id.clone(), store.clone(), time.clone(), node.clone())
    })
    .idle(residency.idle)
    .max_active(residency.max_active)
    // A cart recovers in well under a millisecond: retry soon, back off little.
    .backoff(Backoff {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(20),
    })
    // A cart that crashes over and over (a poison record, say) is refused with Retry-After for
    // a second; the other carts go on. Ten in a second is well above the faultload's rate
    // (a random live cart every 5 ms or more) on the litmus harness's carts.
    .entity_intensity(10, Duration::from_secs(1))
    // Crashes of many distinct carts at once are not one cart's problem: only far past what
    // the faultload does does the family itself crash (to the root, which gives up soon).
    .intensity(100_000, Duration::from_secs(10))
}

impl Cart {
    /// The cart as the store has it (empty when new or expired); a damaged record is an error,
    /// never an empty cart.
    async fn load(store: &dyn Store, key: &[u8], now_ms: u64) -> Result<(CartState, u64, u64), StoreError> {
        Ok(match store.get(key).await? {
            // Written at most SESSION_TTL ago: expires no later than that from now.
            Some(v) => (
                decode_cart(&v.value)?,
                v.version,
                now_ms + SESSION_TTL.as_millis() as u64,
            ),
            None => (CartState::default(), 0, 0),
        })
    }

    /// A session that expired while this instance was live becomes an empty cart, as the store
    /// already has it.
    fn expire(&mut self) {
        if self.version != 0 && self.time.now_ms() >= self.expires_at_ms {
            self.state = CartState::default();
            self.version = 0;
        }
    }

    fn view_of(&self) -> CartView {
        CartView {
            id: String::from_utf8_lossy(&self.key[5..]).into_owned(),
            items: self.state.items.clone(),
            version: self.version,
            node: self.fence.as_ref().map(|(_, node)| *node),
        }
    }

    async fn reload(&mut self, now_ms: u64) -> Result<(), CartError> {
        let (state, version, expires_at_ms) = Cart::load(&*self.store, &self.key, now_ms)
            .await
            .map_err(CartError::Store)?;
        (self.state, self.version, self.expires_at_ms) = (state, version, expires_at_ms);
        Ok(())
    }
}

#[messages(remote = "cart", remote_version = 1)]
impl Cart {
    /// Activation, and the recovery path after a crash: the cart as the store has it (empty when
    /// new or expired). Clustered, first the fence: the node claimed the cart before delivering
    /// to it, and a newer token recorded already means this activation must not serve.
    #[start]
    async fn recover((id, store, time, node): &CartArgs, _ctx: &mut Context<Self>) -> Result<Self, StoreError> {
        let fence = match node {
            None => None,
            Some(node) => {
                let fenced = || {
                    StoreError::Conflict(Conflict::Fenced {
                        lease: format!("{FAMILY}/{id}"),
                        token: 0,
                    })
                };
                let token = node.token(FAMILY, id).ok_or_else(fenced)?;
                Some((Fence::acquire(&**store, FAMILY, id, token).await?, node.incarnation()))
            }
        };
        let key = format!("cart/{id}").into_bytes();
        let (state, version, expires_at_ms) = Cart::load(&**store, &key, time.now_ms()).await?;
        Ok(Cart {
            key,
            store: store.clone(),
            time: time.clone(),
            state,
            version,
            expires_at_ms,
            fence,
        })
    }

    /// The cart's contents.
    #[message(idempotent)]
    pub fn view(&mut self) -> CartView {
        self.expire();
        self.view_of()
    }

    /// Adds an item; with an idempotency key, a retry is applied once even across a crash or a
    /// passivation (the key is committed with the cart, in the store).
    ///
    /// The key is global (one client's key for one request) and bound to this cart and item: used
    /// again for another cart or item, it is refused (`Conflict::KeyReused`), never acknowledged
    /// without being applied.
    #[message]
    pub async fn add(&mut self, item: String, key: Option<String>) -> Result<CartView, CartError> {
        self.expire();
        let request = format!("{} add {item}", String::from_utf8_lossy(&self.key));
        let mut reloaded = false;
        loop {
            if self.state.items.len() >= MAX_ITEMS {
                return Err(CartError::Full);
            }
            let bytes = encode_with(&self.state, &item);
            let mut txn = Txn::new()
                .check(&self.key, self.version)
                .put_ttl(&self.key, bytes, SESSION_TTL);
            if let Some(k) = &key {
                txn = txn.once_for(format!("idem/{k}").as_bytes(), request.as_bytes());
            }
            if let Some((fence, _)) = &self.fence {
                txn = fence.guard(txn);
            }
            let now = self.time.now_ms();
            match self.store.commit(txn).await {
                // A newer activation elsewhere owns the cart: this one crashes, unacknowledged.
                Err(e) if self.fence.as_ref().is_some_and(|(f, _)| is_fenced_out(&e, f)) => {
                    panic!("cart {request}: fenced out by a newer activation ({e})")
                }
                Ok(c) if c.replayed => {
                    // Applied before (maybe by an earlier incarnation): reload what the store has.
                    self.reload(now).await?;
                }
                Ok(c) => {
                    self.state.items.push(item);
                    self.version = c.versions[0];
                    self.expires_at_ms = now + SESSION_TTL.as_millis() as u64;
                }
                // The stored session moved on without this instance (it expired, or another
                // incarnation wrote it): reload it and apply the item to what is stored, once.
                Err(StoreError::Conflict(Conflict::Version { .. })) if !reloaded => {
                    self.reload(now).await?;
                    reloaded = true;
                    continue;
                }
                Err(e) => return Err(CartError::Store(e)),
            }
            return Ok(self.view_of());
        }
    }
}

/// `state` with `item` appended, encoded as [`CartState`] is, without copying its items (an add
/// used to clone the whole cart to encode it: a third of the service's allocations at 30 items).
fn encode_with(state: &CartState, item: &str) -> Vec<u8> {
    struct Items<'a>(&'a [String], &'a str);
    impl Serialize for Items<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(String::as_str).chain(std::iter::once(self.1)))
        }
    }
    #[derive(Serialize)]
    struct Appended<'a> {
        items: Items<'a>,
    }
    serde_json::to_vec(&Appended {
        items: Items(&state.items, item),
    })
    .expect("a cart serializes")
}

/// A cart as stored (bytes read back from the store, which may be damaged).
pub fn decode_cart(bytes: &[u8]) -> Result<CartState, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// [`StoreError`] across nodes (a cart's reply may be answered by another process): the same
/// error on both sides, field for field.
mod wire_store_error {
    use std::time::Duration;

    use crashonly::store::{Conflict, StoreError};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    enum Wire {
        Unavailable {
            retry_after_ms: u64,
            reason: String,
        },
        NoSpace {
            retry_after_ms: u64,
            reason: String,
        },
        Corrupt(String),
        Unsupported(String),
        AlreadyOpen {
            path: String,
            pid: Option<u32>,
        },
        BadInput(String),
        Version {
            key: Vec<u8>,
            expected: u64,
            actual: u64,
        },
        Fenced {
            lease: String,
            token: u64,
        },
        LeaseHeld {
            lease: String,
            holder: String,
            remaining_ms: u64,
        },
        KeyReused {
            key: Vec<u8>,
        },
        LeaseLost {
            lease: String,
            token: u64,
        },
    }

    fn ms(d: &Duration) -> u64 {
        d.as_millis() as u64
    }

    pub fn serialize<S: Serializer>(e: &StoreError, s: S) -> Result<S::Ok, S::Error> {
        let w = match e.clone() {
            StoreError::Unavailable { retry_after, reason } => Wire::Unavailable {
                retry_after_ms: ms(&retry_after),
                reason,
            },
            StoreError::NoSpace { retry_after, reason } => Wire::NoSpace {
                retry_after_ms: ms(&retry_after),
                reason,
            },
            StoreError::Corrupt(m) => Wire::Corrupt(m),
            StoreError::Unsupported(m) => Wire::Unsupported(m),
            StoreError::AlreadyOpen { path, pid } => Wire::AlreadyOpen { path, pid },
            StoreError::BadInput(m) => Wire::BadInput(m),
            StoreError::Conflict(Conflict::Version { key, expected, actual }) => {
                Wire::Version { key, expected, actual }
            }
            StoreError::Conflict(Conflict::Fenced { lease, token }) => Wire::Fenced { lease, token },
            StoreError::Conflict(Conflict::LeaseHeld {
                lease,
                holder,
                remaining,
            }) => Wire::LeaseHeld {
                lease,
                holder,
                remaining_ms: ms(&remaining),
            },
            StoreError::Conflict(Conflict::KeyReused { key }) => Wire::KeyReused { key },
            StoreError::Conflict(Conflict::LeaseLost { lease, token }) => Wire::LeaseLost { lease, token },
            // A kind this build does not know: unavailable, with what it said.
            other => Wire::Unavailable {
                retry_after_ms: 100,
                reason: other.to_string(),
            },
        };
        w.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StoreError, D::Error> {
        let ms = Duration::from_millis;
        Ok(match Wire::deserialize(d)? {
            Wire::Unavailable { retry_after_ms, reason } => StoreError::Unavailable {
                retry_after: ms(retry_after_ms),
                reason,
            },
            Wire::NoSpace { retry_after_ms, reason } => StoreError::NoSpace {
                retry_after: ms(retry_after_ms),
                reason,
            },
            Wire::Corrupt(m) => StoreError::Corrupt(m),
            Wire::Unsupported(m) => StoreError::Unsupported(m),
            Wire::AlreadyOpen { path, pid } => StoreError::AlreadyOpen { path, pid },
            Wire::BadInput(m) => StoreError::BadInput(m),
            Wire::Version { key, expected, actual } => {
                StoreError::Conflict(Conflict::Version { key, expected, actual })
            }
            Wire::Fenced { lease, token } => StoreError::Conflict(Conflict::Fenced { lease, token }),
            Wire::LeaseHeld {
                lease,
                holder,
                remaining_ms,
            } => StoreError::Conflict(Conflict::LeaseHeld {
                lease,
                holder,
                remaining: ms(remaining_ms),
            }),
            Wire::KeyReused { key } => StoreError::Conflict(Conflict::KeyReused { key }),
            Wire::LeaseLost { lease, token } => StoreError::Conflict(Conflict::LeaseLost { lease, token }),
        })
    }
}
