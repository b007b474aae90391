//! `gatehouse-shell`: the forced command every key line carries.
//!
//! sshd runs it as the logged-in user with the key's fingerprint in its arguments (we wrote
//! them into the key line ourselves), so it knows which key authenticated without trusting
//! the environment. It checks the store again and decides what may run.

use crate::authorized::usable_scope;
use crate::config::Config;
use crate::keys::is_fingerprint;
use crate::policy::Scope;
use crate::store::LoginStore;
use crate::time::Timestamp;
use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "usage: gatehouse-shell [--config FILE] --key FINGERPRINT";

/// Exit codes, as documented in gatehouse-shell(8).
pub mod exit {
    /// Refused: scope, revoked key, disabled user.
    pub const REFUSED: u8 = 1;
    /// Usage error (the key line was not written by gatehouse-keys).
    pub const USAGE: u8 = 2;
    /// Configuration error.
    pub const CONFIG: u8 = 3;
    /// The store could not be read.
    pub const STORE: u8 = 4;
    /// The program to run could not be started.
    pub const EXEC: u8 = 5;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellArgs {
    pub config: Option<PathBuf>,
    pub fingerprint: String,
}

pub fn parse_args(args: &[OsString]) -> Result<ShellArgs, String> {
    let mut config = None;
    let mut fingerprint = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--config") => config = Some(PathBuf::from(it.next().ok_or("--config needs a file")?)),
            Some(a) if a.starts_with("--config=") => config = Some(PathBuf::from(&a["--config=".len()..])),
            Some("--key") => {
                let fp = it.next().and_then(|f| f.to_str()).ok_or("--key needs a fingerprint")?;
                if !is_fingerprint(fp) {
                    return Err("--key: not a SHA256 fingerprint".to_string());
                }
                fingerprint = Some(fp.to_string());
            }
            _ => return Err(format!("unexpected argument `{}`", arg.to_string_lossy().escape_debug())),
        }
    }
    Ok(ShellArgs { config, fingerprint: fingerprint.ok_or("--key is required")? })
}

/// What to do for this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the user's login shell: interactive when `command` is `None`, else `-c command`.
    Shell { command: Option<String> },
    /// Print `message` to the client and exit with `code`; `reason` goes to the log.
    Refuse { message: String, reason: &'static str, code: u8 },
}

/// Who is logging in, with which key, asking for what.
pub struct Session<'a> {
    pub user: &'a str,
    pub fingerprint: &'a str,
    /// `SSH_ORIGINAL_COMMAND`, when the client asked for a command.
    pub command: Option<&'a str>,
    pub now: Timestamp,
}

/// Longest remote command accepted.
pub const MAX_COMMAND: usize = 64 * 1024;

/// Decides what the session may do, from the store alone.
pub fn decide(config: &Config, store: &dyn LoginStore, session: &Session<'_>) -> Result<Action, String> {
    let refuse = |message: String, reason: &'static str| Action::Refuse { message, reason, code: exit::REFUSED };
    let revoked =
        || refuse(format!("Key {} is no longer valid for {}.", session.fingerprint, session.user), "key-not-valid");
    if !config.valid_user_name(session.user) {
        return Ok(refuse("Your account name is not one Gatehouse serves.".to_string(), "bad-user-name"));
    }
    let Some(view) = store.login_view(session.user, Some(session.fingerprint)).map_err(|e| e.to_string())? else {
        return Ok(revoked());
    };
    let Some(key) = view.keys.first() else {
        return Ok(revoked());
    };
    let scope = match usable_scope(&view.user, key, session.now) {
        Ok(scope) => scope,
        Err(refusal) => {
            return Ok(refuse(
                format!("Key {} is no longer valid for {}.", session.fingerprint, session.user),
                refusal.as_str(),
            ))
        }
    };
    if let Some(command) = session.command {
        if command.len() > MAX_COMMAND {
            return Ok(refuse(format!("Command longer than {MAX_COMMAND} bytes refused."), "command-too-long"));
        }
    }
    match scope {
        Scope::Shell => Ok(Action::Shell { command: session.command.map(str::to_string) }),
        Scope::Files | Scope::Git | Scope::GitRead => Ok(refuse(
            format!(
                "Hi {}! You've authenticated with key {}, but shell access is not enabled for this key.",
                session.user, session.fingerprint
            ),
            "no-shell-access",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    const FP: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

    #[test]
    fn arguments() {
        assert_eq!(parse_args(&os(&["--key", FP])), Ok(ShellArgs { config: None, fingerprint: FP.into() }));
        assert_eq!(
            parse_args(&os(&["--config", "/c", "--key", FP])),
            Ok(ShellArgs { config: Some("/c".into()), fingerprint: FP.into() })
        );
        assert!(parse_args(&os(&[])).is_err());
        assert!(parse_args(&os(&["--key", "SHA256:short"])).is_err());
        assert!(parse_args(&os(&["--key", FP, "-c", "sh"])).is_err());
        assert!(parse_args(&os(&["--key"])).is_err());
    }
}
