//! Fuzzes the replication protocol's frame decoder, on raw bytes and on bytes
//! sealed with a valid header and crc so every frame body decoder is reached.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    engine::replication::wire::decode_hostile(data);
});
