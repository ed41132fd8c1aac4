//! Fuzzes the engine's on-disk decoders (superblock, checkpoint root, batch
//! header, checkpoint body and the chunk instances it names) with hostile bytes
//! given valid magics, versions and checksums, as a damaged or forged device
//! could present them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    engine::format::fuzzing::decode_all(data);
});
