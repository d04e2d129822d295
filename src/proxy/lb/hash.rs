//! The two hash functions Envoy's consistent hashing uses, written from their published
//! definitions: xxHash64 (request keys, ring points, Maglev offsets) and the 64-bit
//! MurmurHash2 of libstdc++'s `std::hash` (ring points under `MURMUR_HASH_2`).

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn read64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge(acc: u64, lane: u64) -> u64 {
    (acc ^ round(0, lane)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 of `input` with `seed`.
pub fn xx64(input: &[u8], seed: u64) -> u64 {
    let mut rest = input;
    let mut hash = if input.len() >= 32 {
        let mut lanes = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while rest.len() >= 32 {
            for (i, lane) in lanes.iter_mut().enumerate() {
                *lane = round(*lane, read64(&rest[i * 8..]));
            }
            rest = &rest[32..];
        }
        let [a, b, c, d] = lanes;
        let hash = a
            .rotate_left(1)
            .wrapping_add(b.rotate_left(7))
            .wrapping_add(c.rotate_left(12))
            .wrapping_add(d.rotate_left(18));
        lanes.iter().fold(hash, |hash, lane| merge(hash, *lane))
    } else {
        seed.wrapping_add(P5)
    };
    hash = hash.wrapping_add(input.len() as u64);
    while rest.len() >= 8 {
        hash ^= round(0, read64(rest));
        hash = hash.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        let word = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        hash ^= u64::from(word).wrapping_mul(P1);
        hash = hash.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for byte in rest {
        hash ^= u64::from(*byte).wrapping_mul(P5);
        hash = hash.rotate_left(11).wrapping_mul(P1);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(P2);
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(P3);
    hash ^ (hash >> 32)
}

/// XXH64 of several values chained, each seeded with the previous one's hash (Envoy's hash of
/// a header's values).
pub fn xx64_chain<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    values.into_iter().fold(0, |seed, value| xx64(value, seed))
}

/// The seed libstdc++ hashes strings with (and Envoy's ring under `MURMUR_HASH_2`).
pub const MURMUR_SEED: u64 = 0xc70f_6907;

/// The 64-bit MurmurHash2 variant of libstdc++'s `_Hash_bytes`.
pub fn murmur2_64(input: &[u8], seed: u64) -> u64 {
    const MUL: u64 = 0xc6a4_a793_5bd1_e995;
    let shift_mix = |v: u64| v ^ (v >> 47);
    let mut hash = seed ^ (input.len() as u64).wrapping_mul(MUL);
    let mut chunks = input.chunks_exact(8);
    for chunk in &mut chunks {
        let data = shift_mix(read64(chunk).wrapping_mul(MUL)).wrapping_mul(MUL);
        hash = (hash ^ data).wrapping_mul(MUL);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let data = tail
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        hash = (hash ^ data).wrapping_mul(MUL);
    }
    hash = shift_mix(hash).wrapping_mul(MUL);
    shift_mix(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xx64_matches_the_reference_vectors() {
        // Published XXH64 values.
        assert_eq!(xx64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xx64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xx64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
        let long = b"Nobody inspects the spammish repetition";
        assert_eq!(xx64(long, 0), 0xFBCE_A83C_8A37_8BF1);
        assert_eq!(xx64(b"abc", 1), 0xBEA9_CA81_9932_8908);
        // One value chained is the value's own hash.
        assert_eq!(xx64_chain([&b"abc"[..]]), xx64(b"abc", 0));
    }

    #[test]
    fn murmur_folds_the_tail_little_endian() {
        // Every tail length, and more than one block, hash apart.
        let hashes: Vec<u64> = (0..20)
            .map(|n| murmur2_64(&b"0123456789abcdefghij"[..n], MURMUR_SEED))
            .collect();
        let mut unique = hashes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), hashes.len());
    }
}
