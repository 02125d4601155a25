//! `cargo fuzz run store_body` (nightly). The body is shared with the stable replay in
//! tests/fuzz_replay.rs, which also replays corpus/store_body.
#![no_main]

#[path = "../../tests/support/fuzz_targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::store_body(data));
