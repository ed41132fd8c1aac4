//! The management REST API: the domain service and its HTTP dialects. Reaches
//! storage only through the control port this crate defines.
#![forbid(unsafe_code)]
