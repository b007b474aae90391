//! authorized_keys lines, built from stored fields only.
//!
//! Every line starts with `restrict`; the options after it are ones we compose from typed
//! values checked here once more, so no stored text (comment, name) ever reaches an option.

use crate::config::{is_plain_path, Config};
use crate::domain::{Scope, UserState};
use crate::keys::is_fingerprint;
use crate::store::{Key, User};
use crate::time::{Civil, Timestamp};
use std::fmt::Write as _;

/// Most patterns one key may carry in `from=`.
pub const MAX_FROM_PATTERNS: usize = 32;

/// Checks a `from=` pattern list: comma-separated host names, addresses, CIDR blocks and
/// wildcards, each optionally negated with `!`.
pub fn valid_from_patterns(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("empty pattern list".to_string());
    }
    let patterns: Vec<&str> = text.split(',').collect();
    if patterns.len() > MAX_FROM_PATTERNS {
        return Err(format!("more than {MAX_FROM_PATTERNS} patterns"));
    }
    for p in patterns {
        let body = p.strip_prefix('!').unwrap_or(p);
        if body.is_empty()
            || body.len() > 255
            || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b".:*?/_-".contains(&b))
        {
            return Err(format!("`{}` is not a host, address, CIDR block or wildcard pattern", p.escape_debug()));
        }
    }
    Ok(())
}

/// Why a stored key yields no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UserDisabled,
    Expired,
    ScopeOutsidePolicy,
    BadStoredField,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UserDisabled => "user-disabled",
            Refusal::Expired => "expired",
            Refusal::ScopeOutsidePolicy => "scope-outside-policy",
            Refusal::BadStoredField => "bad-stored-field",
        }
    }
}

/// What goes into every line besides the key: where the forced command lives.
pub struct LineContext<'a> {
    pub shell_path: &'a str,
    /// Passed to the forced command when not the default, so both read the same file.
    pub config_path: Option<&'a str>,
    pub permit_open: &'a [String],
}

