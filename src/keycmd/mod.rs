//! `gatehouse-keys`: sshd's AuthorizedKeysCommand.
//!
//! Runs on every key a client offers (twice per login), so it does as little as it can:
//! read the config, open the store read-only, one indexed query, print, log one line.

pub mod lines;

use crate::config::Config;
use crate::keys::is_fingerprint;
use crate::log::{Level, Logger};
use crate::store::{LoginStore, StoreError};
use crate::time::Timestamp;
use lines::{authorized_line, LineContext};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

pub const USAGE: &str = "usage: gatehouse-keys [--config FILE] [--] USER UID [FINGERPRINT [KEYTYPE KEYBLOB]]";

/// What sshd asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The user name as sshd passed it; `None` when it was not valid UTF-8.
    pub user: Option<String>,
    /// The account's uid (`%U`); `None` when sshd was not told to pass it.
    pub uid: Option<u32>,
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
    let lossy = |a: &OsString| a.to_string_lossy().into_owned();
    // `%u %U %f %t %k` as the shipped drop-in passes them, or a prefix of it. The forms
    // without the uid (`%u`, `%u %f`, `%u %f %t %k`) are still parsed, so that an old
    // drop-in is logged for what it is, but they are served nothing. A uid is digits and a
    // fingerprint never is, which tells `USER UID` from `USER FINGERPRINT`.
    let uid = |a: &OsString| -> Result<u32, String> {
        a.to_str()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("`{}` is not a uid (%U)", lossy(a).escape_debug()))
    };
    let digits = |a: &OsString| a.to_str().is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    let request = match operands {
        [user] => Request { user: text(user), uid: None, fingerprint: None, offered: None },
        [user, id] if digits(id) => Request { user: text(user), uid: Some(uid(id)?), fingerprint: None, offered: None },
        [user, fp] => Request { user: text(user), uid: None, fingerprint: Some(lossy(fp)), offered: None },
        [user, id, fp] => {
            Request { user: text(user), uid: Some(uid(id)?), fingerprint: Some(lossy(fp)), offered: None }
        }
        [_, id, _, _] if digits(id) => return Err("4 operands with a uid: %k is missing".to_string()),
        [user, fp, key_type, blob] => Request {
            user: text(user),
            uid: None,
            fingerprint: Some(lossy(fp)),
            offered: Some((lossy(key_type), lossy(blob))),
        },
        [user, id, fp, key_type, blob] => Request {
            user: text(user),
            uid: Some(uid(id)?),
            fingerprint: Some(lossy(fp)),
            offered: Some((lossy(key_type), lossy(blob))),
        },
        [] => return Err("no user name given".to_string()),
        _ => return Err(format!("{} operands given, expected 1 to 5", operands.len())),
    };
    Ok(Invocation::Lookup { config, request })
}

/// Whether the account is in `jail.group`. Asked only for users who may forward ports, so
/// the lookups through NSS are spent where they matter; an account that cannot be looked
/// up counts as jailed.
fn jailed(config: &Config, user: &str, uid: Option<u32>) -> bool {
    let gid = match uid.map(|u| nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u))) {
        Some(Ok(Some(account))) if account.name == user => account.gid.as_raw(),
        _ => return true,
    };
    crate::session::datadir::is_jailed(config, user, gid)
}

/// Why a request could not be answered (untrusted input never gets here: it only ever
/// yields no lines).
#[derive(Debug)]
pub enum AnswerError {
    /// The configuration file's path cannot be written into a key line.
    Config(String),
    Store(StoreError),
    Output(std::io::Error),
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::Config(e) => f.write_str(e),
            AnswerError::Store(e) => e.fmt(f),
            AnswerError::Output(e) => write!(f, "writing to standard output: {e}"),
        }
    }
}

impl std::error::Error for AnswerError {}

impl From<StoreError> for AnswerError {
    fn from(e: StoreError) -> AnswerError {
        AnswerError::Store(e)
    }
}

/// The decision for one request, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub lines: usize,
    pub reason: &'static str,
}

