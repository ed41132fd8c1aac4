//! Fuzzes NVMe/TCP PDU decoding and the connection state machine behind it.
//!
//! The first byte picks the negotiated digests; the rest is decoded as a stream
//! of PDUs, then fed to a fresh target connection after a valid ICReq, so
//! capsule, Connect-data and H2CData handling see hostile input too.
#![no_main]

use nvmf_target::fuzzing::{decode_stream, drive_connection};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    decode_stream(selector, rest);
    drive_connection(selector, rest);
});
