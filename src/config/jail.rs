//! `[jail]`: who is jailed, and where the chroots are.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    group: Option<Spanned<String>>,
    root: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub struct JailConfig {
    /// Members of this system group are jailed: sftp in a chroot, no forwarding.
    pub group: Option<String>,
    pub root: PathBuf,
}

impl Default for JailConfig {
    fn default() -> JailConfig {
        JailConfig { group: None, root: PathBuf::from("/jail") }
    }
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, j: &mut JailConfig) -> Result<(), ConfigError> {
    if let Some(g) = at.group(raw.group, "jail.group")? {
        j.group = Some(g);
    }
    if let Some(p) = at.path(raw.root, "jail.root")? {
        j.root = p;
    }
    Ok(())
}
