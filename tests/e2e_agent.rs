//! gatehouse-agent against the real host: a real sshd with the shipped drop-in, accounts
//! made by useradd, real ssh sessions ended by the agent, a foreign sqlite3 closing the
//! store. Needs root (creates users, starts sshd, kills sessions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn ended(child: &mut Child, limit: Duration) -> Option<Duration> {
    wait_until(Duration::from_millis(20), limit, || child.try_wait().unwrap().is_some())
}

/// The log lines received until one holds every word of `words` (at most 5 s).
fn log_until(gh: &Gatehouse, words: &[&str]) -> String {
    let mut seen = Vec::new();
    wait_until(Duration::from_millis(20), Duration::from_secs(5), || {
        seen.extend(gh.log.drain());
        seen.iter().any(|l| words.iter().all(|w| l.contains(w)))
    });
    seen.join("\n")
}

fn wal_files(store: &Path) -> bool {
    ["-wal", "-shm"].iter().all(|s| Path::new(&format!("{}{s}", store.display())).exists())
}

#[test]
fn the_host_follows_the_store_within_a_second() {
    require_root!();
    let gh = Gatehouse::new("agent", "");
    gh.init(None);
    let sshd = Sshd::start(&gh, "");
    // The key command's user (uid 1000 and up) stays outside the range: never managed.
    gh.own_accounts(42000, 42999, &sshd.managed.name);
    let (alice, bob, carol) = (unique("gha"), unique("ghb"), unique("ghc"));
    let _made = MadeAccounts(vec![alice.clone(), bob.clone(), carol.clone()]);
    let mut agent = AgentProcess::start(&gh.config);
    let keys = gh.dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (a_key, b_key, b_other) = (keygen(&keys, "ed25519"), keygen(&keys, "ed25519"), keygen(&keys, "ed25519"));

    // A user and a key added: the account and the data folder follow, and ssh works at once.
    let start = Instant::now();
    gh.ok(&["user", "add", &alice]);
    gh.cli_stdin(&["key", "add", &alice, "-"], a_key.public.as_bytes());
    let first = sshd.wait_for_login(&alice, &a_key.private, Duration::from_secs(10));
    let Some(first) = first.map(|_| start.elapsed()) else {
        let out = sshd.ssh(&alice, &a_key.private, &["true"]);
        panic!(
            "alice could not log in within 10 s of being added: {}\nlog: {:?}\nsshd: {}",
            stderr(&out),
            gh.log.drain(),
            sshd.log_text()
        );
    };
    eprintln!("user add -> first ssh: {} ms", first.as_millis());
    let account = nix::unistd::User::from_name(&alice).unwrap().expect("the agent made the account");
    assert!((42000..=42999).contains(&account.uid.as_raw()), "uid {}", account.uid);
    assert_eq!(account.shell, gh.shell_bin, "accounts get gatehouse-shell as their login shell");
    // The account comes first in a pass and the folder after it: ssh may win the race.
    wait_until(Duration::from_millis(20), Duration::from_secs(5), || gh.data.join(&alice).exists());
    let folder = std::fs::metadata(gh.data.join(&alice)).expect("the agent made the data folder");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&folder), account.uid.as_raw());
    let doctor = stdout(&gh.cli(&["doctor"]));
    assert!(doctor.contains("ok   gatehouse-agent runs (pid"), "{doctor}");
    let out = sshd.ssh(&alice, &a_key.private, &["pwd"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Disabled: her running session is ended, within a second.
    let mut session = sshd.hold_session(&alice, &a_key.private);
    gh.ok(&["user", "disable", &alice]);
    let took = ended(&mut session, Duration::from_secs(5)).expect("alice's session outlived her account by 5 s");
    eprintln!("user disable -> session ended: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let lines = log_until(&gh, &["action=sessions.end", "reason=user-disabled", &alice]);
    assert!(lines.contains("reason=user-disabled"), "{lines}");
    assert!(!sshd.ssh(&alice, &a_key.private, &["true"]).status.success(), "a disabled user logged in");

    // A key removed: the sessions of that key end, the user's other key keeps its session.
    gh.ok(&["user", "add", &bob]);
    gh.cli_stdin(&["key", "add", &bob, "-"], b_key.public.as_bytes());
    gh.cli_stdin(&["key", "add", &bob, "-"], b_other.public.as_bytes());
    sshd.wait_for_login(&bob, &b_key.private, Duration::from_secs(10)).expect("bob could not log in");
    let mut doomed = sshd.hold_session(&bob, &b_key.private);
    let mut kept = sshd.ssh_command(&bob, &b_other.private, &["sleep", "120"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    gh.ok(&["key", "remove", &bob, &b_key.fingerprint]);
    let took = ended(&mut doomed, Duration::from_secs(5)).expect("the removed key's session outlived it by 5 s");
    eprintln!("key remove -> session ended: {} ms", took.as_millis());
    assert!(kept.try_wait().unwrap().is_none(), "the session of bob's other key was ended too");
    let lines = log_until(&gh, &["action=sessions.end", "reason=key-removed", &b_key.fingerprint]);
    assert!(lines.contains("reason=key-removed"), "{lines}");
    let _ = kept.kill();
    let _ = kept.wait();

    // A foreign sqlite3 that closes the store while the agent runs: the -wal and -shm files
    // stay (the agent's connection is open), and key logins keep working.
    let sqlite = |sql: &str| Command::new("sqlite3").arg(&gh.store).arg(sql).output().unwrap();
    assert!(sqlite("SELECT count(*) FROM users;").status.success());
    assert!(wal_files(&gh.store), "the store's -wal/-shm went while the agent held it open");
    assert!(sshd.ssh(&bob, &b_other.private, &["true"]).status.success(), "logins failed after sqlite3 closed");

    // Killed, a user added meanwhile, restarted: it catches up. The foreign sqlite3 that
    // closed last while no agent ran took the -wal/-shm files along; the agent brings them back.
    agent.kill();
    gh.ok(&["user", "add", &carol]);
    assert!(sqlite("SELECT count(*) FROM users;").status.success());
    assert!(!wal_files(&gh.store), "sqlite3 closing last is expected to remove -wal/-shm");
    let _agent = AgentProcess::start(&gh.config);
    wait_until(Duration::from_millis(20), Duration::from_secs(10), || {
        nix::unistd::User::from_name(&carol).unwrap().is_some()
    })
    .expect("the restarted agent did not catch up");
    assert!(wal_files(&gh.store), "the agent did not bring back -wal/-shm");
    assert!(sshd.ssh(&bob, &b_other.private, &["true"]).status.success(), "logins failed after the restore");
}

#[test]
fn once_makes_one_pass_and_refuses_hostile_names() {
    require_root!();
    let (gh, group) = Gatehouse::with_own_accounts("agent1", 43000, 43999);
    let dave = unique("ghd");
    let _made = MadeAccounts(vec![dave.clone()]);
    gh.ok(&["user", "add", &dave]);
    // Names no writer accepts, put into the store behind the writers' back.
    let outside = SystemUser::new("ghao", &gh.dir.path, &[&group.name]);
    let out = Command::new("sqlite3")
        .arg(&gh.store)
        .arg(".dbconfig no_ckpt_on_close on")
        .arg(format!(
            "INSERT INTO users (name, state, policy, created, source) VALUES ('root', 'disabled', 'shell', 0, 'cli'), \
             ('{}', 'disabled', 'shell', 0, 'cli'), ('-rf', 'enabled', 'shell', 0, 'cli');",
            outside.name
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let shadow = |name: &str| stdout(&Command::new("getent").args(["shadow", name]).output().unwrap());
    let (root_before, outside_before) = (shadow("root"), shadow(&outside.name));
    let mut sleeper = Command::new("setpriv")
        .args(["--reuid", &outside.name, "--regid", &outside.name, "--clear-groups", "sleep", "60"])
        .spawn()
        .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse-agent"))
        .arg("--config")
        .arg(&gh.config)
        .arg("--once")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(report.contains(&format!("{dave}: create")), "{report}");
    assert!(report.contains(&format!("{dave}: folder")), "{report}");
    assert!(nix::unistd::User::from_name(&dave).unwrap().is_some());
    assert!(nix::unistd::User::from_name("-rf").unwrap().is_none());
    // root and an account outside the range: not locked, not killed.
    assert_eq!(shadow("root"), root_before);
    assert_eq!(shadow(&outside.name), outside_before);
    assert!(sleeper.try_wait().unwrap().is_none(), "a process outside the uid range was killed");
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // A second pass changes nothing; `gatehouse agent --once` is the same pass.
    let again = gh.ok(&["agent", "--once"]);
    assert_eq!(again, "", "a second pass changed something");

    // A user removed from the store: the account stays (and its files), locked.
    gh.ok(&["user", "remove", &dave]);
    let report = gh.ok(&["agent", "--once"]);
    assert!(report.contains(&format!("{dave}: lock")), "{report}");
    assert!(shadow(&dave).split(':').nth(1).unwrap().starts_with('!'), "{}", shadow(&dave));
    assert!(gh.data.join(&dave).is_dir(), "a removed user's folder must be kept");
}

fn git_as(sshd: &Sshd, key: &Path, cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg("30")
        .arg("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args(args)
        .current_dir(cwd)
        .env("GIT_SSH_COMMAND", sshd.ssh_line(key))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Commits a new file in the clone `dir` (after taking in what others pushed) and pushes it.
fn commit_and_push(sshd: &Sshd, key: &Path, dir: &Path, file: &str) -> std::process::Output {
    let pull = git_as(sshd, key, dir, &["pull", "--quiet", "--ff-only", "origin", "main"]);
    if !pull.status.success() {
        return pull;
    }
    std::fs::write(dir.join(file), format!("{file}\n")).unwrap();
    assert!(git_as(sshd, key, dir, &["add", "."]).status.success());
    assert!(git_as(sshd, key, dir, &["commit", "--quiet", "-m", file]).status.success());
    git_as(sshd, key, dir, &["push", "--quiet", "origin", "main"])
}

fn acl_of(path: &Path) -> String {
    stdout(&Command::new("getfacl").args(["-R", "-P", "-p", "-c"]).arg(path).output().unwrap())
}

#[test]
fn grants_become_file_access() {
    require_root!();
    let gh = Gatehouse::new("agentacl", "");
    gh.init(None);
    let sshd = Sshd::start(&gh, "");
    gh.own_accounts(45000, 45999, &sshd.managed.name);
    let (alice, bob) = (unique("gha"), unique("ghb"));
    let _made = MadeAccounts(vec![alice.clone(), bob.clone()]);
    let _agent = AgentProcess::start(&gh.config);
    let keys = gh.dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (a_key, b_key) = (keygen(&keys, "ed25519"), keygen(&keys, "ed25519"));
    for (user, key) in [(&alice, &a_key), (&bob, &b_key)] {
        gh.ok(&["user", "add", user]);
        gh.cli_stdin(&["key", "add", user, "-"], key.public.as_bytes());
        sshd.wait_for_login(user, &key.private, Duration::from_secs(10)).expect("no login within 10 s");
    }
    // Alice's repository, made by alice, and her first commit pushed over ssh.
    let repo = gh.data.join(&alice).join("shared.git");
    let out = Command::new("setpriv")
        .args(["--reuid", &alice, "--regid", &alice, "--init-groups", "git", "init", "--quiet", "--bare", "-b", "main"])
        .arg(&repo)
        .env("HOME", "/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let work = gh.dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let url = |who: &str| format!("ssh://{who}@127.0.0.1:{}/{alice}/shared.git", sshd.port);
    let out = git_as(&sshd, &a_key.private, &work, &["clone", "--quiet", &url(&alice), "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a_dir = work.join("a");
    let out = git_as(&sshd, &a_key.private, &a_dir, &["checkout", "--quiet", "-b", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(a_dir.join("first"), "first\n").unwrap();
    assert!(git_as(&sshd, &a_key.private, &a_dir, &["add", "."]).status.success());
    assert!(git_as(&sshd, &a_key.private, &a_dir, &["commit", "--quiet", "-m", "first"]).status.success());
    let out = git_as(&sshd, &a_key.private, &a_dir, &["push", "--quiet", "origin", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doctor = stdout(&gh.cli(&["doctor"]));
    assert!(doctor.contains("takes POSIX ACLs: grants become file access"), "{doctor}");
    let clone = |dest: &str| git_as(&sshd, &b_key.private, &work, &["clone", "--quiet", &url(&bob), dest]);
    assert!(!clone("refused").status.success(), "bob cloned without a grant");

    // Read: bob clones within a few seconds, and cannot push.
    gh.ok(&["grant", "add", &bob, &format!("{alice}/shared.git"), "read"]);
    let mut n = 0;
    let took = wait_until(Duration::from_millis(100), Duration::from_secs(10), || {
        n += 1;
        clone(&format!("b{n}")).status.success()
    });
    let took = took.unwrap_or_else(|| {
        panic!("bob could not clone within 10 s: {}\nacl: {}", stderr(&clone("x")), acl_of(&gh.data.join(&alice)))
    });
    eprintln!("grant read -> clone: {} ms", took.as_millis());
    let b_dir = work.join(format!("b{n}"));
    let folder = stdout(&Command::new("getfacl").args(["-c", "-p"]).arg(gh.data.join(&alice)).output().unwrap());
    assert!(folder.contains(&format!("user:{bob}:--x")), "the owner's folder: traverse only\n{folder}");

    // Write: bob, alice, bob push in turn to the shared repository.
    gh.ok(&["grant", "add", &bob, &format!("{alice}/shared.git"), "write"]);
    let mut last = None;
    let pushed = wait_until(Duration::from_millis(200), Duration::from_secs(10), || {
        std::fs::write(b_dir.join("bob1"), "bob1\n").unwrap();
        let _ = git_as(&sshd, &b_key.private, &b_dir, &["add", "."]);
        let _ = git_as(&sshd, &b_key.private, &b_dir, &["commit", "--quiet", "-m", "bob1"]);
        let out = git_as(&sshd, &b_key.private, &b_dir, &["push", "--quiet", "origin", "main"]);
        let ok = out.status.success();
        last = Some(out);
        ok
    });
    assert!(pushed.is_some(), "bob could not push within 10 s: {}", stderr(last.as_ref().unwrap()));
    let shared = || {
        let out = Command::new("git")
            .args(["config", "--file"])
            .arg(repo.join("config"))
            .arg("core.sharedRepository")
            .output()
            .unwrap();
        stdout(&out).trim().to_string()
    };
    let set = wait_until(Duration::from_millis(100), Duration::from_secs(10), || shared() == "group");
    assert!(set.is_some(), "core.sharedRepository is {:?}; log: {:?}", shared(), gh.log.drain());
    let out = commit_and_push(&sshd, &a_key.private, &a_dir, "alice2");
    assert!(out.status.success(), "alice's push after bob's: {}\nacl: {}", stderr(&out), acl_of(&repo));
    let out = commit_and_push(&sshd, &b_key.private, &b_dir, "bob3");
    assert!(out.status.success(), "bob's push after alice's: {}\nacl: {}", stderr(&out), acl_of(&repo));
    let out = commit_and_push(&sshd, &a_key.private, &a_dir, "alice4");
    assert!(out.status.success(), "alice's second push: {}\nacl: {}", stderr(&out), acl_of(&repo));

    // Revoked: bob's clone fails again, and no entry of bob's is left.
    gh.ok(&["grant", "remove", &bob, &format!("{alice}/shared.git")]);
    let gone = wait_until(Duration::from_millis(100), Duration::from_secs(10), || {
        !acl_of(&gh.data.join(&alice)).contains(&format!("user:{bob}:"))
    });
    assert!(gone.is_some(), "bob's entries stayed: {}", acl_of(&gh.data.join(&alice)));
    assert!(!clone("after").status.success(), "bob cloned after the grant was removed");
    assert!(!acl_of(&repo).contains(&format!("user:{alice}:")), "the owner's entry stayed: {}", acl_of(&repo));
    assert_eq!(shared(), "", "core.sharedRepository stayed");
    // What bob pushed is alice's again: without her named entry she could not write into
    // the object folders he made (a push whose object lands in one would fail).
    let alice_uid = nix::unistd::User::from_name(&alice).unwrap().unwrap().uid.as_raw();
    let given_back = wait_until(Duration::from_millis(100), Duration::from_secs(10), || {
        let out = Command::new("find").arg(&repo).args(["-not", "-uid", &alice_uid.to_string()]).output().unwrap();
        stdout(&out).trim().is_empty()
    });
    let out = Command::new("find").arg(&repo).args(["-not", "-uid", &alice_uid.to_string()]).output().unwrap();
    assert!(given_back.is_some(), "files in alice's repository are not hers: {}", stdout(&out));
    // Alice still owns a working repository.
    let out = commit_and_push(&sshd, &a_key.private, &a_dir, "alice5");
    assert!(out.status.success(), "alice's push after the revocation: {}", stderr(&out));
    let record = gh.store.parent().unwrap().join("agent-acl.json");
    let meta = std::fs::metadata(&record).expect("the agent records what it applied");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);
}

#[test]
fn a_fork_storm_does_not_outrun_the_end_of_a_disabled_users_sessions() {
    require_root!();
    let gh = Gatehouse::new("storm", "");
    gh.init(None);
    let sshd = Sshd::start(&gh, "");
    // A range of its own: the other tests of this file make accounts at the same time.
    gh.own_accounts(46000, 46099, &sshd.managed.name);
    let user = unique("ghs");
    let _made = MadeAccounts(vec![user.clone()]);
    let _agent = AgentProcess::start(&gh.config);
    let keys = gh.dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = keygen(&keys, "ed25519");
    gh.ok(&["user", "add", &user]);
    gh.cli_stdin(&["key", "add", &user, "-"], key.public.as_bytes());
    sshd.wait_for_login(&user, &key.private, Duration::from_secs(10)).expect("could not log in");
    let uid = nix::unistd::User::from_name(&user).unwrap().unwrap().uid.as_raw();
    let of_user = || gatehouse::agent::sessions::processes().iter().filter(|p| p.uids.0 == uid && !p.zombie).count();
    // A fork bomb, its size capped by RLIMIT_NPROC: every process starts two more and
    // ends, so the processes seen by one scan of /proc are mostly gone, and their
    // children running, by the time they are sent a signal each.
    let storm = "ulimit -u 400; b() { (b &) ; (b &) ; sleep 0.05; }; b; sleep 60";
    let mut session = sshd.ssh_command(&user, &key.private, &[storm]).spawn().unwrap();
    // Whatever happens below, nothing of the storm outlives the test.
    struct Sweep(u32);
    impl Drop for Sweep {
        fn drop(&mut self) {
            for _ in 0..10 {
                let _ = Command::new("setpriv")
                    .args(["--reuid", &self.0.to_string(), "--regid", "65534", "--clear-groups", "kill", "-KILL", "-1"])
                    .output();
            }
        }
    }
    let _sweep = Sweep(uid);
    wait_until(Duration::from_millis(20), Duration::from_secs(10), || of_user() > 100)
        .expect("the storm did not start");
    std::thread::sleep(Duration::from_millis(500));
    gh.ok(&["user", "disable", &user]);
    let gone = wait_until(Duration::from_millis(20), Duration::from_secs(5), || of_user() == 0);
    let left = of_user();
    let _ = session.kill();
    let _ = session.wait();
    assert!(gone.is_some(), "{left} processes of the disabled user still ran 5 s later");
    eprintln!("fork storm ended {} ms after the disable", gone.unwrap().as_millis());
    let lines = log_until(&gh, &["action=sessions.end", "reason=user-disabled", &user]);
    assert!(lines.contains("reason=user-disabled"), "{lines}");
}
