//! Helpers shared by the system tests in `tests/*.rs` (each test binary
//! includes this module with `mod support;` and uses the parts it needs).
#![allow(dead_code)]

pub mod guest;