/// Answers one request: writes authorized_keys lines to `out` and logs the decision.
/// Errors are operational (store unreadable); untrusted input only ever yields no lines.
/// `decided` is called once the store has answered, before anything is written.
pub fn answer(
    config: &Config,
    store: &dyn LoginStore,
    request: &Request,
    now: Timestamp,
    out: &mut dyn Write,
    log: &mut Logger,
    decided: &dyn Fn(),
) -> Result<Outcome, AnswerError> {
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
    // Whatever the store says, no key for root or any other system account.
    match request.uid {
        None => {
            log.log(
                Level::Error,
                &[
                    ("user", user),
                    ("fingerprint", fp_shown),
                    ("verdict", "refuse"),
                    ("reason", "no-uid"),
                    ("error", "sshd passed no uid: AuthorizedKeysCommand must give %U after %u"),
                ],
            );
            return Ok(refuse("no-uid"));
        }
        Some(uid) if !crate::names::uid_served(config, uid) => {
            record(log, Level::Warning, "refuse", "system-account");
            return Ok(refuse("system-account"));
        }
        Some(_) if crate::names::is_reserved(user) => {
            record(log, Level::Warning, "refuse", "reserved-name");
            return Ok(refuse("reserved-name"));
        }
        Some(_) => {}
    }
    if let Some(fp) = &request.fingerprint {
        if !is_fingerprint(fp) {
            record(log, Level::Notice, "refuse", "bad-fingerprint");
            return Ok(refuse("bad-fingerprint"));
        }
    }
    let ctx = LineContext::from_config(config).map_err(AnswerError::Config)?;
    let view = store.login_view(user, request.fingerprint.as_deref())?;
    let Some(view) = view else {
        record(log, Level::Notice, "refuse", "unknown-user");
        return Ok(refuse("unknown-user"));
    };
    if let Some(stale) = view.stale_source(&|s| config.staleness_max(s), now) {
        // Synced from a directory, or mirrored from the shared source, that has been out
        // of reach for longer than we trust it.
        let reason = crate::store::LoginView::stale_reason(stale);
        record(log, Level::Warning, "refuse", reason);
        return Ok(refuse(reason));
    }
    if view.user.uid.is_some_and(|uid| Some(uid) != request.uid) {
        // Not the account the store gave this user: a former user's, under a name that
        // was added again (its uid is retired), or one made by hand.
        record(log, Level::Warning, "refuse", "uid-mismatch");
        return Ok(refuse("uid-mismatch"));
    }
    let mut view = view;
    if view.user.port_forwarding && config.jail.group.is_some() && jailed(config, user, request.uid) {
        // sshd's configuration may turn forwarding back on for the jail group (sshd keeps
        // the first value it reads, whatever order the site's files are in); a jailed user's
        // key lines carry none, so loopback services stay out of reach from the jail.
        view.user.port_forwarding = false;
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
                if refusal == crate::keycmd::lines::Refusal::BadStoredField {
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
    decided();
    // sshd may stop reading as soon as it has what it needs; that is not our failure.
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(AnswerError::Output(e)),
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
                    uid: None,
                    fingerprint: fp.map(Into::into),
                    offered: offered.map(|(a, b)| (a.into(), b.into())),
                },
            };
        let with_uid = |uid: u32, fp: Option<&str>, offered: Option<(&str, &str)>| Invocation::Lookup {
            config: None,
            request: Request {
                user: Some("alice".into()),
                uid: Some(uid),
                fingerprint: fp.map(Into::into),
                offered: offered.map(|(a, b)| (a.into(), b.into())),
            },
        };
        // The drop-in's form, %u %U %f %t %k, and its prefixes.
        assert_eq!(
            parse_args(&os(&["--", "alice", "20001", "f", "t", "k"])),
            Ok(with_uid(20001, Some("f"), Some(("t", "k"))))
        );
        assert_eq!(parse_args(&os(&["alice", "0", "f"])), Ok(with_uid(0, Some("f"), None)));
        assert_eq!(parse_args(&os(&["alice", "20001"])), Ok(with_uid(20001, None, None)));
        assert!(parse_args(&os(&["alice", "-1", "f"])).is_err());
        assert!(parse_args(&os(&["alice", "x1", "f", "t", "k"])).is_err());
        assert!(parse_args(&os(&["alice", "99999999999", "f", "t", "k"])).is_err());
        assert!(parse_args(&os(&["alice", "20001", "f", "t"])).is_err());
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
