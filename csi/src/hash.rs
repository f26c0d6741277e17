//! A stable 64-bit hash for names the plugin derives (volume labels, spec keys, pinned
//! instances' directories): FNV-1a, stable across builds and platforms, unlike
//! `DefaultHasher`. Not for security: where two inputs must never share a name, the
//! caller checks for collisions.

/// FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `fnv1a` as 16 lower-case hex digits.
pub fn fnv1a_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
    }
}
