//! Fuzzes recovery from damaged media: a pool image with history in a
//! checkpoint and the log is damaged where the input says (5-byte records:
//! offset, XOR mask) and reopened. Recovery must not panic, and an opened
//! pool serves every acknowledged block exactly or as a media error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    engine::fuzzing::recover_damaged(data);
});
