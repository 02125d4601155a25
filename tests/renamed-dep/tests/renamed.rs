//! Generated code names only `<crate>::__private`, so a renamed dependency works.

use co::prelude::*;
use crashonly_renamed_dep::{Counter, CounterApi, Echo, EchoApi};

#[tokio::test(start_paused = true)]
async fn actors_derived_against_a_renamed_dependency_run() {
    let system = System::new();
    let counter = system.spawn(Counter::spec(Counter::default()).name("counter")).unwrap();
    assert_eq!(counter.add(2).await, Ok(2));
    assert_eq!(counter.add(40).await, Ok(42));
    assert_eq!(counter.get().await, Ok(42));
    // A second actor whose `crate` path is given as a string.
    let echo = system.spawn(Echo::spec(Echo).name("echo")).unwrap();
    assert_eq!(echo.echo("hi".into()).await.as_deref(), Ok("hi"));
    assert_eq!(Counter::STORE_KEY, None);
}
