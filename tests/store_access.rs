//! The store as the login path sees it: a reader of another uid with only group read
//! access, while writers are busy, after they are gone, and after one is killed.
//! Needs root (creates users, changes ownership).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use rusqlite::{Connection, OpenFlags};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// An instance whose store only members of `group` may read, with one user and key.
struct Fixture {
    gh: Gatehouse,
    group: SystemGroup,
    reader: SystemUser,
    key: KeyPair,
    /// alice's uid (%U), read once: asking the store while a test holds it locked would wait.
    uid: String,
}

fn fixture(name: &str) -> Fixture {
    let gh = Gatehouse::new(name, "");
    gh.init(None);
    let group = SystemGroup::new("ghr");
    let reader = SystemUser::new("ghr", &gh.dir.path, &[&group.name]);
    gh.share_store_with(&group.name);
    gh.ok(&["user", "add", "alice"]);
    let key = keygen(&gh.dir.path, "ed25519");
    gh.cli_stdin(&["key", "add", "alice", "-"], key.public.as_bytes());
    let uid = gh.store_uid("alice");
    Fixture { gh, group, reader, key, uid }
}

impl Fixture {
    /// gatehouse-keys for alice as the unprivileged reader, with the groups sshd would give it.
    fn lookup(&self, fingerprint: &str) -> Output {
        let gid = nix::unistd::User::from_name(&self.reader.name).unwrap().unwrap().gid.to_string();
        Command::new("setpriv")
            .args(["--reuid", &self.reader.name, "--regid", &gid, "--init-groups", "--"])
            .arg(&self.gh.keys_bin)
            .arg("--config")
            .arg(&self.gh.config)
            .args(["--", "alice", &self.uid, fingerprint])
            .output()
            .unwrap()
    }

    /// Like [`Fixture::lookup`], also saying how long it took.
    fn timed_lookup(&self) -> (Output, Duration) {
        let started = Instant::now();
        let out = self.lookup(&self.key.fingerprint);
        (out, started.elapsed())
    }

    fn assert_served(&self, context: &str) {
        let out = self.lookup(&self.key.fingerprint);
        assert!(out.status.success(), "{context}: exit {:?}, log: {:?}", out.status, self.gh.log.drain());
        let text = stdout(&out);
        let blob = self.key.public.split(' ').nth(1).unwrap();
        assert_eq!(text.lines().count(), 1, "{context}: {text}");
        assert!(text.starts_with("restrict,") && text.contains(blob), "{context}: {text}");
    }
}

#[test]
fn reader_of_another_uid_needs_only_group_read() {
    require_root!();
    let f = fixture("groupread");
    let meta = std::fs::metadata(&f.gh.store).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_ne!(meta.uid(), f.reader.uid, "the reader must not own the store");
    // No writer is running now: every CLI process has exited.
    f.assert_served("no writer running");
    // Without the group, the same reader is refused: the test above proves something.
    let outsider = SystemUser::new("gho", &f.gh.dir.path, &[]);
    let out = Command::new("setpriv")
        .args(["--reuid", &outsider.name, "--regid", &outsider.name, "--clear-groups", "--"])
        .arg(&f.gh.keys_bin)
        .arg("--config")
        .arg(&f.gh.config)
        .args(["--", "alice"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "a reader outside the group read the store");
    assert!(out.stdout.is_empty());
    drop(f.group);
}

#[test]
fn reader_is_served_while_a_writer_holds_a_transaction() {
    require_root!();
    let f = fixture("busy");
    // A writer in the middle of a transaction, as a slow import would be.
    let mut writer = Connection::open(&f.gh.store).unwrap();
    writer.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).unwrap();
    let tx = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    tx.execute("DELETE FROM keys", []).unwrap();
    tx.execute("INSERT INTO grants (subject, pattern, access, created) VALUES ('t', 't/t.git', 'read', 0)", [])
        .unwrap();
    f.assert_served("writer holds an uncommitted delete");
    tx.rollback().unwrap();
    f.assert_served("after rollback");
}

