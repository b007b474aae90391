//! End-to-end: `gatehouse-ldap` against a real OpenLDAP server (tests/common/slapd.rs) on
//! loopback: sync of users, keys, groups and account states into the store, what the login
//! path then serves (gatehouse-keys, and real ssh logins through sshd), staleness when the
//! directory is down, password checks, TLS, timeouts and the service password file.
//! Needs root (root-owned password file, system users, sshd) and the slapd and ldap-utils
//! packages; gatehouse-ldap is built by `cargo build --workspace --bins`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/pam.rs"]
mod pam;
#[path = "common/slapd.rs"]
mod slapd;

use common::*;
use slapd::*;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// gatehouse-ldap lives in the workspace's ldap package, which `cargo test` alone does not
/// build.
fn ldap_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_gatehouse")).with_file_name("gatehouse-ldap");
    assert!(bin.is_file(), "{} is missing: run cargo build --workspace --bins first", bin.display());
    bin
}

/// The `[ldap]` section for `url`, bound as the service account with `slapd`'s password
/// file; `extra` lines are appended.
fn ldap_section(slapd: &Slapd, url: &str, extra: &str) -> String {
    format!(
        "\n[ldap]\nurl = \"{url}\"\nbase_dn = \"{BASE_DN}\"\nbind_dn = \"{SERVICE_DN}\"\n\
         bind_password_file = \"{}\"\ntimeout = \"5s\"\n{extra}",
        slapd.password_file.display()
    )
}

/// Plain ldap:// to the loopback server (StartTLS off: this server has no TLS).
fn plain_section(slapd: &Slapd, extra: &str) -> String {
    ldap_section(slapd, &slapd.url, &format!("starttls = false\n{extra}"))
}

/// A Gatehouse instance with `config` appended to its configuration (the `[ldap]` section
/// last), its store initialised, and gatehouse-ldap installed beside its `gatehouse` (where
/// `gatehouse ldap …` looks for it).
fn instance(name: &str, config: &str) -> Gatehouse {
    let gh = Gatehouse::new(name, config);
    gh.init(None);
    let to = gh.cli_bin.with_file_name("gatehouse-ldap");
    // cp(1), not std::fs::copy: see Gatehouse::new on ETXTBSY.
    let status = Command::new("cp").arg(ldap_binary()).arg(&to).status().unwrap();
    assert!(status.success());
    // pam_gatehouse's `ldap` mode runs it to check passwords (the [ldap] section is last).
    if config.contains("[ldap]") {
        let text = std::fs::read_to_string(&gh.config).unwrap();
        std::fs::write(&gh.config, format!("{text}\nprogram = \"{}\"\n", to.display())).unwrap();
    }
    gh
}

/// Replaces the instance's `[ldap]` section (always the config's last).
fn set_section(gh: &Gatehouse, section: &str) {
    let text = std::fs::read_to_string(&gh.config).unwrap();
    let start = text.find("\n[ldap]\n").expect("no [ldap] section");
    std::fs::write(&gh.config, format!("{}{section}", &text[..start])).unwrap();
}

fn ldap_cmd(gh: &Gatehouse, args: &[&str]) -> Command {
    let mut cmd = Command::new(gh.cli_bin.with_file_name("gatehouse-ldap"));
    cmd.arg("--config").arg(&gh.config).args(args);
    cmd
}

/// Runs gatehouse-ldap with `input` on standard input.
fn ldap_with(gh: &Gatehouse, args: &[&str], input: &[u8]) -> Output {
    let mut child =
        ldap_cmd(gh, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The program may exit before reading (an empty password is refused unread).
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

fn ldap(gh: &Gatehouse, args: &[&str]) -> Output {
    ldap_with(gh, args, b"")
}

/// `gatehouse-ldap sync ARGS`, which must succeed; its standard output.
fn sync(gh: &Gatehouse, args: &[&str]) -> String {
    let mut all = vec!["sync"];
    all.extend_from_slice(args);
    let out = ldap(gh, &all);
    assert!(out.status.success(), "sync failed: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// A sync that must fail: exit 1, nothing on standard output; its standard error.
fn failed_sync(gh: &Gatehouse) -> String {
    let out = ldap(gh, &["sync"]);
    assert_eq!(out.status.code(), Some(1), "sync did not fail: {}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.starts_with("gatehouse-ldap: sync failed: "), "{err}");
    err
}

fn check_password(gh: &Gatehouse, user: &str, password: &[u8]) -> Output {
    let out = ldap_with(gh, &["check-password", user], password);
    assert!(!stderr(&out).contains("panicked"), "check-password {user:?} panicked: {}", stderr(&out));
    out
}

/// Asserts a check-password answer: exit 1 and `password refused: WHY`.
fn assert_refused(out: &Output, why: &str) {
    assert_eq!(out.status.code(), Some(1), "stdout: {} stderr: {}", stdout(out), stderr(out));
    assert_eq!(stdout(out), format!("password refused: {why}\n"), "stderr: {}", stderr(out));
}

/// The authorized_keys lines gatehouse-keys prints for `user`.
fn served(gh: &Gatehouse, user: &str) -> Vec<String> {
    let out = gh.keys(&[user]);
    assert!(out.status.success(), "gatehouse-keys {user}: {}", stderr(&out));
    stdout(&out).lines().map(str::to_string).collect()
}

/// The base64 part of a public key line.
fn blob(public: &str) -> &str {
    public.split(' ').nth(1).unwrap()
}

/// Asserts that `user` is served exactly `keys`, in any order.
fn assert_served(gh: &Gatehouse, user: &str, keys: &[&KeyPair]) {
    let lines = served(gh, user);
    assert_eq!(lines.len(), keys.len(), "{user} is served {lines:#?}");
    for k in keys {
        assert!(lines.iter().any(|l| l.contains(blob(&k.public))), "{user} lacks {}: {lines:#?}", k.fingerprint);
    }
}

/// name → (state, source) of every user in the store.
fn users(gh: &Gatehouse) -> std::collections::BTreeMap<String, (String, String)> {
    let list: serde_json::Value = serde_json::from_str(&gh.ok(&["user", "list", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let field = |k: &str| u[k].as_str().unwrap().to_string();
            (field("name"), (field("state"), field("source")))
        })
        .collect()
}

fn state(gh: &Gatehouse, user: &str) -> Option<String> {
    users(gh).get(user).map(|(state, _)| state.clone())
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(out.status.success(), "sqlite3 {sql}: {}", stderr(&out));
    stdout(&out)
}

/// The `skipped: …` lines of a sync's output that mention `needle`.
fn skipped<'a>(output: &'a str, needle: &str) -> Vec<&'a str> {
    output.lines().filter(|l| l.starts_with("skipped: ") && l.contains(needle)).collect()
}

/// The first line of a sync's output.
fn summary(output: &str) -> &str {
    output.lines().next().unwrap_or("")
}

/// Waits (5 s at most) until slapd's log, from byte `from` on, holds `needle`.
fn wait_for_log(s: &Slapd, from: usize, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = s.log_text()[from..].to_string();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- sync: users, keys, groups, account states ----

#[test]
fn sync_brings_users_keys_groups_and_account_states_and_keys_are_served() {
    require_root!();
    let s = Slapd::start();
    let k: Vec<KeyPair> = (0..4).map(|_| keygen(&s.dir.path, "ed25519")).collect();
    s.add(
        &[
            user_ldif("alice", "people", 20001, &[&k[0].public, &k[1].public], ""),
            user_ldif("bob", "people", 20002, &[&k[2].public], ""),
            user_ldif("carol", "people", 20003, &[&k[3].public], "nsAccountLock: TRUE\n"),
            user_ldif("dave", "people", 20004, &[], "pwdAccountLockedTime: 000001010000Z\n"),
            user_ldif("erin", "people", 20005, &[], "shadowExpire: 1\n"),
            user_ldif("frank", "people", 20006, &[], "userAccountControl: 514\n"),
            // Every state attribute present and saying "usable".
            user_ldif(
                "grace",
                "people",
                20007,
                &[],
                "nsAccountLock: false\nshadowExpire: 99999\nuserAccountControl: 512\n",
            ),
            group_ldif("lab", 30001, &["alice", "bob"]),
            group_ldif("empty", 30002, &[]),
        ]
        .concat(),
    );
    let gh = instance("lsync", &plain_section(&s, ""));

    let out = sync(&gh, &[]);
    assert_eq!(out, "full sync: 7 entries; users added 7, disabled 0, enabled 0; keys added 4, removed 0; 0 skipped\n");
    let all = users(&gh);
    let expect = [
        ("alice", "enabled"),
        ("bob", "enabled"),
        ("carol", "disabled"),
        ("dave", "disabled"),
        ("erin", "disabled"),
        ("frank", "disabled"),
        ("grace", "enabled"),
    ];
    assert_eq!(all.len(), expect.len(), "{all:?}");
    for (name, st) in expect {
        assert_eq!(all.get(name), Some(&(st.to_string(), "ldap".to_string())), "{name}: {all:?}");
    }
    assert_served(&gh, "alice", &[&k[0], &k[1]]);
    assert_served(&gh, "bob", &[&k[2]]);
    assert_served(&gh, "carol", &[]);
    // Every line is built by gatehouse: restrict first, the forced command with the key.
    for line in served(&gh, "alice") {
        assert!(line.starts_with("restrict,"), "{line}");
    }
    let members = sqlite(&gh.store, "SELECT grp || ':' || user FROM group_members ORDER BY grp, user");
    assert_eq!(members, "lab:alice\nlab:bob\n");

    // Locks lifted and set in the directory reach the store on the next sync.
    s.modify(&format!(
        "dn: {}\nchangetype: modify\ndelete: nsAccountLock\n\n\
         dn: {}\nchangetype: modify\nreplace: shadowExpire\nshadowExpire: 99999\n\n\
         dn: {}\nchangetype: modify\nadd: nsAccountLock\nnsAccountLock: true\n\n\
         dn: cn=lab,ou=groups,{BASE_DN}\nchangetype: modify\ndelete: memberUid\nmemberUid: bob\n\n",
        user_dn("carol", "people"),
        user_dn("erin", "people"),
        user_dn("alice", "people"),
    ));
    let out = sync(&gh, &[]);
    assert!(summary(&out).contains("users added 0, disabled 1, enabled 2; keys added 0, removed 0"), "{out}");
    assert_eq!(state(&gh, "alice").as_deref(), Some("disabled"));
    assert_eq!(state(&gh, "carol").as_deref(), Some("enabled"));
    assert_eq!(state(&gh, "erin").as_deref(), Some("enabled"));
    assert_served(&gh, "alice", &[]);
    assert_served(&gh, "carol", &[&k[3]]);
    let members = sqlite(&gh.store, "SELECT grp || ':' || user FROM group_members ORDER BY grp, user");
    assert_eq!(members, "lab:alice\n");
}

#[test]
fn local_users_reserved_names_and_system_uids_are_never_taken_over() {
    require_root!();
    let s = Slapd::start();
    let dir_key = keygen(&s.dir.path, "ed25519");
    let local_key = keygen(&s.dir.path, "ed25519");
    // A service account of this host (uid below 1000), under a name the directory also has.
    let service = SystemUser::service("ghsvc");
    s.add(
        &[
            user_ldif("root", "people", 0, &[&dir_key.public], ""),
            user_ldif("sshd", "people", 20010, &[], ""),
            user_ldif("gatehouse", "people", 20011, &[], ""),
            user_ldif("lowuid", "people", 999, &[], ""),
            user_ldif("localuser", "people", 20012, &[&dir_key.public], ""),
            user_ldif("okuser", "people", 1000, &[], ""),
            user_ldif(&service.name, "people", 20013, &[&dir_key.public], ""),
        ]
        .concat(),
    );
    let gh = instance("lreserved", &plain_section(&s, ""));
    gh.ok(&["user", "add", "localuser"]);
    let out = gh.cli_stdin(&["key", "add", "localuser", "-"], local_key.public.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));

    let out = sync(&gh, &[]);
    assert!(summary(&out).ends_with("; 6 skipped"), "{out}");
    let service_dn = format!("uid={},", service.name);
    for (needle, why) in [
        ("uid=root,", "reserved system name"),
        ("uid=sshd,", "reserved system name"),
        ("uid=gatehouse,", "reserved system name"),
        (service_dn.as_str(), "is a system account"),
        ("lowuid: ", "uidNumber 999 is a system UID"),
        ("localuser: ", "a local user of that name exists"),
    ] {
        let lines = skipped(&out, needle);
        assert_eq!(lines.len(), 1, "{needle}: {out}");
        assert!(lines[0].contains(why), "{}", lines[0]);
    }
    let all = users(&gh);
    assert_eq!(all.keys().collect::<Vec<_>>(), ["localuser", "okuser"], "{all:?}");
    assert_eq!(all["localuser"].1, "cli");
    assert_eq!(all["okuser"].1, "ldap");
    assert_served(&gh, "localuser", &[&local_key]);
    assert_served(&gh, "root", &[]);

    // A uidNumber that changes under a synced name is another person: not applied.
    let new_key = keygen(&s.dir.path, "ed25519");
    s.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: uidNumber\nuidNumber: 20999\n-\nadd: sshPublicKey\nsshPublicKey: {}\n\n",
        user_dn("okuser", "people"),
        new_key.public
    ));
    let out = sync(&gh, &[]);
    let lines = skipped(&out, "okuser: uidNumber changed from 1000 to 20999");
    assert_eq!(lines.len(), 1, "{out}");
    assert_served(&gh, "okuser", &[]);
}

#[test]
fn a_uid_in_two_branches_is_skipped_in_both_and_reported() {
    require_root!();
    let s = Slapd::start();
    let k1 = keygen(&s.dir.path, "ed25519");
    let k2 = keygen(&s.dir.path, "ed25519");
    let kb = keygen(&s.dir.path, "ed25519");
    s.add(
        &[
            user_ldif("alice", "people", 20001, &[&k1.public], ""),
            user_ldif("alice", "contractors", 20001, &[&k2.public], ""),
            user_ldif("bob", "people", 20002, &[&kb.public], ""),
        ]
        .concat(),
    );
    let gh = instance("ldup", &plain_section(&s, ""));
    let out = sync(&gh, &[]);
    assert!(summary(&out).starts_with("full sync: 3 entries; users added 1,"), "{out}");
    let lines = skipped(&out, "alice: in 2 entries at once");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().any(|l| l.contains(&user_dn("alice", "people"))), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(&user_dn("alice", "contractors"))), "{lines:?}");
    assert_eq!(users(&gh).keys().collect::<Vec<_>>(), ["bob"]);
    assert_served(&gh, "alice", &[]);
    assert_served(&gh, "bob", &[&kb]);
    // Password checks want exactly one entry too.
    assert_refused(&check_password(&gh, "alice", password_of("alice").as_bytes()), "Ambiguous");
}

