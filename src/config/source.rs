//! `[source]`: the shared PostgreSQL database of several login nodes. With it, the CLI and
//! the web service write there, and each node's agent mirrors it into the local store,
//! which the login path goes on reading as before.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    url: Spanned<String>,
    ca_file: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    insecure: Option<bool>,
    staleness_max: Option<Spanned<String>>,
    poll_interval_ms: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
    state_interval_ms: Option<Spanned<i64>>,
}

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceTls {
    /// TLS, the server's certificate checked against `ca_file` and its host name.
    Verified,
    /// No TLS: a Unix socket, loopback without `ca_file`, or `insecure = true`.
    Plain,
}

/// The `[source]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// `postgresql://[user@]host[:port]/database`, or with `?host=/socket/folder` for a
    /// Unix socket (peer authentication). Never a password.
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// The password, in a file root's (or the service's) alone.
    pub password_file: Option<PathBuf>,
    pub tls: SourceTls,
    /// How long after the last successful mirror users from the source are still served.
    pub staleness_max: Duration,
    /// How often a node asks the source for changes when no notice woke it.
    pub poll_interval: Duration,
    /// How long connecting, and each request, may take.
    pub timeout: Duration,
    /// How often the agent sends this node's login records to the source and reads back
    /// the others': the delay before a lockout or a use is seen cluster-wide.
    pub state_interval: Duration,
}

impl SourceConfig {
    /// The same source with connecting and each statement bounded by `limit` at most: for
    /// a question that must not hold its caller up long (`sync status`, "last used").
    pub fn quick(&self, limit: Duration) -> SourceConfig {
        SourceConfig { timeout: self.timeout.min(limit), ..self.clone() }
    }
}

/// Where the URL points: a Unix socket folder, or a host name or address.
fn host_of(url: &str) -> Option<(String, bool)> {
    let rest = url.strip_prefix("postgresql://").or_else(|| url.strip_prefix("postgres://"))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(h) = pair.strip_prefix("host=") {
                return Some((h.to_string(), h.starts_with('/')));
            }
        }
    }
    let authority = before_query.split('/').next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let socket = host.is_empty() || host.starts_with("%2F") || host.starts_with("%2f");
    Some((host.to_string(), socket))
}

pub(super) fn parse(at: &Located<'_>, raw: Raw) -> Result<SourceConfig, ConfigError> {
    let url = raw.url.get_ref().clone();
    let span = raw.url.span();
    if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return at.error(&span, "source.url", "must not contain spaces or control characters");
    }
    let Some((host, socket)) = host_of(&url) else {
        return at.error(&span, "source.url", "must be a postgresql:// URL");
    };
    let authority = url.split("://").nth(1).unwrap_or("").split(['/', '?']).next().unwrap_or("");
    if authority.rsplit_once('@').is_some_and(|(user, _)| user.contains(':')) || url.contains("password=") {
        return at.error(&span, "source.url", "must not hold a password; use source.password_file");
    }
    if url.contains("sslmode=") {
        return at.error(&span, "source.url", "must not set sslmode; TLS follows source.ca_file and source.insecure");
    }
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let insecure = raw.insecure.unwrap_or(false);
    let ca_file = at.path(raw.ca_file, "source.ca_file")?;
    let tls = if socket || insecure || (loopback && ca_file.is_none()) {
        SourceTls::Plain
    } else if ca_file.is_some() {
        SourceTls::Verified
    } else {
        return at.error(
            &span,
            "source.url",
            "TLS to PostgreSQL needs source.ca_file, the site's CA (plain only over a Unix socket, to loopback, \
             or with source.insecure = true)",
        );
    };
    Ok(SourceConfig {
        url,
        ca_file,
        password_file: at.path(raw.password_file, "source.password_file")?,
        tls,
        staleness_max: at.duration(raw.staleness_max, "source.staleness_max")?.unwrap_or(Duration::from_secs(3600)),
        poll_interval: Duration::from_millis(
            at.int(raw.poll_interval_ms, "source.poll_interval_ms", 100..=600_000)?.unwrap_or(5000),
        ),
        timeout: Duration::from_millis(at.int(raw.timeout_ms, "source.timeout_ms", 100..=60_000)?.unwrap_or(5000)),
        state_interval: Duration::from_millis(
            at.int(raw.state_interval_ms, "source.state_interval_ms", 100..=600_000)?.unwrap_or(1000),
        ),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, SourceTls};
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse("t.toml", text).map_err(|e| e.to_string())
    }

    #[test]
    fn source_urls_and_their_protection() {
        let c = parse("[source]\nurl = \"postgresql://gatehouse@db.example.org/gatehouse\"\nca_file = \"/etc/gatehouse/pg-ca.pem\"\n")
            .unwrap();
        let s = c.shared.unwrap();
        assert_eq!(s.tls, SourceTls::Verified);
        assert_eq!(s.staleness_max, Duration::from_secs(3600));
        assert_eq!(s.poll_interval, Duration::from_secs(5));
        assert_eq!(s.state_interval, Duration::from_secs(1));
        let socket = parse("[source]\nurl = \"postgresql:///gatehouse?host=/run/postgresql\"\n").unwrap();
        assert_eq!(socket.shared.unwrap().tls, SourceTls::Plain);
        let local = parse("[source]\nurl = \"postgresql://gh@127.0.0.1:5433/gh\"\nstaleness_max = \"5s\"\n").unwrap();
        let local = local.shared.unwrap();
        assert_eq!((local.tls, local.staleness_max), (SourceTls::Plain, Duration::from_secs(5)));
        for (text, says) in [
            (
                "url = \"postgresql://db.example.org/gh\"",
                "t.toml:2: source.url: TLS to PostgreSQL needs source.ca_file",
            ),
            ("url = \"postgresql://gh:secret@db/gh\"", "t.toml:2: source.url: must not hold a password"),
            ("url = \"mysql://db/gh\"", "t.toml:2: source.url: must be a postgresql:// URL"),
            ("url = \"postgresql://localhost/gh?sslmode=disable\"", "must not set sslmode"),
            ("url = \"postgresql://localhost/gh\"\npoll_interval_ms = 5", "t.toml:3: source.poll_interval_ms"),
            ("url = \"postgresql://localhost/gh\"\nport = 5", "t.toml:3"),
        ] {
            let err = parse(&format!("[source]\n{text}\n")).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        let insecure = parse("[source]\nurl = \"postgresql://db.example.org/gh\"\ninsecure = true\n").unwrap();
        assert_eq!(insecure.shared.unwrap().tls, SourceTls::Plain);
    }
}
