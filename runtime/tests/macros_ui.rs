//! Misuse of the macros is a compile error that points at the user's code (trybuild; the expected
//! messages are in runtime/tests/ui/*.stderr).

#[test]
fn misuse_gives_clear_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