#[test]
fn a_uid_added_in_a_second_branch_later_is_caught_by_an_incremental_sync() {
    require_root!();
    let s = Slapd::start();
    let own = keygen(&s.dir.path, "ed25519");
    let other = keygen(&s.dir.path, "ed25519");
    s.add(
        &[user_ldif("alice", "people", 20001, &[&own.public], ""), user_ldif("bob", "people", 20002, &[], "")].concat(),
    );
    let gh = instance("ldupinc", &plain_section(&s, ""));
    sync(&gh, &[]);
    assert_served(&gh, "alice", &[&own]);
    // A later change elsewhere moves the high-water mark past alice's entry.
    std::thread::sleep(Duration::from_millis(1100));
    s.modify(&format!("dn: {}\nchangetype: modify\nreplace: cn\ncn: Bob\n\n", user_dn("bob", "people")));
    sync(&gh, &[]);
    std::thread::sleep(Duration::from_millis(1100));

    // Someone who may write ou=contractors, but not ou=people, adds an alice of their own.
    s.add(&user_ldif("alice", "contractors", 20001, &[&other.public], ""));
    let out = sync(&gh, &[]);
    assert_eq!(skipped(&out, "alice: a second directory entry").len(), 1, "{out}");
    let lines = served(&gh, "alice");
    assert!(!lines.iter().any(|l| l.contains(blob(&other.public))), "the second entry's key is served: {lines:#?}");
    assert_served(&gh, "alice", &[&own]);
    // The next full read sees both entries and skips the name altogether.
    let out = sync(&gh, &["--full"]);
    assert_eq!(skipped(&out, "alice: in 2 entries at once").len(), 2, "{out}");
}

#[test]
fn hostile_key_values_are_reported_and_skipped_and_the_good_keys_kept() {
    require_root!();
    let s = Slapd::start();
    let good = keygen(&s.dir.path, "ed25519");
    let good2 = keygen(&s.dir.path, "ecdsa");
    let k2 = keygen(&s.dir.path, "ed25519");
    let k3 = keygen(&s.dir.path, "ed25519");
    let dsa_file = s.dir.join("dsa");
    let out = Command::new("ssh-keygen").args(["-q", "-t", "dsa", "-N", "", "-f"]).arg(&dsa_file).output().unwrap();
    assert!(out.status.success(), "ssh-keygen -t dsa: {}", stderr(&out));
    let dsa = std::fs::read_to_string(dsa_file.with_extension("pub")).unwrap().trim_end().to_string();
    let private = std::fs::read_to_string(&k2.private).unwrap();
    // A line of the private key's body, to look for in every output.
    let secret_line = private.lines().nth(2).unwrap().to_string();
    let hostile: Vec<(String, &str)> = vec![
        (format!("command=\"/bin/sh -c id\",no-pty {}", k2.public), "authorized_keys options are not accepted"),
        (format!("{} {}", k2.public, k3.public), "more than one key given"),
        (format!("{}\n{}", k2.public, k3.public), "control character U+000A"),
        (dsa, "DSA keys are refused"),
        (private, "PRIVATE key"),
        ("hello world".to_string(), "unknown key type `hello`"),
        ("ssh-ed25519 AAAA!!!!notbase64 x".to_string(), "not a valid public key in base64"),
    ];
    let mut values: Vec<&str> = vec![&good.public];
    values.extend(hostile.iter().map(|(v, _)| v.as_str()));
    // A trailing newline, as some directory tools store it, is forgiven.
    let good2_nl = format!("{}\n", good2.public);
    values.push(&good2_nl);
    s.add(&user_ldif("carol", "people", 20003, &values, ""));
    let gh = instance("lhostile", &plain_section(&s, ""));

    let out = sync(&gh, &[]);
    assert_eq!(
        summary(&out),
        format!(
            "full sync: 1 entries; users added 1, disabled 0, enabled 0; keys added 2, removed 0; {} skipped",
            hostile.len()
        )
    );
    for (value, why) in &hostile {
        let lines = skipped(&out, why);
        assert_eq!(lines.len(), 1, "{value:?} → {why}: {out}");
        assert!(lines[0].starts_with("skipped: carol: sshPublicKey value "), "{}", lines[0]);
    }
    let logged = gh.log.drain().join("\n");
    for text in [&out, &logged] {
        assert!(!text.contains(&secret_line), "private key text was echoed: {text}");
        assert!(!text.contains("BEGIN OPENSSH"), "private key text was echoed: {text}");
    }
    assert_served(&gh, "carol", &[&good, &good2]);
    let lines = served(&gh, "carol").join("\n");
    assert!(!lines.contains("/bin/sh") && !lines.contains(blob(&k2.public)), "{lines}");
}

