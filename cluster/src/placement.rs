//! Placement: which node holds an entity, decided by the database, with a fencing token.
//!
//! An entity (family, key) lives on at most one node at a time. A node claims it with one
//! statement that succeeds only if nobody holds it, or the node holds it already, or its holder's
//! membership lease is dead by the database's clock, and only while the claimer's own lease is
//! live; the claim returns a fencing token from a sequence, so tokens only grow. Every durable
//! write of the entity is checked against its token ([`Placement::holds`] inside the write's
//! transaction), so an old owner that was paused or cut off can never overwrite the new one.
//!
//! Which node should claim a key is picked without a coordinator by rendezvous hashing over the
//! live members ([`choose`]): every node computes the same answer from the same member list, and
//! when a member leaves only its own keys move.

use crate::error::ClusterError;
use crate::membership::{Member, Membership};

/// The outcome of a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the entity; writes are fenced with this token.
    Mine {
        /// The fencing token (greater than every earlier claim's).
        token: u64,
    },
    /// Another live node holds it.
    Held {
        /// The holder's incarnation.
        holder: u64,
    },
}

/// Claims, looks up and releases entities for one member.
#[derive(Clone, Debug)]
pub struct Placement {
    membership: Membership,
}

impl Placement {
    /// Placement for this node.
    pub fn new(membership: &Membership) -> Self {
        Placement {
            membership: membership.clone(),
        }
    }

    fn live(&self) -> Result<(), ClusterError> {
        match self.membership.is_fenced() {
            Some(why) => Err(ClusterError::Fenced(why.to_string())),
            None => Ok(()),
        }
    }

    /// Claims `(family, key)` for this node: [`Claim::Mine`] with a new token if nobody live holds
    /// it (or this node does), [`Claim::Held`] with the live holder otherwise. A fenced node is
    /// refused ([`ClusterError::Fenced`]), by itself and by the database.
    pub async fn claim(&self, family: &str, key: &str) -> Result<Claim, ClusterError> {
        self.live()?;
        let s = self.membership.schema();
        let me = self.membership.incarnation() as i64;
        let sql = format!(
            "WITH me AS (
                 SELECT 1 FROM {s}.members WHERE incarnation = $3 AND lease_until > clock_timestamp()
             )
             INSERT INTO {s}.placement AS p (family, key, holder, token)
             SELECT $1, $2, $3, nextval('{s}.tokens') FROM me
             ON CONFLICT (family, key) DO UPDATE SET holder = EXCLUDED.holder, token = EXCLUDED.token
             WHERE p.holder = EXCLUDED.holder
                OR NOT EXISTS (SELECT 1 FROM {s}.members m
                               WHERE m.incarnation = p.holder AND m.lease_until > clock_timestamp())
             RETURNING token"
        );
        // Twice at most: the holder may die between the claim and the lookup (then nobody live
        // holds it, and the claim is tried again at once rather than taken for this node's end).
        for _ in 0..2 {
            let rows = self.membership.query(&sql, &[&family, &key, &me]).await?;
            if self.membership.incarnation() != me as u64 {
                // The node rejoined while the claim was in flight: the token belongs to the old
                // incarnation and must not be handed to the new one.
                return Err(ClusterError::Fenced("the node rejoined during the claim".into()));
            }
            if let Some(row) = rows.first() {
                return Ok(Claim::Mine {
                    token: row.get::<_, i64>(0) as u64,
                });
            }
            match self.lookup(family, key).await? {
                Some((holder, _)) if holder != me as u64 => return Ok(Claim::Held { holder }),
                Some(_) => break,
                None => self.live()?,
            }
        }
        // Not held by another, and not claimable: this node's own lease is gone.
        Err(ClusterError::Fenced(
            "the database refused the claim: this node's membership lease is not live".into(),
        ))
    }

    /// The holder of `(family, key)` and its token, if a live member holds it.
    pub async fn lookup(&self, family: &str, key: &str) -> Result<Option<(u64, u64)>, ClusterError> {
        let s = self.membership.schema();
        let sql = format!(
            "SELECT p.holder, p.token FROM {s}.placement p JOIN {s}.members m ON m.incarnation = p.holder
             WHERE p.family = $1 AND p.key = $2 AND m.lease_until > clock_timestamp()"
        );
        let rows = self.membership.query(&sql, &[&family, &key]).await?;
        Ok(rows
            .first()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)))
    }

    /// Whether this node still holds `(family, key)` with `token` (the check a fenced write makes
    /// in its own transaction).
    pub async fn holds(&self, family: &str, key: &str, token: u64) -> Result<bool, ClusterError> {
        let s = self.membership.schema();
        let sql = format!("SELECT 1 FROM {s}.placement WHERE family = $1 AND key = $2 AND holder = $3 AND token = $4");
        let me = self.membership.incarnation() as i64;
        let rows = self
            .membership
            .query(&sql, &[&family, &key, &me, &(token as i64)])
            .await?;
        Ok(!rows.is_empty())
    }

    /// Gives `(family, key)` up (a passivation): only the claim with `token` is removed.
    pub async fn release(&self, family: &str, key: &str, token: u64) -> Result<bool, ClusterError> {
        let s = self.membership.schema();
        let sql = format!(
            "DELETE FROM {s}.placement WHERE family = $1 AND key = $2 AND holder = $3 AND token = $4 RETURNING 1"
        );
        let me = self.membership.incarnation() as i64;
        let rows = self
            .membership
            .query(&sql, &[&family, &key, &me, &(token as i64)])
            .await?;
        Ok(!rows.is_empty())
    }
}

