//! `[agent]`: the root daemon that makes the host follow the store.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    poll_interval_ms: Option<Spanned<i64>>,
    end_sessions: Option<bool>,
    accounts: Option<Spanned<String>>,
    userdb_dir: Option<Spanned<String>>,
}

/// How the agent makes accounts (`agent.accounts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountsMode {
    /// systemd user records when nss-systemd serves them, useradd otherwise.
    Auto,
    /// JSON user records in `agent.userdb_dir`, served by nss-systemd.
    Userdb,
    /// useradd and usermod, as `gatehouse provision`.
    Useradd,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// How often the agent asks the store whether it changed when no write woke it
    /// (`poll_interval_ms`): the bound on its delay should a change notice be missed.
    pub poll_interval: Duration,
    /// Whether revoking a user or a key ends its running sessions.
    pub end_sessions: bool,
    pub accounts: AccountsMode,
    /// Where user records go in userdb mode.
    pub userdb_dir: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> AgentConfig {
        AgentConfig {
            poll_interval: Duration::from_millis(1000),
            end_sessions: true,
            accounts: AccountsMode::Auto,
            userdb_dir: PathBuf::from("/run/userdb"),
        }
    }
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, a: &mut AgentConfig) -> Result<(), ConfigError> {
    if let Some(ms) = at.int(raw.poll_interval_ms, "agent.poll_interval_ms", 50..=60_000)? {
        a.poll_interval = Duration::from_millis(ms);
    }
    if let Some(b) = raw.end_sessions {
        a.end_sessions = b;
    }
    if let Some(mode) = raw.accounts {
        a.accounts = match mode.get_ref().as_str() {
            "auto" => AccountsMode::Auto,
            "userdb" => AccountsMode::Userdb,
            "useradd" => AccountsMode::Useradd,
            _ => return at.error(&mode.span(), "agent.accounts", "must be auto, userdb or useradd"),
        };
    }
    if let Some(dir) = at.path(raw.userdb_dir, "agent.userdb_dir")? {
        a.userdb_dir = dir;
    }
    Ok(())
}
