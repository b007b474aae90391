//! Exit statuses, one set for every program, as their manual pages document them. A
//! program uses the ones that apply to it; none gives a status another meaning.

/// Success (and `--help`, `--version`).
pub const OK: u8 = 0;
/// Refused: a session, a change, a key, a check that failed.
pub const REFUSED: u8 = 1;
/// Usage error: unknown option, missing argument.
pub const USAGE: u8 = 2;
/// The configuration file could not be read, is not trusted, or is invalid.
pub const CONFIG: u8 = 3;
/// The store could not be opened, read or written (or did not answer in time).
pub const STORE: u8 = 4;
/// What was to run could not be started: the served program or shell (gatehouse-shell),
/// the listener (gatehoused).
pub const START: u8 = 5;
