//! The binaries' command lines: a bad argument is refused with exit status 2, a message naming the
//! argument and why, and the usage; `--help` exits 0 and lists the flags.

use std::process::Command;

/// Runs `bin` with `args`: exit code, stdout, stderr.
fn run(bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// `bin args` exits 2, and its stderr is clap's error (`error: `, each of `says`, the pointer to
/// `--help`).
fn refused(bin: &str, args: &[&str], says: &[&str]) {
    let (code, _, stderr) = run(bin, args);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    for s in says {
        assert!(stderr.contains(s), "{args:?} should say {s:?}: {stderr}");
    }
    assert!(
        stderr.contains("For more information, try '--help'."),
        "{args:?}: {stderr}"
    );
}

const CART: &str = env!("CARGO_BIN_EXE_cart");
const LITMUS: &str = env!("CARGO_BIN_EXE_litmus");

#[test]
fn cart_refuses_bad_arguments_with_status_2() {
    refused(CART, &["--bogus"], &["unexpected argument '--bogus'"]);
    refused(
        CART,
        &["--idle", "soon"],
        &["invalid value 'soon' for '--idle <DURATION>'", "not a duration"],
    );
    refused(CART, &["--idle", "0s"], &["'--idle <DURATION>'", "must be positive"]);
    refused(
        CART,
        &["--max-active", "0"],
        &["'--max-active <N>'", "not a whole number above 0"],
    );
    refused(CART, &["--max-inflight", "many"], &["'--max-inflight <N>'"]);
    refused(
        CART,
        &["--store-intensity", "5"],
        &["'--store-intensity <N/SECONDS>'", "like 5/30"],
    );
    refused(
        CART,
        &["--fault-mode", "disk"],
        &["invalid value 'disk' for '--fault-mode"],
    );
    refused(CART, &["--listen"], &["a value is required for '--listen <ADDR>'"]);
    // Each mode's flags are refused in the other.
    refused(
        CART,
        &["--cluster", "--data", "d"],
        &["'--cluster' cannot be used with '--data <DIR>'"],
    );
    refused(
        CART,
        &["--pg", "postgres://x"],
        &["required arguments were not provided", "--cluster"],
    );
    refused(
        CART,
        &["--cluster", "--schema", "a-b"],
        &["'--schema <NAME>'", "letters, digits or '_'"],
    );
    refused(
        CART,
        &["--cluster", "--rejoin-within", "soon"],
        &["'--rejoin-within <DURATION>'"],
    );
}

#[test]
fn cart_explains_its_flags() {
    let (code, stdout, _) = run(CART, &["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--listen",
        "--data",
        "--idle",
        "--max-active",
        "--max-inflight",
        "--cluster",
        "--rejoin-within",
    ] {
        assert!(stdout.contains(flag), "{flag} in {stdout}");
    }
}

#[test]
fn litmus_refuses_bad_arguments_with_status_2() {
    refused(LITMUS, &["--bogus"], &["unexpected argument '--bogus'"]);
    refused(
        LITMUS,
        &["--duration", "long"],
        &["invalid value 'long' for '--duration <DURATION>'"],
    );
    refused(
        LITMUS,
        &["--kill-every", "2s..1s"],
        &["the range ends before it starts"],
    );
    refused(LITMUS, &["--clients", "0"], &["invalid value '0' for '--clients <N>'"]);
    refused(LITMUS, &["--lease", "90s"], &["must be 100ms to 60s"]);
    refused(LITMUS, &["--cluster", "--unsafe-store"], &["cannot be used with"]);
    refused(LITMUS, &["--nodes", "3", "--table1"], &["runs kill -9 only"]);
    // The other modes have their own flags, refused alike.
    refused(
        LITMUS,
        &["--overload", "--overload-factor", "0"],
        &["'--overload-factor <X>'", "(0, 1000]"],
    );
    refused(
        LITMUS,
        &["--overload", "--carts", "3"],
        &["unexpected argument '--carts'"],
    );
    refused(
        LITMUS,
        &["--membership-cost", "--nodes", "1,17"],
        &["invalid value '17' for '--nodes <N,N,...>'"],
    );
    refused(LITMUS, &["serve-cart", "--idle", "x"], &["'--idle <DURATION>'"]);
}

#[test]
fn litmus_explains_its_flags_and_modes() {
    let (code, stdout, _) = run(LITMUS, &["--help"]);
    assert_eq!(code, Some(0));
    for s in [
        "--duration",
        "--kill-every",
        "--carts",
        "--json",
        "--unsafe-store",
        "--overload",
        "--membership-cost",
    ] {
        assert!(stdout.contains(s), "{s} in {stdout}");
    }
}

#[test]
fn the_other_binaries_refuse_bad_arguments_with_status_2() {
    refused(env!("CARGO_BIN_EXE_jobs"), &["--workers", "0"], &["'--workers <N>'"]);
    refused(
        env!("CARGO_BIN_EXE_jobs"),
        &["--crash-percent", "95"],
        &["'--crash-percent <P>'"],
    );
    refused(
        env!("CARGO_BIN_EXE_bank"),
        &["--data"],
        &["a value is required for '--data <DIR>'"],
    );
    refused(
        env!("CARGO_BIN_EXE_supervised-demo"),
        &["--chaos-ms", "0"],
        &["'--chaos-ms <MS>'"],
    );
    refused(
        env!("CARGO_BIN_EXE_entity-figures"),
        &["idle-memory", "table"],
        &["invalid value 'table'"],
    );
    refused(
        env!("CARGO_BIN_EXE_entity-figures"),
        &["memory", "--cold", "--direct"],
        &["cannot be used with"],
    );
    // Without a measurement: the help, on stderr, and status 2.
    let (code, _, stderr) = run(env!("CARGO_BIN_EXE_entity-figures"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("Usage: entity-figures <COMMAND>"), "{stderr}");
    #[cfg(feature = "otel")]
    refused(
        env!("CARGO_BIN_EXE_otel"),
        &["http://127.0.0.1:4318", "00-nothex"],
        &["invalid value '00-nothex'"],
    );
}
