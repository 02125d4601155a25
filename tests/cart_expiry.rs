//! A cart whose stored session expires while its instance is live does not get stuck: the live
//! copy follows the store to an empty cart (a crash-free transition), on virtual time (the store's
//! `ManualTime`, which the carts read too). The service runs in this process, over real HTTP.

#[allow(dead_code)]
#[path = "../examples/support/cart_service.rs"]
mod cart_service;
#[path = "../examples/support/http.rs"]
mod http;

use std::sync::Arc;
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::store::{Durability, Limits, ManualTime, MemoryStore, Store, StoreExt};
use crashonly::SupervisedStore;

async fn serve(time: ManualTime) -> (std::net::SocketAddr, SupervisedStore, System) {
    let clock = time.clone();
    let store = SupervisedStore::new("memory", Limits::default(), Durability::Durable, move || {
        Ok(MemoryStore::with(Limits::default(), Arc::new(clock.clone())))
    })
    .unwrap();
    let carts = cart_service::family(Arc::new(store.clone()), Arc::new(time), Default::default());
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .child(store.spec())
        .child(carts);
    let system = System::builder().root(root).start().unwrap();
    let carts = system.entities::<cart_service::Cart>("/carts").unwrap();
    let app = cart_service::App::new(system.clone(), carts, store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.router()).await });
    (addr, store, system)
}

async fn call(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = http::request(addr, method, path, &[], body.as_bytes(), Duration::from_secs(5))
        .await
        .unwrap();
    (r.status, serde_json::from_slice(&r.body).unwrap_or_default())
}

#[tokio::test]
async fn a_session_that_expires_while_its_cart_is_live_becomes_an_empty_cart() {
    let time = ManualTime::new(1_000_000);
    let (addr, store, _system) = serve(time.clone()).await;
    let (s, v) = call(addr, "POST", "/carts/s1/items", r#"{"item":"old"}"#).await;
    assert_eq!((s, &v["items"]), (200, &serde_json::json!(["old"])));

    // The session expires in the store; the cart's instance is still live.
    time.advance(cart_service::SESSION_TTL + Duration::from_secs(1));
    assert_eq!(store.get(b"cart/s1").await.unwrap(), None, "expired in the store");

    // Reads no longer show the expired items, and adds are not refused (it used to answer 409
    // for ever): the cart starts a new session.
    let (s, v) = call(addr, "GET", "/carts/s1", "").await;
    assert_eq!((s, &v["items"]), (200, &serde_json::json!([])));
    let (s, v) = call(addr, "POST", "/carts/s1/items", r#"{"item":"new"}"#).await;
    assert_eq!((s, &v["items"]), (200, &serde_json::json!(["new"])), "{v}");
    let stored = store.get(b"cart/s1").await.unwrap().expect("a new session is stored");
    assert_eq!(stored.version, v["version"].as_u64().unwrap());

    // A session refreshed by a write lives on: just before its new expiry, still there.
    time.advance(cart_service::SESSION_TTL - Duration::from_secs(1));
    let (_, v) = call(addr, "GET", "/carts/s1", "").await;
    assert_eq!(v["items"], serde_json::json!(["new"]));
}

#[tokio::test]
async fn a_cart_whose_store_moved_on_reloads_instead_of_answering_409() {
    let time = ManualTime::new(1_000_000);
    let (addr, store, _system) = serve(time.clone()).await;
    let (s, _) = call(addr, "POST", "/carts/s2/items", r#"{"item":"a"}"#).await;
    assert_eq!(s, 200);
    // Another writer (an earlier incarnation, a tool) changed the stored session.
    let cart = serde_json::json!({ "items": ["a", "b"] }).to_string().into_bytes();
    store
        .put_with_ttl(b"cart/s2", cart, cart_service::SESSION_TTL)
        .await
        .unwrap();
    let (s, v) = call(addr, "POST", "/carts/s2/items", r#"{"item":"c"}"#).await;
    assert_eq!((s, &v["items"]), (200, &serde_json::json!(["a", "b", "c"])), "{v}");
}