#[test]
fn reader_is_served_throughout_a_bulk_import() {
    require_root!();
    let f = fixture("import");
    let tsv = f.gh.dir.join("bulk.tsv");
    write_tsv(&tsv, 20_000);
    let mut import = Command::new(&f.gh.cli_bin)
        .arg("--config")
        .arg(&f.gh.config)
        .args(["import", "tsv", tsv.to_str().unwrap(), "--create-users"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lookups = 0;
    while import.try_wait().unwrap().is_none() && lookups < 500 {
        f.assert_served("during import");
        lookups += 1;
    }
    let status = import.wait().unwrap();
    assert!(status.success(), "import failed");
    assert!(lookups > 0, "the import finished before any lookup ran");
    f.assert_served("after import");
    let logged = f.gh.log.drain().join("\n");
    assert!(!logged.contains("locked") && !logged.contains("busy"), "{logged}");
}

#[test]
fn many_readers_of_another_uid_never_fail_while_commits_land() {
    require_root!();
    let f = fixture("race");
    let other = keygen(&f.gh.dir.path, "ed25519");
    f.gh.ok(&["user", "add", "bob"]);
    let done = std::sync::atomic::AtomicBool::new(false);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let mut runs = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) && runs < 400 {
                    let out = f.lookup(&f.key.fingerprint);
                    if !out.status.success() || out.stdout.is_empty() {
                        failures.lock().unwrap().push(f.gh.log.drain().join("\n"));
                    }
                    runs += 1;
                }
            });
        }
        // Each CLI run commits, and truncates the WAL as it closes.
        for _ in 0..60 {
            let out = f.gh.cli_stdin(&["key", "add", "bob", "-"], other.public.as_bytes());
            assert!(out.status.success(), "{}", stderr(&out));
            f.gh.ok(&["key", "remove", "bob", &other.fingerprint]);
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} lookups failed; first: {}", failures.len(), failures[0]);
}

