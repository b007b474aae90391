//! `[log]`: where log lines go.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

pub const DEFAULT_LOG_SOCKET: &str = "/dev/log";
pub const DEFAULT_JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    target: Option<Spanned<String>>,
    socket: Option<Spanned<String>>,
    journal_socket: Option<Spanned<String>>,
    stderr: Option<bool>,
}

/// Where log lines go (`log.target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The syslog socket if it answers, else the journal's, else standard error.
    Auto,
    Syslog,
    /// The journal's native socket: the pairs become fields of their own.
    Journal,
    Stderr,
}

impl LogTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            LogTarget::Auto => "auto",
            LogTarget::Syslog => "syslog",
            LogTarget::Journal => "journal",
            LogTarget::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub target: LogTarget,
    pub socket: PathBuf,
    pub journal_socket: PathBuf,
    /// Also write each line to standard error.
    pub stderr: bool,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            target: LogTarget::Auto,
            socket: PathBuf::from(DEFAULT_LOG_SOCKET),
            journal_socket: PathBuf::from(DEFAULT_JOURNAL_SOCKET),
            stderr: false,
        }
    }
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, l: &mut LogConfig) -> Result<(), ConfigError> {
    if let Some(target) = raw.target {
        l.target = match target.get_ref().as_str() {
            "auto" => LogTarget::Auto,
            "syslog" => LogTarget::Syslog,
            "journal" => LogTarget::Journal,
            "stderr" => LogTarget::Stderr,
            _ => return at.error(&target.span(), "log.target", "must be auto, syslog, journal or stderr"),
        };
    }
    if let Some(p) = at.path(raw.socket, "log.socket")? {
        l.socket = p;
    }
    if let Some(p) = at.path(raw.journal_socket, "log.journal_socket")? {
        l.journal_socket = p;
    }
    if let Some(e) = raw.stderr {
        l.stderr = e;
    }
    Ok(())
}