/// The member that should hold `key` of `family`: the highest score of `(incarnation, family,
/// key)` (rendezvous hashing). Deterministic across processes and builds (a fixed hash, not
/// std's). `None` without members.
pub fn choose(family: &str, key: &str, members: &[Member]) -> Option<u64> {
    members
        .iter()
        .map(|m| (score(m.incarnation, family, key), m.incarnation))
        .max()
        .map(|(_, inc)| inc)
}

/// FNV-1a over the incarnation, family and key, then a 64-bit finalizer (murmur3's fmix64) so that
/// nearby incarnations score independently. Hand-written: a few lines, and the exact function is
/// part of the cluster's protocol (every node must compute the same one).
fn score(incarnation: u64, family: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&incarnation.to_le_bytes());
    eat(family.as_bytes());
    eat(&[0xff]);
    eat(key.as_bytes());
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn members(incs: &[u64]) -> Vec<Member> {
        incs.iter()
            .map(|&incarnation| Member {
                incarnation,
                name: format!("n{incarnation}"),
                lease_left: Duration::from_secs(1),
            })
            .collect()
    }

    #[test]
    fn rendezvous_is_deterministic_balanced_and_moves_only_the_leavers_keys() {
        let three = members(&[11, 12, 13]);
        let mut counts = std::collections::HashMap::new();
        let mut before = Vec::new();
        for i in 0..30_000 {
            let key = format!("cart-{i}");
            let n = choose("carts", &key, &three).unwrap();
            assert_eq!(choose("carts", &key, &three), Some(n), "deterministic");
            *counts.entry(n).or_insert(0) += 1;
            before.push((key, n));
        }
        for (n, c) in &counts {
            assert!((8_500..=11_500).contains(c), "node {n} got {c} of 30000");
        }
        // Node 12 leaves: only its keys move, and they spread over the two others.
        let two = members(&[11, 13]);
        for (key, was) in &before {
            let now = choose("carts", key, &two).unwrap();
            if *was != 12 {
                assert_eq!(now, *was, "{key} moved although its node stayed");
            }
        }
        assert_eq!(choose("carts", "x", &[]), None);
        // The family is part of the score.
        let differ = (0..100)
            .filter(|i| {
                let k = format!("k{i}");
                choose("carts", &k, &three) != choose("jobs", &k, &three)
            })
            .count();
        assert!(differ > 30, "{differ}");
    }
}
