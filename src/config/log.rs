//! `[log]`: where log lines go.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

pub const DEFAULT_LOG_SOCKET: &str = "/dev/log";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    socket: Option<Spanned<String>>,
    stderr: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub socket: PathBuf,
    /// Also write each line to standard error.
    pub stderr: bool,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig { socket: PathBuf::from(DEFAULT_LOG_SOCKET), stderr: false }
    }
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, l: &mut LogConfig) -> Result<(), ConfigError> {
    if let Some(p) = at.path(raw.socket, "log.socket")? {
        l.socket = p;
    }
    if let Some(e) = raw.stderr {
        l.stderr = e;
    }
    Ok(())
}
