//! The operator's tools that need the daemon and the simulator: the top
//! layer, beside `ctl` and `sim` (feature `sim`; cardlinkd is built
//! without it).
//!
//! - [`replay`]: a capture played back into a pseudo-terminal, or through
//!   an in-process daemon for `cardlinkctl replay --check`.

pub mod replay;
