//! `[ldap]`: where users, keys and passwords come from, when a directory is the source.

use super::located::{ConfigError, Located};
use crate::time;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// The section as written. A value keeps its place in the file (`Spanned`) where a check
/// below may refuse it; the bind and base DNs are taken as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    url: Spanned<String>,
    starttls: Option<bool>,
    insecure: Option<bool>,
    ca_file: Option<Spanned<String>>,
    bind_dn: Option<String>,
    bind_password_file: Option<Spanned<String>>,
    base_dn: String,
    user_filter: Option<Spanned<String>>,
    user_attribute: Option<Spanned<String>>,
    key_attribute: Option<Spanned<String>>,
    group_filter: Option<Spanned<String>>,
    group_member_attribute: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    staleness_max: Option<Spanned<String>>,
    allow_web_keys: Option<bool>,
    max_disable_percent: Option<Spanned<i64>>,
    program: Option<Spanned<String>>,
    follow: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
}

/// How `gatehouse-ldap follow` learns of directory changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowMode {
    /// Content sync where the directory offers it, else the poll.
    Auto,
    /// RFC 4533 content sync (refreshAndPersist) only; a directory without it is an error.
    ContentSync,
    /// Incremental reads every `ldap.poll_interval` (Active Directory, or no syncprov).
    Poll,
}

/// The `[ldap]` section: where users, keys and passwords come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapConfig {
    pub url: String,
    /// Upgrade `ldap://` with StartTLS (default), so nothing crosses the network in clear.
    pub starttls: bool,
    /// Allow plain `ldap://` to a host other than loopback, and skip certificate checks.
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: String,
    pub user_filter: String,
    pub user_attribute: String,
    pub key_attribute: String,
    pub group_filter: String,
    pub group_member_attribute: String,
    /// How long one directory request may take.
    pub timeout: Duration,
    /// How long after the last successful sync directory users are still served.
    pub staleness_max: Duration,
    pub allow_web_keys: bool,
    /// A full sync that would disable more than this share of the enabled directory users
    /// is refused: a directory that answers with part of itself must not lock out the rest.
    pub max_disable_percent: u32,
    /// `gatehouse-ldap`, which pam_gatehouse runs to check a directory password.
    pub program: PathBuf,
    /// How `gatehouse-ldap follow` learns of changes.
    pub follow: FollowMode,
    /// How often `follow` reads the directory's changes when it polls, and how often it
    /// reads them anyway when content sync is on (recording a success each time).
    pub poll_interval: Duration,
}

