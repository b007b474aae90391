//! `gatehouse-keys`: sshd's AuthorizedKeysCommand.
//!
//! Runs on every key a client offers (twice per login), so it does as little as it can:
//! read the config, open the store read-only, one indexed query, print, log one line.

use crate::authorized::{authorized_line, LineContext};
use crate::config::Config;
use crate::keys::is_fingerprint;
use crate::log::{Level, Logger};
use crate::store::LoginStore;
use crate::time::Timestamp;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

pub const USAGE: &str = "usage: gatehouse-keys [--config FILE] [--] USER [FINGERPRINT [KEYTYPE KEYBLOB]]";

/// What sshd asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The user name as sshd passed it; `None` when it was not valid UTF-8.
    pub user: Option<String>,
    pub fingerprint: Option<String>,
    pub offered: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Lookup { config: Option<PathBuf>, request: Request },
    Help,
    Version,
}

/// Parses the command line. Options are only recognised before the first operand, and
/// `--help`/`--version` only when alone: a user name that looks like an option is data.
pub fn parse_args(args: &[OsString]) -> Result<Invocation, String> {
    if args.len() == 1 {
        match args[0].to_str() {
            Some("--help") | Some("-h") => return Ok(Invocation::Help),
            Some("--version") | Some("-V") => return Ok(Invocation::Version),
            _ => {}
        }
    }
    let mut config = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].to_str() {
            Some("--config") => {
                let value = args.get(i + 1).ok_or("--config needs a file")?;
                config = Some(PathBuf::from(value));
                i += 2;
            }
            Some(a) if a.starts_with("--config=") => {
                config = Some(PathBuf::from(&a["--config=".len()..]));
                i += 1;
            }
            Some("--") => {
                i += 1;
                break;
            }
            _ => break,
        }
    }
    let operands = &args[i..];
    let text = |a: &OsString| a.to_str().map(str::to_string);
    let request = match operands {
        [user] => Request { user: text(user), fingerprint: None, offered: None },
        [user, fp] => Request { user: text(user), fingerprint: Some(fp.to_string_lossy().into_owned()), offered: None },
        [user, fp, key_type, blob] => Request {
            user: text(user),
            fingerprint: Some(fp.to_string_lossy().into_owned()),
            offered: Some((key_type.to_string_lossy().into_owned(), blob.to_string_lossy().into_owned())),
        },
        [] => return Err("no user name given".to_string()),
        _ => return Err(format!("{} operands given, expected 1, 2 or 4", operands.len())),
    };
    Ok(Invocation::Lookup { config, request })
}

/// The decision for one request, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub lines: usize,
    pub reason: &'static str,
}

