//! The directory side of Gatehouse: users, keys and groups synced from LDAP or Active
//! Directory into the key store, and password checks by binding as the user.
//!
//! The login path never calls the directory: `gatehouse-keys` serves the synced store,
//! trusting it for `ldap.staleness_max` after the last successful sync.
#![forbid(unsafe_code)]

pub mod client;
pub mod password;
pub mod sync;

pub use client::{Directory, DirectoryError};
