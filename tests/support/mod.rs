//! Helpers shared by the system tests in `tests/*.rs` (each test binary
//! includes this module with `mod support;` and uses the parts it needs).
#![allow(dead_code)]

pub mod guest;
// Also `common::ports` in binaries that include both trees: a stateless
// helper, so two copies of it are harmless.
#[allow(clippy::duplicate_mod)]
#[path = "../common/ports.rs"]
pub mod ports;
