//! The directory side of Gatehouse: users, keys and groups synced from LDAP or Active
//! Directory into the key store, and password checks by binding as the user.
//!
//! The login path never calls the directory: `gatehouse-keys` serves the synced store,
//! trusting it for `ldap.staleness_max` after the last successful sync.
#![forbid(unsafe_code)]

pub mod client;
pub mod follow;
pub mod password;
pub mod sync;

pub use client::{Directory, DirectoryError};

/// The store the sync writes: PostgreSQL when `[source]` is set (the nodes mirror it),
/// else this host's SQLite store.
pub fn open_store(
    config: &gatehouse::config::Config,
) -> Result<Box<dyn gatehouse::store::AdminStore>, gatehouse::store::StoreError> {
    Ok(match &config.shared {
        Some(shared) => Box::new(gatehouse::store::postgres::PgStore::open(shared, config.users.uid_range())?),
        None => Box::new(gatehouse::store::sqlite::SqliteStore::open_writer(
            &config.store.path,
            config.store.busy_timeout_ms,
            config.users.uid_range(),
        )?),
    })
}
