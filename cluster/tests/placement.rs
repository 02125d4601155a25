//! Placement against a real PostgreSQL (`CRASHONLY_PG_URL`; without it each test says it was
//! skipped): one holder per entity, fencing tokens that only grow, takeover only once the
//! holder's lease is dead, and a fenced node refused.

use std::time::Duration;

use crashonly_cluster::{choose, Claim, ClusterError, Membership, MembershipOptions, Placement};

fn url() -> Option<String> {
    match std::env::var("CRASHONLY_PG_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            crashonly::testing::skipped("CRASHONLY_PG_URL is not set (cluster placement against PostgreSQL)");
            None
        }
    }
}

fn opts(test: &str, name: &str) -> MembershipOptions {
    MembershipOptions::default()
        .with_schema(format!("pl_{test}_{}", std::process::id()))
        .with_lease(Duration::from_millis(500))
        .with_name(name)
}

#[tokio::test]
async fn concurrent_claims_of_one_entity_have_exactly_one_winner() {
    let Some(url) = url() else { return };
    let nodes = [
        Membership::join(&url, opts("race", "a")).await.unwrap(),
        Membership::join(&url, opts("race", "b")).await.unwrap(),
        Membership::join(&url, opts("race", "c")).await.unwrap(),
    ];
    for round in 0..20 {
        let key = format!("cart-{round}");
        let claims = futures_join(&nodes, &key).await;
        let winners: Vec<_> = claims.iter().filter(|c| matches!(c, Claim::Mine { .. })).collect();
        assert_eq!(winners.len(), 1, "round {round}: {claims:?}");
        let winner = nodes
            .iter()
            .zip(&claims)
            .find(|(_, c)| matches!(c, Claim::Mine { .. }))
            .map(|(n, _)| n.incarnation())
            .unwrap();
        for c in &claims {
            if let Claim::Held { holder } = c {
                assert_eq!(*holder, winner);
            }
        }
    }
}

/// Claims `key` from every node at once.
async fn futures_join(nodes: &[Membership], key: &str) -> Vec<Claim> {
    let tasks: Vec<_> = nodes
        .iter()
        .map(|n| {
            let p = Placement::new(n);
            let key = key.to_owned();
            tokio::spawn(async move { p.claim("carts", &key).await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_dead_holders_entities_are_taken_over_with_a_greater_token_and_its_writes_fenced() {
    let Some(url) = url() else { return };
    let a = Membership::join(&url, opts("takeover", "a")).await.unwrap();
    let b = Membership::join(&url, opts("takeover", "b")).await.unwrap();
    let (pa, pb) = (Placement::new(&a), Placement::new(&b));
    let Claim::Mine { token: ta } = pa.claim("carts", "k").await.unwrap() else {
        panic!("a claims first")
    };
    assert_eq!(
        pb.claim("carts", "k").await.unwrap(),
        Claim::Held {
            holder: a.incarnation()
        }
    );
    assert_eq!(pb.lookup("carts", "k").await.unwrap(), Some((a.incarnation(), ta)));
    // a crashes (its renewals stop): once its lease is dead by the database's clock, b takes over.
    drop(pa);
    let a_inc = a.incarnation();
    drop(a);
    let tb = loop {
        match pb.claim("carts", "k").await.unwrap() {
            Claim::Mine { token } => break token,
            Claim::Held { holder } => assert_eq!(holder, a_inc),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(tb > ta, "tokens only grow: {tb} after {ta}");
    assert!(pb.holds("carts", "k", tb).await.unwrap());
    // b re-claims what it holds (a new activation): a new, greater token; the old one is fenced.
    let Claim::Mine { token: tb2 } = pb.claim("carts", "k").await.unwrap() else {
        panic!("the holder re-claims")
    };
    assert!(tb2 > tb);
    assert!(!pb.holds("carts", "k", tb).await.unwrap());
    assert!(pb.release("carts", "k", tb2).await.unwrap());
    assert_eq!(pb.lookup("carts", "k").await.unwrap(), None);
}

#[tokio::test]
async fn a_fenced_node_cannot_claim() {
    let Some(url) = url() else { return };
    let a = Membership::join(&url, opts("fenced", "a")).await.unwrap();
    let pa = Placement::new(&a);
    // Its lease dead in the database before it knows: the database refuses the claim.
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let schema = opts("fenced", "a").schema;
    admin
        .execute(
            &format!("UPDATE {schema}.members SET lease_until = clock_timestamp() - interval '1 second' WHERE incarnation = $1"),
            &[&(a.incarnation() as i64)],
        )
        .await
        .unwrap();
    let err = pa.claim("carts", "k").await.unwrap_err();
    assert!(
        matches!(&err, ClusterError::Fenced(why) if why.contains("refused")),
        "{err}"
    );
    assert_eq!(pa.lookup("carts", "k").await.unwrap(), None, "nothing was placed");
    // Once it knows, it refuses by itself.
    a.fenced().await;
    let err = pa.claim("carts", "k").await.unwrap_err();
    assert!(matches!(err, ClusterError::Fenced(_)), "{err}");
}

#[tokio::test]
async fn rendezvous_over_the_live_members_picks_one_of_them() {
    let Some(url) = url() else { return };
    let a = Membership::join(&url, opts("choose", "a")).await.unwrap();
    let _b = Membership::join(&url, opts("choose", "b")).await.unwrap();
    let members = a.members().await.unwrap();
    assert_eq!(members.len(), 2);
    let picked = choose("carts", "k-1", &members).unwrap();
    assert!(members.iter().any(|m| m.incarnation == picked));
}
