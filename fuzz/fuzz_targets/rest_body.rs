//! Fuzzes the management API: hostile requests through the real router
//! (the first four bytes pick method, route, identifiers and query; the rest
//! is the body) against a service over the in-memory control. No request
//! may panic or answer 500.
#![no_main]

use std::sync::OnceLock;

use mgmt_api::fuzzing::RestFuzzer;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static FUZZER: OnceLock<RestFuzzer> = OnceLock::new();
    FUZZER.get_or_init(RestFuzzer::new).request(data);
});
