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
    assert!(json["keys"][0].get("last_used_at").is_none(), "bob's key was only offered, never used: {json}");
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

/// Deletes accounts `gatehouse provision` made.
struct Provisioned(Vec<String>);

impl Drop for Provisioned {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("userdel").arg(name).output();
            let _ = Command::new("groupdel").arg(name).output();
        }
    }
}

#[test]
fn provision_follows_the_store_within_its_uid_range_only() {
    require_root!();
    let group = SystemGroup::new("ghpg");
    let gh = Gatehouse::new("prov", "");
    let cfg = std::fs::read_to_string(&gh.config)
        .unwrap()
        .replace("[users]\n", &format!("[users]\nuid_min = 41000\nuid_max = 41999\ngroup = \"{}\"\n", group.name));
    std::fs::write(&gh.config, cfg).unwrap();
    gh.init(None);
    let fresh = unique("ghpn");
    let disabled = unique("ghpd");
    let files_only = unique("ghpf");
    let later = unique("ghpl");
    let outside = SystemUser::new("ghpo", &gh.dir.path, &[]);
    let _cleanup = Provisioned(vec![fresh.clone(), disabled.clone(), files_only.clone(), later.clone()]);
    gh.ok(&["user", "add", &fresh]);
    gh.ok(&["user", "add", &disabled, "--disabled"]);
    gh.ok(&["user", "add", &files_only, "--policy", "files"]);
    gh.ok(&["user", "add", "root"]);
    gh.ok(&["user", "add", &outside.name, "--disabled"]);

    let outside_before = stdout(&Command::new("getent").args(["shadow", &outside.name]).output().unwrap());
    let plan = gh.ok(&["provision", "--dry-run"]);
    // Everyone gets gatehouse-shell, which starts shell.login_shell (bash) for shell users.
    let ours = gh.shell_bin.display();
    assert!(plan.contains(&format!("{fresh}: create (shell {ours}) (dry run)")), "{plan}");
    assert!(nix::unistd::User::from_name(&fresh).unwrap().is_none(), "a dry run created an account");

    let report = gh.ok(&["provision"]);
    assert!(report.contains("root: skip: reserved name"), "{report}");
    assert!(report.contains(&format!("{}: skip: uid", outside.name)), "{report}");
    let account = nix::unistd::User::from_name(&fresh).unwrap().expect("account created");
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

#[test]
fn jailed_users_get_sftp_inside_their_chroot_only() {
    require_root!();
    let jail_group = SystemGroup::new("ghj");
    let jail_root = TestDir::new("jail");
    let gh = Gatehouse::new(
        "pamjail",
        &format!("\n[jail]\ngroup = \"{}\"\nroot = \"{}\"\n", jail_group.name, jail_root.path.display()),
    );
    gh.init(None);
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
