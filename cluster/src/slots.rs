//! What a node knows per entity, `(family, key) -> V`: the claims it holds (their tokens) and
//! where requests for an entity went last (the holder and its subject).
//!
//! Looked up on every request with the family and key as the request carries them (`&str`), so
//! a lookup allocates nothing: the map is keyed by family, then by key, and only an insert
//! copies the two strings.

use std::collections::HashMap;

/// `(family, key) -> V`, looked up by `&str`s.
#[derive(Debug)]
pub(crate) struct Slots<V> {
    families: HashMap<String, HashMap<String, V>>,
}

impl<V> Default for Slots<V> {
    fn default() -> Self {
        Slots {
            families: HashMap::new(),
        }
    }
}

impl<V> Slots<V> {
    pub(crate) fn get(&self, family: &str, key: &str) -> Option<&V> {
        self.families.get(family)?.get(key)
    }

    pub(crate) fn contains(&self, family: &str, key: &str) -> bool {
        self.get(family, key).is_some()
    }

    /// Sets the value of `(family, key)`, returning the one it replaces.
    pub(crate) fn insert(&mut self, family: &str, key: &str, value: V) -> Option<V> {
        let keys = match self.families.get_mut(family) {
            Some(keys) => keys,
            None => self.families.entry(family.to_owned()).or_default(),
        };
        match keys.get_mut(key) {
            Some(old) => Some(std::mem::replace(old, value)),
            None => keys.insert(key.to_owned(), value),
        }
    }

    pub(crate) fn remove(&mut self, family: &str, key: &str) -> Option<V> {
        let keys = self.families.get_mut(family)?;
        let old = keys.remove(key);
        if keys.is_empty() {
            self.families.remove(family);
        }
        old
    }

    pub(crate) fn clear(&mut self) {
        self.families.clear();
    }

    /// Every `(family, key, value)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str, &V)> {
        self.families
            .iter()
            .flat_map(|(f, keys)| keys.iter().map(move |(k, v)| (f.as_str(), k.as_str(), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn slots_are_found_by_family_and_key_and_forgotten_whole() {
        let mut s = Slots::default();
        assert_eq!(s.insert("carts", "a", 1), None);
        assert_eq!(s.insert("carts", "b", 2), None);
        assert_eq!(s.insert("jobs", "a", 3), None);
        assert_eq!(s.insert("carts", "a", 4), Some(1));
        assert_eq!(s.get("carts", "a"), Some(&4));
        assert!(s.contains("jobs", "a") && !s.contains("jobs", "b") && !s.contains("x", "a"));
        let mut all: Vec<_> = s.iter().map(|(f, k, v)| (f.to_owned(), k.to_owned(), *v)).collect();
        all.sort();
        assert_eq!(
            all,
            [
                ("carts".into(), "a".into(), 4),
                ("carts".into(), "b".into(), 2),
                ("jobs".into(), "a".into(), 3)
            ]
        );
        assert_eq!(s.remove("jobs", "a"), Some(3));
        assert_eq!(s.remove("jobs", "a"), None);
        assert!(!s.families.contains_key("jobs"), "an emptied family is dropped");
        s.clear();
        assert_eq!(s.iter().count(), 0);
    }
}
