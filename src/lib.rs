//! Gatehouse: an SSH front door for multi-user research servers.
//!
//! The binaries in `src/bin/` are thin shims over this library: they parse arguments,
//! call in here and map errors to exit codes. The parts, by concern (docs/HACKING.md has
//! the whole map):
//!
//! - [`keycmd`]: the key command sshd runs (`gatehouse-keys`): authorized_keys lines.
//! - [`forced`]: the forced command (`gatehouse-shell`): what a session may run.
//! - [`session`]: the root side of a login (PAM module, `gatehouse-session`).
//! - [`admin`]: the admin CLI's operations, shared with the web service.
//! - [`agent`]: the root daemon that makes the host follow the store (`gatehouse-agent`).
//! - [`domain`]: users, keys, grants, scopes: the types every part speaks.
//! - [`store`]: the SQLite files: the key store, the state file, the web secrets.
//! - [`config`]: the configuration file, gatehouse.toml.
#![forbid(unsafe_code)]

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "admin")]
pub mod agent;
pub mod config;
pub mod domain;
pub mod exit;
pub mod forced;
pub mod keycmd;
pub mod keys;
pub mod log;
pub mod names;
pub mod session;
pub mod store;
pub mod time;
pub mod trust;
pub mod watchdog;
