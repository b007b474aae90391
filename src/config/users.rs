//! `[users]`: names, policies, data folders, and the accounts Gatehouse serves.

use super::located::{ConfigError, Located};
use super::shell::DEFAULT_SHELL;
use crate::domain::Scope;
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

pub const DEFAULT_NAME_PATTERN: &str = "^[a-z_][a-z0-9_-]{0,31}$";
/// The highest uid `users.uid_max` may name (the largest uid every tool handles signed).
pub const MAX_UID: u32 = i32::MAX as u32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    name_pattern: Option<Spanned<String>>,
    default_policy: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    data_mode: Option<Spanned<String>>,
    skeleton: Option<Spanned<String>>,
    quota: Option<Spanned<String>>,
    uid_min: Option<Spanned<i64>>,
    uid_max: Option<Spanned<i64>>,
    shell: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

/// The user-name rule: the default one is checked without compiling a regex, since the
/// key command runs it on every login.
#[derive(Debug, Clone)]
pub enum NamePattern {
    /// [`DEFAULT_NAME_PATTERN`].
    Default,
    Custom(regex_lite::Regex),
}

/// `^[a-z_][a-z0-9_-]{0,31}$`, by hand.
pub(crate) fn is_default_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z' | b'_'))
        && bytes.len() <= 32
        && bytes[1..].iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

#[derive(Debug, Clone)]
pub struct UsersConfig {
    pub name_pattern: NamePattern,
    pub name_pattern_text: String,
    pub default_policy: Scope,
    /// `%u` stands for the user name.
    pub data_dir: String,
    /// Mode of a newly created data folder.
    pub data_mode: u32,
    /// Files copied into a newly created data folder.
    pub skeleton: Option<PathBuf>,
    /// Block quota for a data folder, as `setquota` takes it (e.g. `50G`).
    pub quota: Option<String>,
    /// The uids Gatehouse serves and `gatehouse provision` creates and changes.
    pub uid_min: u32,
    pub uid_max: u32,
    /// Login shell of provisioned accounts without shell policy.
    pub shell: PathBuf,
    /// The group of managed users: sshd's drop-in matches it, and it may read the store.
    pub group: String,
}

impl Default for UsersConfig {
    fn default() -> UsersConfig {
        UsersConfig {
            name_pattern: NamePattern::Default,
            name_pattern_text: DEFAULT_NAME_PATTERN.to_string(),
            default_policy: Scope::Shell,
            data_dir: "/data/%u".to_string(),
            data_mode: 0o750,
            skeleton: None,
            quota: None,
            uid_min: 20_000,
            uid_max: 29_999,
            shell: PathBuf::from(DEFAULT_SHELL),
            group: "gatehouse-users".to_string(),
        }
    }
}

impl UsersConfig {
    /// The uids the store gives new users: `uid_min..=uid_max` (uid_min is at least 1000).
    pub fn uid_range(&self) -> crate::store::uids::UidRange {
        crate::store::uids::UidRange { min: self.uid_min, max: self.uid_max }
    }

    /// Whether provisioning and the agent may create, lock and end the sessions of the
    /// account with `uid`: inside `uid_min..=uid_max`, and never root.
    pub fn manages_uid(&self, uid: u32) -> bool {
        uid != 0 && (self.uid_min..=self.uid_max).contains(&uid)
    }

    /// Whether `name` is acceptable as a user name.
    pub fn valid_name(&self, name: &str) -> bool {
        name.len() <= 256
            && match &self.name_pattern {
                NamePattern::Default => is_default_name(name),
                NamePattern::Custom(re) => re.is_match(name),
            }
    }

    /// The data folder of `user` (a name already checked by [`UsersConfig::valid_name`]).
    pub fn data_dir_of(&self, user: &str) -> PathBuf {
        PathBuf::from(self.data_dir.replace("%u", user))
    }
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, u: &mut UsersConfig) -> Result<(), ConfigError> {
    if let Some(p) = raw.name_pattern {
        let text = p.get_ref();
        if !text.starts_with('^') || !text.ends_with('$') {
            return at.error(&p.span(), "users.name_pattern", "must be anchored with ^ and $");
        }
        match regex_lite::Regex::new(text) {
            Ok(re) => {
                u.name_pattern =
                    if text == DEFAULT_NAME_PATTERN { NamePattern::Default } else { NamePattern::Custom(re) };
                u.name_pattern_text = p.into_inner();
            }
            Err(e) => {
                let first = e.to_string();
                let first = first.lines().last().unwrap_or("invalid regular expression");
                return at.error(&p.span(), "users.name_pattern", first.trim());
            }
        }
    }
    if let Some(p) = raw.data_dir {
        let text = p.get_ref();
        if !text.starts_with('/') || !text.contains("%u") || text.split('/').any(|c| c == "..") {
            return at.error(&p.span(), "users.data_dir", "must be an absolute path containing %u");
        }
        u.data_dir = p.into_inner();
    }
    if let Some(m) = raw.data_mode {
        match u32::from_str_radix(m.get_ref(), 8) {
            Ok(mode) if mode <= 0o777 && mode & 0o700 == 0o700 && mode & 0o002 == 0 => u.data_mode = mode,
            _ => {
                return at.error(
                    &m.span(),
                    "users.data_mode",
                    "must be octal like \"0750\", owner rwx, not world-writable",
                )
            }
        }
    }
    if let Some(p) = at.path(raw.skeleton, "users.skeleton")? {
        u.skeleton = Some(p);
    }
    if let Some(q) = raw.quota {
        // Digits, then at most one unit letter: 500000, 50G, 2T.
        let text = q.get_ref();
        let digits = text.trim_end_matches(['K', 'M', 'G', 'T']);
        let ok = !digits.is_empty()
            && text.len() <= 16
            && text.len() - digits.len() <= 1
            && digits.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return at.error(&q.span(), "users.quota", "expected a size like 50G");
        }
        u.quota = Some(q.into_inner());
    }
    if let Some(v) = raw.uid_min {
        match u32::try_from(*v.get_ref()) {
            Ok(n) if n >= 1000 => u.uid_min = n,
            _ => return at.error(&v.span(), "users.uid_min", "must be at least 1000"),
        }
    }
    if let Some(v) = raw.uid_max {
        match u32::try_from(*v.get_ref()) {
            // Directory accounts (Active Directory's idmap) often live far above 65535.
            Ok(n) if n > u.uid_min && n <= MAX_UID => u.uid_max = n,
            _ => return at.error(&v.span(), "users.uid_max", "must be above users.uid_min and at most 2147483647"),
        }
    }
    if u.uid_max <= u.uid_min {
        return at.whole(format!("users.uid_min {} is not below users.uid_max {}", u.uid_min, u.uid_max));
    }
    if let Some(p) = at.path(raw.shell, "users.shell")? {
        u.shell = p;
    }
    if let Some(g) = at.group(raw.group, "users.group")? {
        u.group = g;
    }
    if let Some(p) = raw.default_policy {
        match p.get_ref().parse::<Scope>() {
            Ok(scope) => u.default_policy = scope,
            Err(e) => return at.error(&p.span(), "users.default_policy", e),
        }
    }
    Ok(())
}
