//! pam_gatehouse.so under real Linux-PAM: pamtester against a private service file, and a
//! real sshd with `UsePAM yes`. Needs root (writes /etc/pam.d/<private service>, creates
//! users, starts sshd).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/pam.rs"]
mod pam;
use common::*;
use pam::{module, PamService};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output};

fn pamtester(service: &PamService, user: &str, ops: &[&str]) -> Output {
    Command::new("pamtester").arg("-v").arg(&service.name).arg(user).args(ops).output().unwrap()
}

fn stack(gh: &Gatehouse, account_args: &str) -> String {
    let so = module().display().to_string();
    let cfg = gh.config.display();
    format!(
        "auth required {so} config={cfg} authfail\n\
         account required {so} config={cfg} {account_args}\n\
         account required pam_permit.so\n\
         session required {so} config={cfg}\n"
    )
}

fn setup(name: &str, extra: &str) -> (Gatehouse, SystemGroup) {
    let gh = Gatehouse::new(name, extra);
    gh.init(None);
    let group = SystemGroup::new("ghp");
    (gh, group)
}

#[test]
fn account_stage_follows_the_store_and_lockouts() {
    require_root!();
    let (gh, group) = setup("pamacct", "\n[lockout]\nthreshold = 3\nwindow = \"10m\"\nduration = \"1h\"\n");
    let user = SystemUser::new("ghu", &gh.dir.path, &[&group.name]);
    let stranger = SystemUser::new("ghs", &gh.dir.path, &[]);
    gh.ok(&["user", "add", &user.name]);
    let svc = PamService::new(&stack(&gh, ""));

    assert!(pamtester(&svc, &user.name, &["acct_mgmt"]).status.success());
    // Not in the store: unknown=ignore leaves it to the rest of the stack (pam_permit here).
    assert!(pamtester(&svc, &stranger.name, &["acct_mgmt"]).status.success());
    svc.rewrite(&stack(&gh, "unknown=deny"));
    let out = pamtester(&svc, &stranger.name, &["acct_mgmt"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("User not known"), "{}", stderr(&out));
    svc.rewrite(&stack(&gh, ""));

    gh.ok(&["user", "disable", &user.name]);
    let out = pamtester(&svc, &user.name, &["acct_mgmt"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    gh.ok(&["user", "enable", &user.name]);

    // Three failures within the window lock the account; unlock lifts it.
    for _ in 0..3 {
        assert!(!pamtester(&svc, &user.name, &["authenticate"]).status.success());
    }
    let out = pamtester(&svc, &user.name, &["acct_mgmt"]);
    assert!(!out.status.success(), "a locked-out user passed the account stage");
    assert!(stderr(&out).contains("locked until"), "{}", stderr(&out));
    let logged = gh.log.drain().join("\n");
    assert!(logged.contains("stage=account") && logged.contains("reason=locked-out"), "{logged}");
    assert!(gh.ok(&["user", "unlock", &user.name]).contains("unlocked"));
    assert!(pamtester(&svc, &user.name, &["acct_mgmt"]).status.success());
}

#[test]
fn session_makes_the_data_folder_safely() {
    require_root!();
    let skel = TestDir::new("skel");
    std::fs::write(skel.join("README.txt"), "welcome\n").unwrap();
    let (gh, group) = setup("pamsess", "");
    // users.data_dir is set by the harness; add the skeleton and mode here.
    let cfg = std::fs::read_to_string(&gh.config)
        .unwrap()
        .replace("[users]\n", &format!("[users]\nskeleton = \"{}\"\ndata_mode = \"0750\"\n", skel.path.display()));
    std::fs::write(&gh.config, format!("{cfg}\n[lockout]\nsessions_per_minute = 3\n")).unwrap();
    let svc = PamService::new(&stack(&gh, ""));

    let alice = SystemUser::new("gha", &gh.dir.path, &[&group.name]);
    gh.ok(&["user", "add", &alice.name]);
    let out = pamtester(&svc, &alice.name, &["open_session", "close_session"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let folder = gh.data.join(&alice.name);
    let meta = std::fs::symlink_metadata(&folder).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), alice.uid);
    assert_eq!(meta.mode() & 0o7777, 0o750);
    let readme = std::fs::symlink_metadata(folder.join("README.txt")).unwrap();
    assert_eq!(readme.uid(), alice.uid);
    assert_eq!(std::fs::read_to_string(folder.join("README.txt")).unwrap(), "welcome\n");

    // A folder planted beforehand as a link to somewhere else is refused, not followed.
    let bob = SystemUser::new("ghb", &gh.dir.path, &[&group.name]);
    gh.ok(&["user", "add", &bob.name]);
    let elsewhere = TestDir::new("elsewhere");
    std::os::unix::fs::symlink(&elsewhere.path, gh.data.join(&bob.name)).unwrap();
    let out = pamtester(&svc, &bob.name, &["open_session"]);
    assert!(!out.status.success(), "a planted link was accepted as a data folder");
    assert_eq!(std::fs::metadata(&elsewhere.path).unwrap().uid(), 0, "the link's target changed owner");
    assert_eq!(std::fs::read_dir(&elsewhere.path).unwrap().count(), 0, "something was written through the link");

    // Hostile names never reach the filesystem.
    for hostile in ["../etc", "a/b", &"x".repeat(40)] {
        pamtester(&svc, hostile, &["open_session"]);
        assert!(!gh.dir.path.join("etc").exists());
        assert!(!gh.data.join("a").exists());
    }

    // The session rate limit.
    let carol = SystemUser::new("ghc", &gh.dir.path, &[&group.name]);
    gh.ok(&["user", "add", &carol.name]);
    for _ in 0..3 {
        assert!(pamtester(&svc, &carol.name, &["open_session"]).status.success());
    }
    let out = pamtester(&svc, &carol.name, &["open_session"]);
    assert!(!out.status.success(), "the fourth session within a minute was allowed");
    assert!(
        stdout(&out).contains("Too many sessions") || stderr(&out).contains("Too many sessions"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_panic_in_the_module_is_an_error_code_not_a_crash() {
    require_root!();
    let (gh, group) = setup("pampanic", "");
    let user = SystemUser::new("ghu", &gh.dir.path, &[&group.name]);
    gh.ok(&["user", "add", &user.name]);
    let svc = PamService::new(&stack(&gh, "test_panic"));
    let out = pamtester(&svc, &user.name, &["acct_mgmt"]);
    // pamtester ends normally (no signal) and reports PAM_ABORT.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Critical error"), "{}", stderr(&out));
}

/// sshd, run through a link whose name is a private PAM service.
fn pam_sshd(gh: &Gatehouse, svc: &PamService) -> Sshd {
    let link = gh.dir.join(&svc.name);
    std::os::unix::fs::symlink("/usr/sbin/sshd", &link).unwrap();
    Sshd::start_as(gh, "", &link, true)
}

fn sshd_stack(gh: &Gatehouse, session_args: &str) -> String {
    let so = module().display().to_string();
    let cfg = gh.config.display();
    format!(
        "auth required pam_permit.so\n\
         account required {so} config={cfg} unknown=deny\n\
         session required {so} config={cfg} {session_args}\n"
    )
}

#[test]
fn sshd_with_use_pam_records_the_key_that_logged_in() {
    require_root!();
    let gh = Gatehouse::new("pamsshd", "");
    gh.init(None);
    let svc = PamService::new(&sshd_stack(&gh, ""));
    let sshd = pam_sshd(&gh, &svc);
    let alice = sshd.user(&gh, &[]);
    let bob = sshd.user(&gh, &[]);
    let alices = keygen(&gh.dir.path, "ed25519");
    let bobs = keygen(&gh.dir.path, "ed25519");
    gh.cli_stdin(&["key", "add", &alice.name, "-"], alices.public.as_bytes());
    gh.cli_stdin(&["key", "add", &bob.name, "-"], bobs.public.as_bytes());

    // Alice offers bob's key first (refused for her), then her own.
    let out = Command::new("ssh")
        .args(sshd.ssh_line(&bobs.private).split(' ').skip(1))
        .arg("-i")
        .arg(&alices.private)
        .arg(format!("{}@127.0.0.1", alice.name))
        .arg("echo in")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), sshd.log_text());
    // The data folder was made at the first login.
    let folder = gh.data.join(&alice.name);
    assert_eq!(std::fs::metadata(&folder).unwrap().uid(), alice.uid);
    let shown = gh.ok(&["user", "show", &alice.name]);
    assert!(shown.contains("last used"), "{shown}");
    let json: serde_json::Value = serde_json::from_str(&gh.ok(&["user", "show", &bob.name, "--json"])).unwrap();
    assert!(json["keys"][0]["last_used_at"].is_null(), "bob's key was only offered, never used: {json}");
    let json: serde_json::Value = serde_json::from_str(&gh.ok(&["user", "show", &alice.name, "--json"])).unwrap();
    assert!(json["keys"][0]["last_used_at"].is_string(), "{json}");

    // Locked out with a valid key: refused at the account stage.
    gh.ok(&["user", "lock", &alice.name, "--for", "1h"]);
    let out = sshd.ssh(&alice.name, &alices.private, &["true"]);
    assert_ne!(out.status.code(), Some(0), "a locked-out user logged in");
    let logged = gh.log.drain().join("\n");
    assert!(logged.contains("stage=account") && logged.contains("reason=locked-out"), "{logged}");
    gh.ok(&["user", "unlock", &alice.name]);

    // A panic in the session stage fails that login; sshd keeps serving the next one.
    svc.rewrite(&sshd_stack(&gh, "test_panic"));
    let out = sshd.ssh(&alice.name, &alices.private, &["true"]);
    assert_ne!(out.status.code(), Some(0), "a panicking session stage let the login through");
    svc.rewrite(&sshd_stack(&gh, ""));
    let out = sshd.ssh(&alice.name, &alices.private, &["echo", "still", "here"]);
    assert!(out.status.success(), "sshd stopped serving after the panic: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "still here");
}

#[test]
fn provision_follows_the_store_within_its_uid_range_only() {
    require_root!();
    let (gh, group) = Gatehouse::with_own_accounts("prov", 41000, 41999);
    let fresh = unique("ghpn");
    let disabled = unique("ghpd");
    let files_only = unique("ghpf");
    let later = unique("ghpl");
    let outside = SystemUser::new("ghpo", &gh.dir.path, &[]);
    let _cleanup = MadeAccounts(vec![fresh.clone(), disabled.clone(), files_only.clone(), later.clone()]);
    gh.ok(&["user", "add", &fresh]);
    gh.ok(&["user", "add", &disabled, "--disabled"]);
    gh.ok(&["user", "add", &files_only, "--policy", "files"]);
    // Writers refuse root and accounts outside the range; a store that holds them anyway
    // (written before that rule, or by hand) is skipped by provisioning as well.
    assert!(!gh.cli(&["user", "add", "root"]).status.success());
    assert!(!gh.cli(&["user", "add", &outside.name, "--disabled"]).status.success());
    let out = Command::new("sqlite3")
        .arg(&gh.store)
        .arg(".dbconfig no_ckpt_on_close on")
        .arg(format!(
            "INSERT INTO users (name, state, policy, created, source) VALUES ('root', 'enabled', 'shell', 0, 'cli'), \
             ('{}', 'disabled', 'shell', 0, 'cli');",
            outside.name
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let outside_before = stdout(&Command::new("getent").args(["shadow", &outside.name]).output().unwrap());
    let plan = gh.ok(&["provision", "--dry-run"]);
    // Everyone gets gatehouse-shell, which starts shell.login_shell (bash) for shell users.
    let ours = gh.shell_bin.display();
    let fresh_uid = gh.ok(&["user", "show", &fresh]).lines().find_map(|l| l.strip_prefix("uid: ").map(str::to_string));
    let fresh_uid = fresh_uid.expect("user show has the uid");
    assert!(plan.contains(&format!("{fresh}: create (uid {fresh_uid}, shell {ours}) (dry run)")), "{plan}");
    assert!(nix::unistd::User::from_name(&fresh).unwrap().is_none(), "a dry run created an account");

    let report = gh.ok(&["provision"]);
    assert!(report.contains("root: skip: reserved name"), "{report}");
    assert!(report.contains(&format!("{}: skip: uid", outside.name)), "{report}");
    let account = nix::unistd::User::from_name(&fresh).unwrap().expect("account created");
    assert_eq!(account.uid.as_raw().to_string(), fresh_uid, "the account has the uid the store gave");
    assert!((41000..=41999).contains(&account.uid.as_raw()), "uid {} outside the range", account.uid);
    assert_eq!(account.shell, gh.shell_bin);
    assert_eq!(account.dir, gh.data.join(&fresh));
    let members = nix::unistd::Group::from_name(&group.name).unwrap().unwrap().mem;
    assert!(members.contains(&fresh), "{members:?}");
    let files = nix::unistd::User::from_name(&files_only).unwrap().unwrap();
    assert!(files.shell.ends_with("gatehouse-shell"), "{}", files.shell.display());
    assert!(nix::unistd::User::from_name(&disabled).unwrap().is_none(), "a disabled user got an account");
    // The account outside the range stays as it was.
    let locked = |name: &str| {
        let out = Command::new("getent").args(["shadow", name]).output().unwrap();
        stdout(&out).split(':').nth(1).unwrap().starts_with('!')
    };
    let shadow = |name: &str| stdout(&Command::new("getent").args(["shadow", name]).output().unwrap());
    assert_eq!(shadow(&outside.name), outside_before, "an account outside the range was changed");

    // Idempotent.
    let again = gh.ok(&["provision"]);
    assert!(!again.contains("create") && !again.contains("lock"), "{again}");

    gh.ok(&["user", "disable", &fresh]);
    assert!(gh.ok(&["provision"]).contains(&format!("{fresh}: lock")));
    assert!(locked(&fresh));
    gh.ok(&["user", "enable", &fresh]);
    assert!(gh.ok(&["provision"]).contains(&format!("{fresh}: unlock")));
    assert!(!locked(&fresh));

    // With shell.login_shell = "", shell users get bash itself, as their login shell.
    let cfg = std::fs::read_to_string(&gh.config).unwrap().replace("[shell]\n", "[shell]\nlogin_shell = \"\"\n");
    std::fs::write(&gh.config, cfg).unwrap();
    gh.ok(&["user", "add", &later]);
    gh.ok(&["provision"]);
    let account = nix::unistd::User::from_name(&later).unwrap().expect("account created");
    assert_eq!(account.shell, PathBuf::from("/bin/bash"));
    assert_eq!(nix::unistd::User::from_name(&fresh).unwrap().unwrap().shell, gh.shell_bin, "changed");
}

/// An initialised instance whose `[jail]` names a fresh group and a fresh root folder.
fn jailed_instance(name: &str) -> (Gatehouse, SystemGroup, TestDir) {
    let jail_group = SystemGroup::new("ghj");
    let jail_root = TestDir::new(&format!("{name}-jail"));
    let gh = Gatehouse::new(
        name,
        &format!("\n[jail]\ngroup = \"{}\"\nroot = \"{}\"\n", jail_group.name, jail_root.path.display()),
    );
    gh.init(None);
    (gh, jail_group, jail_root)
}

#[test]
fn jailed_users_get_sftp_inside_their_chroot_only() {
    require_root!();
    let (gh, jail_group, jail_root) = jailed_instance("pamjail");
    let svc = PamService::new(&sshd_stack(&gh, ""));
    let link = gh.dir.join(&svc.name);
    std::os::unix::fs::symlink("/usr/sbin/sshd", &link).unwrap();
    let matches = format!(
        "Match Group {}\n    ChrootDirectory {}/%u\n    ForceCommand internal-sftp -d /data\n",
        jail_group.name,
        jail_root.path.display()
    );
    let sshd = Sshd::start_as(&gh, &matches, &link, true);
    let user = SystemUser::new("ghj", &gh.dir.path, &[&sshd.managed.name, &jail_group.name]);
    gh.ok(&["user", "add", &user.name]);
    let key = keygen(&gh.dir.path, "ed25519");
    gh.cli_stdin(&["key", "add", &user.name, "-"], key.public.as_bytes());
    let secret = gh.dir.join("outside.txt");
    std::fs::write(&secret, "outside\n").unwrap();

    let work = TestDir::new("jailw");
    let up = work.join("up.txt");
    std::fs::write(&up, "in the jail\n").unwrap();
    let batch = work.join("batch");
    std::fs::write(
        &batch,
        format!("put {}\nls\nget {} {}\n", up.display(), secret.display(), work.join("stolen").display()),
    )
    .unwrap();
    let mut cmd = Command::new("sftp");
    for opt in sshd.ssh_line(&key.private).split(' ').skip(1).filter(|o| *o != "-p" && o.parse::<u16>().is_err()) {
        cmd.arg(opt);
    }
    // `-b` stops at the first failing command, so the read outside comes last.
    let out = cmd
        .args(["-P", &sshd.port.to_string(), "-b"])
        .arg(&batch)
        .arg(format!("{}@127.0.0.1", user.name))
        .output()
        .unwrap();
    let jail = jail_root.path.join(&user.name);
    let meta = std::fs::metadata(&jail).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o022), (0, 0), "sshd's chroot rule: root's, not writable by others");
    assert_eq!(std::fs::read_to_string(jail.join("data/up.txt")).unwrap(), "in the jail\n", "{}", stderr(&out));
    assert!(!work.join("stolen").exists(), "a file outside the jail was read");
    // A shell is not on offer in the jail.
    let out = sshd.ssh(&user.name, &key.private, &["cat", secret.to_str().unwrap()]);
    assert!(!stdout(&out).contains("outside"));
}

/// `sftp -b BATCH` as `user` with only `key`, against `sshd`.
fn sftp_batch(sshd: &Sshd, user: &str, key: &KeyPair, batch: &std::path::Path) -> Output {
    let mut cmd = Command::new("sftp");
    for opt in sshd.ssh_line(&key.private).split(' ').skip(1).filter(|o| *o != "-p" && o.parse::<u16>().is_err()) {
        cmd.arg(opt);
    }
    cmd.args(["-P", &sshd.port.to_string(), "-b"]).arg(batch).arg(format!("{user}@127.0.0.1")).output().unwrap()
}

#[test]
fn a_files_key_never_runs_a_bashrc_before_the_forced_command() {
    require_root!();
    let gh = Gatehouse::new("bashrc", "");
    gh.init(None);
    let svc = PamService::new(&sshd_stack(&gh, ""));
    let sshd = pam_sshd(&gh, &svc);
    // A files user whose home is the data folder and whose login shell is bash: sshd runs
    // `bash -c "exec gatehouse-shell …"`, and Debian's bash reads ~/.bashrc first.
    let user = sshd.user(&gh, &["--policy", "files"]);
    let data = gh.data_dir(&user);
    let status = Command::new("usermod").args(["-s", "/bin/bash", "-d"]).arg(&data).arg(&user.name).status().unwrap();
    assert!(status.success());
    let key = keygen(&gh.dir.path, "ed25519");
    assert!(gh.cli_stdin(&["key", "add", &user.name, "-"], key.public.as_bytes()).status.success());
    let marker = data.join("bashrc-ran");
    let bashrc = gh.dir.join("evil-bashrc");
    std::fs::write(&bashrc, format!("touch {}\n", marker.display())).unwrap();
    let batch = gh.dir.join("batch");
    std::fs::write(&batch, format!("put {} .bashrc\nls\n", bashrc.display())).unwrap();

    // The upload's session is refused at session open: no shell ran, nothing was written.
    let out = sftp_batch(&sshd, &user.name, &key, &batch);
    assert!(!out.status.success(), "a files key got a session under bash: {}", stdout(&out));
    assert!(!data.join(".bashrc").exists(), "the upload went through");
    let logged = gh.log.drain().join("\n");
    assert!(logged.contains("stage=session") && logged.contains("reason=login-shell"), "{logged}");
    assert!(logged.contains("shell=/bin/bash"), "the log names the shell: {logged}");
    // A .bashrc already there (from before) does not run either.
    std::fs::copy(&bashrc, data.join(".bashrc")).unwrap();
    nix::unistd::chown(&data.join(".bashrc"), Some(nix::unistd::Uid::from_raw(user.uid)), None).unwrap();
    assert!(!sftp_batch(&sshd, &user.name, &key, &batch).status.success());
    assert!(!marker.exists(), "~/.bashrc ran before gatehouse-shell");

    // With gatehouse-shell as the login shell (what provisioning gives every account), the
    // same key is served, and no startup file runs.
    let status = Command::new("usermod").arg("-s").arg(&gh.shell_bin).arg(&user.name).status().unwrap();
    assert!(status.success());
    let out = sftp_batch(&sshd, &user.name, &key, &batch);
    assert!(out.status.success(), "{}\n{}", stderr(&out), sshd.log_text());
    assert!(!marker.exists(), "~/.bashrc ran under gatehouse-shell");

    // The operator may opt out; then bash is back in front (and the marker shows why not).
    let status = Command::new("usermod").args(["-s", "/bin/bash"]).arg(&user.name).status().unwrap();
    assert!(status.success());
    let text =
        std::fs::read_to_string(&gh.config).unwrap().replace("[shell]\n", "[shell]\nrequire_login_shell = false\n");
    std::fs::write(&gh.config, text).unwrap();
    let out = sftp_batch(&sshd, &user.name, &key, &batch);
    assert!(out.status.success(), "opted out: {}", stderr(&out));
    assert!(marker.exists(), "with the check off, bash ran ~/.bashrc: the check above proved something");
}

#[test]
fn jailed_users_get_no_port_forwarding_whatever_the_sshd_order() {
    require_root!();
    let (gh, jail_group, _jail_root) = jailed_instance("jailfwd");
    // The site's jail block comes after the drop-in (Debian reads sshd_config.d first), so
    // the drop-in's `AllowTcpForwarding local` is the value sshd keeps for jailed users.
    let matches = format!("Match Group {}\n    AllowTcpForwarding no\n", jail_group.name);
    let sshd = Sshd::start(&gh, &matches);
    let jailed = SystemUser::new("ghjf", &gh.dir.path, &[&sshd.managed.name, &jail_group.name]);
    let free = SystemUser::new("ghff", &gh.dir.path, &[&sshd.managed.name]);
    // A service on the host's loopback that no jailed user should reach.
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in service.incoming().take(4).flatten() {
            use std::io::Write;
            let _ = (&stream).write_all(b"loopback-only-service\n");
        }
    });
    let mut keys = Vec::new();
    for user in [&jailed, &free] {
        gh.ok(&["user", "add", &user.name, "--port-forwarding"]);
        let key = keygen(&gh.dir.path, "ed25519");
        assert!(gh.cli_stdin(&["key", "add", &user.name, "-"], key.public.as_bytes()).status.success());
        keys.push(key);
    }
    let forward = |user: &SystemUser, key: &KeyPair| {
        let mut cmd = sshd.ssh_command(&user.name, &key.private, &[]);
        cmd.args(["-W", &format!("127.0.0.1:{port}")]);
        cmd.output().unwrap()
    };
    // The control: a user outside the jail may forward, so the refusal below is the jail's.
    let out = forward(&free, &keys[1]);
    assert!(stdout(&out).contains("loopback-only-service"), "{}", stderr(&out));
    let out = forward(&jailed, &keys[0]);
    assert!(!stdout(&out).contains("loopback-only-service"), "a jailed user reached the host's loopback");
    // What sshd got: no forwarding on the jailed user's line.
    let lines = stdout(&gh.keys_raw(&[&jailed.name, &jailed.uid.to_string()]));
    assert!(lines.starts_with("restrict,") && !lines.contains("port-forwarding"), "{lines}");
    let lines = stdout(&gh.keys_raw(&[&free.name, &free.uid.to_string()]));
    assert!(lines.contains("port-forwarding"), "{lines}");
}

/// A filesystem mounted for one test, unmounted on drop.
struct Mounted {
    at: PathBuf,
}

impl Mounted {
    fn run(args: &[&str]) {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }

    /// A tmpfs of `size` (e.g. "256k") at `at`, root's and 0755 like /data.
    fn tmpfs(at: &std::path::Path, size: &str) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let options = format!("size={size},mode=0755");
        Mounted::run(&["mount", "-t", "tmpfs", "-o", &options, "gh-test", at.to_str().unwrap()]);
        Mounted { at: at.to_path_buf() }
    }

    /// A 16 MiB ext4 image mounted at `at` with user quotas (usrquota, a quota file from
    /// quotacheck), as a site with quotas has it.
    fn ext4_with_quotas(image: &std::path::Path, at: &std::path::Path) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        Mounted::run(&["truncate", "-s", "16M", image.to_str().unwrap()]);
        Mounted::run(&["mkfs.ext4", "-q", "-F", image.to_str().unwrap()]);
        Mounted::run(&["mount", "-o", "loop,usrquota", image.to_str().unwrap(), at.to_str().unwrap()]);
        let mounted = Mounted { at: at.to_path_buf() };
        Mounted::run(&["chmod", "0755", at.to_str().unwrap()]);
        Mounted::run(&["quotacheck", "-cu", at.to_str().unwrap()]);
        mounted
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Lazily: a session's process may still hold a file there a moment longer.
        let _ = Command::new("umount").arg("-l").arg(&self.at).output();
    }
}

#[test]
fn a_full_disk_fails_the_session_and_the_next_login_makes_the_folder_whole() {
    require_root!();
    let skel = TestDir::new("skelfull");
    let big = vec![b'x'; 512 * 1024];
    std::fs::write(skel.join("dataset.bin"), &big).unwrap();
    std::fs::write(skel.join("README.txt"), "welcome\n").unwrap();
    let (gh, group) = setup("fulldisk", "");
    let cfg = std::fs::read_to_string(&gh.config)
        .unwrap()
        .replace("[users]\n", &format!("[users]\nskeleton = \"{}\"\n", skel.path.display()));
    std::fs::write(&gh.config, cfg).unwrap();
    // Room for a folder, not for the skeleton.
    let disk = Mounted::tmpfs(&gh.data, "256k");
    let svc = PamService::new(&stack(&gh, ""));
    let alice = SystemUser::new("ghfd", &gh.dir.path, &[&group.name]);
    gh.ok(&["user", "add", &alice.name]);
    gh.log.drain();

    let out = pamtester(&svc, &alice.name, &["open_session"]);
    assert!(!out.status.success(), "a session opened on a half-made folder");
    let folder = gh.data.join(&alice.name);
    assert!(!folder.exists(), "a half-made folder was left behind");
    let logged = gh.log.drain().join("\n");
    assert!(logged.contains("stage=session") && logged.contains("verdict=refuse"), "{logged}");
    assert!(logged.contains("No space left on device") && logged.contains("removed again"), "{logged}");
    // The key command needs no room: it keeps answering meanwhile.
    assert!(gh.keys(&[&alice.name]).status.success());

    // Room again: the next login makes the folder, skeleton and all.
    Mounted::run(&["mount", "-o", "remount,size=4m", disk.at.to_str().unwrap()]);
    let out = pamtester(&svc, &alice.name, &["open_session"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(folder.join("dataset.bin")).unwrap().len(), big.len());
    assert_eq!(std::fs::metadata(&folder).unwrap().uid(), alice.uid);
}

#[test]
fn a_jail_root_sshd_would_refuse_fails_the_session_with_a_log_line() {
    require_root!();
    let (gh, jail_group, jail_root) = jailed_instance("jailroot");
    let group = SystemGroup::new("ghp");
    let svc = PamService::new(&stack(&gh, ""));
    let user = SystemUser::new("ghjr", &gh.dir.path, &[&group.name, &jail_group.name]);
    gh.ok(&["user", "add", &user.name]);
    gh.log.drain();
    let chmod = |mode: u32| {
        std::fs::set_permissions(&jail_root.path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    let owner = |uid: u32| nix::unistd::chown(&jail_root.path, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    for (what, setup_root) in [
        ("mode 0775", &(|| chmod(0o775)) as &dyn Fn()),
        ("the jailed user's", &|| {
            chmod(0o755);
            owner(user.uid)
        }),
    ] {
        setup_root();
        let out = pamtester(&svc, &user.name, &["open_session"]);
        assert!(!out.status.success(), "{what}: the session opened");
        assert!(!jail_root.path.join(&user.name).exists(), "{what}: the jail was laid out anyway");
        let logged = gh.log.drain().join("\n");
        assert!(
            logged.contains("jail=failed") && logged.contains(jail_root.path.to_str().unwrap()),
            "{what}: {logged}"
        );
        assert!(logged.contains("ChrootDirectory"), "{what}: the log names the rule: {logged}");
        let doctor = gh.cli(&["doctor", "--sshd-config", "/dev/null"]);
        assert!(stdout(&doctor).contains("FAIL jail.root"), "{what}: {}", stdout(&doctor));
    }
    owner(0);
    let out = pamtester(&svc, &user.name, &["open_session"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(jail_root.path.join(&user.name).join("data").is_dir());
}

#[test]
fn quotas_are_set_on_the_filesystem_that_holds_the_folder_and_retried() {
    require_root!();
    let (gh, group) = setup("quota", "");
    let cfg = std::fs::read_to_string(&gh.config).unwrap().replace("[users]\n", "[users]\nquota = \"10M\"\n");
    std::fs::write(&gh.config, cfg).unwrap();
    let svc = PamService::new(&stack(&gh, ""));
    let alice = SystemUser::new("ghq", &gh.dir.path, &[&group.name]);
    gh.ok(&["user", "add", &alice.name]);
    gh.log.drain();

    // First on a filesystem without quotas: the login goes on, the log says which case.
    let plain = Mounted::tmpfs(&gh.data, "4m");
    let out = pamtester(&svc, &alice.name, &["open_session"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let logged = gh.log.drain().join("\n");
    assert!(logged.contains("quota=not-applied"), "{logged}");
    assert!(logged.contains("has no user quotas") || logged.contains("setquota"), "{logged}");
    assert!(!logged.contains("setquota: setquota"), "the prefix is doubled: {logged}");
    drop(plain);

    // Then the data root is an ext4 with usrquota: the next login sets the limit on that
    // filesystem (this kernel need not enforce it; quota(1) shows what is set).
    let image = gh.dir.join("quota.img");
    let _disk = Mounted::ext4_with_quotas(&image, &gh.data);
    let out = pamtester(&svc, &alice.name, &["open_session"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let logged = gh.log.drain().join("\n");
    assert!(logged.contains("quota=10M") && logged.contains(&format!("filesystem={}", gh.data.display())), "{logged}");
    let report = Command::new("quota").args(["-u", "-w", "-v", &alice.name]).output().unwrap();
    let text = stdout(&report);
    // quota(1) names the filesystem by its device: the loop device under the data root.
    let limit = text
        .lines()
        .find(|l| l.trim_start().starts_with("/dev/"))
        .unwrap_or_else(|| panic!("no quota line for the data root: {text}"));
    // Blocks, used, soft limit, hard limit: 10M is 10240 one-KiB blocks.
    let fields: Vec<&str> = limit.split_whitespace().collect();
    assert_eq!(fields.get(3), Some(&"10240"), "{text}");
    // Set once: the next login does not run setquota again.
    assert!(pamtester(&svc, &alice.name, &["open_session"]).status.success());
    assert!(!gh.log.drain().join("\n").contains("quota="), "set again");
}
