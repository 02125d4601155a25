//! What the binaries' command lines share: value parsers for clap (durations through humantime,
//! `N/SECONDS` intensities) and one way to refuse a combination clap cannot express, so that
//! every bad argument reads alike and exits with status 2.
#![allow(dead_code)]

use std::time::Duration;

use clap::error::ErrorKind;
use clap::CommandFactory;

/// A duration like `500ms`, `2s`, `1m` or `1h 30m` (humantime's syntax); a bare number is seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("{s:?} is too many seconds"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 500ms, 2s or 1m ({e})"))
}

/// A [`duration`] longer than zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be positive".into()),
        d => Ok(d),
    }
}

/// `N/SECONDS`, like `5/30`: at most N within SECONDS (more than zero).
pub fn intensity(s: &str) -> Result<(u32, Duration), String> {
    s.split_once('/')
        .and_then(|(n, secs)| Some((n.parse().ok()?, secs.parse::<u64>().ok()?)))
        .filter(|&(_, secs)| secs > 0)
        .map(|(n, secs)| (n, Duration::from_secs(secs)))
        .ok_or_else(|| format!("{s:?} is not N/SECONDS, like 5/30"))
}

/// A whole number above zero.
pub fn positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number above 0")),
    }
}

/// A string that is not empty.
pub fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

/// Refuses the arguments of `P` with `msg` the way clap refuses a bad value (its format, the usage
/// line, exit status 2).
pub fn refuse<P: CommandFactory>(msg: impl std::fmt::Display) -> ! {
    P::command().error(ErrorKind::ValueValidation, msg).exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_humantime_and_bare_seconds() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("7"), Ok(Duration::from_secs(7)));
        assert!(duration("2 fortnights").unwrap_err().contains("not a duration"));
        assert!(duration("").is_err());
        assert_eq!(positive_duration("0s"), Err("must be positive".into()));
    }

    #[test]
    fn intensities_are_n_per_seconds() {
        assert_eq!(intensity("5/30"), Ok((5, Duration::from_secs(30))));
        assert!(intensity("5/0").is_err());
        assert!(intensity("5").is_err());
        assert!(intensity("x/30").is_err());
    }

    #[test]
    fn positive_numbers_are_whole_and_above_zero() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").is_err());
        assert!(positive("-1").is_err());
        assert!(positive("1.5").is_err());
    }
}
