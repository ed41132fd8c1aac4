//! Fuzzes a whole NVMe/TCP session past Connect: a valid ICReq, admin and
//! I/O queue Connects and the controller enabled, then a script of
//! well-formed PDUs with hostile fields (admin and I/O commands, H2CData
//! after R2Ts), raw bytes, clock steps and reconnects, read from the input.
//! The first byte picks digests, data alignment and ANA settings.
#![no_main]

use nvmf_target::fuzzing::drive_session;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, script)) = data.split_first() else {
        return;
    };
    drive_session(selector, script);
});