fn ldap_attribute_ok(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(super) fn parse(at: &Located<'_>, raw: Raw) -> Result<LdapConfig, ConfigError> {
    let url = raw.url.get_ref().clone();
    let scheme_ok = url.starts_with("ldaps://") || url.starts_with("ldap://");
    if !scheme_ok || url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return at.error(&raw.url.span(), "ldap.url", "must be an ldaps:// or ldap:// URL");
    }
    let insecure = raw.insecure.unwrap_or(false);
    let starttls = raw.starttls.unwrap_or(true);
    // host[:port] after the scheme; no user part is allowed (it would hide the real host).
    let authority = url.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("");
    if authority.contains('@') {
        return at.error(&raw.url.span(), "ldap.url", "must not hold a user name; use ldap.bind_dn");
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if url.starts_with("ldap://") && !starttls && !insecure && !loopback {
        return at.error(
            &raw.url.span(),
            "ldap.url",
            "plain ldap:// without StartTLS is allowed only on loopback or with ldap.insecure = true",
        );
    }
    let text =
        |v: Option<Spanned<String>>, default: &str| v.map(Spanned::into_inner).unwrap_or_else(|| default.to_string());
    let path = |v: Option<Spanned<String>>, key: &str| at.path(v, key);
    let filter_ok = |f: &Spanned<String>| f.get_ref().starts_with('(') && f.get_ref().ends_with(')');
    for (f, key) in [(&raw.user_filter, "ldap.user_filter"), (&raw.group_filter, "ldap.group_filter")] {
        if let Some(f) = f {
            if !filter_ok(f) {
                return at.error(&f.span(), key, "must be an LDAP filter in parentheses");
            }
        }
    }
    for (a, key) in [
        (&raw.user_attribute, "ldap.user_attribute"),
        (&raw.key_attribute, "ldap.key_attribute"),
        (&raw.group_member_attribute, "ldap.group_member_attribute"),
    ] {
        if let Some(a) = a {
            if !ldap_attribute_ok(a.get_ref()) {
                return at.error(&a.span(), key, "must be an attribute name");
            }
        }
    }
    let timeout = match raw.timeout {
        Some(t) => {
            let text = t.get_ref();
            let parsed = match text.strip_suffix("ms") {
                Some(ms) => ms.parse::<u64>().ok().map(Duration::from_millis),
                None => time::parse_duration(text).ok(),
            };
            match parsed {
                Some(d) if (Duration::from_millis(100)..=Duration::from_secs(60)).contains(&d) => d,
                _ => return at.error(&t.span(), "ldap.timeout", "must be between 100ms and 60s, e.g. 2s or 500ms"),
            }
        }
        None => Duration::from_secs(2),
    };
    if raw.bind_dn.is_some() != raw.bind_password_file.is_some() {
        return at.whole("ldap.bind_dn and ldap.bind_password_file go together (neither: anonymous searches)");
    }
    Ok(LdapConfig {
        url,
        starttls,
        insecure,
        ca_file: path(raw.ca_file, "ldap.ca_file")?,
        bind_dn: raw.bind_dn,
        bind_password_file: path(raw.bind_password_file, "ldap.bind_password_file")?,
        base_dn: raw.base_dn,
        user_filter: text(raw.user_filter, "(objectClass=posixAccount)"),
        user_attribute: text(raw.user_attribute, "uid"),
        key_attribute: text(raw.key_attribute, "sshPublicKey"),
        group_filter: text(raw.group_filter, "(objectClass=posixGroup)"),
        group_member_attribute: text(raw.group_member_attribute, "memberUid"),
        timeout,
        staleness_max: at.duration(raw.staleness_max, "ldap.staleness_max")?.unwrap_or(Duration::from_secs(24 * 3600)),
        allow_web_keys: raw.allow_web_keys.unwrap_or(false),
        program: match path(raw.program, "ldap.program")? {
            Some(p) => p,
            None => PathBuf::from("/usr/bin/gatehouse-ldap"),
        },
        max_disable_percent: at.int(raw.max_disable_percent, "ldap.max_disable_percent", 0..=100)?.unwrap_or(10),
        follow: match raw.follow {
            None => FollowMode::Auto,
            Some(f) => match f.get_ref().as_str() {
                "auto" => FollowMode::Auto,
                "content-sync" => FollowMode::ContentSync,
                "poll" => FollowMode::Poll,
                _ => return at.error(&f.span(), "ldap.follow", "must be auto, content-sync or poll"),
            },
        },
        poll_interval: at.duration(raw.poll_interval, "ldap.poll_interval")?.unwrap_or(Duration::from_secs(30)),
    })
}

#[cfg(test)]
mod tests {
    use super::FollowMode;
    use crate::config::Config;
    use std::time::Duration;

    fn parse(extra: &str) -> Result<Config, String> {
        let text = format!("[ldap]\nurl = \"ldap://127.0.0.1\"\nbase_dn = \"dc=example,dc=org\"\n{extra}");
        Config::parse("t.toml", &text).map_err(|e| e.to_string())
    }

    #[test]
    fn follow_mode_and_poll_interval() {
        let c = parse("").unwrap().ldap.unwrap();
        assert_eq!((c.follow, c.poll_interval), (FollowMode::Auto, Duration::from_secs(30)));
        let c = parse("follow = \"content-sync\"\npoll_interval = \"1s\"\n").unwrap().ldap.unwrap();
        assert_eq!((c.follow, c.poll_interval), (FollowMode::ContentSync, Duration::from_secs(1)));
        assert_eq!(parse("follow = \"poll\"\n").unwrap().ldap.unwrap().follow, FollowMode::Poll);
        let e = parse("follow = \"syncrepl\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:4: ldap.follow:"), "{e}");
        let e = parse("poll_interval = \"0s\"\n").unwrap_err();
        assert!(e.contains("ldap.poll_interval"), "{e}");
    }
}
