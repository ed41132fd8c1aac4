//! Fuzzes recovery from damaged media on a pool whose history includes
//! garbage collection: the collector's copies on their own log head, before
//! and after the last checkpoint, so replay follows two heads. Damaged where
//! the input says (5-byte records: offset, XOR mask) and reopened; recovery
//! must not panic, and an opened pool serves every acknowledged block exactly
//! or as a media error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    engine::fuzzing::recover_damaged_collected(data);
});
