//! `[store]`: where the key store is, and how long its users wait for it.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

pub const DEFAULT_STORE: &str = "/var/lib/gatehouse/store.db";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    path: Option<Spanned<String>>,
    busy_timeout_ms: Option<Spanned<i64>>,
    login_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// How long a writer waits for another writer's lock.
    pub busy_timeout_ms: u32,
    /// How long the login path (key command, forced command, PAM) waits for the store.
    pub login_timeout_ms: u32,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig { path: PathBuf::from(DEFAULT_STORE), busy_timeout_ms: 5000, login_timeout_ms: 1000 }
    }
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, s: &mut StoreConfig) -> Result<(), ConfigError> {
    if let Some(p) = at.path(raw.path, "store.path")? {
        s.path = p;
    }
    if let Some(ms) = at.int(raw.busy_timeout_ms, "store.busy_timeout_ms", 1..=60_000)? {
        s.busy_timeout_ms = ms;
    }
    if let Some(ms) = at.int(raw.login_timeout_ms, "store.login_timeout_ms", 100..=60_000)? {
        s.login_timeout_ms = ms;
    }
    Ok(())
}
