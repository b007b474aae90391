//! What a client sends as `SSH_ORIGINAL_COMMAND` (git, sftp, rsync or anything), the
//! repository paths and rsync arguments inside it, grant patterns, and gatehouse-shell's
//! own argv, which carries the client's command when it is the login shell.
#![no_main]

use gatehouse::config::Config;
use gatehouse::domain::repo::{parse_repo_path, pattern_matches, valid_pattern, RepoPath};
use gatehouse::forced::command::{self, Refused, Request};
use gatehouse::forced::rsync::check_server_args;
use gatehouse::forced::{self, Invocation};
use libfuzzer_sys::fuzz_target;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::LazyLock;

static CONFIG: LazyLock<Config> = LazyLock::new(Config::default);

fn one_line(text: &str) {
    assert!(!text.chars().any(char::is_control), "{text:?}");
}

/// A repository that parsed is one folder below one user's folder, whatever the owner rule
/// (which alone decides what characters an owner may hold).
fn check_repo(repo: &RepoPath) {
    for part in [&repo.owner, &repo.name] {
        assert!(!part.is_empty() && !part.contains('/'), "{repo:?}");
        assert!(part != "." && part != "..", "{repo:?}");
    }
    assert!(repo.name.ends_with(".git") && !repo.name.starts_with(['.', '-']), "{repo:?}");
    assert!(!repo.owner.starts_with(['-', '~']), "{repo:?}");
}

fn repo_path(text: &str) {
    match parse_repo_path(text, |o| CONFIG.valid_user_name(o)) {
        Ok(repo) => check_repo(&repo),
        Err(e) => one_line(&e),
    }
    // An owner rule that admits anything (a careless users.name_pattern): the path rules
    // alone must still hold.
    if let Ok(repo) = parse_repo_path(text, |_| true) {
        check_repo(&repo);
    }
}

fn check_rsync(args: &[String]) {
    assert_eq!(check_server_args(args), Ok(()));
    let dot = args.iter().position(|a| a == ".").expect("a checked command has the separator");
    for path in &args[dot + 1..] {
        assert!(!path.starts_with(['/', '~', '-']), "{args:?}");
        assert!(!path.split('/').any(|c| c == ".."), "{args:?}");
    }
}

fn ssh_command(text: &str) {
    match command::parse(Some(text)) {
        Ok(Request::Git { path, .. }) => repo_path(&path),
        Ok(Request::Rsync { args }) => {
            assert_eq!(args.first().map(String::as_str), Some("--server"));
            check_rsync(&args);
        }
        Ok(Request::Other(command)) => assert_eq!(command, text),
        Ok(Request::Sftp) => {}
        Ok(Request::Interactive) => panic!("a command is never an interactive login"),
        Err(Refused(why)) => one_line(&why),
    }
}

fn patterns(text: &str) {
    let Ok(pattern) = valid_pattern(text) else {
        return;
    };
    // What is stored is accepted again as it is.
    assert_eq!(valid_pattern(&pattern).as_ref(), Ok(&pattern));
    assert!(pattern.ends_with(".git") || pattern.ends_with('*'), "{pattern:?}");
    if let Ok(repo) = parse_repo_path(&pattern.replace('*', "x"), |_| true) {
        assert!(pattern_matches(&pattern, &repo), "{pattern:?} {repo:?}");
    }
}

/// What a grant pattern means, slowly and plainly: `*` is any run of characters but `/`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // matches[i][j]: pattern[i..] matches text[j..].
    let mut matches = vec![vec![false; text.len() + 1]; pattern.len() + 1];
    matches[pattern.len()][text.len()] = true;
    for i in (0..pattern.len()).rev() {
        for j in (0..=text.len()).rev() {
            matches[i][j] = match pattern[i] {
                b'*' => matches[i + 1][j] || (j < text.len() && text[j] != b'/' && matches[i][j + 1]),
                c => j < text.len() && text[j] == c && matches[i + 1][j + 1],
            };
        }
    }
    matches[0][0]
}

fn shell_args(data: &[u8]) {
    let check = |args: Vec<OsString>| match forced::parse_args(&args) {
        Ok(Invocation::Forced(forced)) => assert!(gatehouse::keys::is_fingerprint(&forced.fingerprint)),
        Ok(Invocation::LoginShell { .. }) => {}
        Err(e) => assert!(!e.contains('\n'), "{e:?}"),
    };
    // As the login shell: the client's command arrives whole after -c.
    check(vec![OsString::from("-c"), OsString::from_vec(data.to_vec())]);
    // As a forced command, word by word.
    check(data.split(|&b| b == b' ').map(|w| OsString::from_vec(w.to_vec())).collect());
}

fuzz_target!(|data: &[u8]| {
    shell_args(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    ssh_command(text);
    repo_path(text);
    // A grant pattern and a repository path, one per line.
    match text.split_once('\n') {
        Some((pattern, path)) => {
            patterns(pattern);
            if let (Ok(pattern), Ok(repo)) = (valid_pattern(pattern), parse_repo_path(path, |_| true)) {
                let matched = pattern_matches(&pattern, &repo);
                assert_eq!(matched, glob(pattern.as_bytes(), repo.relative().as_bytes()), "{pattern:?} {repo:?}");
                // A pattern without a wildcard names exactly one repository.
                if !pattern.contains('*') {
                    assert_eq!(matched, pattern == repo.relative(), "{pattern:?} {repo:?}");
                }
            }
        }
        None => patterns(text),
    }
    let words: Vec<String> = text.split(' ').map(str::to_string).collect();
    if check_server_args(&words).is_ok() {
        check_rsync(&words);
    }
});