#[test]
fn kill_9_loses_no_committed_batch_and_readers_carry_on() {
    require_root!();
    let f = fixture("kill9");
    let tsv = f.gh.dir.join("bulk.tsv");
    let total = 40_000;
    write_tsv(&tsv, total);
    let mut import = Command::new(&f.gh.cli_bin)
        .arg("--config")
        .arg(&f.gh.config)
        .args(["import", "tsv", tsv.to_str().unwrap(), "--create-users"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until at least one batch is committed, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = loop {
        let n = imported_keys(&f);
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Child::kill sends SIGKILL.
    import.kill().unwrap();
    import.wait().unwrap();
    assert!(committed > 0, "no batch committed within 60 s");

    let after = imported_keys(&f);
    assert!(after >= committed, "a committed batch was lost: {committed} then {after}");
    assert_eq!(after % 5_000, 0, "a partial batch is visible: {after}");
    let conn = Connection::open_with_flags(&f.gh.store, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    f.assert_served("after the writer was killed");

    // Running the import again finishes the job; what was imported is reported as such.
    let out = f.gh.cli(&["import", "tsv", tsv.to_str().unwrap(), "--create-users"]);
    assert_eq!(out.status.code(), Some(1), "lines already imported are reported as skipped");
    assert_eq!(imported_keys(&f), total as i64);
    assert_eq!(stderr(&out).matches("already registered").count() as i64, after);
}

fn imported_keys(f: &Fixture) -> i64 {
    let conn = Connection::open_with_flags(&f.gh.store, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    // alice's own key is not part of the import.
    conn.query_row("SELECT count(*) FROM keys k JOIN users u ON u.id = k.user_id WHERE u.name != 'alice'", [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// `count` distinct valid ed25519 public keys over count/4 users.
fn write_tsv(path: &std::path::Path, count: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..count {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let key = ssh_key::PublicKey::new(
            ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(bytes)),
            format!("bulk{i}"),
        );
        writeln!(out, "bulk{}\t{}", i / 4, key.to_openssh().unwrap()).unwrap();
    }
}

/// store.login_timeout_ms's default, and how much later than that a lookup may end.
const LOGIN_TIMEOUT: Duration = Duration::from_millis(1000);
const MARGIN: Duration = Duration::from_millis(700);

#[test]
fn a_store_locked_exclusively_costs_a_lookup_one_second_at_most() {
    require_root!();
    let f = fixture("exclusive");
    f.assert_served("before the lock");
    f.gh.log.drain();
    // Another program takes the store for itself (a `sqlite3` shell with
    // locking_mode=EXCLUSIVE, say): every reader would wait for it.
    let holder = Connection::open(&f.gh.store).unwrap();
    holder.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).unwrap();
    holder.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; UPDATE users SET state = state;").unwrap();
    let (out, took) = f.timed_lookup();
    assert!(took < LOGIN_TIMEOUT + MARGIN, "the lookup took {took:?}");
    assert!(out.stdout.is_empty(), "printed: {}", stdout(&out));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let logged = f.gh.log.drain().join("\n");
    assert!(logged.contains("user=alice") && logged.contains("error="), "the log says why: {logged}");
    holder.execute_batch("ROLLBACK; PRAGMA locking_mode = NORMAL;").unwrap();
    drop(holder);
    f.assert_served("after the lock");
}

#[test]
fn a_garbage_wal_costs_a_lookup_one_second_at_most() {
    require_root!();
    let f = fixture("garbagewal");
    f.assert_served("before");
    f.gh.log.drain();
    // No writer attached, and a write-ahead log of noise: a read-only reader cannot rebuild
    // the index, and SQLite's own retries would take about ten seconds.
    let wal = format!("{}-wal", f.gh.store.display());
    let mut noise = Vec::with_capacity(70_000);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..70_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        noise.push(state as u8);
    }
    std::fs::write(&wal, &noise).unwrap();
    let (out, took) = f.timed_lookup();
    assert!(took < LOGIN_TIMEOUT + MARGIN, "the lookup took {took:?}");
    assert!(out.stdout.is_empty(), "printed: {}", stdout(&out));
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let logged = f.gh.log.drain().join("\n");
    assert!(logged.contains("error="), "the log says why: {logged}");
}

#[test]
fn managed_users_cannot_read_the_audit_trail() {
    require_root!();
    let f = fixture("audit");
    f.gh.ok(&["user", "disable", "alice"]);
    // The trail has what happened; `gatehouse audit` (root) shows it.
    assert!(f.gh.ok(&["audit"]).contains("user.disable alice"));
    let as_reader = |sql: &str, db: &std::path::Path| {
        let gid = nix::unistd::User::from_name(&f.reader.name).unwrap().unwrap().gid.to_string();
        Command::new("setpriv")
            .args(["--reuid", &f.reader.name, "--regid", &gid, "--init-groups", "--", "sqlite3", "-readonly"])
            .arg(db)
            .arg(sql)
            .output()
            .unwrap()
    };
    // A managed user reads the store (the forced command must), but it has no trail...
    let out = as_reader("SELECT count(*) FROM users;", &f.gh.store);
    assert!(out.status.success(), "the reader can read the store: {}", stderr(&out));
    let out = as_reader("SELECT * FROM audit;", &f.gh.store);
    assert!(stderr(&out).contains("no such table"), "{} {}", stdout(&out), stderr(&out));
    // ...and the trail's own file is closed to them.
    let trail = f.gh.store.with_file_name("audit.db");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&trail).unwrap().mode() & 0o077, 0);
    let out = as_reader("SELECT * FROM audit;", &trail);
    assert!(!out.status.success() && !stdout(&out).contains("alice"), "{} {}", stdout(&out), stderr(&out));
}
