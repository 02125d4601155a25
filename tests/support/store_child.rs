//! Child process of the store crash tests: 16 writers each bump their own counter with durable
//! writes and print `ack <writer> <n>` after each acknowledgement, until killed with SIGKILL.
//! Every start is a recovery: each writer resumes from the value it finds in the store.
//!
//! `crashonly-store-child redb <path>` or `crashonly-store-child pg <url> <schema>`.

use std::sync::Arc;

use crashonly::store::{RedbStore, Store, StoreExt};

const WRITERS: u64 = 16;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = std::time::Instant::now();
    let store: Arc<dyn Store> = match args.first().map(String::as_str) {
        Some("redb") => match RedbStore::open(&args[1]) {
            Ok(store) => Arc::new(store),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        },
        #[cfg(feature = "postgres")]
        Some("pg") => {
            let opts = crashonly::store::PgOptions::default()
                .with_schema(args[2].clone())
                .with_pool_size(4);
            Arc::new(
                crashonly::store::PgStore::connect(&args[1], opts)
                    .await
                    .expect("connect pg"),
            )
        }
        _ => {
            eprintln!("usage: crashonly-store-child redb <path> | pg <url> <schema>");
            std::process::exit(2);
        }
    };
    println!("opened {}", started.elapsed().as_micros());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("w/{w}");
            let mut n = match store.get(key.as_bytes()).await.expect("recover") {
                Some(v) => u64::from_le_bytes(v.value.try_into().expect("8 bytes")),
                None => 0,
            };
            loop {
                n += 1;
                store
                    .put(key.as_bytes(), n.to_le_bytes().to_vec())
                    .await
                    .expect("durable put");
                println!("ack {w} {n}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}
