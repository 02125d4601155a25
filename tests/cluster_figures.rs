//! The cluster's figures, measured the way the README's are: the failover computation litmus
//! reports from (`examples/support/failover.rs`), on histories whose answers are known, and the
//! membership's cost in PostgreSQL statements (`litmus --membership-cost`), which must be the
//! renewals the design calls for (three per lease per idle node) and nothing else.
//!
//! The cost test runs on a throwaway PostgreSQL it creates (`CRASHONLY_PG_THROWAWAY=1`, as root
//! with PostgreSQL's binaries, as `.ci/run` sets) and needs `CRASHONLY_NATS_URL`; without them it
//! says it was skipped.

#[path = "../examples/support/failover.rs"]
mod failover;

use std::time::Duration;

use failover::{failovers, Ack, Figures, Kill, Spread};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ack(at: u64, cart: &str, holder: u64) -> Ack {
    Ack {
        at: ms(at),
        sent: ms(at.saturating_sub(5)),
        cart: cart.into(),
        holder,
    }
}

#[test]
fn a_kill_s_carts_are_those_it_held_last_and_come_back_through_another_node() {
    let acks = vec![
        ack(100, "a", 1),
        ack(110, "b", 1),
        ack(120, "c", 2),
        // "b" moved to node 2 before the kill: not the victim's any more.
        ack(500, "b", 2),
        // Node 1 is killed at 1,000 ms holding "a" only ("d" is first acknowledged after the
        // kill, and by the victim: it was not the victim's at the kill, and cannot end anything).
        ack(1_200, "d", 1),
        ack(2_900, "a", 3),
        ack(2_950, "c", 2),
    ];
    let kills = vec![Kill {
        at: ms(1_000),
        victim: 1,
        lease_left: Some(ms(1_700)),
    }];
    let f = failovers(&kills, &acks);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].held, f[0].back),
        (1, 1),
        "only \"a\" was the victim's at the kill"
    );
    assert_eq!(f[0].first, ms(1_900));
    assert_eq!(f[0].all, ms(1_900));
    let fig = Figures::of(&kills, &f);
    assert_eq!(
        fig.after_lease.median, 200.0,
        "1,900 ms after the kill, 1,700 of them the lease"
    );
    assert_eq!(
        f[0].first_asked, None,
        "\"a\" was written again only 2,895 ms after the kill"
    );
    let asked = vec![
        ack(100, "a", 1),
        Ack {
            sent: ms(1_500),
            ..ack(2_900, "a", 3)
        },
    ];
    let f = failovers(&kills, &asked);
    assert_eq!(
        f[0].first_asked,
        Some(ms(1_900)),
        "asked for 500 ms after the kill, within the lease"
    );
}

#[test]
fn first_and_all_are_the_earliest_and_latest_return_and_the_victim_does_not_count() {
    let mut acks = vec![ack(10, "a", 7), ack(20, "b", 7), ack(30, "c", 7), ack(40, "x", 8)];
    // After the kill at 100: "a" back at 1,600, "b" at 2,100 through node 9, "c" only through the
    // victim (a stale answer cannot end a failover) and never again.
    acks.extend([ack(150, "c", 7), ack(2_100, "b", 9), ack(1_600, "a", 8)]);
    let kills = vec![
        Kill {
            at: ms(100),
            victim: 7,
            lease_left: None,
        },
        // Node 8 killed later holding "x" and "a", neither written again: no figure.
        Kill {
            at: ms(5_000),
            victim: 8,
            lease_left: None,
        },
    ];
    let f = failovers(&kills, &acks);
    assert_eq!(f.len(), 1, "the second kill's carts never came back: left out");
    assert_eq!((f[0].kill, f[0].held, f[0].back), (0, 3, 2));
    assert_eq!((f[0].first, f[0].all), (ms(1_500), ms(2_000)));
    assert_eq!(
        f[0].last_sent,
        ms(1_995),
        "the last cart's write was sent 1,995 ms after the kill"
    );
    let fig = Figures::of(&kills, &f);
    assert_eq!(fig.after_lease.n, 0, "no lease known, no phase");
    assert!(!f[0].overlapped, "the next kill came after the first cart was back");
    assert_eq!((fig.first.n, fig.first_single.n), (1, 1));
}

#[test]
fn a_kill_before_the_first_cart_is_back_makes_a_double_fault() {
    let acks = vec![ack(10, "a", 1), ack(20, "b", 2), ack(3_000, "a", 3), ack(3_100, "b", 3)];
    let kill = |at, victim| Kill {
        at: ms(at),
        victim,
        lease_left: None,
    };
    // Node 1 dies at 100, node 2 at 500, before "a" is back (3,000): the first is a double fault.
    let kills = vec![kill(100, 1), kill(500, 2)];
    let f = failovers(&kills, &acks);
    assert_eq!(f.len(), 2);
    assert!(f[0].overlapped && !f[1].overlapped, "{f:?}");
    let fig = Figures::of(&kills, &f);
    assert_eq!((fig.first.n, fig.first.max), (2, 2_900.0));
    assert_eq!((fig.first_single.n, fig.first_single.max), (1, 2_600.0));
}

#[test]
fn the_spread_takes_p99_by_nearest_rank() {
    let s = Spread::of((1..=200).map(ms));
    assert_eq!((s.n, s.min, s.median, s.p99, s.max), (200, 1.0, 101.0, 198.0, 200.0));
    let s = Spread::of((1..=100).map(ms));
    assert_eq!(s.p99, 99.0);
    let s = Spread::of([ms(5)]);
    assert_eq!((s.min, s.median, s.p99, s.max), (5.0, 5.0, 5.0, 5.0));
    assert_eq!(Spread::of([]), Spread::default());
}

#[test]
fn an_idle_node_costs_the_database_its_renewals_and_nothing_more() {
    let (Ok("1"), Ok(_)) = (
        std::env::var("CRASHONLY_PG_THROWAWAY").as_deref(),
        std::env::var("CRASHONLY_NATS_URL"),
    ) else {
        crashonly::testing::skipped("CRASHONLY_PG_THROWAWAY=1 and CRASHONLY_NATS_URL are needed (membership cost)");
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_litmus"))
        .args([
            "--membership-cost",
            "--lease",
            "1s",
            "--window",
            "5s",
            "--nodes",
            "1,3",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "litmus --membership-cost printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!("membership cost: {r}");
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert!(r["baseline"]["statements_per_s"].as_f64().unwrap() < 0.5, "{r}");
    // Three renewals per lease, a 1 s lease: 3 statements a second per node.
    for c in r["configs"].as_array().unwrap() {
        let s = c["statements_per_s_per_node"].as_f64().unwrap();
        let x = c["transactions_per_s_per_node"].as_f64().unwrap();
        assert!((2.4..=3.6).contains(&s), "statements per node and second: {c}");
        // Each statement is one implicit transaction, or two when its client prepares it first.
        assert!(x >= 0.8 * s && x <= 2.2 * s, "transactions per node and second: {c}");
        let top = &c["statements"][0]["query"];
        assert!(
            top.as_str().unwrap().contains("SET lease_until"),
            "the renewal is what an idle node runs most: {c}"
        );
    }
}
