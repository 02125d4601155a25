//! `cargo fuzz run cluster_envelope` (nightly): frames between cluster nodes. The body is shared
//! with the stable replay in tests/fuzz_replay.rs, which also replays corpus/cluster_envelope.
#![no_main]

#[path = "../../tests/support/fuzz_targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::cluster_envelope(data));
