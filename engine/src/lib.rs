//! The log-structured block engine.
