//! Fuzzes NVMe/TCP PDU decoding and the connection state machine behind it.
//!
//! The first byte picks the negotiated digests; the rest is decoded as a stream
//! of PDUs, then fed to a fresh target connection after a valid ICReq, so
//! capsule, Connect-data and H2CData handling see hostile input too (with ANA
//! reporting and an inaccessible namespace as the selector picks). The same
//! bytes go to the host side's ANA log page decoder.
#![no_main]

use nvmf_target::fuzzing::{decode_ana_log, decode_stream, drive_connection};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    decode_stream(selector, rest);
    drive_connection(selector, rest);
    decode_ana_log(rest);
});
