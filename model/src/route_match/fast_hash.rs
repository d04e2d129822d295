//! Route matching: a fast, non-cryptographic hasher for the lookup tables (domains, paths,
//! path chunks). Keys come from trusted config, and a request only chooses which key it
//! looks up, so flooding resistance (SipHash's purpose) buys nothing here while costing
//! more than the rest of a lookup.
use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Multiply-rotate hashing a word at a time, with a final mix so every output bit depends
/// on every input bit (the map uses both the low bits and the top seven).
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 29)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    fn hash(bytes: &[u8]) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(bytes)
    }

    #[test]
    fn distinct_keys_hash_apart_and_tables_work() {
        assert_ne!(hash(b"/a"), hash(b"/b"));
        assert_ne!(
            hash(b"abcdefgh"),
            hash(b"abcdefgh\0"),
            "the length is hashed"
        );
        let mut map: FastMap<Box<[u8]>, usize> = FastMap::default();
        for i in 0..10_000 {
            map.insert(format!("/svc{i:05}/").into_bytes().into(), i);
        }
        assert_eq!(map.get(b"/svc01234/".as_slice()), Some(&1234));
        assert_eq!(map.get(b"/svc1234/".as_slice()), None);
        let buckets: std::collections::HashSet<u64> = (0..10_000)
            .map(|i| hash(format!("/svc{i:05}/").as_bytes()) >> 57)
            .collect();
        assert_eq!(buckets.len(), 128, "the top seven bits vary");
    }
}
