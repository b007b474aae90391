//! End-to-end: a real sshd with the shipped drop-in, the real ssh client, keys from the store.
//! Needs root (creates users, starts sshd).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::{Duration, Instant};

fn setup(name: &str) -> (Gatehouse, Sshd) {
    let gh = Gatehouse::new(name, "");
    gh.init(None);
    let sshd = Sshd::start(&gh, "");
    (gh, sshd)
}

fn add_key(gh: &Gatehouse, user: &str, key: &KeyPair, extra: &[&str]) -> String {
    let pub_path = format!("{}.pub", key.private.display());
    let mut args = vec!["key", "add", user, "--file", pub_path.as_str()];
    args.extend_from_slice(extra);
    let fp = gh.ok(&args).trim().to_string();
    assert_eq!(fp, key.fingerprint, "CLI fingerprint differs from ssh-keygen -lf");
    fp
}

#[test]
fn key_in_store_logs_in_and_a_removed_key_is_refused_at_once() {
    require_root!();
    let (gh, sshd) = setup("login");
    let user = sshd.user(&gh, &[]);
    let key = keygen(&gh.dir.path, "ed25519");
    let fp = add_key(&gh, &user.name, &key, &[]);

    let out = sshd.ssh(&user.name, &key.private, &["echo", "in:$((6*7))"]);
    assert!(out.status.success(), "login failed: {}\nsshd: {}", stderr(&out), sshd.log_text());
    assert_eq!(stdout(&out).trim(), "in:42");
    // The decision was logged with user, fingerprint and verdict.
    let logged = gh.log.drain().join("\n");
    assert!(logged.contains(&format!("user={} fingerprint={fp} verdict=accept scope=shell", user.name)), "{logged}");

    gh.ok(&["key", "remove", &user.name, &fp]);
    let out = sshd.ssh(&user.name, &key.private, &["true"]);
    assert_eq!(out.status.code(), Some(255), "removed key still logs in");
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
}

