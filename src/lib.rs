//! The suite crate (integration tests, crash tests, examples and benchmarks of crashonly) has
//! this library only so that the repository's README runs as doc tests: `cargo test --doc` here
//! compiles and runs every `rust` block of `README.md` (the published crates carry their own
//! READMEs, which their own doc tests run).

#![doc(test(attr(deny(warnings))))]

/// The repository's README: its `rust` code blocks are this item's doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
