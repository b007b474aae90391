//! The admin CLI: users, keys, imports and the audit trail, checked through what the CLI
//! prints, what gatehouse-keys then serves, and what reaches the audit trail and syslog.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PATTERN: &str = "^[a-z_][a-z0-9_-]{0,31}$";

fn setup(name: &str, extra_config: &str) -> Gatehouse {
    let gh = Gatehouse::new(name, extra_config);
    gh.init(None);
    gh
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Like common::keygen, with a key size.
fn keygen_bits(dir: &Path, kind: &str, bits: u32) -> KeyPair {
    let private = dir.join(unique("id_"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", "test@gatehouse", "-t", kind, "-b", &bits.to_string(), "-f"])
        .arg(&private)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
    let public = std::fs::read_to_string(pub_path(&private)).unwrap().trim_end().to_string();
    let lf = Command::new("ssh-keygen").arg("-lf").arg(pub_path(&private)).output().unwrap();
    let fingerprint = stdout(&lf).split_whitespace().nth(1).unwrap().to_string();
    KeyPair { private, public, fingerprint }
}

fn pub_path(private: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", private.display()))
}

/// `key add USER --file KEY.pub EXTRA…`
fn add_file(gh: &Gatehouse, user: &str, key: &KeyPair, extra: &[&str]) -> Output {
    let path = pub_path(&key.private);
    let mut args = vec!["key", "add", user, "--file", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    gh.cli(&args)
}

/// Adds a key that must be accepted; checks the printed fingerprint.
fn add_ok(gh: &Gatehouse, user: &str, key: &KeyPair, extra: &[&str]) {
    let out = add_file(gh, user, key, extra);
    assert!(out.status.success(), "key add {extra:?}: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", key.fingerprint));
}

/// Asserts the CLI exited with `code`, printed nothing and said `needle` on stderr.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stdout: {} stderr: {}", stdout(out), stderr(out));
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(out));
    assert!(stderr(out).contains(needle), "want {needle:?} in: {}", stderr(out));
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The key blobs gatehouse-keys serves for `user`.
fn served(gh: &Gatehouse, user: &str) -> BTreeSet<String> {
    let out = gh.keys(&[user]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).lines().map(|l| l.split(' ').rev().nth(1).unwrap().to_string()).collect()
}

fn blob(key: &KeyPair) -> String {
    key.public.split(' ').nth(1).unwrap().to_string()
}

fn blobs<'a>(keys: impl IntoIterator<Item = &'a KeyPair>) -> BTreeSet<String> {
    keys.into_iter().map(blob).collect()
}

/// Log lines received since the last call, waiting up to 3 s for at least `want`.
fn logged(gh: &Gatehouse, want: usize) -> Vec<String> {
    gh.log.wait_for(want)
}

// ---- store ----

#[test]
fn init_twice_is_up_to_date_and_the_files_are_0640() {
    let gh = Gatehouse::new("init", "");
    let first = gh.ok(&["init"]);
    assert!(first.starts_with(&format!("store {} created (schema version ", gh.store.display())), "{first}");
    let second = gh.ok(&["init"]);
    assert!(second.starts_with(&format!("store {} is up to date (schema version ", gh.store.display())), "{second}");
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", gh.store.display());
        let mode = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{file}: {e}")).permissions().mode();
        assert_eq!(mode & 0o7777, 0o640, "{file}: mode {:o}", mode & 0o7777);
    }
    // Only the first run changed anything.
    let audit = gh.ok(&["audit"]);
    assert_eq!(audit.matches(" store.init ").count(), 1, "{audit}");
    assert!(!audit.contains("store.upgrade"), "{audit}");

    // Another tool that closes the store last removes the -wal and -shm files; init
    // brings them back.
    let out = Command::new("sqlite3").arg(&gh.store).arg("SELECT count(*) FROM users;").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let wal = PathBuf::from(format!("{}-wal", gh.store.display()));
    assert!(!wal.exists(), "sqlite3 kept the WAL; this part of the test proves nothing");
    assert!(gh.ok(&["init"]).contains(" is up to date "));
    for suffix in ["-wal", "-shm"] {
        let file = format!("{}{suffix}", gh.store.display());
        let mode = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{file}: {e}")).permissions().mode();
        assert_eq!(mode & 0o7777, 0o640, "{file}");
    }
}

