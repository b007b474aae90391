//! The user name a client asks for (`ssh NAME@host`): sshd hands it to gatehouse-keys as an
//! argument and to pam_gatehouse.so as the PAM user, both check it against the name rule
//! and log it; the PAM module also reads its own arguments and sshd's `SSH_AUTH_INFO_0`.
//! The same bytes are also a session's environment as gatehouse-agent reads it from
//! /proc (`GATEHOUSE_KEY`, set by the user's own processes) and a /proc status text whose
//! `Name:` the user chooses.
#![no_main]

use gatehouse::config::{Config, DEFAULT_NAME_PATTERN};
use gatehouse::keycmd::{self, Invocation};
use gatehouse::session::ModuleOptions;
use libfuzzer_sys::fuzz_target;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::LazyLock;

const CUSTOM_PATTERN: &str = "^[a-z_][a-z0-9._-]{0,31}$";

static RULES: LazyLock<[(Config, regex_lite::Regex); 2]> = LazyLock::new(|| {
    let custom = format!("[users]\nname_pattern = \"{CUSTOM_PATTERN}\"\n");
    let regex = |p: &str| regex_lite::Regex::new(p).expect("a valid pattern");
    [
        (Config::default(), regex(DEFAULT_NAME_PATTERN)),
        (Config::parse("fuzz.toml", &custom).expect("the fuzz target's own config"), regex(CUSTOM_PATTERN)),
    ]
});

/// Reads back a `key=value` log line: the keys in order and the last value, unquoted.
fn read_pairs(line: &str) -> (Vec<String>, String) {
    let (mut keys, mut value) = (Vec::new(), String::new());
    let mut rest = line;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("key=value");
        keys.push(key.to_string());
        value.clear();
        rest = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut chars = quoted.char_indices();
                loop {
                    match chars.next().expect("a closing quote") {
                        (i, '"') => break &quoted[i + 1..],
                        (_, '\\') => value.push(chars.next().expect("an escaped character").1),
                        (_, c) => value.push(c),
                    }
                }
            }
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                value.push_str(&after[..end]);
                &after[end..]
            }
        };
        rest = rest.strip_prefix(' ').unwrap_or(rest);
    }
    (keys, value)
}

fn user_name(name: &str) {
    for (config, regex) in RULES.iter() {
        // The hand-written default rule and the regex it stands for agree.
        assert_eq!(config.valid_user_name(name), name.len() <= 256 && regex.is_match(name), "{name:?}");
        let _ = gatehouse::names::check_with(config, name, |_| Ok(None));
    }
    // One line, and no value can forge another pair.
    let line = gatehouse::log::format_pairs(&[("user", name), ("verdict", "refuse")]);
    assert!(line.chars().all(|c| c.is_ascii() && !c.is_ascii_control()), "{line:?}");
    assert_eq!(read_pairs(&line), (vec!["user".to_string(), "verdict".to_string()], "refuse".to_string()), "{line:?}");
}

fn key_command_args(data: &[u8]) {
    let args: Vec<OsString> = data.split(|&b| b == 0).map(|a| OsString::from_vec(a.to_vec())).collect();
    match keycmd::parse_args(&args) {
        Ok(Invocation::Lookup { request, .. }) => {
            if let Some(user) = &request.user {
                user_name(user);
            }
        }
        Ok(Invocation::Help | Invocation::Version) => assert_eq!(args.len(), 1),
        Err(e) => assert!(!e.contains('\n'), "{e:?}"),
    }
}

/// What the root agent reads from a user's processes: any value, but only a fingerprint
/// is ever taken as a key, and a status without uids is no process.
fn agent_process_views(data: &[u8]) {
    use gatehouse::agent::sessions::{parse_status, session_key};
    if let Some(key) = session_key(data) {
        assert!(!key.contains('\0'), "{key:?}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(p) = parse_status(1, text) {
            assert!(text.contains("Uid:") && text.contains("PPid:"), "{p:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    key_command_args(data);
    agent_process_views(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    user_name(text);
    match ModuleOptions::parse(text.split_ascii_whitespace()) {
        Ok(options) => assert!(options.config.is_none_or(|p| p.is_absolute())),
        Err(e) => assert!(!e.contains('\n'), "{e:?}"),
    }
    if let Some(fingerprint) = gatehouse::store::state::accepted_key(text) {
        assert!(gatehouse::keys::is_fingerprint(&fingerprint), "{fingerprint:?}");
    }
});