#[test]
fn a_binary_key_value_is_reported_and_skipped() {
    require_root!();
    let s = Slapd::start();
    let good = keygen(&s.dir.path, "ed25519");
    let mut entry = user_ldif("carol", "people", 20003, &[&good.public], "");
    entry.pop(); // the blank line ending the entry
    entry.push_str(&ldif_line("sshPublicKey", &[0xff, 0xfe, 0x00, b'k', b'e', b'y']));
    entry.push('\n');
    s.add(&entry);
    let gh = instance("lbinary", &plain_section(&s, ""));
    let out = sync(&gh, &[]);
    assert_served(&gh, "carol", &[&good]);
    assert_eq!(skipped(&out, "carol: sshPublicKey").len(), 1, "a value that is not text went unreported: {out}");
}

#[test]
fn custom_filters_and_member_dns_are_followed() {
    require_root!();
    let s = Slapd::start();
    s.add(
        &[
            user_ldif("alice", "people", 20001, &[], ""),
            user_ldif("bob", "people", 20002, &[], ""),
            user_ldif("carol", "contractors", 20003, &[], ""),
            // Named by its full name, as Active Directory names users: cn=Dana Scully.
            user_ldif("dana", "people", 20004, &[], "cn: Dana Scully\n").replacen(
                &user_dn("dana", "people"),
                &format!("cn=Dana Scully,ou=people,{BASE_DN}"),
                1,
            ),
            format!(
                "dn: cn=admins,ou=groups,{BASE_DN}\nobjectClass: groupOfNames\ncn: admins\nmember: {}\nmember: {}\n\
                 member: CN=Dana Scully, OU=people,{BASE_DN}\n\n",
                user_dn("alice", "people"),
                user_dn("carol", "contractors")
            ),
            group_ldif("lab", 30001, &["bob", "alice"]),
        ]
        .concat(),
    );
    let extra = "user_filter = \"(&(objectClass=posixAccount)(!(cn=bob)))\"\n\
                 group_filter = \"(objectClass=groupOfNames)\"\ngroup_member_attribute = \"member\"\n";
    let gh = instance("lcustom", &plain_section(&s, extra));
    let out = sync(&gh, &[]);
    assert!(summary(&out).starts_with("full sync: 3 entries; users added 3,"), "{out}");
    assert_eq!(users(&gh).keys().collect::<Vec<_>>(), ["alice", "carol", "dana"]);
    let members = || sqlite(&gh.store, "SELECT grp || ':' || user FROM group_members ORDER BY grp, user");
    // Dana's member DN names her entry, spelled otherwise: she is dana, not "Dana Scully".
    assert_eq!(members(), "admins:alice\nadmins:carol\nadmins:dana\n");
    // An incremental sync that reads no user (the mark moved past every entry) knows
    // Dana's DN from the store.
    sqlite(&gh.store, "UPDATE sync_state SET high_water = '29991231235959Z' WHERE source = 'ldap'");
    s.add(&format!(
        "dn: cn=ops,ou=groups,{BASE_DN}\nobjectClass: groupOfNames\ncn: ops\nmember: cn=dana scully,ou=people,{BASE_DN}\n\n"
    ));
    assert!(summary(&sync(&gh, &[])).starts_with("incremental sync: 0 entries"));
    assert_eq!(members(), "admins:alice\nadmins:carol\nadmins:dana\nops:dana\n");
    // The filter bounds password checks too.
    assert_refused(&check_password(&gh, "bob", password_of("bob").as_bytes()), "NoSuchUser");
    let out = check_password(&gh, "carol", password_of("carol").as_bytes());
    assert_eq!(stdout(&out), "password accepted\n", "{}", stderr(&out));
}

/// A `[keys]` section and the `[ldap]` section after it (`[ldap]` stays the config's last).
fn keys_then_plain(s: &Slapd, keys: &str) -> String {
    format!("\n[keys]\n{keys}{}", plain_section(s, ""))
}

#[test]
fn the_site_key_policy_applies_to_directory_keys() {
    require_root!();
    let s = Slapd::start();
    let good = keygen(&s.dir.path, "ed25519");
    let ecdsa = keygen(&s.dir.path, "ecdsa");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "rsa", "-b", "2048", "-f"])
        .arg(s.dir.join("rsa2048"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rsa = std::fs::read_to_string(s.dir.join("rsa2048.pub")).unwrap().trim_end().to_string();
    s.add(&user_ldif("alice", "people", 20001, &[&good.public, &ecdsa.public, &rsa], ""));
    let gh = instance("lpolicy", &keys_then_plain(&s, "allowed_types = [\"ed25519\", \"rsa\"]\nmin_rsa_bits = 3072\n"));
    let out = sync(&gh, &[]);
    assert!(summary(&out).ends_with("keys added 1, removed 0; 2 skipped"), "{out}");
    assert_eq!(
        skipped(&out, "alice: sshPublicKey value 2: key type ecdsa-sha2-nistp256 is not allowed").len(),
        1,
        "{out}"
    );
    assert_eq!(skipped(&out, "alice: sshPublicKey value 3: RSA key has 2048 bits; at least 3072").len(), 1, "{out}");
    assert_served(&gh, "alice", &[&good]);
}

#[test]
fn a_banned_key_in_the_directory_is_skipped_and_reported() {
    require_root!();
    let s = Slapd::start();
    let good = keygen(&s.dir.path, "ed25519");
    let banned = keygen(&s.dir.path, "ed25519");
    let list = s.dir.join("banned-keys");
    std::fs::write(&list, format!("{}  # leaked\n", banned.fingerprint)).unwrap();
    s.add(&user_ldif("alice", "people", 20001, &[&good.public, &banned.public], ""));
    let gh = instance("lbanned", &keys_then_plain(&s, &format!("banned = \"{}\"\n", list.display())));
    // The list works for uploads.
    gh.ok(&["user", "add", "bob"]);
    let out = gh.cli_stdin(&["key", "add", "bob", "-"], banned.public.as_bytes());
    assert!(!out.status.success() && stderr(&out).contains("banned"), "{}", stderr(&out));

    let out = sync(&gh, &[]);
    assert_eq!(skipped(&out, "alice: ").len(), 1, "{out}");
    assert_served(&gh, "alice", &[&good]);
}

#[test]
fn the_keys_per_user_limit_applies_to_directory_users() {
    require_root!();
    let s = Slapd::start();
    let keys: Vec<KeyPair> = (0..3).map(|_| keygen(&s.dir.path, "ed25519")).collect();
    let values: Vec<&str> = keys.iter().map(|k| k.public.as_str()).collect();
    s.add(&user_ldif("alice", "people", 20001, &values, ""));
    let gh = instance("lmaxkeys", &keys_then_plain(&s, "max_per_user = 2\n"));
    let out = sync(&gh, &[]);
    assert!(!skipped(&out, "alice").is_empty(), "nothing reported: {out}");
    assert!(served(&gh, "alice").len() <= 2, "{:#?}", served(&gh, "alice"));
}

// ---- incremental and full syncs ----

#[test]
fn incremental_sync_reads_only_entries_changed_since_the_high_water_mark() {
    require_root!();
    let s = Slapd::start();
    let keys: Vec<KeyPair> = (0..8).map(|_| keygen(&s.dir.path, "ed25519")).collect();
    // Seven users (not a multiple of ten: see the full-sync rule in sync.rs); the last one
    // alone in the newest second, so the high-water second holds one entry.
    let names = ["u1", "u2", "u3", "u4", "u5", "u6", "u7"];
    let entries: Vec<String> = names[..6]
        .iter()
        .zip(&keys)
        .zip(20001..)
        .map(|((n, k), uid)| user_ldif(n, "people", uid, &[&k.public], ""))
        .collect();
    s.add(&entries.concat());
    std::thread::sleep(Duration::from_millis(1100));
    s.add(&user_ldif("u7", "people", 20007, &[&keys[6].public], ""));
    let gh = instance("lincr", &plain_section(&s, ""));

    let out = sync(&gh, &[]);
    assert!(summary(&out).starts_with("full sync: 7 entries;"), "{out}");
    let high_water = sqlite(&gh.store, "SELECT high_water FROM sync_state WHERE source = 'ldap'").trim().to_string();
    let stamps = s.modify_timestamps("(objectClass=posixAccount)");
    assert_eq!(stamps.len(), 7);
    assert_eq!(Some(&high_water), stamps.iter().map(|(_, ts)| ts).max(), "high water is the newest modifyTimestamp");

    // The change in a second of its own.
    std::thread::sleep(Duration::from_millis(1100));
    s.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: sshPublicKey\nsshPublicKey: {}\n\n",
        user_dn("u3", "people"),
        keys[7].public
    ));
    // Read: the changed entry, and u7 again, the one entry of the mark's own second (read
    // again as a change within that second may have come after the last sync).
    let read = s.modify_timestamps(&format!("(modifyTimestamp>={high_water})"));
    let mut dns: Vec<&str> = read.iter().map(|(dn, _)| dn.as_str()).collect();
    dns.sort();
    assert_eq!(dns, [user_dn("u3", "people"), user_dn("u7", "people")]);
    let out = sync(&gh, &[]);
    assert_eq!(
        summary(&out),
        "incremental sync: 2 entries; users added 0, disabled 0, enabled 0; keys added 1, removed 0; 0 skipped"
    );
    assert_served(&gh, "u3", &[&keys[2], &keys[7]]);

    // Nothing changed since: only the newest second (u3) is read again.
    let out = sync(&gh, &[]);
    assert!(summary(&out).starts_with("incremental sync: 1 entries; users added 0,"), "{out}");
    // --full reads everything.
    let out = sync(&gh, &["--full"]);
    assert!(summary(&out).starts_with("full sync: 7 entries; users added 0,"), "{out}");
}