/// Sets the store's schema version with the sqlite3 tool.
fn set_version(gh: &Gatehouse, version: u32) {
    let out = Command::new("sqlite3").arg(&gh.store).arg(format!("PRAGMA user_version={version};")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_store_from_a_newer_version_is_left_alone() {
    let gh = setup("newer", "");
    gh.ok(&["user", "add", "alice"]);
    set_version(&gh, 99);
    assert_fails(&gh.cli(&["user", "list"]), 4, "schema version 99");
    assert_fails(&gh.cli(&["user", "add", "bob"]), 4, "schema version 99");
    let out = gh.cli(&["init"]);
    assert_fails(&out, 4, "schema version 99");
    let version = Command::new("sqlite3").arg(&gh.store).arg("PRAGMA user_version;").output().unwrap();
    assert_eq!(stdout(&version).trim(), "99");
}

#[test]
fn a_newer_store_error_does_not_send_the_operator_to_init() {
    let gh = setup("newerhint", "");
    set_version(&gh, 99);
    for args in [&["user", "list"][..], &["init"]] {
        let out = gh.cli(args);
        assert_fails(&out, 4, "schema version 99");
        assert!(!stderr(&out).contains("gatehouse init"), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn commands_before_init_exit_4_and_create_nothing() {
    let gh = Gatehouse::new("noinit", "");
    for args in [&["key", "list", "alice"][..], &["user", "add", "alice"], &["audit"]] {
        let out = gh.cli(args);
        assert_fails(&out, 4, "does not exist");
        assert!(stderr(&out).contains(gh.store.to_str().unwrap()), "{}", stderr(&out));
    }
    assert!(!gh.store.exists(), "a command other than init created the store");
}

#[test]
fn config_errors_exit_3_naming_file_and_line() {
    let gh = setup("cfgerr", "");
    let good = std::fs::read_to_string(&gh.config).unwrap();
    for (extra, needle) in [
        ("colour = 1\n", "unknown field `colour`"),
        ("\n[keys]\nmax_per_user = 0\n", "keys.max_per_user: must be between"),
    ] {
        let text = format!("{good}{extra}");
        std::fs::write(&gh.config, &text).unwrap();
        let line = text.lines().count();
        let out = gh.cli(&["user", "list"]);
        assert_fails(&out, 3, &format!("{}:{line}: {needle}", gh.config.display()));
    }
}

// ---- users ----

#[test]
fn user_add_list_and_show_in_text_and_json() {
    let gh = setup("users", "");
    assert_eq!(gh.ok(&["user", "add", "carol", "--disabled"]), "added user carol\n");
    gh.ok(&["user", "add", "alice"]);
    gh.ok(&["user", "add", "bob", "--policy", "git", "--port-forwarding"]);
    let text = gh.ok(&["user", "list"]);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        rows.iter().map(|r| r[..4].join("\t")).collect::<Vec<_>>(),
        ["alice\tenabled\tshell\t-", "bob\tenabled\tgit\tforwarding", "carol\tdisabled\tshell\t-"]
    );
    // The store gives each a uid as it is added: carol first, then alice, then bob.
    let uid = |row: usize| rows[row][4].parse::<u32>().unwrap();
    assert!(uid(2) < uid(0) && uid(0) < uid(1), "{text}");
    let list = json(&gh.ok(&["user", "list", "--json"]));
    assert_eq!(list[1]["uid"], uid(1));
    let list = list.as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(list[1]["policy"], "git");
    assert_eq!(list[1]["port_forwarding"], true);
    assert_eq!(list[2]["state"], "disabled");
    assert_eq!(list[0]["source"], "cli");
    assert!((list[0]["created"].as_i64().unwrap() - now()).abs() < 60, "{}", list[0]);

    let key = keygen(&gh.dir.path, "ed25519");
    add_ok(&gh, "bob", &key, &["--scope", "git-read"]);
    let show = gh.ok(&["user", "show", "bob"]);
    let bob_uid = format!("uid: {}\n", uid(1));
    for want in ["name: bob\n", "state: enabled\n", &bob_uid, "policy: git\n", "port forwarding: yes\n", "keys: 1\n"] {
        assert!(show.contains(want), "want {want:?} in {show}");
    }
    assert!(show.contains(&format!("{} ssh-ed25519 256 git-read no-expiry test@gatehouse", key.fingerprint)));
    let show = json(&gh.ok(&["user", "show", "bob", "--json"]));
    assert_eq!(show["name"], "bob");
    assert!(show["created_at"].as_str().unwrap().ends_with('Z'), "{show}");
    let keys = show["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["fingerprint"], key.fingerprint.as_str());
    assert_eq!(keys[0]["scope"], "git-read");
    assert_eq!(keys[0]["blob"], blob(&key).as_str());
    assert_eq!(keys[0]["expires"], Value::Null);

    assert_fails(&gh.cli(&["user", "show", "dave"]), 1, "no such user: dave");
}

#[test]
fn disable_and_enable_say_when_nothing_changed() {
    let gh = setup("state", "");
    gh.ok(&["user", "add", "alice"]);
    assert_eq!(gh.ok(&["user", "disable", "alice"]), "user alice disabled\n");
    assert_eq!(gh.ok(&["user", "disable", "alice"]), "user alice was already disabled\n");
    assert!(gh.ok(&["user", "list"]).starts_with("alice\tdisabled\t"));
    assert_eq!(gh.ok(&["user", "enable", "alice"]), "user alice enabled\n");
    assert_eq!(gh.ok(&["user", "enable", "alice"]), "user alice was already enabled\n");
    assert!(gh.ok(&["user", "list"]).starts_with("alice\tenabled\t"));
    assert_fails(&gh.cli(&["user", "disable", "bob"]), 1, "no such user: bob");
}

#[test]
fn user_set_changes_policy_and_forwarding() {
    let gh = setup("set", "");
    gh.ok(&["user", "add", "alice"]);
    let show = || json(&gh.ok(&["user", "show", "alice", "--json"]));
    assert_eq!(gh.ok(&["user", "set", "alice", "--policy", "git"]), "updated user alice\n");
    assert_eq!((show()["policy"].clone(), show()["port_forwarding"].clone()), ("git".into(), false.into()));
    gh.ok(&["user", "set", "alice", "--port-forwarding", "yes"]);
    assert_eq!((show()["policy"].clone(), show()["port_forwarding"].clone()), ("git".into(), true.into()));
    gh.ok(&["user", "set", "alice", "--policy", "files", "--port-forwarding", "no"]);
    assert_eq!((show()["policy"].clone(), show()["port_forwarding"].clone()), ("files".into(), false.into()));
    assert_fails(&gh.cli(&["user", "set", "alice"]), 1, "nothing to change");
    assert_fails(&gh.cli(&["user", "set", "bob", "--policy", "git"]), 1, "no such user: bob");
    assert_fails(&gh.cli(&["user", "set", "alice", "--policy", "root"]), 2, "root");
    assert_fails(&gh.cli(&["user", "set", "alice", "--port-forwarding", "maybe"]), 2, "yes or no");
}

#[test]
fn user_remove_takes_the_keys_along() {
    let gh = setup("remove", "");
    gh.ok(&["user", "add", "alice"]);
    let keys = [keygen(&gh.dir.path, "ed25519"), keygen(&gh.dir.path, "ecdsa")];
    for key in &keys {
        add_ok(&gh, "alice", key, &[]);
    }
    assert_eq!(served(&gh, "alice").len(), 2);
    assert_eq!(gh.ok(&["user", "remove", "alice"]), "removed user alice and 2 key(s)\n");
    assert!(gh.ok(&["audit", "--user", "alice"]).contains(" user.remove alice keys=2"));
    assert!(gh.keys(&["alice"]).stdout.is_empty());
    assert_eq!(gh.ok(&["user", "list"]), "");
    // The keys are free again: a new alice starts with none, and bob can register them.
    gh.ok(&["user", "add", "alice"]);
    assert_eq!(gh.ok(&["key", "list", "alice"]), "");
    gh.ok(&["user", "add", "bob"]);
    add_ok(&gh, "bob", &keys[0], &[]);
    assert_fails(&gh.cli(&["user", "remove", "carol"]), 1, "no such user: carol");
}

#[test]
fn invalid_user_names_are_refused_with_the_pattern() {
    let gh = setup("names", "");
    let long = "a".repeat(33);
    for name in ["Alice", "a b", "../x", "-x", "", "alice\n", "al;ice", "ålice", long.as_str()] {
        let out = gh.cli(&["user", "add", "--", name]);
        assert_fails(&out, 1, "is not a valid user name");
        assert!(stderr(&out).contains(PATTERN), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    assert_eq!(gh.ok(&["user", "list"]), "");
}

#[test]
fn a_user_cannot_be_added_twice() {
    let gh = setup("twice", "");
    gh.ok(&["user", "add", "alice", "--policy", "git"]);
    assert_fails(&gh.cli(&["user", "add", "alice"]), 1, "user alice already exists");
    // The first one is unchanged, its uid too.
    let list = gh.ok(&["user", "list"]);
    assert!(list.starts_with("alice\tenabled\tgit\t-\t") && list.lines().count() == 1, "{list}");
}

// ---- keys ----

#[test]
fn key_add_from_a_file_and_from_stdin_prints_the_ssh_keygen_fingerprint() {
    let gh = setup("keyadd", "");
    gh.ok(&["user", "add", "alice"]);
    let from_file = keygen(&gh.dir.path, "ed25519");
    add_ok(&gh, "alice", &from_file, &[]);
    let from_stdin = keygen(&gh.dir.path, "ed25519");
    let out = gh.cli_stdin(&["key", "add", "alice", "-"], format!("{}\n", from_stdin.public).as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", from_stdin.fingerprint));
    assert_eq!(served(&gh, "alice"), blobs([&from_file, &from_stdin]));
    let list = gh.ok(&["key", "list", "alice"]);
    let fps: Vec<&str> = list.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(fps, [from_file.fingerprint.as_str(), from_stdin.fingerprint.as_str()]);
    assert!(list.lines().all(|l| l.ends_with(" test@gatehouse")), "{list}");

    // A key is registered once, even to the same user.
    let out = add_file(&gh, "alice", &from_file, &[]);
    assert_fails(&out, 1, &format!("key {} is already registered (to user alice)", from_file.fingerprint));
    // --comment replaces the key's own, trimmed.
    let third = keygen(&gh.dir.path, "ed25519");
    add_ok(&gh, "alice", &third, &["--comment", "  my laptop  "]);
    assert!(gh.ok(&["key", "list", "alice"]).ends_with(" 256 shell no-expiry my laptop\n"));
}

#[test]
fn key_types_and_sizes() {
    let gh = setup("types", "");
    gh.ok(&["user", "add", "alice"]);
    for (kind, bits, algorithm) in [
        ("ed25519", 256, "ssh-ed25519"),
        ("ecdsa", 256, "ecdsa-sha2-nistp256"),
        ("ecdsa", 384, "ecdsa-sha2-nistp384"),
        ("ecdsa", 521, "ecdsa-sha2-nistp521"),
        ("rsa", 3072, "ssh-rsa"),
    ] {
        let key = keygen_bits(&gh.dir.path, kind, bits);
        add_ok(&gh, "alice", &key, &[]);
        let list = gh.ok(&["key", "list", "alice"]);
        let want = format!("{} {algorithm} {bits} shell ", key.fingerprint);
        assert!(list.contains(&want), "want {want:?} in {list}");
    }
    let short = keygen_bits(&gh.dir.path, "rsa", 2048);
    assert_fails(&add_file(&gh, "alice", &short, &[]), 1, "RSA key has 2048 bits; at least 3072 are required");
    assert_eq!(gh.ok(&["key", "list", "alice"]).lines().count(), 5);
}

#[test]
fn a_scope_wider_than_the_policy_is_refused() {
    let gh = setup("scope", "");
    gh.ok(&["user", "add", "bob", "--policy", "git"]);
    let key = keygen(&gh.dir.path, "ed25519");
    for scope in ["shell", "files"] {
        let out = add_file(&gh, "bob", &key, &["--scope", scope]);
        assert_fails(&out, 1, &format!("scope {scope} is wider than the user's policy git"));
    }
    assert_eq!(gh.ok(&["key", "list", "bob"]), "");
    add_ok(&gh, "bob", &key, &["--scope", "git-read"]);
}

#[test]
fn expiry_rules_under_a_maximum_lifetime() {
    let gh = setup("expiry", "\n[keys]\nmax_lifetime = \"30d\"\n");
    gh.ok(&["user", "add", "alice"]);
    let key = keygen(&gh.dir.path, "ed25519");
    assert_fails(&add_file(&gh, "alice", &key, &["--expires", "2000-01-01"]), 1, "is in the past");
    for beyond in ["2099-01-01", "31d"] {
        let out = add_file(&gh, "alice", &key, &["--expires", beyond]);
        assert_fails(&out, 1, "beyond the site's maximum key lifetime");
    }
    assert_fails(&add_file(&gh, "alice", &key, &["--expires", "soon"]), 1, "--expires");
    assert_eq!(gh.ok(&["key", "list", "alice"]), "");

    // Without --expires the key gets the maximum.
    add_ok(&gh, "alice", &key, &[]);
    let week = keygen(&gh.dir.path, "ed25519");
    add_ok(&gh, "alice", &week, &["--expires", "7d"]);
    let keys = json(&gh.ok(&["key", "list", "alice", "--json"]));
    for (k, days) in keys.as_array().unwrap().iter().zip([30, 7]) {
        let expires = k["expires"].as_i64().unwrap_or_else(|| panic!("no expiry: {k}"));
        assert!((expires - (now() + days * 86_400)).abs() < 120, "{days}d: {k}");
    }
    let list = gh.ok(&["key", "list", "alice"]);
    assert!(list.lines().all(|l| l.contains(" expires 20")), "{list}");
    let served = stdout(&gh.keys(&["alice"]));
    assert_eq!(served.matches(",expiry-time=\"20").count(), 2, "{served}");
}

#[test]
fn bad_from_patterns_are_refused() {
    let gh = setup("from", "");
    gh.ok(&["user", "add", "alice"]);
    let key = keygen(&gh.dir.path, "ed25519");
    for bad in ["10.0.0.0/8 192.168.0.0/16", "a\"b", "", "x,,y", "!", "10.0.0.1\",command=\"sh"] {
        assert_fails(&add_file(&gh, "alice", &key, &["--from", bad]), 1, "--from");
    }
    assert_eq!(gh.ok(&["key", "list", "alice"]), "");
    add_ok(&gh, "alice", &key, &["--from", "192.0.2.0/24,!192.0.2.7"]);
    assert!(gh.ok(&["key", "list", "alice"]).contains(" from=192.0.2.0/24,!192.0.2.7 "));
    assert!(stdout(&gh.keys(&["alice"])).contains(",from=\"192.0.2.0/24,!192.0.2.7\""));
}

#[test]
fn max_per_user_refuses_the_third_key() {
    let gh = setup("maxkeys", "\n[keys]\nmax_per_user = 2\n");
    gh.ok(&["user", "add", "alice"]);
    let keys: Vec<KeyPair> = (0..3).map(|_| keygen(&gh.dir.path, "ed25519")).collect();
    add_ok(&gh, "alice", &keys[0], &[]);
    add_ok(&gh, "alice", &keys[1], &[]);
    gh.log.drain();
    assert_fails(&add_file(&gh, "alice", &keys[2], &[]), 1, "user alice already has 2 keys");
    assert_eq!(served(&gh, "alice"), blobs(&keys[..2]));
    let log = logged(&gh, 1).join("\n");
    let want = format!("action=key.add user=alice fingerprint={} verdict=refuse", keys[2].fingerprint);
    assert!(log.contains(&want), "want {want} in {log}");
}

#[test]
fn a_file_with_two_keys_is_refused() {
    let gh = setup("twokeys", "");
    gh.ok(&["user", "add", "alice"]);
    let (a, b) = (keygen(&gh.dir.path, "ed25519"), keygen(&gh.dir.path, "ed25519"));
    let file = gh.dir.join("two.pub");
    std::fs::write(&file, format!("{}\n{}\n", a.public, b.public)).unwrap();
    let out = gh.cli(&["key", "add", "alice", "--file", file.to_str().unwrap()]);
    assert_fails(&out, 1, "holds 2 lines");
    let out = gh.cli_stdin(&["key", "add", "alice", "-"], format!("{}\n{}\n", a.public, b.public).as_bytes());
    assert_fails(&out, 1, "holds 2 lines");
    assert_eq!(gh.ok(&["key", "list", "alice"]), "");
}

#[test]
fn key_add_with_a_stray_operand_is_a_usage_error() {
    let gh = setup("stray", "");
    gh.ok(&["user", "add", "alice"]);
    assert_fails(&gh.cli(&["key", "add", "alice", "foo"]), 2, "foo");
    assert_fails(&gh.cli(&["key", "add", "alice"]), 2, "");
    assert_eq!(gh.ok(&["key", "list", "alice"]), "");
}

#[test]
fn removing_a_key_the_user_does_not_have_fails() {
    let gh = setup("keyremove", "");
    gh.ok(&["user", "add", "alice"]);
    gh.ok(&["user", "add", "bob"]);
    let (mine, bobs) = (keygen(&gh.dir.path, "ed25519"), keygen(&gh.dir.path, "ed25519"));
    add_ok(&gh, "alice", &mine, &[]);
    add_ok(&gh, "bob", &bobs, &[]);
    let stranger = keygen(&gh.dir.path, "ed25519");
    assert_fails(&gh.cli(&["key", "remove", "alice", &stranger.fingerprint]), 1, "has no key");
    // Bob's key cannot be removed through alice.
    assert_fails(&gh.cli(&["key", "remove", "alice", &bobs.fingerprint]), 1, "has no key");
    assert_eq!(served(&gh, "bob"), blobs([&bobs]));
    let out = gh.ok(&["key", "remove", "alice", &mine.fingerprint]);
    assert_eq!(out, format!("removed {} from alice\n", mine.fingerprint));
    assert!(served(&gh, "alice").is_empty());
    assert_fails(&gh.cli(&["key", "remove", "alice", &mine.fingerprint]), 1, "has no key");
}

// ---- imports ----

#[test]
fn import_authorized_keys_reports_every_line() {
    let gh = setup("importak", "");
    gh.ok(&["user", "add", "alice"]);
    let good = keygen(&gh.dir.path, "ed25519");
    let with_options = keygen(&gh.dir.path, "ed25519");
    let ecdsa = keygen(&gh.dir.path, "ecdsa");
    let file = gh.dir.join("authorized_keys");
    let text = [
        "# alice's keys from the old server".to_string(),
        good.public.clone(),
        String::new(),
        format!("from=\"10.0.0.0/8\" {}", with_options.public),
        format!("ssh-dss {} old-dsa-key", blob(&with_options)),
        ecdsa.public.clone(),
        format!("{} the same key again", good.public),
        "   ".to_string(),
        format!("restrict {}", with_options.public),
    ]
    .join("\n")
        + "\n";
    std::fs::write(&file, text).unwrap();
    let out = gh.cli(&["import", "authorized-keys", "alice", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let f = file.display();
    let report: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let want = [
        format!("{f}:2: imported {} ssh-ed25519", good.fingerprint),
        format!("{f}:4: skipped: authorized_keys options are not accepted"),
        format!("{f}:5: skipped: DSA keys are refused"),
        format!("{f}:6: imported {} ecdsa-sha2-nistp256", ecdsa.fingerprint),
        format!("{f}:7: skipped: key {} is already registered (to user alice)", good.fingerprint),
        format!("{f}:9: skipped: authorized_keys options are not accepted"),
        "imported 2, skipped 4".to_string(),
    ];
    assert_eq!(report.len(), want.len(), "{report:#?}");
    for (line, want) in report.iter().zip(&want) {
        assert!(line.starts_with(want.as_str()), "want {want:?}, got {line:?}");
    }
    assert_eq!(served(&gh, "alice"), blobs([&good, &ecdsa]));
    assert_fails(&gh.cli(&["import", "authorized-keys", "bob", file.to_str().unwrap()]), 1, "no such user: bob");

    // DOS line endings: every key line is skipped for its carriage return (gatehouse(8)).
    let dos = gh.dir.join("authorized_keys.dos");
    let fresh = keygen(&gh.dir.path, "ed25519");
    std::fs::write(&dos, format!("# keys\r\n{}\r\n", fresh.public)).unwrap();
    let out = gh.cli(&["import", "authorized-keys", "alice", dos.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = stdout(&out);
    assert!(report.starts_with(&format!("{}:2: skipped: control character U+000D", dos.display())), "{report}");
    assert!(report.ends_with("imported 0, skipped 1\n"), "{report}");
}

/// Writes `lines` (numbered from 1) to a file in the instance's folder.
fn write_lines(gh: &Gatehouse, name: &str, lines: &[String]) -> PathBuf {
    let file = gh.dir.join(name);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    file
}

#[test]
fn import_tsv_creates_users_and_attaches_keys_to_the_right_ones() {
    let gh = setup("importtsv", "");
    // An existing user with a key, and a gap in the user ids, so that new and existing
    // users' ids differ from their order in the file.
    gh.ok(&["user", "add", "gap"]);
    gh.ok(&["user", "add", "tsv_b"]);
    gh.ok(&["user", "remove", "gap"]);
    let old = keygen(&gh.dir.path, "ed25519");
    add_ok(&gh, "tsv_b", &old, &[]);
    let users = ["tsv_a", "tsv_b", "tsv_c"];
    let keys: Vec<Vec<KeyPair>> =
        users.iter().map(|_| (0..3).map(|_| keygen(&gh.dir.path, "ed25519")).collect()).collect();
    let spare = keygen(&gh.dir.path, "ed25519");
    let mut lines = vec!["# user<TAB>key".to_string()];
    let mut bad = Vec::new();
    // Each round gives every user one key, then a line that is refused.
    let refused = [
        (format!("tsv_a {}", spare.public), "expected USER<TAB>KEY".to_string()),
        (format!("Tsv_A\t{}", spare.public), "`Tsv_A` is not a valid user name".to_string()),
        ("tsv_c\tssh-ed25519 AAAAnotakey".to_string(), "the key data is not a valid public key".to_string()),
    ];
    for (round, (text, reason)) in refused.into_iter().enumerate() {
        for (user, own) in users.iter().zip(&keys) {
            lines.push(format!("{user}\t{}", own[round].public));
        }
        lines.push(text);
        bad.push((lines.len(), reason));
        lines.push(String::new());
    }
    // Refused by the store rather than the parser: reported after its batch.
    lines.push(format!("tsv_c\t{}", old.public));
    bad.push((lines.len(), format!("key {} is already registered (to user tsv_b)", old.fingerprint)));
    let file = write_lines(&gh, "keys.tsv", &lines);
    let out = gh.cli(&["import", "tsv", "--create-users", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("imported 9, skipped 4 ("), "{}", stdout(&out));
    let errors = stderr(&out);
    assert_eq!(errors.lines().count(), bad.len(), "{errors}");
    for (number, reason) in &bad {
        let want = format!("{}:{number}: skipped: {reason}", file.display());
        assert_eq!(errors.lines().filter(|l| l.starts_with(&want)).count(), 1, "want {want:?} in {errors}");
    }
    assert_eq!(served(&gh, "tsv_a"), blobs(&keys[0]));
    assert_eq!(served(&gh, "tsv_b"), blobs(keys[1].iter().chain([&old])));
    assert_eq!(served(&gh, "tsv_c"), blobs(&keys[2]));
    // Each user the import made has a uid of its own.
    let list = gh.ok(&["user", "list"]);
    let rows: Vec<Vec<&str>> = list.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        rows.iter().map(|r| r[..4].join("\t")).collect::<Vec<_>>(),
        ["tsv_a\tenabled\tshell\t-", "tsv_b\tenabled\tshell\t-", "tsv_c\tenabled\tshell\t-"]
    );
    let mut uids: Vec<u32> = rows.iter().map(|r| r[4].parse().unwrap()).collect();
    uids.dedup();
    assert_eq!(uids.len(), 3, "{list}");
    assert_eq!(json(&gh.ok(&["user", "show", "tsv_c", "--json"]))["source"], "import");
}

#[test]
fn import_tsv_without_create_users_skips_unknown_users() {
    let gh = setup("importknown", "");
    gh.ok(&["user", "add", "alice"]);
    let keys: Vec<KeyPair> = (0..4).map(|_| keygen(&gh.dir.path, "ed25519")).collect();
    let input: String = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{}\t{}\n", if i % 2 == 0 { "alice" } else { "bob" }, k.public))
        .collect();
    let out = gh.cli_stdin(&["import", "tsv", "-"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("imported 2, skipped 2 ("), "{}", stdout(&out));
    assert_eq!(stderr(&out), "-:2: skipped: no such user: bob\n-:4: skipped: no such user: bob\n");
    assert_eq!(served(&gh, "alice"), blobs([&keys[0], &keys[2]]));
    assert_fails(&gh.cli(&["user", "show", "bob"]), 1, "no such user: bob");
}

// ---- audit trail and syslog ----

/// Makes one of each change; returns the audit actions and subjects expected, in order.
fn make_changes(gh: &Gatehouse) -> Vec<(&'static str, String)> {
    let store = gh.store.display().to_string();
    let (k1, k2) = (keygen(&gh.dir.path, "ed25519"), keygen(&gh.dir.path, "ed25519"));
    gh.init(None);
    gh.ok(&["user", "add", "alice"]);
    add_ok(gh, "alice", &k1, &[]);
    add_ok(gh, "alice", &k2, &[]);
    gh.ok(&["user", "disable", "alice"]);
    gh.ok(&["user", "disable", "alice"]); // no change, no event
    gh.ok(&["user", "enable", "alice"]);
    gh.ok(&["user", "set", "alice", "--policy", "files"]);
    gh.ok(&["key", "remove", "alice", &k1.fingerprint]);
    gh.ok(&["user", "add", "bob"]);
    gh.ok(&["user", "remove", "bob"]);
    let a = || "alice".to_string();
    vec![
        ("store.init", store),
        ("user.add", a()),
        ("key.add", a()),
        ("key.add", a()),
        ("user.disable", a()),
        ("user.enable", a()),
        ("user.set", a()),
        ("key.remove", a()),
        ("user.add", "bob".into()),
        ("user.remove", "bob".into()),
    ]
}

/// (actor, action, subject) of each line of `gatehouse audit`.
fn audit_rows(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, ' ').collect();
            assert!(f.len() >= 4 && f[0].ends_with('Z'), "bad audit line {l:?}");
            (f[1].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect()
}

#[test]
fn the_audit_trail_records_every_change_as_cli_root() {
    let gh = Gatehouse::new("audit", "");
    let expected = make_changes(&gh);
    let all = gh.ok(&["audit"]);
    let rows = audit_rows(&all);
    let got: Vec<(&str, &str)> = rows.iter().map(|(_, a, s)| (a.as_str(), s.as_str())).collect();
    let want: Vec<(&str, &str)> = expected.iter().map(|(a, s)| (*a, s.as_str())).collect();
    assert_eq!(got, want, "{all}");
    assert!(rows.iter().all(|(actor, _, _)| actor == "cli:root"), "{all}");
    assert!(all.contains(" user.set alice policy=files"), "{all}");
    assert!(all.contains(" user.remove bob keys=0"), "{all}");
    assert!(all.lines().any(|l| l.contains(" key.remove alice fingerprint=SHA256:")), "{all}");

    let alice = audit_rows(&gh.ok(&["audit", "--user", "alice"]));
    assert_eq!(alice.len(), 7);
    assert!(alice.iter().all(|(_, _, s)| s == "alice"));
    assert_eq!(audit_rows(&gh.ok(&["audit", "--user", "bob"])).len(), 2);
    assert_eq!(gh.ok(&["audit", "--user", "nobody"]), "");

    assert_eq!(gh.ok(&["audit", "--since", "1h"]), all);
    assert_eq!(gh.ok(&["audit", "--since", "2099-01-01"]), "");
    assert_fails(&gh.cli(&["audit", "--since", "yesterday"]), 1, "--since");

    let newest: Vec<String> = audit_rows(&gh.ok(&["audit", "--limit", "3"])).into_iter().map(|r| r.1).collect();
    assert_eq!(newest, ["key.remove", "user.add", "user.remove"]);
    let newest = audit_rows(&gh.ok(&["audit", "--limit", "2", "--user", "alice"]));
    assert_eq!(newest.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["user.set", "key.remove"]);

    let events = json(&gh.ok(&["audit", "--json"]));
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), expected.len());
    for (event, (action, subject)) in events.iter().zip(&expected) {
        assert_eq!(event["actor"], "cli:root");
        assert_eq!(event["action"], *action);
        assert_eq!(event["subject"], subject.as_str());
        assert!((event["time"].as_i64().unwrap() - now()).abs() < 300, "{event}");
        assert!(event["time_at"].as_str().unwrap().ends_with('Z'), "{event}");
    }
}

#[test]
fn every_change_is_logged_to_syslog() {
    let gh = Gatehouse::new("syslog", "");
    let key = keygen(&gh.dir.path, "ed25519");
    let fp = key.fingerprint.as_str();
    let store = format!("store={}", gh.store.display());
    let key_file = pub_path(&key.private);
    let steps: Vec<(Vec<&str>, Option<String>)> = vec![
        (vec!["init"], Some(format!("actor=cli:root action=store.init {store}"))),
        (vec!["user", "add", "alice"], Some("actor=cli:root action=user.add user=alice policy=shell".into())),
        (
            vec!["key", "add", "alice", "--file", key_file.to_str().unwrap()],
            Some(format!("actor=cli:root action=key.add user=alice fingerprint={fp}")),
        ),
        (vec!["user", "disable", "alice"], Some("actor=cli:root action=user.disable user=alice".into())),
        (vec!["user", "disable", "alice"], None),
        (vec!["user", "enable", "alice"], Some("actor=cli:root action=user.enable user=alice".into())),
        (
            vec!["user", "set", "alice", "--policy", "git"],
            Some("actor=cli:root action=user.set user=alice policy=git".into()),
        ),
        (
            vec!["key", "remove", "alice", fp],
            Some(format!("actor=cli:root action=key.remove user=alice fingerprint={fp}")),
        ),
        (vec!["user", "remove", "alice"], Some("actor=cli:root action=user.remove user=alice keys=0".into())),
    ];
    for (args, want) in &steps {
        gh.ok(args);
        let lines = logged(&gh, usize::from(want.is_some()));
        match want {
            Some(want) => {
                assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
                assert!(lines[0].contains(want.as_str()), "{args:?}: want {want} in {}", lines[0]);
            }
            None => assert!(lines.is_empty(), "{args:?} changed nothing but logged {lines:?}"),
        }
    }

    // Imports log what they did too.
    gh.ok(&["user", "add", "carol"]);
    let file = write_lines(&gh, "one.tsv", &[format!("carol\t{}", key.public)]);
    gh.log.drain();
    gh.ok(&["import", "tsv", file.to_str().unwrap()]);
    let lines = logged(&gh, 1).join("\n");
    assert!(lines.contains("actor=cli:root action=import.tsv") && lines.contains("imported=1 skipped=0"), "{lines}");
    let ak = gh.dir.join("authorized_keys");
    let other = keygen(&gh.dir.path, "ed25519");
    std::fs::write(&ak, format!("{}\n", other.public)).unwrap();
    gh.ok(&["import", "authorized-keys", "carol", ak.to_str().unwrap()]);
    let lines = logged(&gh, 1).join("\n");
    let want = format!("actor=cli:root action=key.add user=carol fingerprint={} source=import", other.fingerprint);
    assert!(lines.contains(&want), "want {want} in {lines}");
}

#[test]
fn banned_keys_are_refused_by_fingerprint_or_by_line() {
    let dir = TestDir::new("bannedlist");
    let list = dir.join("banned");
    let gh = setup("banned", &format!("\n[keys]\nbanned = \"{}\"\n", list.display()));
    gh.ok(&["user", "add", "alice"]);
    let by_fp = keygen(&gh.dir.path, "ed25519");
    let by_line = keygen(&gh.dir.path, "ed25519");
    let fine = keygen(&gh.dir.path, "ed25519");
    std::fs::write(&list, format!("# compromised\n{}\n{}\n", by_fp.fingerprint, by_line.public)).unwrap();
    for banned in [&by_fp, &by_line] {
        let out = gh.cli_stdin(&["key", "add", "alice", "-"], banned.public.as_bytes());
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("banned"), "{}", stderr(&out));
    }
    let out = gh.cli_stdin(&["key", "add", "alice", "-"], fine.public.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(gh.ok(&["key", "list", "alice"]).lines().count(), 1);
}

// ---- names that must never carry keys ----

#[test]
fn root_and_system_accounts_are_refused_by_every_cli_writer() {
    require_root!();
    let gh = setup("rootnames", "");
    // A service account of this host: uid below 1000, outside users.uid_min..uid_max.
    let service = SystemUser::service("ghsvc");
    let key = keygen(&gh.dir.path, "ed25519");
    for name in ["root", "sshd", "nobody", "gatehouse-keys", "systemd-network", service.name.as_str()] {
        let out = gh.cli(&["user", "add", name]);
        assert_fails(&out, 1, "never serves keys");
        assert!(!stderr(&out).contains('\n') || stderr(&out).lines().count() == 1, "{}", stderr(&out));
        // A bulk import that would create the user, with its key.
        let line = format!("{name}\t{}\n", key.public);
        let out = gh.cli_stdin(&["import", "tsv", "--create-users", "-"], line.as_bytes());
        assert!(stderr(&out).contains("never serves keys"), "{name}: {}", stderr(&out));
        assert!(stdout(&out).contains("imported 0, skipped 1"), "{name}: {}", stdout(&out));
    }
    assert_eq!(gh.ok(&["user", "list"]), "", "nothing was stored");
    // Logged, with what was tried.
    let log = gh.log.drain().join("\n");
    assert!(log.contains("action=user.add user=root verdict=refuse"), "{log}");

    // A store that already holds such a name (written before this rule, or by hand) takes
    // no new key for it, and doctor fails.
    gh.ok(&["user", "add", "alice"]);
    let out = Command::new("sqlite3")
        .arg(&gh.store)
        .args([".dbconfig no_ckpt_on_close on", "UPDATE users SET name = 'root' WHERE name = 'alice';"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_fails(&add_file(&gh, "root", &key, &[]), 1, "never serves keys");
    let doctor = gh.cli(&["doctor", "--sshd-config", "/dev/null"]);
    assert!(
        stdout(&doctor).contains("FAIL 1 store user(s) must never be served: `root` is a reserved"),
        "{}",
        stdout(&doctor)
    );
    assert_ne!(doctor.status.code(), Some(0));
}

#[test]
fn invisible_and_bidi_characters_in_comments_are_refused() {
    let gh = setup("bidi", "");
    gh.ok(&["user", "add", "alice"]);
    let key = keygen(&gh.dir.path, "ed25519");
    let base = key.public.replace(" test@gatehouse", "");
    for (text, code) in
        [(format!("{base} laptop\u{202E}gpj.exe"), "U+202E"), (format!("{base} ad\u{200B}min"), "U+200B")]
    {
        let out = gh.cli_stdin(&["key", "add", "alice", "-"], text.as_bytes());
        assert_fails(&out, 1, code);
        assert!(stderr(&out).contains("text-direction"), "{}", stderr(&out));
    }
    let path = pub_path(&key.private);
    let out = gh.cli(&["key", "add", "alice", "--file", path.to_str().unwrap(), "--comment", "x\u{2067}y"]);
    assert_fails(&out, 1, "--comment");
    assert_eq!(gh.ok(&["key", "list", "alice"]), "", "nothing was stored");
}

/// `key` (an ssh-rsa line) with its public exponent replaced by `e`.
fn with_exponent(key: &str, e: &[u8]) -> String {
    use base64ct::Encoding;
    let blob = base64ct::Base64::decode_vec(key.split(' ').nth(1).unwrap()).unwrap();
    let field = |at: usize| -> (usize, usize) {
        let len = u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
        (at + 4, at + 4 + len)
    };
    let (_, type_end) = field(0);
    let (_, e_end) = field(type_end);
    let mut out = blob[..type_end].to_vec();
    out.extend_from_slice(&(e.len() as u32).to_be_bytes());
    out.extend_from_slice(e);
    out.extend_from_slice(&blob[e_end..]);
    format!("ssh-rsa {} weak", base64ct::Base64::encode_string(&out))
}

#[test]
fn weak_rsa_keys_are_refused_by_upload_and_import() {
    let gh = setup("weakrsa", "");
    gh.ok(&["user", "add", "alice"]);
    let key = keygen_bits(&gh.dir.path, "rsa", 3072);
    for (e, why) in [(&[3u8][..], "exponent"), (&[1], "exponent"), (&[1, 0, 0], "exponent")] {
        let text = with_exponent(&key.public, e);
        assert_fails(&gh.cli_stdin(&["key", "add", "alice", "-"], text.as_bytes()), 1, why);
        let line = format!("alice\t{text}\n");
        let out = gh.cli_stdin(&["import", "tsv", "-"], line.as_bytes());
        assert!(stderr(&out).contains("RSA public exponent"), "{}", stderr(&out));
    }
    // The same key with its real exponent goes in.
    assert!(gh
        .cli_stdin(&["key", "add", "alice", "-"], with_exponent(&key.public, &[1, 0, 1]).as_bytes())
        .status
        .success());
}

#[test]
fn a_locked_store_makes_a_write_wait_busy_timeout_once() {
    let gh = setup("clilock", "");
    let text = std::fs::read_to_string(&gh.config).unwrap().replace("[store]\n", "[store]\nbusy_timeout_ms = 400\n");
    std::fs::write(&gh.config, text).unwrap();
    gh.ok(&["user", "add", "alice"]);
    let holder = rusqlite::Connection::open(&gh.store).unwrap();
    holder.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).unwrap();
    holder.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; UPDATE users SET state = state;").unwrap();
    let started = Instant::now();
    let out = gh.cli(&["user", "add", "bob"]);
    let took = started.elapsed();
    assert_fails(&out, 4, "locked");
    assert!(took < Duration::from_millis(1200), "one wait of busy_timeout_ms (400 ms), not several: {took:?}");
    holder.execute_batch("ROLLBACK;").unwrap();
}

#[test]
fn a_damaged_store_is_reported_as_damaged_not_busy() {
    let gh = setup("damaged", "");
    gh.ok(&["user", "add", "alice"]);
    for file in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{file}", gh.store.display()));
    }
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&gh.store, &bytes).unwrap();
    for args in [&["user", "list"][..], &["user", "add", "bob"]] {
        let out = gh.cli(args);
        assert_fails(&out, 4, "damaged");
        assert!(!stderr(&out).contains("busy"), "{}", stderr(&out));
    }
}

#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    let gh = setup("closed-pipe", "");
    gh.ok(&["user", "add", "alice"]);
    // `gatehouse user list | head`: the reader is gone before the first write.
    for args in [&["user", "list"][..], &["user", "list", "--json"], &["audit"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(&gh.cli_bin)
            .arg("--config")
            .arg(&gh.config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {:?} {}", out.status, stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
    // The error path still errs: a missing user is not hidden by the closed pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(&gh.cli_bin)
        .arg("--config")
        .arg(&gh.config)
        .args(["user", "show", "nobody-here"])
        .stdout(writer)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn gatehouse_config_names_the_file_and_config_wins_over_it() {
    let gh = setup("config-env", "");
    gh.ok(&["user", "add", "alice"]);
    let run = |env: &Path, args: &[&str]| {
        Command::new(&gh.cli_bin)
            .env("GATEHOUSE_CONFIG", env)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&gh.config, &["user", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("alice\t"), "{}", stdout(&out));
    // --config is taken over the variable.
    let missing = gh.dir.join("no-such.toml");
    let out = run(&missing, &["--config", gh.config.to_str().unwrap(), "user", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&missing, &["user", "list"]);
    assert_fails(&out, 3, "no-such.toml");
}

#[test]
fn bash_completes_commands_and_subcommands_from_the_generated_script() {
    let gh = Gatehouse::new("completions", "");
    let script = gh.dir.join("gatehouse.bash");
    // No configuration or store is needed to print it.
    let out = Command::new(&gh.cli_bin).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&script, &out.stdout).unwrap();
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; _gatehouse gatehouse '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let out = Command::new("bash").args(["--norc", "-c", &program]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(str::to_string).collect::<BTreeSet<String>>()
    };
    let top = complete("gatehouse ");
    for command in ["user", "key", "grant", "doctor", "completions"] {
        assert!(top.contains(command), "{command} not offered: {top:?}");
    }
    let user = complete("gatehouse user ");
    assert!(user.contains("add") && user.contains("list"), "{user:?}");
    assert!(!user.contains("grant"), "{user:?}");
    let out = Command::new(&gh.cli_bin).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn key_remove_by_prefix_or_comment_asks_before_removing_several() {
    let gh = setup("key-remove-names", "");
    gh.ok(&["user", "add", "alice"]);
    // Three keys, all with the comment keygen gives (test@gatehouse).
    let keys: Vec<KeyPair> = (0..3).map(|_| keygen(&gh.dir.path, "ed25519")).collect();
    for k in &keys {
        add_ok(&gh, "alice", k, &[]);
    }
    let listed = |gh: &Gatehouse| served(gh, "alice").len();

    // A unique prefix removes that key alone.
    let prefix = &keys[0].fingerprint[..14];
    let out = gh.cli(&["key", "remove", "alice", prefix]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("removed {} from alice\n", keys[0].fingerprint));
    assert_eq!(listed(&gh), 2);
    // Too short a prefix names nothing.
    assert_fails(&gh.cli(&["key", "remove", "alice", "SHA256:ab"]), 1, "has no key SHA256:ab");

    // The comment names two keys: without a terminal, refused with both listed.
    let out = gh.cli(&["key", "remove", "alice", "test@gatehouse"]);
    assert_fails(&out, 1, "names 2 keys of alice");
    for k in &keys[1..] {
        assert!(stderr(&out).contains(&k.fingerprint), "{}", stderr(&out));
    }
    assert_eq!(listed(&gh), 2, "a refused removal removed something");

    // On a terminal (script(1) gives one), a no keeps them and a yes removes both.
    let on_terminal = |answer: &str| {
        let line = format!("{} --config {} key remove alice test@gatehouse", gh.cli_bin.display(), gh.config.display());
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.as_mut().unwrap().write_all(answer.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, said) = on_terminal("n\n");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("Remove all 2? [y/N]") && said.contains("nothing removed"), "{said}");
    assert_eq!(listed(&gh), 2);
    let (code, said) = on_terminal("y\n");
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(listed(&gh), 0, "{said}");

    // --all says yes in scripts.
    let k = keygen(&gh.dir.path, "ed25519");
    add_ok(&gh, "alice", &k, &[]);
    let again = keygen(&gh.dir.path, "ed25519");
    add_ok(&gh, "alice", &again, &[]);
    let out = gh.cli(&["key", "remove", "alice", "test@gatehouse", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listed(&gh), 0);
}

#[test]
fn listings_have_headers_on_a_terminal_and_plain_rows_in_a_pipe() {
    let gh = setup("columns", "");
    gh.ok(&["user", "add", "alice"]);
    gh.ok(&["grant", "add", "alice", "bob/*.git", "read"]);
    // script(1) runs the command on a terminal.
    let on_terminal = |args: &str| {
        let line = format!("{} --config {} {args}", gh.cli_bin.display(), gh.config.display());
        let out = Command::new("script").args(["-q", "-e", "-c", &line, "/dev/null"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).replace("\r\n", "\n")
    };
    let users = on_terminal("user list");
    let mut lines = users.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATE", "POLICY", "FORWARDING", "UID"]
    );
    assert!(lines.next().unwrap().starts_with("alice  "), "{users}");
    assert!(on_terminal("grant list").starts_with("SUBJECT"));
    assert!(on_terminal("audit").starts_with("TIME"));
    // Piped: the rows alone, tab-separated, as scripts read them.
    let piped = gh.ok(&["user", "list"]);
    assert!(piped.starts_with("alice\tenabled\tshell\t-\t"), "{piped}");
    assert!(!piped.contains("NAME"));
}

#[test]
fn every_json_listing_dates_its_items_the_same_way() {
    let gh = setup("json-dates", "");
    gh.ok(&["user", "add", "alice"]);
    let key = keygen(&gh.dir.path, "ed25519");
    add_ok(&gh, "alice", &key, &[]);
    gh.ok(&["grant", "add", "alice", "bob/*.git", "read"]);
    gh.ok(&["token", "create", "--scope", "admin"]);
    let rfc3339 = |v: &Value| v.as_str().is_some_and(|t| t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T');
    for args in [&["user", "list"][..], &["key", "list", "alice"], &["grant", "list"], &["token", "list"], &["audit"]] {
        let mut full = args.to_vec();
        full.push("--json");
        let items = json(&gh.ok(&full));
        let items = items.as_array().unwrap();
        assert!(!items.is_empty(), "{args:?}");
        for item in items {
            let at = if args[0] == "audit" { &item["time_at"] } else { &item["created_at"] };
            assert!(rfc3339(at), "{args:?}: {item}");
        }
    }
    // Where uses are recorded, last_used_at is there, null until the first use.
    for (args, field) in
        [(&["key", "list", "alice", "--json"][..], "last_used_at"), (&["token", "list", "--json"], "last_used_at")]
    {
        let items = json(&gh.ok(args));
        let item = &items.as_array().unwrap()[0];
        assert!(item.get(field).is_some_and(Value::is_null), "{args:?}: {item}");
    }
    let tokens = json(&gh.ok(&["token", "list", "--json"]));
    assert!(tokens[0].get("revoked_at").is_some_and(Value::is_null), "{tokens}");
}
