//! `[state]`: the root side's state file, and `[lockout]`: what it counts.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) path: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLockout {
    threshold: Option<Spanned<i64>>,
    window: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    sessions_per_minute: Option<Spanned<i64>>,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Logins, failures, lockouts, the last use of keys.
    pub path: PathBuf,
    /// A group that may read it (0640); none: root alone (0600).
    pub group: Option<String>,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig { path: PathBuf::from("/var/lib/gatehouse/state.db"), group: None }
    }
}

impl StateConfig {
    /// The gid of `state.group`, if set and known.
    pub fn gid(&self) -> Option<u32> {
        let name = self.group.as_deref()?;
        nix::unistd::Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw())
    }
}

#[derive(Debug, Clone)]
pub struct LockoutConfig {
    pub threshold: u32,
    /// The time in which `threshold` failures lock the user out.
    pub window: Duration,
    /// How long a lockout lasts.
    pub duration: Duration,
    pub sessions_per_minute: u32,
}

impl Default for LockoutConfig {
    fn default() -> LockoutConfig {
        LockoutConfig {
            threshold: 10,
            window: Duration::from_secs(600),
            duration: Duration::from_secs(900),
            sessions_per_minute: 600,
        }
    }
}

pub(super) fn parse_state(at: &Located<'_>, raw: RawState, s: &mut StateConfig) -> Result<(), ConfigError> {
    if let Some(p) = at.path(raw.path, "state.path")? {
        s.path = p;
    }
    if let Some(g) = at.group(raw.group, "state.group")? {
        s.group = Some(g);
    }
    Ok(())
}

pub(super) fn parse_lockout(at: &Located<'_>, raw: RawLockout, l: &mut LockoutConfig) -> Result<(), ConfigError> {
    if let Some(n) = at.int(raw.threshold, "lockout.threshold", 1..=10_000)? {
        l.threshold = n;
    }
    if let Some(d) = at.duration(raw.window, "lockout.window")? {
        l.window = d;
    }
    if let Some(d) = at.duration(raw.duration, "lockout.duration")? {
        l.duration = d;
    }
    if let Some(n) = at.int(raw.sessions_per_minute, "lockout.sessions_per_minute", 1..=1_000_000)? {
        l.sessions_per_minute = n;
    }
    Ok(())
}