/// Answers one request: writes authorized_keys lines to `out` and logs the decision.
/// Errors are operational (store unreadable); untrusted input only ever yields no lines.
pub fn answer(
    config: &Config,
    store: &dyn LoginStore,
    request: &Request,
    now: Timestamp,
    out: &mut dyn Write,
    log: &mut Logger,
) -> Result<Outcome, String> {
    let user_shown = request.user.as_deref().unwrap_or("<not utf-8>");
    let fp_shown = request.fingerprint.as_deref().unwrap_or("-");
    let record = |log: &mut Logger, level: Level, verdict: &str, reason: &str| {
        log.log(level, &[("user", user_shown), ("fingerprint", fp_shown), ("verdict", verdict), ("reason", reason)]);
    };
    let refuse = |reason: &'static str| Outcome { lines: 0, reason };

    let Some(user) = request.user.as_deref().filter(|u| config.valid_user_name(u)) else {
        record(log, Level::Notice, "refuse", "bad-user-name");
        return Ok(refuse("bad-user-name"));
    };
    if let Some(fp) = &request.fingerprint {
        if !is_fingerprint(fp) {
            record(log, Level::Notice, "refuse", "bad-fingerprint");
            return Ok(refuse("bad-fingerprint"));
        }
    }
    let ctx = LineContext::from_config(config)?;
    let view = store.login_view(user, request.fingerprint.as_deref()).map_err(|e| e.to_string())?;
    let Some(view) = view else {
        record(log, Level::Notice, "refuse", "unknown-user");
        return Ok(refuse("unknown-user"));
    };
    if !view.fresh(config.ldap.as_ref().map(|l| l.staleness_max), now) {
        // Synced from a directory that has been out of reach for longer than we trust it.
        record(log, Level::Warning, "refuse", "directory-stale");
        return Ok(refuse("directory-stale"));
    }
    if request.fingerprint.is_some() && view.keys.is_empty() {
        record(log, Level::Notice, "refuse", "no-such-key");
        return Ok(refuse("no-such-key"));
    }
    let mut text = String::new();
    let mut lines = 0;
    let mut last_refusal = None;
    let mut last_scope = "";
    for key in &view.keys {
        if let Some((key_type, blob)) = &request.offered {
            if *key_type != key.algorithm || *blob != key.blob {
                last_refusal = Some("key-mismatch");
                continue;
            }
        }
        match authorized_line(&ctx, &view.user, key, now) {
            Ok((scope, line)) => {
                text.push_str(&line);
                text.push('\n');
                lines += 1;
                last_scope = scope.as_str();
            }
            Err(refusal) => {
                if refusal == crate::authorized::Refusal::BadStoredField {
                    log.log(
                        Level::Error,
                        &[
                            ("user", user),
                            ("fingerprint", &key.fingerprint),
                            ("verdict", "refuse"),
                            ("reason", refusal.as_str()),
                        ],
                    );
                }
                last_refusal = Some(refusal.as_str());
            }
        }
    }
    // sshd may stop reading as soon as it has what it needs; that is not our failure.
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(format!("writing to standard output: {e}")),
    }
    if lines > 0 {
        let verdict = if request.fingerprint.is_some() { "accept" } else { "list" };
        let count = lines.to_string();
        let scope = if request.fingerprint.is_some() { last_scope } else { count.as_str() };
        let scope_key = if request.fingerprint.is_some() { "scope" } else { "keys" };
        log.log(Level::Info, &[("user", user), ("fingerprint", fp_shown), ("verdict", verdict), (scope_key, scope)]);
        Ok(Outcome { lines, reason: "ok" })
    } else {
        let reason = last_refusal.unwrap_or("no-keys");
        record(log, Level::Notice, "refuse", reason);
        Ok(refuse(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn argument_forms() {
        let lookup =
            |config: Option<&str>, user: &str, fp: Option<&str>, offered: Option<(&str, &str)>| Invocation::Lookup {
                config: config.map(PathBuf::from),
                request: Request {
                    user: Some(user.into()),
                    fingerprint: fp.map(Into::into),
                    offered: offered.map(|(a, b)| (a.into(), b.into())),
                },
            };
        assert_eq!(parse_args(&os(&["alice"])), Ok(lookup(None, "alice", None, None)));
        assert_eq!(
            parse_args(&os(&["--config", "/c", "alice", "SHA256:x"])),
            Ok(lookup(Some("/c"), "alice", Some("SHA256:x"), None))
        );
        assert_eq!(
            parse_args(&os(&["--config=/c", "--", "alice", "f", "t", "k"])),
            Ok(lookup(Some("/c"), "alice", Some("f"), Some(("t", "k"))))
        );
        // Option-like user names are data.
        assert_eq!(parse_args(&os(&["--", "--help", "f"])), Ok(lookup(None, "--help", Some("f"), None)));
        assert_eq!(parse_args(&os(&["--help", "f"])), Ok(lookup(None, "--help", Some("f"), None)));
        assert_eq!(parse_args(&os(&["-x", "f", "t", "k"])), Ok(lookup(None, "-x", Some("f"), Some(("t", "k")))));
        assert_eq!(parse_args(&os(&["--", "--", "f", "t", "k"])), Ok(lookup(None, "--", Some("f"), Some(("t", "k")))));
        assert_eq!(parse_args(&os(&["--help"])), Ok(Invocation::Help));
        assert!(parse_args(&os(&[])).is_err());
        assert!(parse_args(&os(&["--config"])).is_err());
        assert!(parse_args(&os(&["a", "b", "c"])).is_err());
        assert!(parse_args(&os(&["a", "b", "c", "d", "e"])).is_err());
    }
}
