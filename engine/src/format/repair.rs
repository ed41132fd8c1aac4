//! Repairing one flipped bit in a checksummed structure. crc32c detects every
//! error of up to three bits in anything shorter than 2^31 bits, so two
//! different single-bit errors never give the same checksum: the difference
//! between the stored and the computed checksum names the one bit that
//! flipped, if only one did. A wider error matches some single bit only with a
//! chance of about (bits / 2^32), and the caller still decodes and checks what
//! the repair gives.

use super::codec::crc_with_hole;

/// crc32c's reflected polynomial.
const POLY: u32 = 0x82F6_3B78;

/// One step of the raw (no initial value, no final xor) reflected CRC register
/// over a zero bit.
fn shift(register: u32) -> u32 {
    if register & 1 == 1 {
        (register >> 1) ^ POLY
    } else {
        register >> 1
    }
}

/// The raw register after a byte with only bit `bit` set, from zero.
fn one_bit_byte(bit: u32) -> u32 {
    let mut register = 1u32 << bit;
    for _ in 0..8 {
        register = shift(register);
    }
    register
}

/// Finds the one bit of `bytes` (outside the four checksum bytes at `crc_at`)
/// whose flip makes the stored checksum right, or reports that the stored
/// checksum itself has one flipped bit, and fixes it in place. Returns whether
/// exactly one such repair exists; `bytes` is left unchanged otherwise.
pub fn repair_one_bit(bytes: &mut [u8], crc_at: usize) -> bool {
    if bytes.len() < crc_at + 4 {
        return false;
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[crc_at..crc_at + 4]);
    let stored = u32::from_le_bytes(stored);
    let syndrome = crc_with_hole(bytes, crc_at) ^ stored;
    if syndrome.count_ones() == 1 {
        // Only the stored checksum is off: a data flip never changes exactly
        // one checksum bit (that would be a 2-bit codeword).
        let fixed = stored ^ syndrome;
        bytes[crc_at..crc_at + 4].copy_from_slice(&fixed.to_le_bytes());
        return true;
    }
    flip_back(bytes, Some(crc_at), syndrome)
}

/// Finds the one bit of `bytes` whose flip makes their crc32c `stored`, and
/// flips it back. Returns false, leaving `bytes` unchanged, if the crc already
/// matches, if `stored` itself is one bit off (then `bytes` are intact and the
/// caller decides), or if no single bit explains the difference.
pub fn repair_one_bit_against(bytes: &mut [u8], stored: u32) -> bool {
    let syndrome = crc32c::crc32c(bytes) ^ stored;
    syndrome.count_ones() > 1 && flip_back(bytes, None, syndrome)
}

/// Flips back the one bit of `bytes` (outside the four bytes at `hole`) whose
/// error pattern has checksum difference `syndrome`, if exactly one has.
fn flip_back(bytes: &mut [u8], hole: Option<usize>, syndrome: u32) -> bool {
    if syndrome == 0 {
        return false;
    }
    // A flip of bit `bit` of byte j changes the checksum by the raw register of
    // that byte followed by (len - 1 - j) zero bytes; walk j from the end,
    // advancing the eight candidates one zero byte per step.
    let mut candidates: [u32; 8] = std::array::from_fn(|bit| one_bit_byte(bit as u32));
    let mut found = None;
    for j in (0..bytes.len()).rev() {
        if hole.is_none_or(|at| !(at..at + 4).contains(&j)) {
            for (bit, &candidate) in candidates.iter().enumerate() {
                if candidate == syndrome {
                    if found.is_some() {
                        return false;
                    }
                    found = Some((j, bit));
                }
            }
        }
        for candidate in &mut candidates {
            for _ in 0..8 {
                *candidate = shift(*candidate);
            }
        }
    }
    let Some((j, bit)) = found else {
        return false;
    };
    bytes[j] ^= 1 << bit;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed(mut bytes: Vec<u8>, crc_at: usize) -> Vec<u8> {
        bytes[crc_at..crc_at + 4].fill(0);
        let crc = crc_with_hole(&bytes, crc_at);
        bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    proptest! {
        #[test]
        fn any_one_flipped_bit_is_found_and_flipped_back(
            body in proptest::collection::vec(any::<u8>(), 8..3000),
            at in any::<prop::sample::Index>(),
        ) {
            let original = sealed(body, 4);
            let bit = at.index(original.len() * 8);
            let mut damaged = original.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(repair_one_bit(&mut damaged, 4));
            prop_assert_eq!(damaged, original);
        }

        #[test]
        fn two_flipped_bits_are_never_taken_for_one(
            body in proptest::collection::vec(any::<u8>(), 8..3000),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            let original = sealed(body, 4);
            let (a, b) = (a.index(original.len() * 8), b.index(original.len() * 8));
            prop_assume!(a != b);
            let mut damaged = original.clone();
            damaged[a / 8] ^= 1 << (a % 8);
            damaged[b / 8] ^= 1 << (b % 8);
            let before = damaged.clone();
            prop_assert!(!repair_one_bit(&mut damaged, 4));
            prop_assert_eq!(damaged, before);
        }
    }

    #[test]
    fn a_body_checked_against_a_crc_kept_elsewhere_is_repaired_too() {
        let original: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let crc = crc32c::crc32c(&original);
        let mut damaged = original.clone();
        damaged[4321] ^= 0x20;
        assert!(repair_one_bit_against(&mut damaged, crc));
        assert_eq!(damaged, original);
        damaged[10] ^= 0x01;
        damaged[11] ^= 0x80;
        assert!(!repair_one_bit_against(&mut damaged, crc));
    }

    #[test]
    fn an_intact_structure_needs_no_repair() {
        let mut bytes = sealed(vec![7u8; 100], 10);
        assert!(!repair_one_bit(&mut bytes, 10));
    }
}
