//! Accounts as systemd user records (agent.accounts = "userdb"), through the system's own
//! nsswitch.conf and nss-systemd: getent, id, a real sshd with the shipped drop-in and
//! real ssh sessions. Needs root and nss-systemd (Debian's libnss-systemd). The test runs
//! itself again inside a mount namespace of its own (unshare(1)) with empty tmpfs over
//! /run/userdb and /etc/userdb, so the host's accounts are never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn nss_systemd_configured() -> bool {
    let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    gatehouse::agent::userdb::nss_systemd_serves(&nsswitch)
}

fn getent(args: &[&str]) -> Option<String> {
    let out = Command::new("getent").args(args).output().unwrap();
    out.status.success().then(|| stdout(&out))
}

fn store_uid(gh: &Gatehouse, user: &str) -> u32 {
    let shown: serde_json::Value = serde_json::from_str(&gh.ok(&["user", "show", user, "--json"])).unwrap();
    shown["uid"].as_u64().expect("user show --json has the uid") as u32
}

#[test]
fn accounts_are_user_records_served_by_nss_systemd() {
    require_root!();
    if !nss_systemd_configured() {
        assert!(std::env::var_os("CI").is_none(), "CI installs libnss-systemd: nsswitch.conf must name systemd");
        eprintln!("SKIPPED: /etc/nsswitch.conf does not ask systemd for passwd and group (apt install libnss-systemd)");
        return;
    }
    let test = "accounts_are_user_records_served_by_nss_systemd";
    if let Some(status) = in_userdb_namespace(&["--exact", test, "--nocapture", "--test-threads=1"]) {
        assert!(status.success(), "the test inside its namespace failed: {status:?}");
        return;
    }
    let gh = Gatehouse::new("userdb", "");
    gh.init(None);
    let sshd = Sshd::start(&gh, "");
    gh.own_accounts(43000, 43999, &sshd.managed.name);
    gh.use_userdb();
    let doctor = stdout(&gh.cli(&["doctor"]));
    assert!(doctor.contains("accounts: userdb (systemd user records in /run/userdb"), "{doctor}");
    let keys = gh.dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (a_key, d_key) = (keygen(&keys, "ed25519"), keygen(&keys, "ed25519"));
    let (alice, carol, dave) = (unique("gua"), unique("guc"), unique("gud"));
    let passwd_before = std::fs::read_to_string("/etc/passwd").unwrap();
    let mut agent = AgentProcess::start(&gh.config);

    // Added: a record with the store's uid, in users.group, and ssh works at once.
    gh.ok(&["user", "add", &alice]);
    gh.cli_stdin(&["key", "add", &alice, "-"], a_key.public.as_bytes());
    let uid = store_uid(&gh, &alice);
    assert!((43000..=43999).contains(&uid), "the store gave uid {uid}");
    let login = sshd.wait_for_login(&alice, &a_key.private, Duration::from_secs(10));
    assert!(login.is_some(), "alice could not log in: {:?}", gh.log.drain());
    let entry = getent(&["passwd", &alice]).expect("nss-systemd serves alice");
    assert!(entry.starts_with(&format!("{alice}:x:{uid}:{uid}:")), "{entry}");
    assert!(entry.trim_end().ends_with(&format!(":{}", gh.shell_bin.display())), "{entry}");
    assert_eq!(getent(&["passwd", &uid.to_string()]).as_deref(), Some(entry.as_str()), "by uid too");
    let groups = stdout(&Command::new("id").args(["-nG", &alice]).output().unwrap());
    assert!(groups.split_whitespace().any(|g| g == sshd.managed.name), "id -nG {alice}: {groups}");
    assert_eq!(std::fs::read_to_string("/etc/passwd").unwrap(), passwd_before, "/etc/passwd is never edited");
    let out = sshd.ssh(&alice, &a_key.private, &["id", "-u"]);
    assert_eq!(stdout(&out).trim(), uid.to_string(), "{}", stderr(&out));
    wait_until(Duration::from_millis(20), Duration::from_secs(5), || gh.data.join(&alice).exists());
    let folder = std::fs::metadata(gh.data.join(&alice)).expect("the agent made the data folder");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&folder), uid);

    // Disabled: the record is locked (expired for PAM), the session ends.
    let mut session = sshd.hold_session(&alice, &a_key.private);
    gh.ok(&["user", "disable", &alice]);
    let ended = wait_until(Duration::from_millis(20), Duration::from_secs(5), || session.try_wait().unwrap().is_some());
    assert!(ended.is_some(), "alice's session outlived her account by 5 s");
    let locked = wait_until(Duration::from_millis(20), Duration::from_secs(5), || {
        getent(&["shadow", &alice]).is_some_and(|s| s.trim_end().ends_with(":1:"))
    });
    assert!(locked.is_some(), "locked record: {:?}", getent(&["shadow", &alice]));

    // Removed: the record goes; the name re-added gets a new uid and not the old files.
    gh.ok(&["user", "remove", &alice]);
    let gone = wait_until(Duration::from_millis(20), Duration::from_secs(5), || getent(&["passwd", &alice]).is_none());
    assert!(gone.is_some(), "alice's record outlived her by 5 s");
    gh.ok(&["user", "add", &alice]);
    let again = store_uid(&gh, &alice);
    assert_ne!(again, uid, "a removed user's uid is retired");
    let back = wait_until(Duration::from_millis(20), Duration::from_secs(5), || {
        getent(&["passwd", &alice]).is_some_and(|e| e.contains(&format!(":{again}:")))
    });
    assert!(back.is_some(), "{:?}", getent(&["passwd", &alice]));
    let folder = std::fs::metadata(gh.data.join(&alice)).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&folder), uid, "the old folder stays the old uid's");

    // A uid held by another account, and a hostile name in the store: refused, logged.
    agent.kill();
    gh.ok(&["user", "add", &carol]);
    let carol_uid = store_uid(&gh, &carol);
    std::fs::write(
        "/etc/userdb/squatter.user",
        format!(r#"{{"userName":"squatter","uid":{carol_uid},"gid":{carol_uid}}}"#),
    )
    .unwrap();
    std::os::unix::fs::symlink("squatter.user", format!("/etc/userdb/{carol_uid}.user")).unwrap();
    let conn = rusqlite::Connection::open(&gh.store).unwrap();
    conn.execute(
        "INSERT INTO users (name, state, policy, created, source, uid) VALUES ('../evil', 'enabled', 'shell', 0, 'cli', 43990)",
        [],
    )
    .unwrap();
    drop(conn);
    let out = gh.cli(&["agent", "--once"]);
    assert_eq!(out.status.code(), Some(1), "a refused record is a failed step: {}", stdout(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!(
            "{carol}: account FAILED: no user record: uid {carol_uid} is held by the account squatter"
        )),
        "{said}"
    );
    assert!(getent(&["passwd", &carol]).is_none());
    assert!(!Path::new("/run/evil.user").exists() && !said.contains("evil"), "{said}");
    let records: Vec<String> =
        std::fs::read_dir("/run/userdb").unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!records.iter().any(|r| r.contains("evil")), "{records:?}");
    assert!(
        std::fs::read_to_string("/etc/userdb/squatter.user").unwrap().contains("squatter"),
        "a record not ours is never touched"
    );

    // The agent down: a user added meanwhile can log in once it is back.
    gh.ok(&["user", "add", &dave]);
    gh.cli_stdin(&["key", "add", &dave, "-"], d_key.public.as_bytes());
    assert!(getent(&["passwd", &dave]).is_none());
    let _agent = AgentProcess::start(&gh.config);
    let login = sshd.wait_for_login(&dave, &d_key.private, Duration::from_secs(10));
    assert!(login.is_some(), "dave could not log in after the agent came back: {}", sshd.log_text());
}
