//! gatehouse-keys driven directly, as sshd would run it, with every argument it takes from
//! a client: user names, fingerprints, key types and blobs. Also the store, the config and
//! the syslog socket in bad shape. No sshd here; see e2e_login.rs for that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Longest a lookup may take before the watchdog kills it (sshd's own limit is similar).
const WATCHDOG: Duration = Duration::from_secs(30);

/// Waits for `child`; a watchdog thread kills it if it runs past [`WATCHDOG`], and the
/// test then fails.
fn wait_bounded(child: Child) -> Output {
    let pid = child.id().to_string();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = finished.recv_timeout(WATCHDOG) == Err(mpsc::RecvTimeoutError::Timeout);
        if timed_out {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        timed_out
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    assert!(!watchdog.join().unwrap(), "gatehouse-keys was killed after {WATCHDOG:?}");
    out
}

/// gatehouse-keys with `config` and exactly `args` after it (no `--` added).
fn command(gh: &Gatehouse, config: &Path, args: &[&OsStr]) -> Command {
    let mut cmd = Command::new(&gh.keys_bin);
    cmd.arg("--config").arg(config).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn run_raw(gh: &Gatehouse, args: &[&OsStr]) -> Output {
    wait_bounded(command(gh, &gh.config, args).spawn().unwrap())
}

/// The form sshd uses: `--config FILE -- USER UID ARGS…`, for an account with a served
/// uid; `args` are the user and what follows the uid.
fn lookup(gh: &Gatehouse, args: &[&str]) -> Output {
    let uid = args.first().map_or(SERVED_UID.to_string(), |user| gh.store_uid(user));
    let mut all: Vec<&OsStr> = vec![OsStr::new("--")];
    all.extend(args.iter().take(1).map(OsStr::new));
    all.push(OsStr::new(&uid));
    all.extend(args.iter().skip(1).map(OsStr::new));
    run_raw(gh, &all)
}

/// Log lines received since the last call, waiting up to 3 s for at least `want`.
fn logged(gh: &Gatehouse, want: usize) -> Vec<String> {
    gh.log.wait_for(want)
}

/// The one log line a single lookup produced.
fn one_log_line(gh: &Gatehouse) -> String {
    let lines = logged(gh, 1);
    assert_eq!(lines.len(), 1, "expected one log line: {lines:?}");
    let line = lines.into_iter().next().unwrap();
    assert!(!line.contains(['\n', '\r']), "raw line break in a log line: {line:?}");
    line
}

/// Asserts a lookup printed nothing, exited 0 and logged one refusal for `reason`.
fn assert_refused(gh: &Gatehouse, out: &Output, reason: &str) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    assert!(out.stdout.is_empty(), "printed: {}", stdout(out));
    let line = one_log_line(gh);
    assert!(line.contains(&format!("verdict=refuse reason={reason}")), "{line}");
    line
}

/// The key type and base64 blob of a public key line.
fn parts(key: &KeyPair) -> (&str, &str) {
    let mut words = key.public.split(' ');
    (words.next().unwrap(), words.next().unwrap())
}

fn add_key(gh: &Gatehouse, user: &str, key: &KeyPair, extra: &[&str]) {
    let mut args = vec!["key", "add", user, "-"];
    args.extend_from_slice(extra);
    let out = gh.cli_stdin(&args, key.public.as_bytes());
    assert!(out.status.success(), "key add: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), key.fingerprint);
}

/// An initialised instance with user alice holding `n` fresh ed25519 keys.
fn with_alice(name: &str, n: usize) -> (Gatehouse, Vec<KeyPair>) {
    let gh = Gatehouse::new(name, "");
    gh.init(None);
    gh.ok(&["user", "add", "alice"]);
    let keys: Vec<KeyPair> = (0..n).map(|_| keygen(&gh.dir.path, "ed25519")).collect();
    for key in &keys {
        add_key(&gh, "alice", key, &[]);
    }
    gh.log.drain();
    (gh, keys)
}

fn lines(out: &Output) -> Vec<String> {
    stdout(out).lines().map(str::to_string).collect()
}

// ---- user names ----

#[test]
fn unknown_user_gets_nothing_and_is_logged() {
    let (gh, keys) = with_alice("unknown", 1);
    let (kind, blob) = parts(&keys[0]);
    for args in [vec!["bob"], vec!["bob", keys[0].fingerprint.as_str(), kind, blob]] {
        let out = lookup(&gh, &args);
        let line = assert_refused(&gh, &out, "unknown-user");
        assert!(line.contains("user=bob "), "{line}");
    }
}

#[test]
fn option_like_user_names_are_data() {
    let (gh, keys) = with_alice("optnames", 1);
    let (kind, blob) = parts(&keys[0]);
    let fp = keys[0].fingerprint.as_str();
    // After `--`, as sshd passes them: every name is a user name.
    for name in ["--help", "-h", "--version", "-V", "-x", "--", "--config", "--config=/etc/passwd"] {
        for args in [vec![name], vec![name, fp], vec![name, fp, kind, blob]] {
            let out = lookup(&gh, &args);
            let line = assert_refused(&gh, &out, "bad-user-name");
            assert!(line.contains(&format!("user={name} ")), "{args:?}: {line}");
        }
    }
    // Without `--`: an option-like first operand is still a user name, not an option.
    for name in ["--help", "-h", "--version", "-V", "-x", "--bogus"] {
        for args in [vec![name], vec![name, fp], vec![name, fp, kind, blob]] {
            let args: Vec<&OsStr> = args.into_iter().map(OsStr::new).collect();
            let out = run_raw(&gh, &args);
            let line = assert_refused(&gh, &out, "bad-user-name");
            assert!(line.contains(&format!("user={name} ")), "{args:?}: {line}");
        }
    }
    // `--` and `--config` before the first operand are options (gatehouse-keys(8)); as
    // user names they arrive only after sshd's `--`. Read as options, they still yield no line.
    for args in [["--", fp], ["--config", fp]] {
        let args: Vec<&OsStr> = args.into_iter().map(OsStr::new).collect();
        let out = run_raw(&gh, &args);
        assert!(out.stdout.is_empty(), "{args:?} printed: {}", stdout(&out));
    }
}

#[test]
fn malformed_user_names_get_nothing_and_are_logged_escaped() {
    let (gh, keys) = with_alice("badnames", 1);
    let (kind, blob) = parts(&keys[0]);
    let fp = keys[0].fingerprint.as_str();
    let long = "a".repeat(300);
    let cases: Vec<(&OsStr, String)> = vec![
        (OsStr::new("alice\n"), r#"user="alice\x{a}""#.into()),
        (OsStr::new("alice\nuser=root"), r#"user="alice\x{a}user=root""#.into()),
        (OsStr::new("alice bob"), r#"user="alice bob""#.into()),
        (OsStr::new(" alice"), r#"user=" alice""#.into()),
        (OsStr::new("../x"), "user=../x ".into()),
        (OsStr::new("../alice"), "user=../alice ".into()),
        (OsStr::new("Alice"), "user=Alice ".into()),
        (OsStr::new(&long), format!("user={long} ")),
        (OsStr::new(""), r#"user="""#.into()),
        (OsStr::from_bytes(b"ali\xffce"), r#"user="<not utf-8>""#.into()),
        (OsStr::from_bytes(b"alice\xc3"), r#"user="<not utf-8>""#.into()),
    ];
    for (name, shown) in &cases {
        for args in [vec![*name], vec![*name, OsStr::new(fp), OsStr::new(kind), OsStr::new(blob)]] {
            let mut all = vec![OsStr::new("--")];
            all.extend(args);
            let out = run_raw(&gh, &all);
            let line = assert_refused(&gh, &out, "bad-user-name");
            assert!(line.contains(shown.as_str()), "{name:?}: want {shown} in {line}");
        }
    }
}

// ---- fingerprints and offered keys ----

#[test]
fn malformed_fingerprints_get_nothing() {
    let (gh, keys) = with_alice("badfp", 1);
    let (kind, blob) = parts(&keys[0]);
    let fp = keys[0].fingerprint.as_str();
    let quoted = format!("{}\"", &fp[..fp.len() - 1]);
    let bad = [
        "SHA256:short".to_string(),
        "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48".to_string(),
        quoted.clone(),
        format!("{fp}\""),
        format!("{fp}\n"),
        format!("{fp},command=\"/bin/sh\""),
        fp.to_lowercase(),
        fp.replace("SHA256:", "SHA512:"),
        String::new(),
    ];
    for fingerprint in &bad {
        for args in [vec!["alice", fingerprint.as_str()], vec!["alice", fingerprint.as_str(), kind, blob]] {
            let out = lookup(&gh, &args);
            assert_refused(&gh, &out, "bad-fingerprint");
        }
    }
    // The quote is escaped in the log, not passed through.
    let out = lookup(&gh, &["alice", &quoted]);
    let line = assert_refused(&gh, &out, "bad-fingerprint");
    assert!(line.contains(&format!("fingerprint=\"{}\\\"\"", &fp[..fp.len() - 1])), "{line}");
}

#[test]
fn a_valid_fingerprint_of_another_key_gets_nothing() {
    let (gh, keys) = with_alice("otherfp", 1);
    gh.ok(&["user", "add", "bob"]);
    let bobs = keygen(&gh.dir.path, "ed25519");
    add_key(&gh, "bob", &bobs, &[]);
    let stranger = keygen(&gh.dir.path, "ed25519");
    gh.log.drain();
    for key in [&stranger, &bobs] {
        let (kind, blob) = parts(key);
        for args in [vec!["alice", key.fingerprint.as_str()], vec!["alice", key.fingerprint.as_str(), kind, blob]] {
            let out = lookup(&gh, &args);
            assert_refused(&gh, &out, "no-such-key");
        }
    }
    // Alice's own key is still served, so the refusals above were about the key.
    assert_eq!(lines(&lookup(&gh, &["alice", &keys[0].fingerprint])).len(), 1);
}

#[test]
fn the_right_fingerprint_with_another_type_or_blob_gets_nothing() {
    let (gh, keys) = with_alice("mismatch", 2);
    let (kind, blob) = parts(&keys[0]);
    let (_, other_blob) = parts(&keys[1]);
    let fp = keys[0].fingerprint.as_str();
    let mut flipped = blob.to_string();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    let offers = [
        ("ssh-rsa", blob.to_string()),
        ("ecdsa-sha2-nistp256", blob.to_string()),
        ("ssh-ed25519-cert-v01@openssh.com", blob.to_string()),
        (kind, other_blob.to_string()),
        (kind, flipped),
        (kind, format!("{blob}=")),
        (kind, String::new()),
    ];
    for (offered_kind, offered_blob) in &offers {
        let out = lookup(&gh, &["alice", fp, offered_kind, offered_blob]);
        assert_refused(&gh, &out, "key-mismatch");
    }
}

#[test]
fn the_right_fingerprint_type_and_blob_get_exactly_one_line() {
    let (gh, keys) = with_alice("match", 3);
    let key = &keys[1];
    let (kind, blob) = parts(key);
    let out = lookup(&gh, &["alice", &key.fingerprint, kind, blob]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = lines(&out);
    assert_eq!(printed.len(), 1, "{printed:?}");
    let line = &printed[0];
    assert!(line.starts_with("restrict,command=\""), "{line}");
    assert!(line.contains(&format!(" --key {}\"", key.fingerprint)), "{line}");
    assert!(line.ends_with(&format!(" {}", key.public)), "{line}");
    let entry = one_log_line(&gh);
    assert!(entry.contains(&format!("user=alice fingerprint={} verdict=accept scope=shell", key.fingerprint)));
    // The fingerprint alone gives the same line; the user alone gives all three.
    assert_eq!(lines(&lookup(&gh, &["alice", &key.fingerprint])), printed);
    let all = lines(&lookup(&gh, &["alice"]));
    assert_eq!(all.len(), 3);
    assert!(all.contains(line));
}

// ---- operands ----

#[test]
fn wrong_number_of_operands_is_a_usage_error() {
    let (gh, keys) = with_alice("operands", 1);
    let (kind, blob) = parts(&keys[0]);
    let fp = keys[0].fingerprint.as_str();
    let none: Vec<&OsStr> = vec![OsStr::new("--")];
    let uid = gh.store_uid("alice");
    let short: Vec<&OsStr> = ["--", "alice", &uid, fp, kind].into_iter().map(OsStr::new).collect();
    let long: Vec<&OsStr> = ["--", "alice", &uid, fp, kind, blob, "extra"].into_iter().map(OsStr::new).collect();
    let legacy: Vec<&OsStr> = ["--", "alice", fp, kind].into_iter().map(OsStr::new).collect();
    for args in [none, short, long, legacy] {
        let out = run_raw(&gh, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed: {}", stdout(&out));
        assert!(stderr(&out).contains("usage: gatehouse-keys"), "{}", stderr(&out));
    }
    // `--config` without a file.
    let out = run_raw(&gh, &[OsStr::new("--config")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

// ---- the store in bad shape ----

#[test]
fn missing_store_exits_4() {
    let gh = Gatehouse::new("nostore", "");
    let out = lookup(&gh, &["alice"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let line = one_log_line(&gh);
    assert!(line.contains("error=") && line.contains(gh.store.to_str().unwrap()), "{line}");
}

/// Deterministic junk: the same bytes every run.
fn junk(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

#[test]
fn garbage_store_fails_quickly_and_prints_nothing() {
    let mut with_header = b"SQLite format 3\0".to_vec();
    with_header.extend(junk(64 * 1024));
    for bytes in [junk(64 * 1024), with_header] {
        let gh = Gatehouse::new("garbage", "");
        std::fs::write(&gh.store, &bytes).unwrap();
        let out = lookup(&gh, &["alice"]);
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "printed: {}", stdout(&out));
    }
}

fn sqlite3(db: &Path, sql: &[&str]) {
    let out = Command::new("sqlite3").arg(db).args(sql).output().unwrap();
    assert!(out.status.success(), "sqlite3: {}", stderr(&out));
}

#[test]
fn truncated_store_fails_quickly_and_prints_nothing() {
    for half in [false, true] {
        let (gh, _) = with_alice("truncated", 3);
        // Move everything from the WAL into the store file (keeping the WAL files, as our
        // writers do), so that truncating the file loses pages.
        sqlite3(&gh.store, &[".dbconfig no_ckpt_on_close on", "PRAGMA wal_checkpoint(TRUNCATE);"]);
        let len = std::fs::metadata(&gh.store).unwrap().len();
        assert!(len > 4 * 4096, "store is only {len} bytes after the checkpoint");
        assert_eq!(lines(&lookup(&gh, &["alice"])).len(), 3, "the checkpointed store does not serve");
        let keep = if half { len / 2 } else { 4096 };
        std::fs::OpenOptions::new().write(true).open(&gh.store).unwrap().set_len(keep).unwrap();
        gh.log.drain();
        let out = lookup(&gh, &["alice"]);
        assert_eq!(out.status.code(), Some(4), "truncated to {keep} bytes: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "printed: {}", stdout(&out));
    }
}

#[test]
fn store_from_a_newer_version_exits_4_naming_the_version() {
    let (gh, _) = with_alice("newer", 1);
    sqlite3(&gh.store, &["PRAGMA user_version=99;"]);
    let out = lookup(&gh, &["alice"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let line = one_log_line(&gh);
    assert!(line.contains("error=") && line.contains("schema version 99"), "{line}");
}

// ---- configuration ----

#[test]
fn unknown_config_key_exits_3_naming_file_and_line() {
    let (gh, _) = with_alice("cfgkey", 1);
    let text = std::fs::read_to_string(&gh.config).unwrap() + "colour = \"blue\"\n";
    std::fs::write(&gh.config, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
    let out = lookup(&gh, &["alice"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let want = format!("{}:{line}: unknown field `colour`", gh.config.display());
    assert!(stderr(&out).contains(&want), "want {want} in {}", stderr(&out));
}

#[test]
fn group_writable_config_is_not_trusted() {
    let (gh, _) = with_alice("cfgmode", 1);
    std::fs::set_permissions(&gh.config, std::fs::Permissions::from_mode(0o664)).unwrap();
    let out = lookup(&gh, &["alice"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "printed: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("not trusted") && err.contains(gh.config.to_str().unwrap()), "{err}");
    std::fs::set_permissions(&gh.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(lines(&lookup(&gh, &["alice"])).len(), 1, "0644 should be trusted again");
}

#[test]
fn config_path_that_cannot_reach_the_forced_command_exits_3() {
    let (gh, _) = with_alice("cfgpath", 1);
    // Trusted and valid, but `@` cannot go into the forced command's command="…".
    let config = gh.dir.join("gate@house.toml");
    std::fs::copy(&gh.config, &config).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = wait_bounded(command(&gh, &config, &[OsStr::new("--"), OsStr::new("alice")]).spawn().unwrap());
    assert!(out.stdout.is_empty(), "printed: {}", stdout(&out));
    let line = one_log_line(&gh);
    assert!(line.contains("cannot be passed to the forced command"), "{line}");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

// ---- output and syslog that do not cooperate ----

#[test]
fn closed_stdout_is_not_an_error() {
    let (gh, keys) = with_alice("closed", 5);
    let uid = gh.store_uid("alice");
    let args = ["--", "alice", &uid].map(OsStr::new);
    let mut child = command(&gh, &gh.config, &args).spawn().unwrap();
    drop(child.stdout.take());
    let out = wait_bounded(child);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "stderr: {}", stderr(&out));
    let line = one_log_line(&gh);
    assert!(line.contains(&format!("verdict=list keys={}", keys.len())), "{line}");
}

#[test]
fn unwritable_stdout_exits_4() {
    let (gh, _) = with_alice("devfull", 2);
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let uid = gh.store_uid("alice");
    let args = ["--", "alice", &uid].map(OsStr::new);
    let child = command(&gh, &gh.config, &args).stdout(full).spawn().unwrap();
    let out = wait_bounded(child);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let lines = logged(&gh, 1).join("\n");
    assert!(lines.contains("error=\"writing to standard output"), "{lines}");
}

/// A fresh socket that can send nothing: the receiver's queue is full.
fn queue_is_full(path: &Path) -> bool {
    let probe = UnixDatagram::unbound().unwrap();
    probe.connect(path).unwrap();
    probe.set_nonblocking(true).unwrap();
    matches!(probe.send(b"probe"), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn a_stalled_syslog_does_not_hang_lookups() {
    let (gh, keys) = with_alice("stall", 2);
    let path = gh.dir.join("stalled.sock");
    // Bound and never read, like a syslog daemon that hangs.
    let stalled = UnixDatagram::bind(&path).unwrap();
    // Each sender has its own buffer limit, so fill with fresh senders until even a fresh
    // one cannot send.
    let mut fillers = Vec::new();
    while !queue_is_full(&path) {
        let filler = UnixDatagram::unbound().unwrap();
        filler.connect(&path).unwrap();
        filler.set_nonblocking(true).unwrap();
        loop {
            match filler.send(&[b'x'; 200]) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the syslog queue: {e}"),
            }
        }
        fillers.push(filler);
        assert!(fillers.len() < 1000, "cannot fill the socket queue");
    }
    let text = std::fs::read_to_string(&gh.config).unwrap();
    let text = text.replace(gh.log.path.to_str().unwrap(), path.to_str().unwrap());
    assert!(text.contains(path.to_str().unwrap()));
    let config: PathBuf = gh.dir.join("stalled.toml");
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let (kind, blob) = parts(&keys[0]);
    let uid = gh.store_uid("alice");
    for _ in 0..20 {
        let args = ["--", "alice", &uid, &keys[0].fingerprint, kind, blob].map(OsStr::new);
        let out = wait_bounded(command(&gh, &config, &args).spawn().unwrap());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let printed = lines(&out);
        assert_eq!(printed.len(), 1, "{printed:?}");
        assert!(printed[0].starts_with("restrict,command=") && printed[0].ends_with(&keys[0].public));
    }
    assert!(queue_is_full(&path), "the syslog queue drained; the test proved nothing");
    drop(stalled);
}

// ---- what the store says about users and keys ----

#[test]
fn disabled_user_gets_no_line_until_enabled() {
    let (gh, keys) = with_alice("disabled", 1);
    let (kind, blob) = parts(&keys[0]);
    let full = ["alice", keys[0].fingerprint.as_str(), kind, blob];
    gh.ok(&["user", "disable", "alice"]);
    gh.log.drain();
    assert_refused(&gh, &lookup(&gh, &full), "user-disabled");
    assert_refused(&gh, &lookup(&gh, &["alice"]), "user-disabled");
    gh.ok(&["user", "enable", "alice"]);
    assert_eq!(lines(&lookup(&gh, &full)).len(), 1);
}

#[test]
fn expired_key_gets_no_line() {
    let (gh, keys) = with_alice("expired", 1);
    let short = keygen(&gh.dir.path, "ed25519");
    add_key(&gh, "alice", &short, &["--expires", "1s"]);
    std::thread::sleep(Duration::from_secs(2));
    gh.log.drain();
    let (kind, blob) = parts(&short);
    assert_refused(&gh, &lookup(&gh, &["alice", &short.fingerprint, kind, blob]), "expired");
    // The list holds only the key without expiry.
    let all = lines(&lookup(&gh, &["alice"]));
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0].ends_with(&keys[0].public));
}

#[test]
fn git_key_after_the_policy_became_files_gets_no_line() {
    let (gh, _) = with_alice("narrowed", 0);
    let git = keygen(&gh.dir.path, "ed25519");
    let files = keygen(&gh.dir.path, "ed25519");
    add_key(&gh, "alice", &git, &["--scope", "git"]);
    add_key(&gh, "alice", &files, &["--scope", "files"]);
    gh.ok(&["user", "set", "alice", "--policy", "files"]);
    gh.log.drain();
    let (kind, blob) = parts(&git);
    assert_refused(&gh, &lookup(&gh, &["alice", &git.fingerprint, kind, blob]), "scope-outside-policy");
    let all = lines(&lookup(&gh, &["alice"]));
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0].ends_with(&files.public) && !all[0].contains("pty"), "{}", all[0]);
}

#[test]
fn git_read_key_of_a_git_user_gets_a_line_without_pty() {
    let gh = Gatehouse::new("gitread", "");
    gh.init(None);
    gh.ok(&["user", "add", "bob", "--policy", "git", "--port-forwarding"]);
    let key = keygen(&gh.dir.path, "ed25519");
    add_key(&gh, "bob", &key, &["--scope", "git-read"]);
    gh.log.drain();
    let (kind, blob) = parts(&key);
    let out = lookup(&gh, &["bob", &key.fingerprint, kind, blob]);
    let printed = lines(&out);
    assert_eq!(printed.len(), 1, "{printed:?} {}", stderr(&out));
    let options = printed[0].split_once(&format!(" {kind} ")).unwrap().0;
    assert!(options.starts_with("restrict,command=\""), "{options}");
    assert!(!options.contains("pty") && !options.contains("forwarding"), "{options}");
    assert!(one_log_line(&gh).contains("verdict=accept scope=git-read"));
}

#[test]
fn stored_text_never_reaches_the_options() {
    let (gh, _) = with_alice("inject", 0);
    let evil = r#"x",command="/bin/sh"#;
    let by_option = keygen(&gh.dir.path, "ed25519");
    add_key(&gh, "alice", &by_option, &["--comment", evil]);
    // The same text as the key's own comment.
    let in_text = keygen(&gh.dir.path, "ed25519");
    let (kind, blob) = parts(&in_text);
    let out = gh.cli_stdin(&["key", "add", "alice", "-"], format!("{kind} {blob} {evil}").as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));

    let ours =
        |fp: &str| format!("command=\"exec {} --config {} --key {fp}\"", gh.shell_bin.display(), gh.config.display());
    for key in [&by_option, &in_text] {
        let (kind, blob) = parts(key);
        let printed = lines(&lookup(&gh, &["alice", &key.fingerprint, kind, blob]));
        assert_eq!(printed.len(), 1, "{printed:?}");
        let (options, rest) = printed[0].split_once(&format!(" {kind} ")).unwrap();
        assert_eq!(options.matches("command=").count(), 1, "{options}");
        assert!(options.starts_with(&format!("restrict,{}", ours(&key.fingerprint))), "{options}");
        // The comment is there, after the key, where sshd ignores it.
        assert_eq!(rest, format!("{blob} {evil}"));
    }
}

#[test]
fn tampered_store_fields_never_reach_the_options() {
    let (gh, keys) = with_alice("tamper", 3);
    let fp = |i: usize| keys[i].fingerprint.as_str();
    // As if someone wrote to the store behind the CLI's back.
    sqlite3(
        &gh.store,
        &[
            ".dbconfig no_ckpt_on_close on",
            &format!("UPDATE keys SET from_patterns = '10.0.0.1\",command=\"/bin/sh' WHERE fingerprint = '{}';", fp(0)),
            &format!(
                "UPDATE keys SET comment = 'x' || char(10) || 'ssh-ed25519 AAAA evil' WHERE fingerprint = '{}';",
                fp(1)
            ),
            &format!("UPDATE keys SET algorithm = 'command=\"/bin/sh\" ssh-ed25519' WHERE fingerprint = '{}';", fp(2)),
        ],
    );
    let (kind, blob) = parts(&keys[0]);
    let out = lookup(&gh, &["alice", fp(0), kind, blob]);
    assert!(out.stdout.is_empty(), "printed: {}", stdout(&out));
    let entries = logged(&gh, 2).join("\n");
    assert!(entries.contains(&format!("fingerprint={} verdict=refuse reason=bad-stored-field", fp(0))), "{entries}");

    // The whole list: only the key with the odd comment is served, on one line.
    let out = lookup(&gh, &["alice"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = lines(&out);
    assert_eq!(printed.len(), 1, "{printed:?}");
    let (options, rest) = printed[0].split_once(" ssh-ed25519 ").unwrap();
    assert_eq!(options.matches("command=").count(), 1, "{options}");
    assert!(options.ends_with(&format!("--key {}\",pty", fp(1))), "{options}");
    assert_eq!(rest, format!("{} xssh-ed25519 AAAA evil", parts(&keys[1]).1));
}

#[test]
fn the_reader_changes_no_file() {
    let (gh, keys) = with_alice("readonly", 3);
    let wal = PathBuf::from(format!("{}-wal", gh.store.display()));
    let state = gh.store.parent().unwrap();
    for file in [&gh.store, &wal] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o555)).unwrap();
    // As root the modes are not enforced, so compare what stat(2) says before and after.
    let stat = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.modified().unwrap(), m.len())
    };
    let before = (stat(&gh.store), stat(&wal));
    let (kind, blob) = parts(&keys[2]);
    for i in 0..50 {
        let out = match i % 3 {
            0 => lookup(&gh, &["alice"]),
            1 => lookup(&gh, &["alice", &keys[2].fingerprint]),
            _ => lookup(&gh, &["alice", &keys[2].fingerprint, kind, blob]),
        };
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(lines(&out).len(), if i % 3 == 0 { 3 } else { 1 });
    }
    assert_eq!((stat(&gh.store), stat(&wal)), before, "a lookup changed the store or its WAL");
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn non_utf8_fingerprint_and_blob_get_nothing() {
    let (gh, keys) = with_alice("nonutf8", 1);
    let (kind, blob) = parts(&keys[0]);
    let bad = OsStr::from_bytes(b"SHA256:\xff\xfe");
    let alice_uid = gh.store_uid("alice");
    let uid = OsStr::new(&alice_uid);
    let args = [OsStr::new("--"), OsStr::new("alice"), uid, bad, OsStr::new(kind), OsStr::new(blob)];
    assert_refused(&gh, &run_raw(&gh, &args), "bad-fingerprint");
    let fp = OsStr::new(keys[0].fingerprint.as_str());
    let args = [OsStr::new("--"), OsStr::new("alice"), uid, fp, OsStr::new(kind), OsStr::from_bytes(b"AAAA\xff")];
    assert_refused(&gh, &run_raw(&gh, &args), "key-mismatch");
}

// ---- system accounts: nothing the store says makes a key for root ----

/// Alice's keys renamed in the store to `name`, behind the CLI's back (the CLI refuses
/// such names), as a store written before that rule, or by hand, would hold them.
fn store_renamed(name: &str, test: &str) -> (Gatehouse, KeyPair) {
    let (gh, mut keys) = with_alice(test, 1);
    sqlite3(&gh.store, &[".dbconfig no_ckpt_on_close on", &format!("UPDATE users SET name = '{name}';")]);
    (gh, keys.remove(0))
}

#[test]
fn root_gets_no_key_whatever_the_store_says() {
    let (gh, key) = store_renamed("root", "root");
    let (kind, blob) = parts(&key);
    // uid 0, as sshd passes %U for root.
    for args in [vec!["--", "root", "0"], vec!["--", "root", "0", key.fingerprint.as_str(), kind, blob]] {
        let args: Vec<&OsStr> = args.into_iter().map(OsStr::new).collect();
        let line = assert_refused(&gh, &run_raw(&gh, &args), "system-account");
        assert!(line.contains("user=root "), "{line}");
    }
    // The name alone refuses too, with any uid.
    assert_refused(&gh, &lookup(&gh, &["root", &key.fingerprint, kind, blob]), "reserved-name");
}

#[test]
fn accounts_below_uid_min_get_no_key() {
    // alice exists in the store; sshd says her account's uid is 999 (TEST_UID_RANGE
    // starts at 1000): a system account of that name, whatever the store says.
    let (gh, keys) = with_alice("lowuid", 1);
    let (kind, blob) = parts(&keys[0]);
    for uid in ["0", "1", "999"] {
        let args: Vec<&OsStr> =
            ["--", "alice", uid, keys[0].fingerprint.as_str(), kind, blob].into_iter().map(OsStr::new).collect();
        assert_refused(&gh, &run_raw(&gh, &args), "system-account");
    }
    let uid = gh.store_uid("alice");
    let args: Vec<&OsStr> =
        ["--", "alice", &uid, keys[0].fingerprint.as_str(), kind, blob].into_iter().map(OsStr::new).collect();
    let out = run_raw(&gh, &args);
    assert_eq!(lines(&out).len(), 1, "uid {uid} (the store's) is served: {}", stderr(&out));
    gh.log.drain();
}

#[test]
fn an_account_with_another_uid_than_the_stores_gets_no_key() {
    // The store gave alice a uid; an account of her name with another one (a former
    // user's, the name added again, or one made by hand) is not hers.
    let (gh, keys) = with_alice("uidmismatch", 1);
    let (kind, blob) = parts(&keys[0]);
    let other = (gh.store_uid("alice").parse::<u32>().unwrap() + 1).to_string();
    for args in [vec!["--", "alice", &other], vec!["--", "alice", &other, keys[0].fingerprint.as_str(), kind, blob]] {
        let args: Vec<&OsStr> = args.into_iter().map(OsStr::new).collect();
        let line = assert_refused(&gh, &run_raw(&gh, &args), "uid-mismatch");
        assert!(line.contains("user=alice "), "{line}");
    }
}

#[test]
fn without_a_uid_nothing_is_served_and_the_log_says_why() {
    let (gh, keys) = with_alice("nouid", 1);
    let (kind, blob) = parts(&keys[0]);
    // The forms sshd used before %U was passed.
    for args in [vec!["--", "alice"], vec!["--", "alice", keys[0].fingerprint.as_str(), kind, blob]] {
        let args: Vec<&OsStr> = args.into_iter().map(OsStr::new).collect();
        let line = assert_refused(&gh, &run_raw(&gh, &args), "no-uid");
        assert!(line.contains("%U"), "the log names the fix: {line}");
    }
}

#[test]
fn invisible_characters_in_stored_comments_are_never_printed() {
    let (gh, keys) = with_alice("bidi", 1);
    // As a store written before such comments were refused would hold it.
    sqlite3(
        &gh.store,
        &[
            ".dbconfig no_ckpt_on_close on",
            "UPDATE keys SET comment = 'laptop' || char(8238) || 'gpj.exe' || char(8203) || char(8297);",
        ],
    );
    let out = lookup(&gh, &["alice", &keys[0].fingerprint]);
    let printed = lines(&out);
    assert_eq!(printed.len(), 1, "{}", stderr(&out));
    assert!(printed[0].ends_with(" laptopgpj.exe"), "{:?}", printed[0]);
    assert!(!printed[0].chars().any(|c| ('\u{200B}'..='\u{206F}').contains(&c)), "{:?}", printed[0]);
    for listing in [gh.ok(&["key", "list", "alice"]), gh.ok(&["user", "show", "alice", "--json"])] {
        assert!(listing.contains("laptopgpj.exe"), "{listing}");
        assert!(!listing.contains('\u{202E}') && !listing.contains("u202e"), "{listing}");
    }
}