#[test]
fn a_full_sync_disables_users_gone_from_the_directory() {
    require_root!();
    let s = Slapd::start();
    let ka = keygen(&s.dir.path, "ed25519");
    let kd = keygen(&s.dir.path, "ed25519");
    s.add(
        &[
            user_ldif("alice", "people", 20001, &[&ka.public], ""),
            user_ldif("dave", "people", 20004, &[&kd.public], ""),
            user_ldif("erin", "people", 20005, &[], ""),
        ]
        .concat(),
    );
    let gh = instance("lgone", &plain_section(&s, ""));
    sync(&gh, &[]);
    assert_served(&gh, "dave", &[&kd]);
    s.delete(&user_dn("dave", "people"));
    let out = sync(&gh, &["--full"]);
    assert_eq!(out, "full sync: 2 entries; users added 0, disabled 1, enabled 0; keys added 0, removed 1; 0 skipped\n");
    assert_eq!(state(&gh, "dave").as_deref(), Some("disabled"));
    assert_served(&gh, "dave", &[]);
    assert_served(&gh, "alice", &[&ka]);
}

#[test]
fn active_directory_account_expiry_disables() {
    require_root!();
    let s = Slapd::start();
    s.add(
        &[
            // 1970-01-01T00:00:01Z, long past
            user_ldif("henry", "people", 20008, &[], "accountExpires: 116444736010000000\n"),
            user_ldif("ivan", "people", 20009, &[], "accountExpires: 0\n"),
            user_ldif("judy", "people", 20010, &[], "accountExpires: 9223372036854775807\n"),
            // 2100-01-01T00:00:00Z
            user_ldif("kim", "people", 20011, &[], "accountExpires: 157469184000000000\n"),
        ]
        .concat(),
    );
    let gh = instance("lexpires", &plain_section(&s, ""));
    sync(&gh, &[]);
    for (name, want) in [("henry", "disabled"), ("ivan", "enabled"), ("judy", "enabled"), ("kim", "enabled")] {
        assert_eq!(state(&gh, name).as_deref(), Some(want), "{name}");
    }
    // The password check reads it too.
    assert_refused(&check_password(&gh, "henry", password_of("henry").as_bytes()), "Locked");
    let out = check_password(&gh, "kim", password_of("kim").as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    // Expired since the last sync: the next one disables.
    s.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: accountExpires\naccountExpires: 116444736010000000\n\n",
        user_dn("kim", "people")
    ));
    sync(&gh, &["--full"]);
    assert_eq!(state(&gh, "kim").as_deref(), Some("disabled"));
}

