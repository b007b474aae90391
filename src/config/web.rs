//! `[web]`: gatehoused.

use super::located::{ConfigError, Located};
use crate::time;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    listen: Option<Spanned<String>>,
    pub(super) secrets: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    public_keys: Option<bool>,
    cookie_secure: Option<bool>,
    session_idle: Option<Spanned<String>>,
    session_max: Option<Spanned<String>>,
    invite_lifetime: Option<Spanned<String>>,
    max_body: Option<Spanned<i64>>,
    signin_per_minute: Option<Spanned<i64>>,
    changes_per_minute: Option<Spanned<i64>>,
    proxy_user_header: Option<Spanned<String>>,
    proxy_secret_file: Option<Spanned<String>>,
    trusted_proxies: Option<Spanned<Vec<String>>>,
    header_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_peer: Option<Spanned<i64>>,
}

/// Where the web service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// The `[web]` section: gatehoused.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: Listen,
    pub secrets: PathBuf,
    pub public_url: String,
    pub public_keys: bool,
    pub cookie_secure: bool,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub invite_lifetime: Duration,
    pub max_body: usize,
    pub signin_per_minute: u32,
    pub changes_per_minute: u32,
    /// Trusted reverse-proxy sign-in: the header naming the user, the file holding the
    /// shared secret the proxy sends in `X-Gatehouse-Proxy-Secret`, and the addresses it
    /// connects from.
    pub proxy_user_header: Option<String>,
    pub proxy_secret_file: Option<PathBuf>,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Connection limits: the time to send a request's head, to send the next one on a
    /// kept-alive connection, and to be answered in all; the connections open at once in
    /// all, and from one address (other than a trusted proxy).
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig {
            listen: Listen::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 8022))),
            secrets: PathBuf::from("/var/lib/gatehouse/web.db"),
            public_url: "http://127.0.0.1:8022".to_string(),
            public_keys: true,
            cookie_secure: true,
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            invite_lifetime: Duration::from_secs(48 * 3600),
            max_body: 64 * 1024,
            signin_per_minute: 10,
            changes_per_minute: 30,
            proxy_user_header: None,
            proxy_secret_file: None,
            trusted_proxies: Vec::new(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_connections_per_peer: 32,
        }
    }
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, w: &mut WebConfig) -> Result<(), ConfigError> {
    if let Some(l) = raw.listen {
        let text = l.get_ref();
        w.listen = if text.starts_with('/') {
            Listen::Unix(PathBuf::from(text))
        } else {
            match text.parse() {
                Ok(addr) => Listen::Tcp(addr),
                Err(_) => return at.error(&l.span(), "web.listen", "expected ADDRESS:PORT or an absolute socket path"),
            }
        };
    }
    if let Some(p) = at.path(raw.secrets, "web.secrets")? {
        w.secrets = p;
    }
    if let Some(u) = raw.public_url {
        let text = u.get_ref().trim_end_matches('/');
        let ok = (text.starts_with("https://") || text.starts_with("http://"))
            && !text.contains(|c: char| c.is_whitespace() || c.is_control() || "\"'<>".contains(c));
        if !ok {
            return at.error(&u.span(), "web.public_url", "must be an http:// or https:// URL");
        }
        w.public_url = text.to_string();
    }
    if let Some(b) = raw.public_keys {
        w.public_keys = b;
    }
    if let Some(b) = raw.cookie_secure {
        w.cookie_secure = b;
    }
    for (value, key, slot) in [
        (raw.session_idle, "web.session_idle", &mut w.session_idle),
        (raw.session_max, "web.session_max", &mut w.session_max),
        (raw.invite_lifetime, "web.invite_lifetime", &mut w.invite_lifetime),
    ] {
        if let Some(d) = at.duration(value, key)? {
            *slot = d;
        }
    }
    if let Some(b) = raw.max_body {
        match usize::try_from(*b.get_ref()) {
            Ok(n) if (1024..=1_048_576).contains(&n) => w.max_body = n,
            _ => return at.error(&b.span(), "web.max_body", "must be between 1024 and 1048576"),
        }
    }
    for (value, key, slot) in [
        (raw.signin_per_minute, "web.signin_per_minute", &mut w.signin_per_minute),
        (raw.changes_per_minute, "web.changes_per_minute", &mut w.changes_per_minute),
    ] {
        if let Some(v) = value {
            match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=100_000).contains(&n) => *slot = n,
                _ => return at.error(&v.span(), key, "must be between 1 and 100000"),
            }
        }
    }
    if let Some(h) = raw.proxy_user_header {
        let ok = !h.get_ref().is_empty() && h.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return at.error(&h.span(), "web.proxy_user_header", "must be an HTTP header name");
        }
        w.proxy_user_header = Some(h.into_inner());
    }
    if let Some(p) = at.path(raw.proxy_secret_file, "web.proxy_secret_file")? {
        w.proxy_secret_file = Some(p);
    }
    if let Some(list) = raw.trusted_proxies {
        let span = list.span();
        let mut addrs = Vec::new();
        for a in list.into_inner() {
            match a.parse() {
                Ok(ip) => addrs.push(ip),
                Err(_) => {
                    return at.error(
                        &span,
                        "web.trusted_proxies",
                        format!("`{}` is not an IP address", a.escape_debug()),
                    )
                }
            }
        }
        w.trusted_proxies = addrs;
    }
    for (value, key, slot) in [
        (raw.header_timeout, "web.header_timeout", &mut w.header_timeout),
        (raw.idle_timeout, "web.idle_timeout", &mut w.idle_timeout),
        (raw.request_timeout, "web.request_timeout", &mut w.request_timeout),
    ] {
        if let Some(v) = value {
            match time::parse_duration(v.get_ref()) {
                Ok(d) if d <= Duration::from_secs(3600) => *slot = d,
                Ok(_) => return at.error(&v.span(), key, "must be at most 1h"),
                Err(e) => return at.error(&v.span(), key, e),
            }
        }
    }
    for (value, key, slot) in [
        (raw.max_connections, "web.max_connections", &mut w.max_connections),
        (raw.max_connections_per_peer, "web.max_connections_per_peer", &mut w.max_connections_per_peer),
    ] {
        if let Some(v) = value {
            match usize::try_from(*v.get_ref()) {
                Ok(n) if (1..=65_536).contains(&n) => *slot = n,
                _ => return at.error(&v.span(), key, "must be between 1 and 65536"),
            }
        }
    }
    if w.proxy_user_header.is_some() && (w.proxy_secret_file.is_none() || w.trusted_proxies.is_empty()) {
        return at.whole("web.proxy_user_header needs web.proxy_secret_file and web.trusted_proxies");
    }
    Ok(())
}
