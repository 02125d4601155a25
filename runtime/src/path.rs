//! Paths in the supervision tree: `/app/cart` for a named actor, `/app/#17` for an unnamed one.
//!
//! An unnamed actor's path is its parent's path and its number (its id's generation), formed
//! only when it is shown: a slot keeps its parent's path (shared, not copied) instead of a string
//! of its own, which was an allocation of 32 bytes for every actor most of which nobody ever
//! names or prints.

use std::fmt;

/// The path of an actor in the supervision tree, such as `/app/cart` (named) or `/app/#17` (the
/// 17th slot of the system, unnamed). It compares equal to the string it shows.
///
/// ```
/// # use crashonly::prelude::*;
/// # use crashonly::__private::doc::Counter;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let system = System::new();
/// let app = system.root().spawn_supervisor(SupervisorSpec::new("app", Strategy::OneForOne)).unwrap();
/// let named = app.spawn(ActorSpec::<Counter>::named("counter", 0)).unwrap();
/// assert_eq!(named.path(), "/app/counter");
/// let unnamed = app.spawn(ActorSpec::<Counter>::new(0)).unwrap();
/// assert_eq!(unnamed.path().to_string(), format!("/app/#{}", unnamed.id().generation()));
/// assert!(!unnamed.path().is_named());
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct ActorPath<'a> {
    base: &'a str,
    number: Option<u64>,
}

impl<'a> ActorPath<'a> {
    /// A named path: `path` itself.
    pub(crate) fn named(path: &'a str) -> Self {
        ActorPath {
            base: path,
            number: None,
        }
    }

    /// The path of the unnamed slot `number` under `parent`.
    pub(crate) fn unnamed(parent: &'a str, number: u64) -> Self {
        ActorPath {
            base: parent,
            number: Some(number),
        }
    }

    /// Whether the actor was spawned with a name (its path is then unique while it lives, and
    /// can be looked up).
    pub fn is_named(&self) -> bool {
        self.number.is_none()
    }

    /// The path as a `String`, formed without `fmt` (a crash report takes one for every crash:
    /// through `Display`, 580 of the 3,200 instructions a restart cost).
    pub(crate) fn owned(&self) -> String {
        let Some(n) = self.number else {
            return self.base.to_owned();
        };
        let mut s = String::with_capacity(self.base.len() + 22);
        s.push_str(self.base);
        if !self.base.ends_with('/') {
            s.push('/');
        }
        s.push('#');
        crate::crash::push_decimal(&mut s, n);
        s
    }

    /// Whether this path is `other`, without forming it.
    fn is(&self, other: &str) -> bool {
        let Some(n) = self.number else {
            return self.base == other;
        };
        let Some(rest) = other.strip_prefix(self.base) else {
            return false;
        };
        let rest = if self.base.ends_with('/') {
            rest
        } else {
            rest.strip_prefix('/').unwrap_or("-")
        };
        // Digits only, without a leading zero: exactly how `n` is shown.
        rest.strip_prefix('#').is_some_and(|digits| {
            digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'))
                && digits.parse::<u64>() == Ok(n)
        })
    }
}

impl fmt::Display for ActorPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number {
            None => f.write_str(self.base),
            Some(n) if self.base.ends_with('/') => write!(f, "{}#{n}", self.base),
            Some(n) => write!(f, "{}/#{n}", self.base),
        }
    }
}

impl fmt::Debug for ActorPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl PartialEq for ActorPath<'_> {
    fn eq(&self, other: &ActorPath<'_>) -> bool {
        match other.number {
            None => self.is(other.base),
            Some(_) => self.is(&other.to_string()),
        }
    }
}

impl Eq for ActorPath<'_> {}

impl PartialEq<str> for ActorPath<'_> {
    fn eq(&self, other: &str) -> bool {
        self.is(other)
    }
}

impl PartialEq<&str> for ActorPath<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.is(other)
    }
}

impl PartialEq<String> for ActorPath<'_> {
    fn eq(&self, other: &String) -> bool {
        self.is(other)
    }
}

impl PartialEq<ActorPath<'_>> for str {
    fn eq(&self, other: &ActorPath<'_>) -> bool {
        other.is(self)
    }
}

impl PartialEq<ActorPath<'_>> for &str {
    fn eq(&self, other: &ActorPath<'_>) -> bool {
        other.is(self)
    }
}

impl PartialEq<ActorPath<'_>> for String {
    fn eq(&self, other: &ActorPath<'_>) -> bool {
        other.is(self)
    }
}

#[cfg(test)]
mod tests {
    use super::ActorPath;

    #[test]
    fn an_unnamed_path_is_its_parents_and_its_number() {
        let p = ActorPath::unnamed("/app", 17);
        assert_eq!(p.to_string(), "/app/#17");
        assert_eq!(p, "/app/#17");
        assert_eq!(ActorPath::unnamed("/", 3).to_string(), "/#3");
        assert_eq!(ActorPath::unnamed("/", 3), "/#3");
        for other in [
            "/app/#017",
            "/app/#+17",
            "/app#17",
            "/app/#1",
            "/app/#170",
            "/ap/#17",
            "/app/17",
            "/app/#",
        ] {
            assert_ne!(p, other, "{other}");
        }
        assert_eq!(ActorPath::named("/app/cart"), "/app/cart");
        assert_ne!(ActorPath::named("/app/cart"), "/app/car");
        assert_eq!(format!("{:?}", ActorPath::unnamed("/", 3)), "\"/#3\"");
    }

    #[test]
    fn an_owned_path_is_the_path_shown() {
        for p in [
            ActorPath::unnamed("/app", 17),
            ActorPath::unnamed("/", 0),
            ActorPath::unnamed("/", 3),
            ActorPath::unnamed("/a/b", 10),
            ActorPath::unnamed("/a", u64::MAX),
            ActorPath::named("/app/cart"),
            ActorPath::named("/"),
        ] {
            assert_eq!(p.owned(), p.to_string());
        }
    }
}
