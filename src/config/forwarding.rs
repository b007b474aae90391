//! `[forwarding]`: where a shell key of a user allowed to forward may forward to.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    permit_open: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Clone)]
pub struct ForwardingConfig {
    /// `host:port` patterns for authorized_keys `permitopen="…"`.
    pub permit_open: Vec<String>,
}

impl Default for ForwardingConfig {
    fn default() -> ForwardingConfig {
        ForwardingConfig { permit_open: vec!["localhost:*".to_string(), "127.0.0.1:*".to_string()] }
    }
}

/// A `host:port` pattern as `permitopen="…"` takes it.
fn is_permit_open(pattern: &str) -> bool {
    let Some((host, port)) = pattern.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-*[]:".contains(&b));
    let port_ok = port == "*" || port.parse::<u16>().is_ok_and(|p| p > 0);
    host_ok && port_ok
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, f: &mut ForwardingConfig) -> Result<(), ConfigError> {
    if let Some(list) = raw.permit_open {
        let span = list.span();
        let list = list.into_inner();
        if let Some(bad) = list.iter().find(|p| !is_permit_open(p)) {
            return at.error(
                &span,
                "forwarding.permit_open",
                format!("`{}` is not a host:port pattern", bad.escape_debug()),
            );
        }
        f.permit_open = list;
    }
    Ok(())
}
