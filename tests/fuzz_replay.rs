//! Stable replay of the fuzz targets (`fuzz/`, built with `cargo fuzz` on nightly): every input
//! of the committed corpus, then `FUZZ_INPUTS` generated ones per target (2,000 by default):
//! random bytes and mutations of the corpus. Zero panics, aborts or hangs; a target's own checks
//! (a wrong value, or an acknowledged key missing after bit flips in `store_body`) fail as panics.

#[path = "support/fuzz_targets.rs"]
mod targets;

use std::path::Path;
use std::time::{Duration, Instant};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// A random input, or a corpus entry with a few bytes flipped, cut, or inserted.
fn generate(rng: &mut fastrand::Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    if corpus.is_empty() || rng.u8(..4) == 0 {
        let len = rng.usize(..256);
        return (0..len).map(|_| rng.u8(..)).collect();
    }
    let mut v = rng.choice(corpus).expect("a corpus entry").clone();
    for _ in 0..rng.usize(1..=4) {
        match rng.u8(..3) {
            0 if !v.is_empty() => {
                let at = rng.usize(..v.len());
                v[at] ^= 1 << rng.u8(..8);
            }
            1 if !v.is_empty() => {
                let at = rng.usize(..v.len());
                v.truncate(at);
            }
            _ => {
                let at = rng.usize(..=v.len());
                v.insert(at, rng.u8(..));
            }
        }
    }
    v
}

#[test]
fn fuzz_targets_survive_the_corpus_and_generated_inputs() {
    let per_target: usize = std::env::var("FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let quiet = std::panic::take_hook();
    for (name, target) in targets::TARGETS {
        let corpus = corpus(name);
        assert!(!corpus.is_empty(), "no corpus for {name}");
        // Fixed per target, so that a failure replays; named in the failure.
        let seed = 0x5EED_u64 ^ name.len() as u64;
        let mut rng = fastrand::Rng::with_seed(seed);
        let started = Instant::now();
        let inputs: Vec<Vec<u8>> = corpus
            .iter()
            .cloned()
            .chain((0..per_target).map(|_| generate(&mut rng, &corpus)))
            .collect();
        if std::env::var_os("FUZZ_LOUD").is_none() {
            std::panic::set_hook(Box::new(|_| {}));
        }
        for (i, input) in inputs.iter().enumerate() {
            let t = Instant::now();
            let outcome = std::panic::catch_unwind(|| target(input));
            if let Err(p) = outcome {
                std::panic::set_hook(Box::new(|_| {}));
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let _ = std::panic::take_hook();
                panic!(
                    "{name}: input {i} (seed {seed:#x}, {} bytes: {:02x?}) panicked: {msg}",
                    input.len(),
                    &input[..input.len().min(64)]
                );
            }
            // A hang detector, not a speed claim: no single input may take seconds.
            assert!(t.elapsed() < Duration::from_secs(5), "{name}: input {i} hung");
        }
        let _ = std::panic::take_hook();
        println!(
            "fuzz replay {name}: {} corpus + {per_target} generated inputs, 0 panics ({:.1} s)",
            corpus.len(),
            started.elapsed().as_secs_f64()
        );
    }
    std::panic::set_hook(quiet);
}
