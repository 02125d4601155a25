//! Membership against a real PostgreSQL (`CRASHONLY_PG_URL`; without it each test says it was
//! skipped): incarnations, leases judged by the database's clock, self-fencing before anyone can
//! see the lease dead, and leaving.

use std::time::Duration;

use crashonly_cluster::{ClusterError, Fenced, Membership, MembershipOptions};
use tokio::time::Instant;
use tokio_postgres::NoTls;

fn url() -> Option<String> {
    match std::env::var("CRASHONLY_PG_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            crashonly::testing::skipped("CRASHONLY_PG_URL is not set (cluster membership against PostgreSQL)");
            None
        }
    }
}

/// A schema of its own per test, so that tests run in parallel.
fn opts(test: &str) -> MembershipOptions {
    let schema = format!("cl_{test}_{}", std::process::id());
    MembershipOptions::default()
        .with_schema(schema)
        .with_lease(Duration::from_millis(600))
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn nodes_join_with_growing_incarnations_and_stay_live_while_they_renew() {
    let Some(url) = url() else { return };
    let o = opts("join");
    let a = Membership::join(&url, o.clone().with_name("a")).await.unwrap();
    let b = Membership::join(&url, o.clone().with_name("b")).await.unwrap();
    assert!(b.incarnation() > a.incarnation());
    // Several leases long: renewals keep both in.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let members = a.members().await.unwrap();
    let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(members
        .iter()
        .all(|m| m.lease_left > Duration::ZERO && m.lease_left <= o.lease));
    assert!(a.is_fenced().is_none() && b.is_fenced().is_none());
    assert!(a.time_left() > Duration::ZERO);
    // A restarted process is a new member, never the old one back.
    let a2 = Membership::join(&url, o.with_name("a")).await.unwrap();
    assert!(a2.incarnation() > b.incarnation());
}

#[tokio::test]
async fn a_node_that_cannot_renew_fences_itself_before_its_lease_is_dead_in_the_database() {
    let Some(url) = url() else { return };
    let o = opts("fence");
    let schema = o.schema.clone();
    let node = Membership::join(&url, o.with_name("stuck")).await.unwrap();
    let inc = node.incarnation() as i64;
    // Block its renewals: hold its row locked in an open transaction.
    let mut blocker = sql(&url).await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute(
        &format!("SELECT 1 FROM {schema}.members WHERE incarnation = $1 FOR UPDATE"),
        &[&inc],
    )
    .await
    .unwrap();
    let watcher = sql(&url).await;
    let fenced = tokio::spawn({
        let node = node.clone();
        async move {
            let why = node.fenced().await;
            (why, Instant::now())
        }
    });
    // The moment the database first sees the lease dead.
    let dead_at = loop {
        let row = watcher
            .query_one(
                &format!("SELECT lease_until <= clock_timestamp() FROM {schema}.members WHERE incarnation = $1"),
                &[&inc],
            )
            .await
            .unwrap();
        if row.get::<_, bool>(0) {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (why, fenced_at) = tokio::time::timeout(Duration::from_secs(2), fenced)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(why, Fenced::Deadline);
    assert!(
        fenced_at <= dead_at,
        "fenced {:?} after the database saw the lease dead",
        fenced_at - dead_at
    );
    assert_eq!(node.time_left(), Duration::ZERO);
    tx.rollback().await.unwrap();
    // Out for good: its lease is never revived, and the others do not list it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let other = Membership::join(&url, opts("fence").with_name("other")).await.unwrap();
    let names: Vec<_> = other.members().await.unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["other"]);
}

#[tokio::test]
async fn a_renewal_that_finds_the_lease_expired_fences_at_once() {
    let Some(url) = url() else { return };
    let o = opts("lost");
    let schema = o.schema.clone();
    let node = Membership::join(&url, o).await.unwrap();
    // As if the node had been paused past its lease: the database has it expired.
    sql(&url)
        .await
        .execute(
            &format!("UPDATE {schema}.members SET lease_until = clock_timestamp() - interval '1 second' WHERE incarnation = $1"),
            &[&(node.incarnation() as i64)],
        )
        .await
        .unwrap();
    let why = tokio::time::timeout(Duration::from_secs(2), node.fenced())
        .await
        .unwrap();
    assert_eq!(why, Fenced::LeaseLost);
}

#[tokio::test]
async fn a_lost_connection_is_made_again_within_the_lease() {
    let Some(url) = url() else { return };
    let o = opts("reconnect");
    let node = Membership::join(&url, o.clone()).await.unwrap();
    // Kill every connection of this node's renewals (the server side), twice.
    let admin = sql(&url).await;
    // The renewal connection (the only one so far: the query connection is made on first use).
    let pattern = format!("%{}.members%", o.schema);
    for _ in 0..2 {
        let killed = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE pid <> pg_backend_pid() AND query LIKE $1",
                &[&pattern],
            )
            .await
            .unwrap();
        assert_eq!(killed.len(), 1, "the renewal connection was found and terminated");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(node.is_fenced().is_none(), "{:?}", node.is_fenced());
    assert_eq!(node.members().await.unwrap().len(), 1);
}

#[tokio::test]
async fn leaving_releases_the_lease_at_once() {
    let Some(url) = url() else { return };
    let o = opts("leave");
    let a = Membership::join(&url, o.clone().with_name("a")).await.unwrap();
    let b = Membership::join(&url, o.with_name("b")).await.unwrap();
    b.leave().await.unwrap();
    assert_eq!(b.is_fenced(), Some(Fenced::Left));
    let names: Vec<_> = a.members().await.unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["a"]);
}

#[tokio::test]
async fn bad_options_are_refused_with_a_clear_error() {
    // No server needed: checked before connecting.
    let url = "postgres://nobody@127.0.0.1:1/none";
    let bad_schema = MembershipOptions::default().with_schema("x; DROP TABLE y");
    assert!(matches!(
        Membership::join(url, bad_schema).await,
        Err(ClusterError::BadInput(_))
    ));
    let unbounded = MembershipOptions::default().with_lease(Duration::from_secs(3600));
    assert!(matches!(
        Membership::join(url, unbounded).await,
        Err(ClusterError::BadInput(_))
    ));
    // An authority that does not answer: Unavailable, with when to try again.
    let err = Membership::join(url, MembershipOptions::default()).await.unwrap_err();
    assert!(matches!(err, ClusterError::Unavailable { .. }), "{err}");
}

/// The authority's URL is read as the runtime's store reads it: `sslmode` honoured (TLS through
/// rustls), a mode it does not know refused before any connection, and a server that offers
/// TLS (or none) used as `prefer` and `require` say.
#[tokio::test]
async fn the_urls_sslmode_is_honoured() {
    let bad = Membership::join("postgres://postgres@127.0.0.1:1/x?sslmode=always", opts("tls_bad")).await;
    assert!(
        matches!(&bad, Err(ClusterError::BadInput(m)) if m.contains("sslmode")),
        "{bad:?}"
    );
    let Some(url) = url() else { return };
    let sep = if url.contains('?') { '&' } else { '?' };
    let prefer = Membership::join(&format!("{url}{sep}sslmode=prefer"), opts("tls_prefer")).await;
    assert!(prefer.is_ok(), "{prefer:?}");
    let verify = Membership::join(&format!("{url}{sep}sslmode=verify-full"), opts("tls_verify")).await;
    assert!(
        matches!(&verify, Err(ClusterError::BadInput(m)) if m.contains("tls")),
        "{verify:?}"
    );
}
