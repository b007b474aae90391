//! End-to-end: git, sftp and rsync through gatehouse-shell with a real sshd and the real
//! clients, and every refusal class. Needs root (creates users, starts sshd).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct World {
    gh: Gatehouse,
    sshd: Sshd,
    work: TestDir,
}

fn world(name: &str, sshd_extra: &str) -> World {
    let gh = Gatehouse::new(name, "");
    gh.init(None);
    let sshd = Sshd::start(&gh, sshd_extra);
    World { gh, sshd, work: TestDir::new(&format!("{name}w")) }
}

/// A managed user with one key of `scope`, and their data folder.
struct Account {
    user: SystemUser,
    key: KeyPair,
    fingerprint: String,
}

impl World {
    fn account(&self, scope: &str) -> Account {
        let user = self.sshd.user(&self.gh, &[]);
        self.gh.data_dir(&user);
        let key = keygen(&self.gh.dir.path, "ed25519");
        let out = self.gh.cli_stdin(&["key", "add", &user.name, "-", "--scope", scope], key.public.as_bytes());
        assert!(out.status.success(), "{}", stderr(&out));
        let fingerprint = stdout(&out).trim().to_string();
        Account { user, key, fingerprint }
    }

    /// A bare repository owned by `owner`, with one commit holding `file`.
    fn repo(&self, owner: &Account, name: &str, file: &str) -> PathBuf {
        let dir = self.gh.data.join(&owner.user.name).join(name);
        run(Command::new("git").args(["init", "--quiet", "--bare", "-b", "main"]).arg(&dir));
        let seed = self.work.join(&unique("seed"));
        run(Command::new("git").args(["init", "--quiet", "-b", "main"]).arg(&seed));
        std::fs::write(seed.join(file), "hello\n").unwrap();
        git_in(&seed, &["add", "."]);
        git_in(&seed, &["commit", "--quiet", "-m", "seed"]);
        git_in(&seed, &["push", "--quiet", dir.to_str().unwrap(), "main"]);
        run(Command::new("chown").arg("-R").arg(format!("{0}:{0}", owner.user.name)).arg(&dir));
        dir
    }