#[test]
fn disabled_user_is_refused_and_enabled_again() {
    require_root!();
    let (gh, sshd) = setup("disabled");
    let user = sshd.user(&gh, &[]);
    let key = keygen(&gh.dir.path, "ecdsa");
    add_key(&gh, &user.name, &key, &[]);
    gh.ok(&["user", "disable", &user.name]);
    let out = sshd.ssh(&user.name, &key.private, &["true"]);
    assert_eq!(out.status.code(), Some(255), "disabled user logged in");
    gh.ok(&["user", "enable", &user.name]);
    let out = sshd.ssh(&user.name, &key.private, &["true"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn expired_key_is_refused() {
    require_root!();
    let (gh, sshd) = setup("expiry");
    let user = sshd.user(&gh, &[]);
    let key = keygen(&gh.dir.path, "ed25519");
    add_key(&gh, &user.name, &key, &["--expires", "3s"]);
    let added = Instant::now();
    let out = sshd.ssh(&user.name, &key.private, &["true"]);
    assert!(out.status.success(), "fresh key refused: {}", stderr(&out));
    std::thread::sleep(Duration::from_secs(4).saturating_sub(added.elapsed()));
    let out = sshd.ssh(&user.name, &key.private, &["true"]);
    assert_eq!(out.status.code(), Some(255), "expired key logged in");
}

#[test]
fn from_patterns_restrict_the_source_address() {
    require_root!();
    let (gh, sshd) = setup("from");
    let user = sshd.user(&gh, &[]);
    let far = keygen(&gh.dir.path, "ed25519");
    let near = keygen(&gh.dir.path, "ed25519");
    add_key(&gh, &user.name, &far, &["--from", "192.0.2.0/24"]);
    add_key(&gh, &user.name, &near, &["--from", "127.0.0.0/8,::1"]);
    let out = sshd.ssh(&user.name, &far.private, &["true"]);
    assert_eq!(out.status.code(), Some(255), "key limited to 192.0.2.0/24 logged in from 127.0.0.1");
    let out = sshd.ssh(&user.name, &near.private, &["true"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn non_shell_scopes_get_a_greeting_and_exit_1() {
    require_root!();
    let (gh, sshd) = setup("scopes");
    let user = sshd.user(&gh, &[]);
    for scope in ["files", "git", "git-read"] {
        let key = keygen(&gh.dir.path, "ed25519");
        let fp = add_key(&gh, &user.name, &key, &["--scope", scope]);
        for command in [&["id"][..], &[][..]] {
            let out = sshd.ssh(&user.name, &key.private, command);
            assert_eq!(out.status.code(), Some(1), "scope {scope}: {}", stderr(&out));
            let greeting = format!(
                "Hi {}! You've authenticated with key {fp}, but shell access is not enabled for this key.",
                user.name
            );
            assert!(stderr(&out).contains(&greeting), "scope {scope}: {}", stderr(&out));
            assert!(stdout(&out).is_empty(), "a refused command ran: {}", stdout(&out));
        }
    }
}

#[test]
fn a_policy_narrowed_after_the_key_was_added_narrows_the_key() {
    require_root!();
    let (gh, sshd) = setup("narrow");
    let user = sshd.user(&gh, &[]);
    let key = keygen(&gh.dir.path, "ed25519");
    add_key(&gh, &user.name, &key, &[]);
    gh.ok(&["user", "set", &user.name, "--policy", "files"]);
    let out = sshd.ssh(&user.name, &key.private, &["id"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("shell access is not enabled"));
}

#[test]
fn hostile_uploads_are_refused_and_never_reach_sshd() {
    require_root!();
    let (gh, sshd) = setup("hostile");
    let user = sshd.user(&gh, &[]);
    let good = keygen(&gh.dir.path, "ed25519");
    let (kind, blob) = good.public.split_once(' ').map(|(k, rest)| (k, rest.split(' ').next().unwrap())).unwrap();
    let hostile = [
        format!("restrict,command=\"/bin/sh\" {kind} {blob}"),
        format!("command=\"/bin/sh\" {kind} {blob}"),
        format!("{kind} {blob} x\nssh-ed25519 {blob}"),
        format!("{kind} {blob} x\rcommand=\"sh\""),
        format!("{kind} {blob}\0evil"),
        format!("ssh-dss {blob}"),
        format!("ssh-rsa {blob}"),
        format!("ssh-ed25519-cert-v01@openssh.com {blob}"),
        format!("{kind} {blob} {kind} {blob}"),
        format!("{kind} {blob}="),
    ];
    for text in &hostile {
        let out = gh.cli_stdin(&["key", "add", &user.name, "-"], text.as_bytes());
        assert_eq!(out.status.code(), Some(1), "accepted: {text:?}");
        assert_eq!(stderr(&out).lines().count(), 1, "not one line: {}", stderr(&out));
    }
    let private = std::fs::read(&good.private).unwrap();
    let out = gh.cli_stdin(&["key", "add", &user.name, "-"], &private);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("PRIVATE key"), "{}", stderr(&out));
    let secret_line = String::from_utf8_lossy(&private).lines().nth(1).unwrap().to_string();
    assert!(!stderr(&out).contains(&secret_line[..20]), "private key echoed");
    // Nothing was stored: the user has no keys and cannot log in.
    assert!(gh.keys(&[&user.name]).stdout.is_empty());
    let out = sshd.ssh(&user.name, &good.private, &["true"]);
    assert_eq!(out.status.code(), Some(255));
}

#[test]
fn a_key_cannot_be_registered_twice() {
    require_root!();
    let gh = Gatehouse::new("dupe", "");
    gh.init(None);
    gh.ok(&["user", "add", "alice"]);
    gh.ok(&["user", "add", "bob"]);
    let key = keygen(&gh.dir.path, "ed25519");
    gh.cli_stdin(&["key", "add", "alice", "-"], key.public.as_bytes());
    let out = gh.cli_stdin(&["key", "add", "bob", "-"], format!("{} other-comment", key.public).as_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already registered"), "{}", stderr(&out));
    assert!(gh.keys(&["bob"]).stdout.is_empty());
}

#[test]
fn hundred_concurrent_logins_while_other_keys_change() {
    require_root!();
    let (gh, sshd) = setup("storm");
    let user = sshd.user(&gh, &[]);
    let other = sshd.user(&gh, &[]);
    let key = keygen(&gh.dir.path, "ed25519");
    add_key(&gh, &user.name, &key, &[]);
    let churn_keys: Vec<KeyPair> = (0..10).map(|_| keygen(&gh.dir.path, "ed25519")).collect();

    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && rounds < 500 {
                for k in &churn_keys {
                    let out = gh.cli_stdin(&["key", "add", &other.name, "-"], k.public.as_bytes());
                    assert!(out.status.success(), "{}", stderr(&out));
                }
                for k in &churn_keys {
                    gh.ok(&["key", "remove", &other.name, &k.fingerprint]);
                }
                rounds += 1;
            }
            rounds
        });
        let clients: Vec<_> = (0..100)
            .map(|_| {
                sshd.ssh_command(&user.name, &key.private, &["echo", "ok"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut failures = Vec::new();
        for child in clients {
            let out = child.wait_with_output().unwrap();
            if !out.status.success() || stdout(&out).trim() != "ok" {
                failures.push(stderr(&out));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let rounds = churn.join().unwrap();
        assert!(rounds > 0, "the writer never ran");
        assert!(
            failures.is_empty(),
            "{} of 100 logins failed: {:?}\nsshd: {}",
            failures.len(),
            failures.first(),
            sshd.log_text()
        );
    });
    let logged = gh.log.drain().join("\n");
    assert!(!logged.contains("locked"), "a reader saw a locked store: {logged}");
}

#[test]
fn doctor_passes_on_the_shipped_setup_and_names_what_breaks_it() {
    require_root!();
    let (gh, sshd) = setup("doctor");
    let user = sshd.user(&gh, &[]);
    let doctor = || gh.cli(&["doctor", "--sshd-config", sshd.config.to_str().unwrap()]);
    let out = doctor();
    assert!(out.status.success(), "{}", stdout(&out));
    let report = stdout(&out);
    assert!(
        report.contains(&format!("the key command runs as {} and reads the store", sshd.key_user.name)),
        "{report}"
    );
    assert!(report.contains("AuthorizedKeysFile none"), "{report}");
    assert!(report.contains("ok   shell.login_shell /bin/bash is there"), "{report}");
    assert!(report.contains(&format!("evaluating sshd's configuration for user {}", user.name)), "{report}");
    // The harness's accounts keep /bin/sh: a warning, not a failure.
    assert!(
        report.contains(&format!("warn 1 of 1 accounts checked have another login shell ({}: /bin/sh)", user.name)),
        "{report}"
    );
    std::process::Command::new("usermod").arg("-s").arg(&gh.shell_bin).arg(&user.name).status().unwrap();
    let report = stdout(&doctor());
    assert!(report.contains("ok   all 1 accounts checked have gatehouse-shell as their login shell"), "{report}");

    // A key command sshd would refuse: its folder writable by others.
    use std::os::unix::fs::PermissionsExt;
    let bin = gh.keys_bin.parent().unwrap();
    std::fs::set_permissions(bin, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = doctor();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAIL sshd will refuse the key command"), "{}", stdout(&out));
    std::fs::set_permissions(bin, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The key-command user cut off from the store.
    std::fs::set_permissions(gh.store.parent().unwrap(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = doctor();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(&format!("FAIL the key command as {}", sshd.key_user.name)), "{}", stdout(&out));
}
