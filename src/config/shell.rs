//! `[shell]`: the forced command, and the shell it starts as the login shell.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

pub const DEFAULT_SHELL: &str = "/usr/bin/gatehouse-shell";
/// What gatehouse-shell, as the login shell, starts for shell-policy sessions.
pub const DEFAULT_LOGIN_SHELL: &str = "/bin/bash";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    path: Option<Spanned<String>>,
    login_shell: Option<Spanned<String>>,
    require_login_shell: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// The forced command each key line names; only characters no shell interprets.
    pub path: String,
    /// The shell a shell-policy session gets when gatehouse-shell is the account's login
    /// shell; `None` (set to "") refuses such sessions.
    pub login_shell: Option<PathBuf>,
    /// Refuse sessions without shell scope on accounts whose login shell is not
    /// gatehouse-shell: another shell runs its startup files before the forced command.
    pub require_login_shell: bool,
}

impl Default for ShellConfig {
    fn default() -> ShellConfig {
        ShellConfig {
            path: DEFAULT_SHELL.to_string(),
            login_shell: Some(PathBuf::from(DEFAULT_LOGIN_SHELL)),
            require_login_shell: true,
        }
    }
}

impl ShellConfig {
    /// Whether an account with login shell `shell` reaches gatehouse-shell before any other
    /// shell: it is gatehouse-shell (`shell.path`, or a program of that name).
    pub fn is_ours(&self, shell: &Path) -> bool {
        shell == Path::new(&self.path) || is_gatehouse_shell(shell)
    }
}

/// Whether `path` names gatehouse-shell (in any folder): as a login shell it must not be
/// started as the shell it starts.
pub fn is_gatehouse_shell(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "gatehouse-shell")
}

/// Characters allowed in paths that end up inside an authorized_keys `command="…"`:
/// sshd hands that string to the user's shell, so nothing a shell would interpret.
pub fn is_plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 1024
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._+-".contains(&b))
        && !path.split('/').any(|c| c == "..")
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, s: &mut ShellConfig) -> Result<(), ConfigError> {
    if let Some(p) = raw.path {
        if !is_plain_path(p.get_ref()) {
            return at.error(&p.span(), "shell.path", "must be an absolute path of letters, digits and / . _ + - only");
        }
        s.path = p.into_inner();
    }
    if let Some(b) = raw.require_login_shell {
        s.require_login_shell = b;
    }
    match raw.login_shell {
        // "": no shell for sessions that reach gatehouse-shell as the login shell.
        Some(p) if p.get_ref().is_empty() => s.login_shell = None,
        Some(p) if is_gatehouse_shell(Path::new(p.get_ref())) => {
            return at.error(&p.span(), "shell.login_shell", "must be a real shell, not gatehouse-shell");
        }
        p => {
            if let Some(p) = at.path(p, "shell.login_shell")? {
                s.login_shell = Some(p);
            }
        }
    }
    Ok(())
}