    fn git(&self, who: &Account, cwd: &Path, args: &[&str]) -> Output {
        Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_SSH_COMMAND", self.sshd.ssh_line(&who.key.private))
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn url(&self, who: &Account, path: &str) -> String {
        format!("ssh://{}@127.0.0.1:{}/{path}", who.user.name, self.sshd.port)
    }

    fn ssh(&self, who: &Account, command: &str) -> Output {
        self.sshd.ssh(&who.user.name, &who.key.private, &[command])
    }
}

/// Sets `shell.login_shell` in the instance's config; `None`: back to the default.
fn set_login_shell(gh: &Gatehouse, value: Option<&str>) {
    let cfg = std::fs::read_to_string(&gh.config).unwrap();
    let mut lines: Vec<String> = cfg.lines().filter(|l| !l.starts_with("login_shell = ")).map(String::from).collect();
    if let Some(value) = value {
        let at = lines.iter().position(|l| l == "[shell]").unwrap();
        lines.insert(at + 1, format!("login_shell = \"{value}\""));
    }
    std::fs::write(&gh.config, lines.join("\n") + "\n").unwrap();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
}

fn git_in(dir: &Path, args: &[&str]) {
    run(Command::new("git").args(["-c", "user.name=t", "-c", "user.email=t@example.org"]).args(args).current_dir(dir));
}

#[test]
fn git_clone_push_archive_and_protocol_v2() {
    require_root!();
    let w = world("git", "");
    let alice = w.account("git");
    w.repo(&alice, "thesis.git", "chapter1.txt");

    let out = w.git(&alice, &w.work.path, &["clone", "--quiet", &w.url(&alice, "alice-ignored"), "x"]);
    assert!(!out.status.success());
    let url = w.url(&alice, &format!("{}/thesis.git", alice.user.name));
    let out = w.git(&alice, &w.work.path, &["clone", "--quiet", &url, "clone1"]);
    assert!(out.status.success(), "clone: {}\n{}", stderr(&out), w.sshd.log_text());
    let clone = w.work.join("clone1");
    assert_eq!(std::fs::read_to_string(clone.join("chapter1.txt")).unwrap(), "hello\n");

    // Fast-forward push.
    std::fs::write(clone.join("chapter2.txt"), "more\n").unwrap();
    git_in(&clone, &["add", "."]);
    git_in(&clone, &["commit", "--quiet", "-m", "two"]);
    let out = w.git(&alice, &clone, &["push", "--quiet", "origin", "main"]);
    assert!(out.status.success(), "push: {}", stderr(&out));

    // A second clone that falls behind is refused a non-fast-forward push.
    let scp_like = format!("{}@127.0.0.1:{}/thesis.git", alice.user.name, alice.user.name);
    let out = w.git(&alice, &w.work.path, &["clone", "--quiet", &scp_like, "clone2"]);
    assert!(out.status.success(), "scp-like clone: {}", stderr(&out));
    let clone2 = w.work.join("clone2");
    git_in(&clone2, &["reset", "--quiet", "--hard", "HEAD~1"]);
    std::fs::write(clone2.join("other.txt"), "diverged\n").unwrap();
    git_in(&clone2, &["add", "."]);
    git_in(&clone2, &["commit", "--quiet", "-m", "diverge"]);
    let out = w.git(&alice, &clone2, &["push", "origin", "main"]);
    assert!(!out.status.success(), "a non-fast-forward push was accepted");
    assert!(stderr(&out).contains("rejected"), "{}", stderr(&out));

    // Protocol v2 end to end.
    let out = Command::new("git")
        .args(["-c", "protocol.version=2", "ls-remote", &url])
        .env("GIT_SSH_COMMAND", w.sshd.ssh_line(&alice.key.private))
        .env("GIT_TRACE_PACKET", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("version 2"), "protocol v2 not spoken");
    assert!(stdout(&out).contains("refs/heads/main"));

    // git archive --remote.
    let out = w.git(&alice, &w.work.path, &["archive", "--format=tar", &format!("--remote={url}"), "main"]);
    assert!(out.status.success(), "archive: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("chapter2.txt"));

    let logged = w.gh.log.drain().join("\n");
    assert!(logged.contains("verb=git-receive-pack"), "{logged}");
    assert!(logged.contains("landlock=full") || logged.contains("landlock="), "{logged}");
}

#[test]
fn grants_decide_who_reads_and_writes_and_missing_looks_like_forbidden() {
    require_root!();
    let w = world("grants", "");
    let alice = w.account("git");
    let bob = w.account("git");
    let reader = w.account("git-read");
    w.repo(&alice, "data.git", "results.csv");
    // Sharing is the owner's choice in file modes too; the grant is Gatehouse's half.
    std::fs::set_permissions(w.gh.data.join(&alice.user.name), std::fs::Permissions::from_mode(0o755)).unwrap();
    w.repo(&reader, "own.git", "notes.txt");
    let alice_repo = format!("{}/data.git", alice.user.name);

    let forbidden = w.git(&bob, &w.work.path, &["ls-remote", &w.url(&bob, &alice_repo)]);
    let missing = w.git(&bob, &w.work.path, &["ls-remote", &w.url(&bob, &format!("{}/nope.git", alice.user.name))]);
    assert!(!forbidden.status.success() && !missing.status.success());
    assert_eq!(forbidden.status.code(), missing.status.code());
    let norm = |o: &Output| stderr(o).replace("data.git", "X").replace("nope.git", "X");
    assert_eq!(norm(&forbidden), norm(&missing), "a forbidden repository is told apart from a missing one");
    assert!(stderr(&forbidden).contains("not found, or you do not have access"), "{}", stderr(&forbidden));

    w.gh.ok(&["grant", "add", &bob.user.name, &format!("{}/*.git", alice.user.name), "read"]);
    let out = w.git(&bob, &w.work.path, &["clone", "--quiet", &w.url(&bob, &alice_repo), "bobs"]);
    assert!(out.status.success(), "granted read refused: {}", stderr(&out));
    let clone = w.work.join("bobs");
    std::fs::write(clone.join("x"), "x").unwrap();
    git_in(&clone, &["add", "."]);
    git_in(&clone, &["commit", "--quiet", "-m", "x"]);
    let out = w.git(&bob, &clone, &["push", "origin", "main"]);
    assert!(!out.status.success(), "a read-only grant pushed");
    assert!(stderr(&out).contains("not found, or you do not have access"), "{}", stderr(&out));

    // A git-read key never writes, even to its owner's repository.
    let own = w.url(&reader, &format!("{}/own.git", reader.user.name));
    let out = w.git(&reader, &w.work.path, &["clone", "--quiet", &own, "own"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let own_clone = w.work.join("own");
    std::fs::write(own_clone.join("y"), "y").unwrap();
    git_in(&own_clone, &["add", "."]);
    git_in(&own_clone, &["commit", "--quiet", "-m", "y"]);
    let out = w.git(&reader, &own_clone, &["push", "origin", "main"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
}

#[test]
fn hostile_commands_are_refused_with_one_line() {
    require_root!();
    let w = world("hostile", "AcceptEnv GIT_* LD_*");
    let alice = w.account("git");
    let bob = w.account("git");
    w.repo(&alice, "x.git", "f");
    w.repo(&bob, "secret.git", "s");
    let a = &alice.user.name;
    let b = &bob.user.name;
    let greeting = format!("Hi {a}! You've authenticated with key {}", alice.fingerprint);
    let cases: Vec<(String, &str)> = vec![
        (format!("git-upload-pack '{a}/../{b}/secret.git'"), "not a repository path"),
        (format!("git-upload-pack '../{b}/secret.git'"), "not a repository path"),
        (format!("git-upload-pack '/{b}/../{a}/x.git'"), "not a repository path"),
        (format!("git-upload-pack '~{b}/secret.git'"), "not a repository path"),
        ("git-upload-pack '/etc'".to_string(), "not a repository path"),
        ("git-upload-pack '--help'".to_string(), "not a repository path"),
        (format!("git-upload-pack '--upload-pack=touch /tmp/pwn' '{a}/x.git'"), "Refused"),
        (format!("git-upload-pack '{a}/x.git' --upload-pack=id"), "Refused"),
        (format!("git-upload-pack '{a}/x.git'; id"), "Refused"),
        (format!("git-upload-pack '{a}/x.git' && id"), "Refused"),
        ("git-upload-pack $(id)/x.git".to_string(), "Refused"),
        (format!("git-upload-pack '{a}/x.git' extra"), "Refused"),
        (format!("git-upload-pack '{}'", "a".repeat(5000)), "longer than"),
        ("git-cvsserver".to_string(), "shell access is not enabled"),
        ("scp -t /tmp".to_string(), "shell access is not enabled"),
        ("sh".to_string(), "shell access is not enabled"),
        ("rsync --server -vlogDtpre.iLsfxCIvu . /etc".to_string(), "Refused"),
        ("rsync --server -vlogDtpre.iLsfxCIvu . project".to_string(), "File transfer is not enabled"),
        ("internal-sftp".to_string(), "File transfer is not enabled"),
    ];
    for (command, expect) in &cases {
        let out = w.ssh(&alice, command);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{command:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).trim_end().lines().count(), 1, "{command:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{command:?} printed {}", stdout(&out));
        if *expect == "shell access is not enabled" {
            assert!(stderr(&out).contains(&greeting));
        }
    }
    assert!(!Path::new("/tmp/pwn").exists());

    // The environment git runs in is an allow-list: these would break or hijack git.
    let out = Command::new("git")
        .args(["ls-remote", &w.url(&alice, &format!("{a}/x.git"))])
        .env("GIT_SSH_COMMAND", format!(
            "{} -o SetEnv=GIT_DIR=/nonexistent -o SetEnv=LD_PRELOAD=/nonexistent.so -o SetEnv=GIT_CONFIG_PARAMETERS='core.sshCommand=x'",
            w.sshd.ssh_line(&alice.key.private)
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "forbidden environment leaked into git: {}", stderr(&out));
    assert!(stdout(&out).contains("refs/heads/main"));
}

#[test]
fn sftp_and_rsync_stay_in_the_data_folder() {
    require_root!();
    let w = world("files", "");
    let alice = w.account("files");
    let bob = w.account("files");
    let bob_secret = w.gh.data.join(&bob.user.name).join("secret.txt");
    std::fs::write(&bob_secret, "bob's\n").unwrap();
    // Readable by everyone as far as file modes go: only the confinement keeps alice out.
    std::fs::set_permissions(w.gh.data.join(&bob.user.name), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bob_secret, std::fs::Permissions::from_mode(0o644)).unwrap();

    let local = w.work.join("up.txt");
    std::fs::write(&local, "uploaded\n").unwrap();
    let got = w.work.join("down.txt");
    let batch =
        format!("put {}\nls\nget up.txt {}\nsymlink {} link\n", local.display(), got.display(), bob_secret.display());
    let out = sftp(&w, &alice, &batch);
    assert!(out.status.success(), "sftp: {}\n{}", stderr(&out), w.sshd.log_text());
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "uploaded\n");
    assert!(stdout(&out).contains("up.txt"));
    let landed = w.gh.data.join(&alice.user.name).join("up.txt");
    assert_eq!(std::fs::read_to_string(&landed).unwrap(), "uploaded\n");

    // Outside the data folder: by absolute path, and through the planted symlink.
    for path in [bob_secret.display().to_string(), "link".to_string()] {
        let out = sftp(&w, &alice, &format!("get {path} {}\n", w.work.join("stolen").display()));
        assert!(!out.status.success(), "sftp read {path} outside the data folder");
        assert!(!w.work.join("stolen").exists());
    }

    // Control: a shell key is not confined, so file modes alone would have let alice in.
    let erin = w.account("shell");
    let out = sftp(&w, &erin, &format!("get {} {}\n", bob_secret.display(), w.work.join("control").display()));
    assert!(out.status.success(), "control read failed: {}", stderr(&out));
    let logged = w.gh.log.drain().join("\n");
    assert!(logged.contains("verb=sftp") && logged.contains("landlock=full"), "{logged}");

    // rsync both ways.
    let tree = w.work.join("project");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/a.dat"), "a\n").unwrap();
    let target = format!("{}@127.0.0.1:project/", alice.user.name);
    let out = rsync(&w, &alice, &[&format!("{}/", tree.display()), &target]);
    assert!(out.status.success(), "rsync push: {}", stderr(&out));
    assert!(w.gh.data.join(&alice.user.name).join("project/sub/a.dat").exists());
    let back = w.work.join("back");
    let out = rsync(&w, &alice, &[&target, &format!("{}/", back.display())]);
    assert!(out.status.success(), "rsync pull: {}", stderr(&out));
    assert_eq!(std::fs::read_to_string(back.join("sub/a.dat")).unwrap(), "a\n");

    for (source, why) in [
        (format!("{}@127.0.0.1:/etc/", alice.user.name), "relative"),
        (format!("{}@127.0.0.1:../{}/", alice.user.name, bob.user.name), ".."),
        (format!("{}@127.0.0.1:link", alice.user.name), "symlink"),
    ] {
        let out = rsync(&w, &alice, &["-L", &source, &format!("{}/", w.work.join("loot").display())]);
        let loot = w.work.join("loot/secret.txt");
        assert!(!loot.exists(), "rsync fetched {source} ({why})");
        if why != "symlink" {
            assert!(!out.status.success(), "{source}");
        }
    }
}

fn sftp(w: &World, who: &Account, batch: &str) -> Output {
    let batch_file = w.work.join(&unique("batch"));
    std::fs::write(&batch_file, batch).unwrap();
    let mut cmd = Command::new("sftp");
    for opt in w.sshd.ssh_line(&who.key.private).split(' ').skip(1).filter(|o| *o != "-p" && o.parse::<u16>().is_err())
    {
        cmd.arg(opt);
    }
    cmd.args(["-P", &w.sshd.port.to_string(), "-b"])
        .arg(&batch_file)
        .arg(format!("{}@127.0.0.1", who.user.name))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn rsync(w: &World, who: &Account, args: &[&str]) -> Output {
    Command::new("rsync")
        .arg("-a")
        .arg("-e")
        .arg(w.sshd.ssh_line(&who.key.private))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn shell_keys_keep_their_shell_and_lose_ssh_original_command() {
    require_root!();
    let w = world("shellkey", "");
    let carol = w.account("shell");
    let out = w.ssh(&carol, "echo ${SSH_ORIGINAL_COMMAND:-unset}");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "unset");
    // git through a shell key uses the same access control as a git key.
    w.repo(&carol, "c.git", "f");
    let out = w.git(&carol, &w.work.path, &["ls-remote", &w.url(&carol, &format!("{}/c.git", carol.user.name))]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn gatehouse_shell_as_login_shell_runs_no_startup_files() {
    require_root!();
    let w = world("loginshell", "");
    let dave = w.account("files");
    // Dave's home is his data folder, where sftp lets him write a .bashrc.
    let data = w.gh.data.join(&dave.user.name);
    let marker = data.join("bashrc-ran");
    std::fs::write(data.join(".bashrc"), format!("touch {}\n", marker.display())).unwrap();
    // With bash as login shell the planted file runs before the forced command does.
    run(Command::new("usermod").args(["-d", data.to_str().unwrap(), "-s", "/bin/bash"]).arg(&dave.user.name));
    let out = w.ssh(&dave, "id");
    assert_eq!(out.status.code(), Some(1));
    assert!(marker.exists(), "control: bash did not read the planted ~/.bashrc, so this test proves nothing");
    std::fs::remove_file(&marker).unwrap();
    run(Command::new("usermod").arg("-s").arg(&w.gh.shell_bin).arg(&dave.user.name));
    let out = sftp(&w, &dave, "ls\n");
    assert!(out.status.success(), "sftp with gatehouse-shell as login shell: {}", stderr(&out));
    let out = w.ssh(&dave, "id");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("shell access is not enabled"), "{}", stderr(&out));
    assert!(!marker.exists(), "a startup file ran");
}

#[test]
fn shell_keys_of_gatehouse_shell_accounts_get_shell_login_shell() {
    require_root!();
    let w = world("loginshellkey", "");
    let erin = w.account("shell");
    run(Command::new("usermod").arg("-s").arg(&w.gh.shell_bin).arg(&erin.user.name));
    set_login_shell(&w.gh, Some(""));
    let out = w.ssh(&erin, "echo $0");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("needs a real login shell"), "{}", stderr(&out));

    // The default: bash.
    set_login_shell(&w.gh, None);
    let out = w.ssh(&erin, "echo \"$0 $SHELL ${BASH_VERSION:+bash}\"; ps -o comm= -p $PPID");
    assert!(out.status.success(), "{}", stderr(&out));
    // bash, told so in SHELL, started by sshd's session process with no shell before it:
    // sshd ran gatehouse-shell itself, which became bash.
    assert_eq!(stdout(&out), "/bin/bash /bin/bash bash\nsshd\n");
    let out = w.ssh(&erin, "exit 7");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn logins_without_a_key_line_get_the_accounts_policy() {
    require_root!();
    let w = world("loginnokey", "");
    let erin = w.account("shell");
    let dave = w.account("files");
    w.gh.ok(&["user", "set", &dave.user.name, "--policy", "files"]);
    // The login shell, with the test's configuration (bash for `exec -a`: su's leading dash
    // reaches gatehouse-shell).
    let login = w.gh.dir.join("login-shell");
    std::fs::write(
        &login,
        format!("#!/bin/bash\nexec -a \"$0\" {} --config {} \"$@\"\n", w.gh.shell_bin.display(), w.gh.config.display()),
    )
    .unwrap();
    std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o755)).unwrap();
    for who in [&erin, &dave] {
        run(Command::new("usermod").arg("-s").arg(&login).arg(&who.user.name));
    }
    // runuser USER -c CMD runs USER's login shell as `-c CMD`, as su and cron do.
    let as_user = |who: &Account, args: &[&str], input: &str| {
        output_with_input(Command::new("runuser").args(args).arg(&who.user.name).current_dir("/"), input.as_bytes())
    };
    set_login_shell(&w.gh, Some(""));
    let out = as_user(&erin, &["-c", "echo ran"], "");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("needs a real login shell"), "{}", stderr(&out));

    set_login_shell(&w.gh, None);
    let out = as_user(&erin, &["-c", "echo \"$SHELL\"; exit 3"], "");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "/bin/bash\n");
    // Started as a login shell (a leading dash in argv[0], as su - and sshd do; a script
    // cannot pass that on), gatehouse-shell starts bash as one.
    let login_start = |who: &Account| {
        output_with_input(
            Command::new("setpriv")
                .args(["--reuid", &who.user.name, "--regid", &who.user.name, "--init-groups", "bash", "-c"])
                .arg("exec -a -gatehouse-shell \"$0\" --config \"$1\"")
                .arg(&w.gh.shell_bin)
                .arg(&w.gh.config)
                .current_dir("/"),
            b"echo \"$0\"\n",
        )
    };
    let out = login_start(&erin);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().last(), Some("-bash"), "{}", stdout(&out));
    let out = as_user(&erin, &["-"], "echo \"$0\"\n");
    assert_eq!(stdout(&out).lines().last(), Some("/bin/bash"), "{}", stderr(&out));
    // Policy files: no shell, but sftp, as a files key would get it (a password login's
    // sftp subsystem arrives the same way: the login shell with -c).
    let out = as_user(&dave, &["-c", "echo ran"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("shell access is not enabled for this account"), "{}", stderr(&out));
    std::fs::write(w.gh.data.join(&dave.user.name).join("in-dave"), "x").unwrap();
    let out = output_with_input(
        Command::new("sftp")
            .args(["-b", "-", "-D"])
            .arg(format!("/usr/sbin/runuser {} -c sftp-server", dave.user.name)),
        b"pwd\nls\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = stdout(&out);
    assert!(
        listing.contains(&format!("Remote working directory: {}", w.gh.data.join(&dave.user.name).display())),
        "{listing}"
    );
    assert!(listing.contains("in-dave"), "{listing}");
    let out = login_start(&dave);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    // Disabled: nothing either.
    w.gh.ok(&["user", "disable", &erin.user.name]);
    let out = as_user(&erin, &["-c", "echo ran"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    let logged = w.gh.log.drain().join("\n");
    assert!(logged.contains("reason=user-disabled") && logged.contains("fingerprint=-"), "{logged}");

    // A shell.login_shell that leads back to gatehouse-shell ends, not loops.
    w.gh.ok(&["user", "enable", &erin.user.name]);
    set_login_shell(&w.gh, Some(login.to_str().unwrap()));
    let out = Command::new("timeout").args(["20", "runuser", &erin.user.name, "-c", "echo ran"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(w.gh.log.drain().join("\n").contains("starts gatehouse-shell again"));
}

#[test]
fn someone_elses_repository_runs_nothing_as_the_pusher() {
    require_root!();
    let w = world("alternates", "");
    let alice = w.account("git");
    let bob = w.account("shell");
    let dir = w.repo(&alice, "shared.git", "f");
    let other = w.repo(&alice, "other.git", "g");
    // A repository whose own configuration names a command, and alternates so git uses it.
    let marker = w.gh.data.join(&bob.user.name).join("ran-as-bob");
    std::fs::write(dir.join("objects/info/alternates"), format!("{}/objects\n", other.display())).unwrap();
    run(Command::new("git")
        .args(["config", "--file"])
        .arg(dir.join("config"))
        .args(["core.alternateRefsCommand", &format!("touch {} #", marker.display())]));
    run(Command::new("chmod").args(["-R", "a+rwX"]).arg(w.gh.data.join(&alice.user.name)));
    w.gh.ok(&["grant", "add", &bob.user.name, &format!("{}/shared.git", alice.user.name), "write"]);

    let url = w.url(&bob, &format!("{}/shared.git", alice.user.name));
    let out = w.git(&bob, &w.work.path, &["clone", "--quiet", &url, "bobs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let clone = w.work.join("bobs");
    std::fs::write(clone.join("b"), "b").unwrap();
    git_in(&clone, &["add", "."]);
    git_in(&clone, &["commit", "--quiet", "-m", "b"]);
    let out = w.git(&bob, &clone, &["push", "--quiet", "origin", "main"]);
    assert!(out.status.success(), "a granted push failed: {}", stderr(&out));
    assert!(!marker.exists(), "the repository's alternateRefsCommand ran as the pusher");
}

#[test]
fn first_push_creates_a_repository_only_where_allowed() {
    require_root!();
    let gh = Gatehouse::new("createpush", "");
    let cfg = std::fs::read_to_string(&gh.config).unwrap().replace("[git]\n", "[git]\ncreate_on_push = true\n");
    std::fs::write(&gh.config, cfg).unwrap();
    gh.init(None);
    let sshd = Sshd::start(&gh, "");
    let w = World { gh, sshd, work: TestDir::new("createpushw") };
    let alice = w.account("git");
    let bob = w.account("git");
    let local = w.work.join("new");
    run(Command::new("git").args(["init", "--quiet", "-b", "main"]).arg(&local));
    std::fs::write(local.join("f"), "x").unwrap();
    git_in(&local, &["add", "."]);
    git_in(&local, &["commit", "--quiet", "-m", "first"]);

    // Into her own root: created, owned by her, and pushed.
    let own = w.url(&alice, &format!("{}/fresh.git", alice.user.name));
    let out = w.git(&alice, &local, &["push", "--quiet", &own, "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let repo = w.gh.data.join(&alice.user.name).join("fresh.git");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&repo).unwrap().uid(), alice.user.uid);
    assert!(w.git(&alice, &w.work.path, &["ls-remote", &own]).status.success());
    // Not into someone else's.
    let theirs = w.url(&alice, &format!("{}/planted.git", bob.user.name));
    let out = w.git(&alice, &local, &["push", "--quiet", &theirs, "main"]);
    assert!(!out.status.success());
    assert!(!w.gh.data.join(&bob.user.name).join("planted.git").exists());
}

/// Output of git in `dir`, which must succeed, trimmed.
fn git_out(dir: &Path, args: &[&str], input: Option<&str>) -> String {
    let mut cmd = Command::new("git");
    cmd.args(["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir);
    let out = match input {
        Some(text) => output_with_input(&mut cmd, text.as_bytes()),
        None => cmd.output().unwrap(),
    };
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// A commit on top of HEAD in `clone` whose tree is HEAD's plus the entries `extra`
/// (`mktree` lines), made with plumbing: porcelain git refuses such trees itself.
fn hostile_commit(clone: &Path, extra: &[String]) -> String {
    let mut lines = git_out(clone, &["ls-tree", "HEAD"], None);
    for e in extra {
        lines.push('\n');
        lines.push_str(e);
    }
    lines.push('\n');
    let tree = git_out(clone, &["mktree"], Some(&lines));
    git_out(clone, &["commit-tree", &tree, "-p", "HEAD", "-m", "hostile"], None)
}

#[test]
fn pushes_are_fsck_checked_and_killed_pushes_are_swept() {
    require_root!();
    let w = world("fsck", "");
    let alice = w.account("git");
    let repo = w.repo(&alice, "lab.git", "README");
    let url = w.url(&alice, &format!("{}/lab.git", alice.user.name));
    let out = w.git(&alice, &w.work.path, &["clone", "--quiet", &url, "c"]);
    assert!(out.status.success(), "clone: {}", stderr(&out));
    let clone = w.work.join("c");
    let blob = |text: &str| git_out(&clone, &["hash-object", "-w", "--stdin"], Some(text));
    let config = blob("[core]\n\thooksPath = /tmp\n");
    let config_tree = git_out(&clone, &["mktree"], Some(&format!("100644 blob {config}\tconfig\n")));
    let climbing = blob("[submodule \"../../../hooks\"]\n\tpath = x\n\turl = https://example.org/x.git\n");
    let dashed = blob("[submodule \"x\"]\n\tpath = x\n\turl = --upload-pack=touch${IFS}/tmp/pwned\n");
    let before = git_out(&repo, &["rev-parse", "main"], None);
    for (what, entry, fsck_id) in [
        (".GIT/config", format!("040000 tree {config_tree}\t.GIT"), "hasDotgit"),
        ("submodule name ../../../hooks", format!("100644 blob {climbing}\t.gitmodules"), "gitmodulesName"),
        ("submodule URL -…", format!("100644 blob {dashed}\t.gitmodules"), "gitmodulesUrl"),
    ] {
        let commit = hostile_commit(&clone, &[entry]);
        let out = w.git(&alice, &clone, &["push", "origin", &format!("{commit}:refs/heads/main")]);
        assert!(!out.status.success(), "{what}: the push was accepted");
        assert!(stderr(&out).contains(fsck_id), "{what}: git's check names {fsck_id}: {}", stderr(&out));
        assert_eq!(git_out(&repo, &["rev-parse", "main"], None), before, "{what}: the ref moved");
    }

    // What a push killed with SIGKILL leaves: a quarantine folder nobody removes. The next
    // push removes it once it has sat unchanged for an hour; a fresh one (a push still
    // running) stays.
    let objects = repo.join("objects");
    let stale = objects.join("tmp_objdir-incoming-killed");
    let fresh = objects.join("tmp_objdir-incoming-running");
    for dir in [&stale, &fresh] {
        std::fs::create_dir_all(dir.join("pack")).unwrap();
        std::fs::write(dir.join("pack/tmp_pack_half"), b"half a pack").unwrap();
        run(Command::new("chown").arg("-R").arg(format!("{0}:{0}", alice.user.name)).arg(dir));
    }
    run(Command::new("touch")
        .args(["-h", "-d", "2 hours ago"])
        .arg(&stale)
        .arg(stale.join("pack"))
        .arg(stale.join("pack/tmp_pack_half")));
    std::fs::write(clone.join("notes.txt"), "fine\n").unwrap();
    git_in(&clone, &["add", "."]);
    git_in(&clone, &["commit", "--quiet", "-m", "fine"]);
    let out = w.git(&alice, &clone, &["push", "--quiet", "origin", "main"]);
    assert!(out.status.success(), "an ordinary push: {}", stderr(&out));
    assert!(!stale.exists(), "the killed push's quarantine is still there");
    assert!(fresh.exists(), "a running push's quarantine was removed");
    let logged = w.gh.log.drain().join("\n");
    assert!(logged.contains("stale_quarantines_removed=1"), "{logged}");
}
