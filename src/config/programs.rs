//! `[git]`, `[sftp]`, `[rsync]`: the programs the forced command serves.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGit {
    root: Option<Spanned<String>>,
    program: Option<Spanned<String>>,
    create_on_push: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProgram {
    program: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub struct GitConfig {
    /// Repositories are `<root>/OWNER/NAME.git`.
    pub root: PathBuf,
    pub program: PathBuf,
    pub create_on_push: bool,
}

impl Default for GitConfig {
    fn default() -> GitConfig {
        GitConfig { root: PathBuf::from("/data"), program: PathBuf::from("/usr/bin/git"), create_on_push: false }
    }
}

/// `[sftp]` and `[rsync]`: one program each.
#[derive(Debug, Clone)]
pub struct ProgramConfig {
    pub program: PathBuf,
}

pub(super) fn parse_git(at: &Located<'_>, raw: RawGit, g: &mut GitConfig) -> Result<(), ConfigError> {
    if let Some(p) = at.path(raw.root, "git.root")? {
        g.root = p;
    }
    if let Some(p) = at.path(raw.program, "git.program")? {
        g.program = p;
    }
    if let Some(b) = raw.create_on_push {
        g.create_on_push = b;
    }
    Ok(())
}

pub(super) fn parse_program(
    at: &Located<'_>,
    raw: RawProgram,
    key: &str,
    p: &mut ProgramConfig,
) -> Result<(), ConfigError> {
    if let Some(path) = at.path(raw.program, key)? {
        p.program = path;
    }
    Ok(())
}
