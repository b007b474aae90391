//! Gatehouse: an SSH front door for multi-user research servers.
//!
//! The binaries in `src/bin/` are thin shims over this library: they parse arguments,
//! call in here and map errors to exit codes.
#![forbid(unsafe_code)]

pub mod admin;
pub mod authorized;
pub mod command;
pub mod config;
pub mod confine;
pub mod datadir;
pub mod exit;
pub mod keys;
pub mod log;
pub mod lookup;
pub mod names;
pub mod policy;
pub mod provision;
pub mod repo;
pub mod rsync;
pub mod secrets;
pub mod session;
pub mod shell;
pub mod state;
pub mod store;
pub mod time;
pub mod trust;
pub mod watchdog;
