//! The history checker: it finds each kind of anomaly it is meant to find, and checks a million
//! operations quickly (its speed is printed, not asserted: speed lives in benches).

#[path = "../examples/support/history.rs"]
mod history;

use std::collections::HashMap;
use std::time::Instant;

use history::{check, Outcome, Report, Write};

fn w(client: u32, key: u32, value: u64, outcome: Outcome) -> Write<u32, u64> {
    Write {
        client,
        key,
        value,
        outcome,
    }
}

fn state(pairs: &[(u32, &[u64])]) -> HashMap<u32, Vec<u64>> {
    pairs.iter().map(|(k, v)| (*k, v.to_vec())).collect()
}

#[test]
fn a_clean_history_is_valid() {
    let h = [
        w(1, 7, 1, Outcome::Ok),
        w(1, 7, 2, Outcome::Ok),
        w(2, 7, 3, Outcome::Unknown),
    ];
    let r = check(&h, &state(&[(7, &[1, 2])]));
    assert_eq!(
        r,
        Report {
            writes: 3,
            acknowledged: 2,
            ..Report::default()
        }
    );
    assert!(r.valid(true, true));
    // An unknown write may also have landed.
    assert!(check(&h, &state(&[(7, &[1, 3, 2])])).valid(true, true));
}

#[test]
fn each_anomaly_is_found() {
    let h = [
        w(1, 7, 1, Outcome::Ok),
        w(1, 7, 2, Outcome::Ok),
        w(1, 7, 3, Outcome::Failed),
    ];
    let lost = check(&h, &state(&[(7, &[1])]));
    assert_eq!(lost.lost, 1);
    assert!(!lost.valid(false, false));

    let unexpected = check(&h, &state(&[(7, &[1, 2, 99])]));
    assert_eq!(unexpected.unexpected, 1);
    let refused_but_there = check(&h, &state(&[(7, &[1, 2, 3])]));
    assert_eq!(refused_but_there.unexpected, 1);

    let dup = check(&h, &state(&[(7, &[1, 2, 2, 2])]));
    assert_eq!(dup.duplicates, 2);
    assert!(dup.valid(false, true), "duplicates are allowed on at-least-once paths");
    assert!(!dup.valid(true, true), "and not on keyed ones");

    let swapped = check(&h, &state(&[(7, &[2, 1])]));
    assert_eq!(swapped.order_violations, 1);
    assert!(swapped.valid(true, false));
    assert!(!swapped.valid(true, true));

    // A value written to another key is lost there and unexpected here.
    let misplaced = check(&h, &state(&[(7, &[1]), (8, &[2])]));
    assert_eq!((misplaced.lost, misplaced.unexpected), (1, 1));
}

#[test]
fn a_million_operations() {
    let (clients, per) = (100u32, 10_000u64);
    let mut writes = Vec::with_capacity((clients as u64 * per) as usize);
    let mut st: HashMap<u32, Vec<u64>> = HashMap::new();
    for c in 0..clients {
        for s in 0..per {
            let key = (s % 50) as u32 + c * 50;
            let value = ((c as u64) << 32) | s;
            writes.push(w(c, key, value, Outcome::Ok));
            st.entry(key).or_default().push(value);
        }
    }
    // Plant one of each anomaly.
    st.get_mut(&0).unwrap().remove(3);
    st.get_mut(&1).unwrap().push(u64::MAX);
    let dup = st[&2][5];
    st.get_mut(&2).unwrap().push(dup);
    st.get_mut(&3).unwrap().swap(0, 1);
    let t = Instant::now();
    let r = check(&writes, &st);
    println!(
        "checked {} operations in {:.2} s: {r:?}",
        writes.len(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(r.writes, 1_000_000);
    assert_eq!((r.lost, r.unexpected, r.duplicates, r.order_violations), (1, 1, 1, 1));
}
