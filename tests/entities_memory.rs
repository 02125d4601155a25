//! Entities' memory is bounded by `max_active`, not by the keys ever touched: 50,000 distinct
//! carts, each recovering its state from a redb store, go through a family capped at 5,000 live;
//! the process's RSS at the end must be within 2x of its RSS after the first 5,000 (a leak of
//! about 600 bytes per cart touched would break it). The full figure, 1,000,000 carts through
//! 10,000 live, is `entity-figures memory`.
//!
//! One test in this binary: RSS is the whole process's.

#[path = "../examples/support/entity_carts.rs"]
mod entity_carts;

use std::time::Duration;

use crashonly::prelude::*;
use entity_carts::{carts, open, rss_bytes, seed, touch, TempDir};

const KEYS: usize = 50_000;
const MAX_ACTIVE: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_is_bounded_by_max_active_not_by_keys_touched() {
    let dir = TempDir::new("entities-memory");
    let store = open(&dir.store_path());
    seed(&*store, KEYS).await.unwrap();
    let system = System::new();
    let family = carts(&system, store.clone(), MAX_ACTIVE, Duration::from_secs(60));

    touch(&family, 0, MAX_ACTIVE, 8).await;
    let first = rss_bytes();
    let s = family.stats();
    assert_eq!(s.activations, MAX_ACTIVE as u64);
    assert!(s.active <= MAX_ACTIVE, "{s:?}");

    let mut peak_live = 0;
    for from in (MAX_ACTIVE..KEYS).step_by(MAX_ACTIVE) {
        touch(&family, from, (from + MAX_ACTIVE).min(KEYS), 8).await;
        peak_live = peak_live.max(family.stats().active);
    }
    let end = rss_bytes();
    let s = family.stats();
    eprintln!(
        "RSS after {MAX_ACTIVE} carts: {} KiB, after {KEYS}: {} KiB ({:.2}x); {s:?}",
        first / 1024,
        end / 1024,
        end as f64 / first as f64
    );

    // Every cart was activated once (each recovered its own state: `touch` checks each reply;
    // an eviction never picks the activation being made, whose message is not in it yet), and
    // the family stayed near its cap (past it, one sender at a time evicts down to 90%).
    assert_eq!(s.activations, KEYS as u64, "{s:?}");
    assert_eq!(s.crashes, 0, "{s:?}");
    assert!(s.passivated_cap >= (KEYS - MAX_ACTIVE) as u64, "{s:?}");
    assert!(
        peak_live <= MAX_ACTIVE + MAX_ACTIVE / 10,
        "peak live {peak_live}, {s:?}"
    );
    assert!(
        end <= 2 * first,
        "RSS grew with the carts touched: {} KiB after {MAX_ACTIVE}, {} KiB after {KEYS}",
        first / 1024,
        end / 1024
    );
    drop(system);
}