impl<'a> LineContext<'a> {
    pub fn from_config(config: &'a Config) -> Result<LineContext<'a>, String> {
        let config_path = match &config.source {
            Some(p) if p.as_os_str() != crate::config::DEFAULT_PATH => {
                let text = p.to_str().filter(|t| is_plain_path(t)).ok_or_else(|| {
                    format!(
                        "config path {} cannot be passed to the forced command (letters, digits and / . _ + - only)",
                        p.display()
                    )
                })?;
                Some(text)
            }
            _ => None,
        };
        Ok(LineContext { shell_path: &config.shell.path, config_path, permit_open: &config.forwarding.permit_open })
    }
}

/// The scope a key may use now, or why it may not be used.
pub fn usable_scope(user: &User, key: &Key, now: Timestamp) -> Result<Scope, Refusal> {
    if user.state != UserState::Enabled {
        return Err(Refusal::UserDisabled);
    }
    if key.expires.is_some_and(|t| t <= now) {
        return Err(Refusal::Expired);
    }
    user.policy.meet(key.scope).ok_or(Refusal::ScopeOutsidePolicy)
}

/// One authorized_keys line for `key`, or why there is none.
pub fn authorized_line(
    ctx: &LineContext<'_>,
    user: &User,
    key: &Key,
    now: Timestamp,
) -> Result<(Scope, String), Refusal> {
    let scope = usable_scope(user, key, now)?;
    let algorithm_ok = key.algorithm.bytes().all(|b| b.is_ascii_alphanumeric() || b"-@.".contains(&b));
    let blob_ok = key.blob.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if !algorithm_ok || !blob_ok || !is_fingerprint(&key.fingerprint) || !is_plain_path(ctx.shell_path) {
        return Err(Refusal::BadStoredField);
    }
    if key.from.as_deref().is_some_and(|f| valid_from_patterns(f).is_err()) {
        return Err(Refusal::BadStoredField);
    }

    let mut line = String::with_capacity(256 + key.blob.len());
    // `exec`: sshd hands the command to the user's shell as `-c`, and dash (Debian's
    // /bin/sh) would otherwise fork once more and wait for it.
    line.push_str("restrict,command=\"exec ");
    line.push_str(ctx.shell_path);
    if let Some(cfg) = ctx.config_path {
        line.push_str(" --config ");
        line.push_str(cfg);
    }
    line.push_str(" --key ");
    line.push_str(&key.fingerprint);
    line.push('"');
    if scope == Scope::Shell {
        line.push_str(",pty");
        if user.port_forwarding && !ctx.permit_open.is_empty() {
            line.push_str(",port-forwarding");
            for target in ctx.permit_open {
                let _ = write!(line, ",permitopen=\"{target}\"");
            }
        }
    }
    if let Some(from) = &key.from {
        let _ = write!(line, ",from=\"{from}\"");
    }
    if let Some(expires) = key.expires {
        let _ = write!(line, ",expiry-time=\"{}\"", Civil::from_timestamp(expires).ssh_timespec());
    }
    line.push(' ');
    line.push_str(&key.algorithm);
    line.push(' ');
    line.push_str(&key.blob);
    let comment = crate::keys::shown(&key.comment);
    if !comment.is_empty() {
        line.push(' ');
        line.push_str(&comment);
    }
    Ok((scope, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn user(policy: Scope, fwd: bool) -> User {
        User {
            name: "alice".into(),
            state: UserState::Enabled,
            policy,
            port_forwarding: fwd,
            created: at(0),
            source: "cli".into(),
            uid: None,
        }
    }

    fn key(scope: Scope) -> Key {
        Key {
            user: "alice".into(),
            algorithm: "ssh-ed25519".into(),
            blob: "AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti".into(),
            fingerprint: "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s".into(),
            bits: 256,
            comment: "laptop".into(),
            scope,
            from: None,
            expires: None,
            created: at(0),
            source: "cli".into(),
        }
    }

    fn ctx() -> LineContext<'static> {
        static OPEN: [String; 0] = [];
        LineContext { shell_path: "/usr/bin/gatehouse-shell", config_path: None, permit_open: &OPEN }
    }

    #[test]
    fn shell_key_line() {
        let (scope, line) = authorized_line(&ctx(), &user(Scope::Shell, false), &key(Scope::Shell), at(0)).unwrap();
        assert_eq!(scope, Scope::Shell);
        assert_eq!(
            line,
            "restrict,command=\"exec /usr/bin/gatehouse-shell --key SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\",pty \
             ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti laptop"
        );
    }

    #[test]
    fn options_from_typed_fields() {
        let open = vec!["localhost:*".to_string()];
        let c = LineContext { shell_path: "/s", config_path: Some("/etc/g.toml"), permit_open: &open };
        let mut k = key(Scope::Shell);
        k.from = Some("10.0.0.0/8,!10.1.2.3,*.example.org".into());
        k.expires = Some(at(1_700_000_000));
        let (_, line) = authorized_line(&c, &user(Scope::Shell, true), &k, at(0)).unwrap();
        assert!(line.starts_with(
            "restrict,command=\"exec /s --config /etc/g.toml --key SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\",pty,\
             port-forwarding,permitopen=\"localhost:*\",from=\"10.0.0.0/8,!10.1.2.3,*.example.org\",\
             expiry-time=\"20231114221320Z\" ssh-ed25519 "
        ), "{line}");
        // A git key never gets a pty or forwarding, whatever the user may do.
        let (_, line) = authorized_line(&c, &user(Scope::Shell, true), &key(Scope::Git), at(0)).unwrap();
        assert!(!line.contains("pty") && !line.contains("forwarding"), "{line}");
    }

    #[test]
    fn refusals() {
        let mut u = user(Scope::Shell, false);
        let mut k = key(Scope::Shell);
        k.expires = Some(at(100));
        assert_eq!(authorized_line(&ctx(), &u, &k, at(100)).unwrap_err(), Refusal::Expired);
        assert!(authorized_line(&ctx(), &u, &k, at(99)).is_ok());
        u.state = UserState::Disabled;
        assert_eq!(authorized_line(&ctx(), &u, &key(Scope::Shell), at(0)).unwrap_err(), Refusal::UserDisabled);
        let files_user = user(Scope::Files, false);
        assert_eq!(
            authorized_line(&ctx(), &files_user, &key(Scope::Git), at(0)).unwrap_err(),
            Refusal::ScopeOutsidePolicy
        );
        // A narrowed policy narrows the key.
        assert_eq!(authorized_line(&ctx(), &files_user, &key(Scope::Shell), at(0)).unwrap().0, Scope::Files);
    }

    #[test]
    fn stored_text_never_reaches_options() {
        let u = user(Scope::Shell, false);
        let mut k = key(Scope::Shell);
        k.from = Some("1.2.3.4\",command=\"sh".into());
        assert_eq!(authorized_line(&ctx(), &u, &k, at(0)).unwrap_err(), Refusal::BadStoredField);
        let mut k = key(Scope::Shell);
        k.algorithm = "command=\"x\" ssh-ed25519".into();
        assert_eq!(authorized_line(&ctx(), &u, &k, at(0)).unwrap_err(), Refusal::BadStoredField);
        let mut k = key(Scope::Shell);
        k.comment = "x\nssh-ed25519 AAAA evil".into();
        let (_, line) = authorized_line(&ctx(), &u, &k, at(0)).unwrap();
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn from_patterns() {
        assert!(valid_from_patterns("192.0.2.0/24,!192.0.2.7,host-*.lab.example").is_ok());
        assert!(valid_from_patterns("::1,fe80::/10").is_ok());
        for bad in ["", ",", "a b", "a\"", "!", "a,,b", "x\n"] {
            assert!(valid_from_patterns(bad).is_err(), "{bad:?}");
        }
    }
}
