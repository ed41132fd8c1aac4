//! NVMe/TCP target and host (initiator) sides. Depends on no other workspace crate:
//! volumes are reached through the namespace port this crate defines.
#![forbid(unsafe_code)]