#[test]
fn a_full_sync_that_would_disable_too_many_changes_nothing() {
    require_root!();
    let s = Slapd::start();
    let names: Vec<String> = (0..30).map(|i| format!("u{i:02}")).collect();
    let ldif: String =
        names.iter().enumerate().map(|(i, n)| user_ldif(n, "people", 21000 + i as u32, &[], "")).collect();
    s.add(&ldif);
    let gh = instance("lmass", &plain_section(&s, ""));
    assert!(summary(&sync(&gh, &[])).starts_with("full sync: 30 entries; users added 30,"));
    // A filter gone wrong: the directory answers with 5 of its 30 users.
    let narrow = "user_filter = \"(&(objectClass=posixAccount)(uidNumber<=21004))\"\n";
    set_section(&gh, &plain_section(&s, narrow));
    let out = ldap(&gh, &["sync", "--full"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("answered 5 user entries") && err.contains("disable 25 of the 30"), "{err}");
    assert!(err.contains("--allow-mass-disable"), "{err}");
    assert!(users(&gh).values().all(|(state, _)| state == "enabled"), "a refused sync disabled users");
    let status = stdout(&ldap(&gh, &["status"]));
    assert!(status.contains("last error: not applied:"), "{status}");
    // Without --full the flag means nothing.
    assert_eq!(ldap(&gh, &["sync", "--allow-mass-disable"]).status.code(), Some(2));
    // The operator who means it.
    let out = sync(&gh, &["--full", "--allow-mass-disable"]);
    assert!(summary(&out).starts_with("full sync: 5 entries; users added 0, disabled 25,"), "{out}");
    assert_eq!(state(&gh, "u29").as_deref(), Some("disabled"));
    assert_eq!(state(&gh, "u00").as_deref(), Some("enabled"));
    // A higher limit lets a larger share go by itself; a few gone never stop a sync.
    set_section(&gh, &plain_section(&s, ""));
    sync(&gh, &["--full"]);
    set_section(&gh, &plain_section(&s, &format!("{narrow}max_disable_percent = 90\n")));
    assert!(summary(&sync(&gh, &["--full"])).contains("disabled 25,"));
    let few = "user_filter = \"(&(objectClass=posixAccount)(uidNumber<=21019))\"\n";
    set_section(&gh, &plain_section(&s, ""));
    sync(&gh, &["--full"]);
    set_section(&gh, &plain_section(&s, few));
    assert!(summary(&sync(&gh, &["--full"])).contains("disabled 10,"), "10 of 30 is at the floor");
}

#[test]
fn a_user_deleted_from_the_directory_is_disabled_by_the_hourly_full_sync() {
    require_root!();
    let s = Slapd::start();
    let kd = keygen(&s.dir.path, "ed25519");
    s.add(
        &[
            user_ldif("alice", "people", 20001, &[], ""),
            user_ldif("dave", "people", 20004, &[&kd.public], ""),
            user_ldif("erin", "people", 20005, &[], ""),
        ]
        .concat(),
    );
    let gh = instance("lgone10", &plain_section(&s, ""));
    sync(&gh, &[]);
    s.delete(&user_dn("dave", "people"));
    // An incremental read cannot see a deletion.
    assert!(summary(&sync(&gh, &[])).starts_with("incremental sync:"));
    // An hour after the last full read, the next sync is a full one.
    sqlite(&gh.store, "UPDATE sync_state SET last_full = last_full - 3601 WHERE source = 'ldap'");
    assert!(summary(&sync(&gh, &[])).starts_with("full sync:"), "no full sync after an hour");
    assert_served(&gh, "dave", &[]);
}

// ---- the login path: real ssh logins, staleness ----

/// A system account in sshd's managed group whose name is a directory uid.
fn directory_account(gh: &Gatehouse, sshd: &Sshd) -> SystemUser {
    SystemUser::new("ghl", &gh.dir.path, &[&sshd.managed.name])
}

fn login(sshd: &Sshd, user: &str, key: &KeyPair) -> Output {
    sshd.ssh(user, &key.private, &["echo", "in:$((6*7))"])
}

fn assert_logs_in(sshd: &Sshd, user: &str, key: &KeyPair) {
    let out = login(sshd, user, key);
    assert!(out.status.success(), "login failed: {}\nsshd: {}", stderr(&out), sshd.log_text());
    assert_eq!(stdout(&out).trim(), "in:42");
}

fn assert_refused_login(sshd: &Sshd, user: &str, key: &KeyPair) {
    let out = login(sshd, user, key);
    assert_eq!(out.status.code(), Some(255), "logged in: {}", stdout(&out));
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
}

/// `ssh` with a password, answered by an askpass script; no key offered.
fn password_ssh(sshd: &Sshd, dir: &Path, user: &str, password: &str, program: &str, args: &[&str]) -> Output {
    let askpass = dir.join(format!("askpass-{user}"));
    std::fs::write(&askpass, format!("#!/bin/sh\nprintf '%s\\n' '{password}'\n")).unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let port = sshd.port.to_string();
    let mut cmd = Command::new(program);
    if program == "sftp" {
        // Commands on standard input, not -b: sftp -b turns on BatchMode, which asks for no
        // password at all.
        cmd.args(["-P", &port]);
    } else {
        cmd.args(["-p", &port]);
    }
    cmd.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no", "-o", "IdentityAgent=none"])
        .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"])
        .arg(format!("{user}@127.0.0.1"))
        .args(args)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    output_with_input(&mut cmd, if program == "sftp" { b"pwd\n" } else { b"" })
}

#[test]
fn ssh_password_logins_check_the_directory_and_follow_the_policy() {
    require_root!();
    let s = Slapd::start();
    let gh = instance("lpamssh", &plain_section(&s, ""));
    let so = pam::module().display().to_string();
    let cfg = gh.config.display().to_string();
    let svc = pam::PamService::new(&format!(
        "auth required {so} config={cfg} ldap\n\
         account required {so} config={cfg} unknown=deny\n\
         session required {so} config={cfg}\n"
    ));
    let link = gh.dir.join(&svc.name);
    std::os::unix::fs::symlink("/usr/sbin/sshd", &link).unwrap();
    // Password logins for the directory's users; the shipped setup allows keys only.
    let probe = SystemGroup::new("ghp");
    let matches =
        format!("Match Group {}\n    PasswordAuthentication yes\n    AuthenticationMethods password\n", probe.name);
    let sshd = Sshd::start_as(&gh, &matches, &link, true);
    let ann = SystemUser::new("ghl", &gh.dir.path, &[&sshd.managed.name, &probe.name]);
    let bea = SystemUser::new("ghl", &gh.dir.path, &[&sshd.managed.name, &probe.name]);
    // Their uidNumber is their account's uid, as where NSS serves the directory.
    s.add(
        &[user_ldif(&ann.name, "people", ann.uid, &[], ""), user_ldif(&bea.name, "people", bea.uid, &[], "")].concat(),
    );
    sync(&gh, &[]);
    gh.ok(&["user", "set", &bea.name, "--policy", "files"]);
    // gatehouse-shell as their login shell, with this instance's configuration: a wrapper
    // named like it, which the session stage takes for gatehouse-shell.
    std::fs::create_dir(gh.dir.join("wrap")).unwrap();
    let login = gh.dir.join("wrap").join("gatehouse-shell");
    std::fs::write(
        &login,
        format!("#!/bin/sh\nexec {} --config {} \"$@\"\n", gh.shell_bin.display(), gh.config.display()),
    )
    .unwrap();
    std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o755)).unwrap();
    for who in [&ann, &bea] {
        let out = Command::new("usermod").arg("-s").arg(&login).arg(&who.name).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // The directory's password: a shell, as the policy says.
    let out = password_ssh(&sshd, &gh.dir.path, &ann.name, &password_of(&ann.name), "ssh", &["echo \"in:$SHELL\""]);
    assert!(out.status.success(), "{}\nsshd: {}", stderr(&out), sshd.log_text());
    assert_eq!(stdout(&out), "in:/bin/bash\n");
    // Another password: refused by the directory, counted as a failure.
    let out = password_ssh(&sshd, &gh.dir.path, &ann.name, "not-the-password", "ssh", &["echo in"]);
    assert_eq!(out.status.code(), Some(255), "{}", stdout(&out));
    let logged = gh.log.drain().join("\n");
    assert!(
        logged.contains(&format!("stage=auth user={} ", ann.name)) && logged.contains("verdict=accept reason=ldap"),
        "{logged}"
    );
    assert!(logged.contains("verdict=failure reason=wrongpassword"), "{logged}");

    // Policy files: no shell, but sftp in the data folder the session stage made.
    let out = password_ssh(&sshd, &gh.dir.path, &bea.name, &password_of(&bea.name), "ssh", &["id"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("shell access is not enabled for this account"), "{}", stderr(&out));
    let out = password_ssh(&sshd, &gh.dir.path, &bea.name, &password_of(&bea.name), "sftp", &[]);
    assert!(out.status.success(), "{}\nsshd: {}", stderr(&out), sshd.log_text());
    assert!(
        stdout(&out).contains(&format!("Remote working directory: {}", gh.data.join(&bea.name).display())),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_key_removed_in_the_directory_stops_ssh_logins_after_the_next_sync() {
    require_root!();
    let s = Slapd::start();
    let gh = instance("lkeyrm", &plain_section(&s, ""));
    let sshd = Sshd::start(&gh, "");
    let account = directory_account(&gh, &sshd);
    let old = keygen(&gh.dir.path, "ed25519");
    let new = keygen(&gh.dir.path, "ed25519");
    s.add(&user_ldif(&account.name, "people", account.uid, &[&old.public, &new.public], ""));
    sync(&gh, &[]);
    assert_logs_in(&sshd, &account.name, &old);

    s.modify(&format!(
        "dn: {}\nchangetype: modify\ndelete: sshPublicKey\nsshPublicKey: {}\n\n",
        user_dn(&account.name, "people"),
        old.public
    ));
    // Until the next sync the store still has it: the store, not the directory, is read.
    assert_logs_in(&sshd, &account.name, &old);
    let out = sync(&gh, &[]);
    assert!(summary(&out).contains("keys added 0, removed 1"), "{out}");
    assert_refused_login(&sshd, &account.name, &old);
    assert_logs_in(&sshd, &account.name, &new);
}

#[test]
fn directory_down_logins_continue_within_staleness_max_then_fail_closed() {
    require_root!();
    let mut s = Slapd::start();
    let gh = instance("lstale", &plain_section(&s, "staleness_max = \"1h\"\n"));
    let sshd = Sshd::start(&gh, "");
    let account = directory_account(&gh, &sshd);
    let key = keygen(&gh.dir.path, "ed25519");
    s.add(&user_ldif(&account.name, "people", account.uid, &[&key.public], ""));
    let local = sshd.user(&gh, &[]);
    let local_key = keygen(&gh.dir.path, "ed25519");
    let out = gh.cli_stdin(&["key", "add", &local.name, "-"], local_key.public.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    sync(&gh, &[]);
    assert_logs_in(&sshd, &account.name, &key);

    s.stop();
    let err = failed_sync(&gh);
    assert!(err.contains("directory unreachable"), "{err}");
    // Within staleness_max the synced store is trusted.
    assert_logs_in(&sshd, &account.name, &key);
    let out = ldap(&gh, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("last error: directory unreachable"), "{}", stdout(&out));

    // The last success two hours back: past staleness_max.
    sqlite(&gh.store, "UPDATE sync_state SET last_success = last_success - 7200 WHERE source = 'ldap'");
    gh.log.drain();
    assert_served(&gh, &account.name, &[]);
    let logged = gh.log.drain().join("\n");
    assert!(logged.contains(&format!("user={} ", account.name)), "{logged}");
    assert!(logged.contains("verdict=refuse reason=directory-stale"), "{logged}");
    assert_refused_login(&sshd, &account.name, &key);
    // Local users do not depend on the directory.
    assert_logs_in(&sshd, &local.name, &local_key);
    let out = ldap(&gh, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("STALE: directory users are refused"), "{}", stdout(&out));

    // The directory back and synced: logins again.
    s.restart();
    sync(&gh, &[]);
    assert_logs_in(&sshd, &account.name, &key);
}

#[test]
fn staleness_max_elapses_on_its_own() {
    require_root!();
    let mut s = Slapd::start();
    let key = keygen(&s.dir.path, "ed25519");
    s.add(&user_ldif("alice", "people", 20001, &[&key.public], ""));
    let gh = instance("lstale2", &plain_section(&s, "staleness_max = \"2s\"\n"));
    sync(&gh, &[]);
    let synced = Instant::now();
    s.stop();
    assert_served(&gh, "alice", &[&key]);
    std::thread::sleep(Duration::from_secs(4).saturating_sub(synced.elapsed()));
    assert_served(&gh, "alice", &[]);
}

// ---- password checks ----

#[test]
fn check_password_escapes_the_filter_and_binds_only_as_the_matching_entry() {
    require_root!();
    let s = Slapd::start();
    s.add(&[user_ldif("alice", "people", 20001, &[], ""), user_ldif("bob", "people", 20002, &[], "")].concat());
    let gh = instance("linject", &plain_section(&s, ""));
    let from = s.log_text().len();

    let hostile = [
        "*",
        "*)(uid=*",
        "*)(|(uid=*",
        "alice)(uid=*",
        "al*",
        "\\",
        "\\2a",
        "(",
        ")",
        "alice\\",
        "alice)",
        "alice\nbob",
        "*)(objectClass=*))(&(uid=bob",
    ];
    for name in hostile {
        for password in ["alice-pw", "bob-pw"] {
            let out = check_password(&gh, name, password.as_bytes());
            assert_refused(&out, "NoSuchUser");
        }
    }
    // A NUL cannot travel in an argument; in the password it is refused without a bind.
    assert_refused(&check_password(&gh, "alice", b"alice-pw\0"), "WrongPassword");
    assert_refused(&check_password(&gh, "alice", b"alice-\0pw"), "WrongPassword");

    // The control: the right password, which does bind as alice.
    let out = check_password(&gh, "alice", b"alice-pw\n");
    assert_eq!(stdout(&out), "password accepted\n", "{}", stderr(&out));
    assert!(out.status.success());
    let log = wait_for_log(&s, from, &format!("BIND dn=\"{}\"", user_dn("alice", "people")));
    let user_binds: Vec<&str> = log.lines().filter(|l| l.contains("BIND dn=\"uid=") && l.contains("method=")).collect();
    assert_eq!(user_binds.len(), 1, "binds as a user entry: {user_binds:#?}");
    // The names reached the server escaped.
    assert!(log.contains("(uid=\\2A\\29\\28uid=\\2A)"), "{log}");
    assert!(log.contains("(uid=\\5C2a)"), "{log}");

    assert_refused(&check_password(&gh, "alice", b"bob-pw"), "WrongPassword");
    assert_refused(&check_password(&gh, "nobody-here", b"x"), "NoSuchUser");
}

#[test]
fn empty_password_is_refused_before_any_bind() {
    require_root!();
    let s = Slapd::start();
    s.add(&user_ldif("alice", "people", 20001, &[], ""));
    // The premise: this server lets a DN with an empty password in (an unauthenticated bind).
    let out = Command::new("ldapwhoami")
        .args(["-x", "-H", &s.url, "-D", &user_dn("alice", "people"), "-w", ""])
        .output()
        .unwrap();
    assert!(out.status.success(), "the test server refuses unauthenticated binds: {}", stderr(&out));

    let gh = instance("lempty", &plain_section(&s, ""));
    let from = s.log_text().len();
    for input in [&b""[..], b"\n"] {
        assert_refused(&check_password(&gh, "alice", input), "Empty");
    }
    // The control, whose two connections (service, then user) must be the only ones.
    assert_refused(&check_password(&gh, "alice", b"wrong"), "WrongPassword");
    let log = wait_for_log(&s, from, &format!("BIND dn=\"{}\"", user_dn("alice", "people")));
    assert_eq!(log.matches(" ACCEPT from ").count(), 2, "{log}");
}

#[test]
fn locked_entries_are_refused_even_with_the_right_password() {
    require_root!();
    let s = Slapd::start();
    s.add(
        &[
            user_ldif("carol", "people", 20003, &[], "nsAccountLock: true\n"),
            user_ldif("dave", "people", 20004, &[], "pwdAccountLockedTime: 000001010000Z\n"),
            user_ldif("erin", "people", 20005, &[], "shadowExpire: 1\n"),
            user_ldif("frank", "people", 20006, &[], "userAccountControl: 66050\n"),
            user_ldif("grace", "people", 20007, &[], "userAccountControl: 66048\n"),
        ]
        .concat(),
    );
    let gh = instance("llocked", &plain_section(&s, ""));
    for user in ["carol", "dave", "erin", "frank"] {
        assert_refused(&check_password(&gh, user, password_of(user).as_bytes()), "Locked");
    }
    let out = check_password(&gh, "grace", password_of("grace").as_bytes());
    assert_eq!(stdout(&out), "password accepted\n", "{}", stderr(&out));
}

// ---- TLS ----

#[test]
fn ldaps_and_starttls_with_the_test_ca_work() {
    require_root!();
    let s = Slapd::start_tls();
    let tls = s.tls.as_ref().unwrap();
    let key = keygen(&s.dir.path, "ed25519");
    s.add(&user_ldif("alice", "people", 20001, &[&key.public], ""));
    let ca = format!("ca_file = \"{}\"\n", tls.ca.display());
    let gh = instance("lldaps", &ldap_section(&s, &tls.url, &ca));
    let out = sync(&gh, &[]);
    assert!(summary(&out).starts_with("full sync: 1 entries; users added 1,"), "{out}");
    assert_served(&gh, "alice", &[&key]);
    let out = check_password(&gh, "alice", b"alice-pw");
    assert_eq!(stdout(&out), "password accepted\n", "{}", stderr(&out));
    // ldap:// with StartTLS (the default) to the same server.
    set_section(&gh, &ldap_section(&s, &s.url, &ca));
    let out = sync(&gh, &["--full"]);
    assert!(summary(&out).starts_with("full sync: 1 entries;"), "{out}");
    // The server saw TLS on both connections (ssf > 0 on the service binds).
    let log = s.log_text();
    let binds: Vec<&str> = log.lines().filter(|l| l.contains(&format!("BIND dn=\"{SERVICE_DN}\" mech="))).collect();
    assert!(binds.len() >= 2, "{log}");
    assert!(binds.iter().all(|l| !l.ends_with(" ssf=0")), "a bind without TLS: {binds:#?}");
}

#[test]
fn tls_without_the_right_ca_fails_closed_and_changes_nothing() {
    require_root!();
    let s = Slapd::start_tls();
    let tls = s.tls.as_ref().unwrap();
    let key = keygen(&s.dir.path, "ed25519");
    s.add(&user_ldif("alice", "people", 20001, &[&key.public], ""));
    let good_ca = format!("ca_file = \"{}\"\n", tls.ca.display());
    let gh = instance("ltlsbad", &ldap_section(&s, &tls.url, &good_ca));
    sync(&gh, &[]);
    let before =
        sqlite(&gh.store, "SELECT name, state FROM users; SELECT fingerprint FROM keys; SELECT * FROM group_members;");
    // Changes the store would take, had the sync gone through.
    let key2 = keygen(&s.dir.path, "ed25519");
    s.add(&[user_ldif("bob", "people", 20002, &[&key2.public], ""), group_ldif("lab", 30001, &["alice"])].concat());
    s.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: nsAccountLock\nnsAccountLock: true\n\n",
        user_dn("alice", "people")
    ));

    let wrong_ca = format!("ca_file = \"{}\"\n", tls.wrong_ca.display());
    for (url, ca) in [(&tls.url, ""), (&tls.url, wrong_ca.as_str()), (&s.url, ""), (&s.url, wrong_ca.as_str())] {
        set_section(&gh, &ldap_section(&s, url, ca));
        let err = failed_sync(&gh);
        assert!(err.contains("directory unreachable") && err.contains("certificate"), "{url} {ca}: {err}");
        let out = ldap(&gh, &["status"]);
        assert!(stdout(&out).contains("last error: directory unreachable"), "{}", stdout(&out));
        assert!(stdout(&out).contains("certificate"), "{}", stdout(&out));
        let after = sqlite(
            &gh.store,
            "SELECT name, state FROM users; SELECT fingerprint FROM keys; SELECT * FROM group_members;",
        );
        assert_eq!(after, before, "{url} {ca}: the store changed");
        assert_served(&gh, "alice", &[&key]);
        // Password checks refuse to talk too.
        let out = check_password(&gh, "alice", b"alice-pw");
        assert_eq!(out.status.code(), Some(4), "{url} {ca}: {}", stdout(&out));
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn starttls_to_a_server_without_tls_fails_closed() {
    require_root!();
    let s = Slapd::start();
    s.add(&user_ldif("alice", "people", 20001, &[], ""));
    // starttls is on by default for ldap://.
    let gh = instance("lnotls", &ldap_section(&s, &s.url, ""));
    let err = failed_sync(&gh);
    assert!(err.contains("directory unreachable"), "{err}");
    assert!(users(&gh).is_empty());
    // And no bind went over the plain connection.
    assert!(!s.log_text().contains(&format!("BIND dn=\"{SERVICE_DN}\"")), "{}", s.log_text());
}

// ---- configuration ----

/// Exit code and standard error of `gatehouse-ldap status` with `section`, without a store.
fn status_with(name: &str, section: &str) -> (Option<i32>, String) {
    let gh = Gatehouse::new(name, section);
    let out = Command::new(ldap_binary()).arg("--config").arg(&gh.config).arg("status").output().unwrap();
    (out.status.code(), stderr(&out))
}

fn url_section(url: &str, extra: &str) -> String {
    format!("\n[ldap]\nurl = \"{url}\"\nbase_dn = \"{BASE_DN}\"\n{extra}")
}

#[test]
fn plain_ldap_to_a_host_other_than_loopback_is_a_config_error() {
    require_root!();
    // Only the configuration is read: nothing is sent to these addresses.
    for url in ["ldap://192.0.2.10/", "ldap://ldap.example.org:389/", "ldap://localhost.example.org/"] {
        let (code, err) = status_with("lcfg", &url_section(url, "starttls = false\n"));
        assert_eq!(code, Some(3), "{url}: {err}");
        assert!(err.contains("gatehouse.toml:"), "{err}");
        assert!(
            err.contains(
                "ldap.url: plain ldap:// without StartTLS is allowed only on loopback or with ldap.insecure = true"
            ),
            "{err}"
        );
    }
    // Loopback, StartTLS, ldaps:// and insecure are accepted (status: never synced, exit 4
    // as there is no store here).
    for (url, extra) in [
        ("ldap://127.0.0.1:389/", "starttls = false\n"),
        ("ldap://localhost/", "starttls = false\n"),
        ("ldap://192.0.2.10/", ""),
        ("ldaps://192.0.2.10/", ""),
        ("ldap://192.0.2.10/", "starttls = false\ninsecure = true\n"),
    ] {
        let (code, err) = status_with("lcfgok", &url_section(url, extra));
        assert_eq!(code, Some(4), "{url} {extra}: {err}");
        assert!(!err.contains("ldap.url"), "{err}");
    }
    let (code, err) = status_with("lcfgbad", &url_section("http://127.0.0.1/", ""));
    assert_eq!(code, Some(3));
    assert!(err.contains("ldap.url: must be an ldaps:// or ldap:// URL"), "{err}");
}

#[test]
fn a_host_name_that_only_looks_like_loopback_is_a_config_error() {
    require_root!();
    for url in ["ldap://127.0.0.1.example.org/", "ldap://127.0.0.1@ldap.example.org/"] {
        let (code, err) = status_with("lcfg127", &url_section(url, "starttls = false\n"));
        assert_eq!(code, Some(3), "{url} accepted as loopback: {err}");
    }
}

#[test]
fn ipv6_loopback_is_loopback() {
    require_root!();
    let (code, err) = status_with("lcfg6", &url_section("ldap://[::1]:389/", "starttls = false\n"));
    assert_eq!(code, Some(4), "{err}");
}

// ---- timeouts ----

/// A TCP server on 127.0.0.1 that accepts connections and never answers; stops on drop.
struct Blackhole {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blackhole {
    fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((socket, _)) => held.push(socket),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Blackhole { port, stop, thread: Some(thread) }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_server_that_never_answers_fails_within_the_timeout() {
    require_root!();
    let s = Slapd::start(); // only for its service password file
    let hole = Blackhole::start();
    let cases = [
        (format!("ldap://127.0.0.1:{}/", hole.port), "starttls = false\n"),
        (format!("ldap://127.0.0.1:{}/", hole.port), ""),
        (format!("ldaps://127.0.0.1:{}/", hole.port), ""),
    ];
    let gh = instance("lhole", &ldap_section(&s, &cases[0].0, cases[0].1));
    for (url, extra) in &cases {
        set_section(&gh, &ldap_section(&s, url, extra).replace("timeout = \"5s\"", "timeout = \"1s\""));
        let started = Instant::now();
        let err = failed_sync(&gh);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "{url} {extra}: sync took {took:?}");
        assert!(err.contains("directory unreachable"), "{url}: {err}");
        let started = Instant::now();
        let out = check_password(&gh, "alice", b"alice-pw");
        assert!(started.elapsed() < Duration::from_secs(10), "{url}: check-password took {:?}", started.elapsed());
        assert_eq!(out.status.code(), Some(4), "{url}: {}", stdout(&out));
    }
    let out = ldap(&gh, &["status"]);
    assert!(stdout(&out).contains("last error: directory unreachable"), "{}", stdout(&out));
}

// ---- the service password file ----

#[test]
fn the_service_password_file_must_be_roots_alone() {
    require_root!();
    let s = Slapd::start();
    let key = keygen(&s.dir.path, "ed25519");
    s.add(&user_ldif("alice", "people", 20001, &[&key.public], ""));
    let gh = instance("lpwfile", &plain_section(&s, ""));
    let file = &s.password_file;
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    let root = nix::unistd::Uid::from_raw(0);
    for (mode, owner) in [(0o644, root), (0o640, root), (0o604, root), (0o600, nobody)] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
        nix::unistd::chown(file, Some(owner), None).unwrap();
        let err = failed_sync(&gh);
        assert!(
            err.contains("directory credentials:") && err.contains("readable by its owner alone"),
            "mode {mode:o} owner {owner}: {err}"
        );
        let out = ldap(&gh, &["status"]);
        assert!(stdout(&out).contains("must be root's"), "{}", stdout(&out));
        assert!(users(&gh).is_empty());
        let out = check_password(&gh, "alice", b"alice-pw");
        assert_eq!(out.status.code(), Some(4), "mode {mode:o}: {}", stdout(&out));
    }
    nix::unistd::chown(file, Some(root), None).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o400)).unwrap();
    sync(&gh, &[]);
    assert_served(&gh, "alice", &[&key]);
    // A wrong password in the file is a credentials error, not an empty directory.
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(file, "not-the-password\n").unwrap();
    let err = failed_sync(&gh);
    assert!(err.contains("directory credentials: bind as"), "{err}");
    assert_served(&gh, "alice", &[&key]);
}

// ---- status ----

#[test]
fn status_shows_the_last_sync_and_lag_and_json_parses() {
    require_root!();
    let mut s = Slapd::start();
    let k: Vec<KeyPair> = (0..3).map(|_| keygen(&s.dir.path, "ed25519")).collect();
    s.add(
        &[
            user_ldif("alice", "people", 20001, &[&k[0].public, &k[1].public], ""),
            user_ldif("bob", "people", 20002, &[&k[2].public], ""),
        ]
        .concat(),
    );
    let gh = instance("lstatus", &plain_section(&s, "staleness_max = \"1h\"\n"));

    let out = gh.cli(&["ldap", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "never synced\nSTALE: directory users are refused until a sync succeeds (ldap.staleness_max 3600 s)\n"
    );
    let out = gh.cli(&["ldap", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!({"state": null, "lag_seconds": null, "stale": true, "staleness_max": 3600}));

    let out = gh.cli(&["ldap", "sync"]);
    assert!(out.status.success(), "gatehouse ldap sync: {}", stderr(&out));
    let now = gatehouse::time::now();
    let out = gh.cli(&["ldap", "status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = json["state"]["last_success"].as_i64().unwrap();
    assert!((now.as_secs() - 5..=now.as_secs()).contains(&last), "{json}");
    assert_eq!(json["state"]["last_attempt"].as_i64(), Some(last));
    assert!(json["state"]["last_error"].is_null());
    assert_eq!(json["state"]["users"].as_i64(), Some(2));
    assert_eq!(json["state"]["keys"].as_i64(), Some(3));
    let hw = json["state"]["high_water"].as_str().unwrap();
    assert!(hw.len() == 15 && hw.ends_with('Z') && hw[..14].bytes().all(|b| b.is_ascii_digit()), "{hw}");
    assert!((0..=5).contains(&json["lag_seconds"].as_i64().unwrap()), "{json}");
    assert_eq!(json["stale"], false);
    assert_eq!(json["staleness_max"], 3600);

    let out = gh.cli(&["ldap", "status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let stamp = gatehouse::time::Timestamp::from_secs(last);
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with(&format!("last successful sync: {stamp} (lag ")), "{text}");
    assert!(lines[0].ends_with(" s)"), "{text}");
    assert_eq!(lines[1], format!("last attempt: {stamp}"));
    assert_eq!(lines[2], "directory users: 2, keys: 3");

    // A failed sync: the error shows, the last success stays.
    s.stop();
    std::thread::sleep(Duration::from_millis(1100));
    failed_sync(&gh);
    let out = gh.cli(&["ldap", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["state"]["last_success"].as_i64(), Some(last));
    assert!(json["state"]["last_attempt"].as_i64().unwrap() > last, "{json}");
    assert!(json["state"]["last_error"].as_str().unwrap().starts_with("directory unreachable: "), "{json}");
    assert!(json["lag_seconds"].as_i64().unwrap() >= 1, "{json}");
    assert_eq!(json["stale"], false);
    let text = stdout(&gh.cli(&["ldap", "status"]));
    assert!(text.contains("\nlast error: directory unreachable: "), "{text}");
}

// ---- groups on the login path ----

fn git(sshd: &Sshd, key: &KeyPair, cwd: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_SSH_COMMAND", sshd.ssh_line(&key.private))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
}

#[test]
fn a_grant_to_a_directory_group_follows_its_membership() {
    require_root!();
    let s = Slapd::start();
    let gh = instance("lgroup", &plain_section(&s, ""));
    let sshd = Sshd::start(&gh, "");
    let work = TestDir::new("lgroupw");
    // A local owner with a repository others may read in file modes.
    let owner = sshd.user(&gh, &[]);
    let data = gh.data_dir(&owner);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = data.join("shared.git");
    run_ok(Command::new("git").args(["init", "--quiet", "--bare", "-b", "main"]).arg(&repo));
    let seed = work.join("seed");
    run_ok(Command::new("git").args(["init", "--quiet", "-b", "main"]).arg(&seed));
    std::fs::write(seed.join("README"), "hello\n").unwrap();
    let in_seed = |args: &[&str]| {
        run_ok(
            Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
                .args(args)
                .current_dir(&seed),
        )
    };
    in_seed(&["add", "."]);
    in_seed(&["commit", "--quiet", "-m", "seed"]);
    in_seed(&["push", "--quiet", repo.to_str().unwrap(), "main"]);
    run_ok(Command::new("chown").arg("-R").arg(format!("{0}:{0}", owner.name)).arg(&repo));

    let member = directory_account(&gh, &sshd);
    let outsider = directory_account(&gh, &sshd);
    let member_key = keygen(&gh.dir.path, "ed25519");
    let outsider_key = keygen(&gh.dir.path, "ed25519");
    // A group name no system group has, so only the directory can make anyone a member.
    let group = unique("lab");
    s.add(
        &[
            user_ldif(&member.name, "people", member.uid, &[&member_key.public], ""),
            user_ldif(&outsider.name, "people", outsider.uid, &[&outsider_key.public], ""),
            group_ldif(&group, 30001, &[&member.name]),
        ]
        .concat(),
    );
    sync(&gh, &[]);
    gh.ok(&["grant", "add", &format!("@{group}"), &format!("{}/*.git", owner.name), "read"]);

    let url = |who: &SystemUser| format!("ssh://{}@127.0.0.1:{}/{}/shared.git", who.name, sshd.port, owner.name);
    let out = git(&sshd, &member_key, &work.path, &["clone", "--quiet", &url(&member), "by-member"]);
    assert!(out.status.success(), "group member refused: {}\nsshd: {}", stderr(&out), sshd.log_text());
    assert_eq!(std::fs::read_to_string(work.join("by-member/README")).unwrap(), "hello\n");
    let out = git(&sshd, &outsider_key, &work.path, &["clone", "--quiet", &url(&outsider), "by-outsider"]);
    assert!(!out.status.success(), "a non-member cloned");
    assert!(stderr(&out).contains("not found, or you do not have access"), "{}", stderr(&out));

    // Out of the group in the directory: out of the grant after the next sync.
    s.modify(&format!(
        "dn: cn={group},ou=groups,{BASE_DN}\nchangetype: modify\ndelete: memberUid\nmemberUid: {}\n\n",
        member.name
    ));
    sync(&gh, &[]);
    let out = git(&sshd, &member_key, &work.path, &["clone", "--quiet", &url(&member), "again"]);
    assert!(!out.status.success(), "a former member cloned");
    assert!(stderr(&out).contains("not found, or you do not have access"), "{}", stderr(&out));
}

#[test]
fn a_locked_store_during_a_sync_is_reported_as_the_store() {
    require_root!();
    let s = Slapd::start();
    let key = keygen(&s.dir.path, "ed25519");
    s.add(&user_ldif("alice", "people", 20001, &[&key.public], ""));
    let gh = instance("lstorelock", &plain_section(&s, ""));
    let text = std::fs::read_to_string(&gh.config).unwrap().replace("[store]\n", "[store]\nbusy_timeout_ms = 300\n");
    std::fs::write(&gh.config, text).unwrap();
    // Another writer holds the write lock (readers go on, WAL): the sync opens the store and
    // reads the directory, then waits to apply what it read, and gives up.
    let holder = rusqlite::Connection::open(&gh.store).unwrap();
    holder.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE; UPDATE users SET state = state;").unwrap();
    let out = ldap(&gh, &["sync"]);
    assert_eq!(out.status.code(), Some(4), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("store") && err.contains("locked"), "{err}");
    assert!(!err.contains("directory search"), "a store failure named as the directory's: {err}");
    holder.execute_batch("ROLLBACK;").unwrap();
}

// ---- follow mode: content sync (syncprov) and the poll fallback ----

/// `gatehouse-ldap follow` for `gh`, its standard error in a file; killed on drop.
struct Follow {
    child: std::process::Child,
    stderr: PathBuf,
}

impl Follow {
    fn start(gh: &Gatehouse, name: &str) -> Follow {
        let stderr = gh.dir.join(&format!("follow-{name}.err"));
        let file = std::fs::File::create(&stderr).unwrap();
        let child = ldap_cmd(gh, &["follow"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Follow { child, stderr }
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `gatehouse-keys` serves `user` exactly `want` keys by blob.
fn wait_served(gh: &Gatehouse, f: &Follow, user: &str, want: &[&KeyPair]) {
    let mut last = Vec::new();
    let done = wait_until(Duration::from_millis(50), Duration::from_secs(15), || {
        let out = gh.keys(&[user]);
        last = stdout(&out).lines().map(str::to_string).collect();
        last.len() == want.len() && want.iter().all(|k| last.iter().any(|l| l.contains(blob(&k.public))))
    });
    assert!(done.is_some(), "{user}: still served {last:#?}\nfollow: {}", f.errors());
}

fn remove_key_ldif(user: &str, key: &KeyPair) -> String {
    format!(
        "dn: {}\nchangetype: modify\ndelete: sshPublicKey\nsshPublicKey: {}\n\n",
        user_dn(user, "people"),
        key.public
    )
}

#[test]
fn follow_sees_directory_changes_as_they_are_made_and_resumes_from_its_cookie() {
    require_root!();
    let s = Slapd::start_syncprov();
    // A long poll interval: what is seen within seconds came through content sync.
    let gh = instance(
        "lfollow",
        &plain_section(
            &s,
            "follow = \"content-sync\"\npoll_interval = \"1h\"\nuser_filter = \"(objectClass=inetOrgPerson)\"\n",
        ),
    );
    let sshd = Sshd::start(&gh, "");
    let account = directory_account(&gh, &sshd);
    let old = keygen(&gh.dir.path, "ed25519");
    let new = keygen(&gh.dir.path, "ed25519");
    let extra = keygen(&gh.dir.path, "ed25519");
    s.add(&user_ldif(&account.name, "people", account.uid, &[&old.public, &new.public], ""));
    let f = Follow::start(&gh, "1");
    wait_served(&gh, &f, &account.name, &[&old, &new]);
    assert_logs_in(&sshd, &account.name, &old);

    // A key removed in the directory: refused by sshd within seconds.
    s.modify(&remove_key_ldif(&account.name, &old));
    wait_served(&gh, &f, &account.name, &[&new]);
    assert_refused_login(&sshd, &account.name, &old);
    assert_logs_in(&sshd, &account.name, &new);

    // A user added appears; an entry without a uid is reported and skipped, nothing else.
    let added = keygen(&gh.dir.path, "ed25519");
    s.add(&user_ldif("ghfnew", "people", 20950, &[&added.public], ""));
    s.add(&format!("dn: cn=nouid,ou=people,{BASE_DN}\nobjectClass: inetOrgPerson\ncn: nouid\nsn: nouid\n\n"));
    wait_served(&gh, &f, "ghfnew", &[&added]);
    let logged = gh.log.drain().join("\n");
    assert!(logged.contains("no uid attribute; skipped"), "{logged}");

    // Stopped, a change made meanwhile, started again: the kept cookie resumes the sync.
    let cookie = sqlite(&gh.store, "SELECT high_water FROM sync_state WHERE source = 'ldap-follow'");
    assert!(!cookie.trim().is_empty(), "no cookie kept");
    drop(f);
    s.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: sshPublicKey\nsshPublicKey: {}\n\n",
        user_dn(&account.name, "people"),
        extra.public
    ));
    let f = Follow::start(&gh, "2");
    wait_served(&gh, &f, &account.name, &[&new, &extra]);
    // The timer's read at the start may apply the change first; the session's refresh
    // from the old cookie then brings the new one.
    let moved = wait_until(Duration::from_millis(50), Duration::from_secs(15), || {
        sqlite(&gh.store, "SELECT high_water FROM sync_state WHERE source = 'ldap-follow'") != cookie
    });
    assert!(moved.is_some(), "the cookie did not move on; follow: {}", f.errors());

    // A user deleted in the directory: disabled, its keys gone (a full read settles it).
    s.delete(&user_dn("ghfnew", "people"));
    wait_served(&gh, &f, "ghfnew", &[]);
    assert_eq!(state(&gh, "ghfnew").as_deref(), Some("disabled"));
    drop(f);

    // A cookie the directory does not know: the session starts afresh, changes still come.
    sqlite(
        &gh.store,
        "UPDATE sync_state SET high_water = '7269643d3939392c63736e3d6e6f6e73656e7365' WHERE source = 'ldap-follow'",
    );
    let f = Follow::start(&gh, "3");
    s.modify(&remove_key_ldif(&account.name, &extra));
    wait_served(&gh, &f, &account.name, &[&new]);
    // Nothing the directory sent made it panic; what went wrong was said in one line each.
    assert!(!f.errors().contains("panicked"), "{}", f.errors());
    // Directory users stay fresh: every change and every quiet period records a success.
    let out = ldap(&gh, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn follow_polls_where_the_directory_offers_no_content_sync() {
    require_root!();
    let s = Slapd::start();
    let gh = instance("lpoll", &plain_section(&s, "poll_interval = \"1s\"\n"));
    let old = keygen(&gh.dir.path, "ed25519");
    let new = keygen(&gh.dir.path, "ed25519");
    s.add(&user_ldif("ghpoll", "people", 20960, &[&old.public, &new.public], ""));
    let f = Follow::start(&gh, "poll");
    wait_served(&gh, &f, "ghpoll", &[&old, &new]);
    let said =
        wait_until(Duration::from_millis(50), Duration::from_secs(10), || f.errors().contains("polling every 1s"));
    assert!(said.is_some(), "{}", f.errors());
    assert_eq!(f.errors().lines().count(), 1, "{}", f.errors());
    // modifyTimestamp has whole seconds: a change in the second of the last read is read again.
    s.modify(&remove_key_ldif("ghpoll", &old));
    wait_served(&gh, &f, "ghpoll", &[&new]);
}
