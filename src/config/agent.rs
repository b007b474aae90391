//! `[agent]`: the root daemon that makes the host follow the store.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    poll_interval_ms: Option<Spanned<i64>>,
    end_sessions: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// How often the agent asks the store whether it changed when no write woke it
    /// (`poll_interval_ms`): the bound on its delay should a change notice be missed.
    pub poll_interval: Duration,
    /// Whether revoking a user or a key ends its running sessions.
    pub end_sessions: bool,
}

impl Default for AgentConfig {
    fn default() -> AgentConfig {
        AgentConfig { poll_interval: Duration::from_millis(1000), end_sessions: true }
    }
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, a: &mut AgentConfig) -> Result<(), ConfigError> {
    if let Some(ms) = at.int(raw.poll_interval_ms, "agent.poll_interval_ms", 50..=60_000)? {
        a.poll_interval = Duration::from_millis(ms);
    }
    if let Some(b) = raw.end_sessions {
        a.end_sessions = b;
    }
    Ok(())
}
