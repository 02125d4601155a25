//! `Remote`: a message type that may cross processes (`crashonly-cluster` carries it).

/// A message type that can travel between processes: a stable id and a version, which a
/// receiving node checks before it decodes (an unknown id or version is refused, never a panic:
/// rolling upgrades meet a clear answer). `#[messages(remote = "id")]` implements it for the
/// message enum it generates (and derives serde's traits on it and on the replies).
pub trait Remote: Clone + Send + 'static {
    /// The stable id (never reuse it for another type).
    const TYPE_ID: &'static str;
    /// The version of its encoding.
    const VERSION: u16 = 1;
}
