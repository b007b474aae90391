//! Shared test harness: private folders, system users, a private sshd on a loopback port,
//! and the real `ssh` client. Each piece removes what it created when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "dirs.rs"]
mod dirs;
#[allow(unused_imports)]
pub use dirs::{is_root, unique, TestDir};

/// Skips a test that needs root, saying so; under CI (always root) a missing root fails.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            assert!(std::env::var_os("CI").is_none(), "this test needs root, and CI runs as root");
            eprintln!("SKIPPED: this test needs root (it creates users and starts sshd)");
            return;
        }
    };
}

// useradd and friends lock /etc/passwd; tests in one process take turns.
static ACCOUNTS: Mutex<()> = Mutex::new(());

fn account_command(program: &str, args: &[&str]) {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0..20 {
        let out = Command::new(program).args(args).output().unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("lock") || attempt == 19 {
            panic!("{program} {args:?}: {err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A system group, deleted on drop.
pub struct SystemGroup {
    pub name: String,
}

impl SystemGroup {
    pub fn new(prefix: &str) -> SystemGroup {
        let name = unique(prefix);
        account_command("groupadd", &[&name]);
        SystemGroup { name }
    }
}

impl Drop for SystemGroup {
    fn drop(&mut self) {
        let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A system account with a home under `home_base`, deleted on drop. The password field is
/// `*` (not `!`), so sshd does not treat it as locked.
pub struct SystemUser {
    pub name: String,
    pub home: PathBuf,
    pub uid: u32,
}

impl SystemUser {
    pub fn new(prefix: &str, home_base: &Path, groups: &[&str]) -> SystemUser {
        let name = unique(prefix);
        let home = home_base.join(&name);
        // Below the uid ranges the provisioning tests give their stores (41000 and up):
        // useradd takes the highest uid in use plus one, and a harness account made while
        // such a test ran would take the uid its store hands out next.
        let mut args = vec![
            "-M",
            "-p",
            "*",
            "-s",
            "/bin/sh",
            "-d",
            home.to_str().unwrap(),
            "-U",
            "-K",
            "UID_MAX=39999",
            "-K",
            "GID_MAX=39999",
        ];
        let group_list = groups.join(",");
        if !groups.is_empty() {
            args.extend(["-G", &group_list]);
        }
        args.push(&name);
        account_command("useradd", &args);
        let account = nix::unistd::User::from_name(&name).unwrap().unwrap();
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&home, Some(account.uid), Some(account.gid)).unwrap();
        SystemUser { name, home, uid: account.uid.as_raw() }
    }
}

impl SystemUser {
    /// A system (service) account, uid below 1000 as `useradd -r` gives it, no home.
    pub fn service(prefix: &str) -> SystemUser {
        let name = unique(prefix);
        account_command(
            "useradd",
            &["-r", "-M", "-p", "*", "-s", "/usr/sbin/nologin", "-d", "/nonexistent", "-U", &name],
        );
        let account = nix::unistd::User::from_name(&name).unwrap().unwrap();
        assert!(account.uid.as_raw() < 1000, "useradd -r gave uid {}", account.uid);
        SystemUser { name, home: PathBuf::from("/nonexistent"), uid: account.uid.as_raw() }
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        // Sessions may linger a moment after the client exits.
        let _ = Command::new("pkill").args(["-KILL", "-u", &self.name]).output();
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// Asks `done` every `step` until it says yes (how long that took) or `limit` has passed.
pub fn wait_until(step: Duration, limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(step);
    }
    None
}

/// Accounts made by something under test (`gatehouse provision`, the agent), by name:
/// their processes killed and the accounts deleted on drop, whatever the test did.
pub struct MadeAccounts(pub Vec<String>);

impl Drop for MadeAccounts {
    fn drop(&mut self) {
        let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        for name in &self.0 {
            let _ = Command::new("pkill").args(["-KILL", "-u", name]).output();
            let _ = Command::new("userdel").arg(name).output();
            let _ = Command::new("groupdel").arg(name).output();
        }
    }
}

/// gatehouse-agent with a `Gatehouse`'s config, killed on drop.
pub struct AgentProcess(pub Child);

impl AgentProcess {
    pub fn start(config: &Path) -> AgentProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse-agent"))
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        AgentProcess(child)
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Collects syslog lines sent to a private socket (the config's `[log] socket`), reading
/// continuously like a syslog daemon would.
pub struct LogSink {
    lines: std::sync::Arc<Mutex<Vec<String>>>,
    pub path: PathBuf,
}

impl LogSink {
    pub fn new(path: PathBuf) -> LogSink {
        let socket = UnixDatagram::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = std::sync::Arc::downgrade(&lines);
        // The reader stops once the sink is dropped.
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            loop {
                let received = socket.recv(&mut buf);
                let Some(lines) = sink.upgrade() else { return };
                if let Ok(n) = received {
                    lines.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        LogSink { lines, path }
    }

    /// Lines received since the last call, waiting up to 3 s for at least `want`.
    pub fn wait_for(&self, want: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut lines = self.drain();
        while lines.len() < want && Instant::now() < deadline {
            lines.extend(self.drain());
        }
        lines
    }

    /// Every line received since the last call, after a moment for stragglers.
    pub fn drain(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(50));
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

/// Runs `cmd` with `input` on its standard input, and collects its output.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The project's binaries, copied into a root-owned folder (sshd checks the key command's
/// path), a config pointing at a private store, and the CLI to manage it.
pub struct Gatehouse {
    pub dir: TestDir,
    pub config: PathBuf,
    pub store: PathBuf,
    pub keys_bin: PathBuf,
    pub shell_bin: PathBuf,
    pub cli_bin: PathBuf,
    pub log: LogSink,
    /// The `[users] data_dir` root and `[git] root`.
    pub data: PathBuf,
}

impl Gatehouse {
    /// A fresh instance; `extra_config` is appended to the generated config.
    pub fn new(name: &str, extra_config: &str) -> Gatehouse {
        let dir = TestDir::new(name);
        let bin = dir.join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = |name: &str, from: &str| {
            let to = bin.join(name);
            // Copied by cp(1), not in this process: a child another test thread forks while
            // we hold the new file open for writing would inherit that descriptor, and
            // running the binary would then fail with ETXTBSY ("Text file busy").
            let status = Command::new("cp").arg(from).arg(&to).status().unwrap();
            assert!(status.success(), "cp {from} {}", to.display());
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
            to
        };
        let keys_bin = copy("gatehouse-keys", env!("CARGO_BIN_EXE_gatehouse-keys"));
        let shell_bin = copy("gatehouse-shell", env!("CARGO_BIN_EXE_gatehouse-shell"));
        let cli_bin = copy("gatehouse", env!("CARGO_BIN_EXE_gatehouse"));
        let state = dir.join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = state.join("store.db");
        let log = LogSink::new(dir.join("log.sock"));
        // Users' data folders and their git repositories, as /data is in production.
        let data = dir.join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.join("gatehouse.toml");
        std::fs::write(
            &config,
            format!(
                "[store]\npath = \"{}\"\n\n[shell]\npath = \"{}\"\n\n[log]\nsocket = \"{}\"\n\n\
                 [users]\ndata_dir = \"{}/%u\"\n{TEST_UID_RANGE}\n[git]\nroot = \"{}\"\n{extra_config}",
                store.display(),
                shell_bin.display(),
                log.path.display(),
                data.display(),
                data.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        Gatehouse { dir, config, store, keys_bin, shell_bin, cli_bin, log, data }
    }

    /// Gives this instance a uid range of its own and `users.group`, for tests in which
    /// accounts are made by provisioning or the agent (whose range the harness's own
    /// accounts, uid 1000 and up, stay outside of). The agent makes them with useradd:
    /// user records would land in the host's /run/userdb (tests/e2e_userdb.rs makes
    /// them in a mount namespace of its own, see [`AGENT_USERADD`]).
    pub fn own_accounts(&self, uid_min: u32, uid_max: u32, group: &str) {
        let mut config = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace(TEST_UID_RANGE, &format!("uid_min = {uid_min}\nuid_max = {uid_max}\ngroup = \"{group}\"\n"));
        config.push_str(AGENT_USERADD);
        std::fs::write(&self.config, config).unwrap();
    }

    /// An initialised instance whose accounts are made by provisioning or the agent: its
    /// own uid range and a fresh `users.group` (see [`Gatehouse::own_accounts`]).
    pub fn with_own_accounts(name: &str, uid_min: u32, uid_max: u32) -> (Gatehouse, SystemGroup) {
        let group = SystemGroup::new("ghog");
        let gh = Gatehouse::new(name, "");
        gh.own_accounts(uid_min, uid_max, &group.name);
        gh.init(None);
        (gh, group)
    }

    /// Creates `user`'s data folder, owned by them, mode 0750.
    pub fn data_dir(&self, user: &SystemUser) -> PathBuf {
        let dir = self.data.join(&user.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let account = nix::unistd::User::from_name(&user.name).unwrap().unwrap();
        nix::unistd::chown(&dir, Some(account.uid), Some(account.gid)).unwrap();
        dir
    }

    /// Runs the admin CLI with this instance's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.cli_bin).arg("--config").arg(&self.config).args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs the CLI and returns stdout, panicking with stderr and stdout on failure (a
    /// failed provisioning step is said on stdout).
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "gatehouse {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI with `input` on standard input.
    pub fn cli_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        output_with_input(Command::new(&self.cli_bin).arg("--config").arg(&self.config).args(args), input)
    }

    /// Runs gatehouse-keys with this instance's config as sshd would for a served account:
    /// `args` are the user and what follows the uid (`%u [%f %t %k]`); [`SERVED_UID`] is
    /// passed as `%U`.
    pub fn keys(&self, args: &[&str]) -> Output {
        let uid = args.first().map_or(SERVED_UID.to_string(), |user| self.store_uid(user));
        let mut all: Vec<&str> = args.iter().take(1).copied().collect();
        all.push(&uid);
        all.extend(args.iter().skip(1));
        Command::new(&self.keys_bin).arg("--config").arg(&self.config).arg("--").args(all).output().unwrap()
    }

    /// The uid the store gave `user`, as sshd would pass it for their account (%U);
    /// [`SERVED_UID`] for a user the store does not have.
    pub fn store_uid(&self, user: &str) -> String {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let uid: Option<u32> = rusqlite::Connection::open_with_flags(&self.store, flags)
            .and_then(|c| c.query_row("SELECT uid FROM users WHERE name = ?1", [user], |r| r.get(0)))
            .ok()
            .flatten();
        uid.map_or(SERVED_UID.to_string(), |u| u.to_string())
    }

    /// Runs gatehouse-keys with exactly `args` after `--`, the uid included.
    pub fn keys_raw(&self, args: &[&str]) -> Output {
        Command::new(&self.keys_bin).arg("--config").arg(&self.config).arg("--").args(args).output().unwrap()
    }

    pub fn init(&self, group: Option<&str>) {
        let mut args = vec!["init"];
        if let Some(g) = group {
            args.extend(["--group", g]);
        }
        self.ok(&args);
    }

    /// Makes the store readable by `group` only (plus root), as the package does: folder
    /// 0750, files 0640.
    pub fn share_store_with(&self, group: &str) {
        let gid = nix::unistd::Group::from_name(group).unwrap().unwrap().gid;
        let state = self.store.parent().unwrap();
        nix::unistd::chown(state, None, Some(gid)).unwrap();
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o750)).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", self.store.display()));
            nix::unistd::chown(&file, None, Some(gid)).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
    }
}

/// The `[users]` uid range of test instances: the accounts `useradd` makes for tests
/// (uid 1000 and up) are served, as the accounts of a real site are within its range.
pub const TEST_UID_RANGE: &str = "uid_min = 1000\nuid_max = 59999\n";

/// The `[agent]` section [`Gatehouse::own_accounts`] appends.
pub const AGENT_USERADD: &str = "\n[agent]\naccounts = \"useradd\"\n";

/// A uid inside [`TEST_UID_RANGE`], passed as `%U` where no real account is involved.
pub const SERVED_UID: &str = "30000";

/// A key pair made by ssh-keygen.
pub struct KeyPair {
    pub private: PathBuf,
    pub public: String,
    pub fingerprint: String,
}

pub fn keygen(dir: &Path, kind: &str) -> KeyPair {
    let private = dir.join(unique("id_"));
    let mut args = vec!["-q", "-N", "", "-C", "test@gatehouse", "-f", private.to_str().unwrap(), "-t", kind];
    if kind == "rsa" {
        args.extend(["-b", "3072"]);
    }
    let out = Command::new("ssh-keygen").args(&args).output().unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let pub_path = format!("{}.pub", private.display());
    let public = std::fs::read_to_string(&pub_path).unwrap().trim_end().to_string();
    let lf = Command::new("ssh-keygen").args(["-lf", &pub_path]).output().unwrap();
    let fingerprint = String::from_utf8(lf.stdout).unwrap().split_whitespace().nth(1).unwrap().to_string();
    KeyPair { private, public, fingerprint }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The ssh client's options, as arguments: no user config, and those the benchmarks share
/// (ssh_options: no prompts, no known_hosts, only the key given), no agent, and the one key
/// exchange the private sshd offers.
fn ssh_options() -> Vec<&'static str> {
    let shared = include_str!("ssh_options").lines().filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut args = vec!["-F", "/dev/null"];
    for option in shared.chain(["IdentityAgent=none", "KexAlgorithms=curve25519-sha256"]) {
        args.extend(["-o", option]);
    }
    args
}

/// A private sshd on 127.0.0.1, configured with the shipped drop-in
/// (sshd_config.d/gatehouse.conf) pointed at this test's binaries, users and groups.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub key_user: SystemUser,
    pub managed: SystemGroup,
}

impl Sshd {
    pub fn start(gh: &Gatehouse, extra: &str) -> Sshd {
        Sshd::start_as(gh, extra, Path::new("/usr/sbin/sshd"), false)
    }

    /// Starts sshd from `program` (a link named like a private PAM service: sshd takes its
    /// PAM service name from its program name), with PAM on or off.
    pub fn start_as(gh: &Gatehouse, extra: &str, program: &Path, use_pam: bool) -> Sshd {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let managed = SystemGroup::new("ghm");
        // The key command's user, like every managed user, reads the store only through
        // the managed group.
        let key_user = SystemUser::new("ghk", &gh.dir.path, &[&managed.name]);
        let host_key = gh.dir.join("host_ed25519");
        if !host_key.exists() {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-t", "ed25519", "-f", host_key.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        let shipped = include_str!("../../sshd_config.d/gatehouse.conf");
        let keys_command = format!("{} --config {} --", gh.keys_bin.display(), gh.config.display());
        let dropin = shipped
            .replace("/usr/bin/gatehouse-keys --", &keys_command)
            .replace(
                "AuthorizedKeysCommandUser gatehouse-keys",
                &format!("AuthorizedKeysCommandUser {}", key_user.name),
            )
            .replace("Match Group gatehouse-users", &format!("Match Group {}", managed.name));
        assert!(dropin.contains(&keys_command) && dropin.contains(&managed.name), "shipped drop-in changed shape");
        let log = gh.dir.join("sshd.log");
        let config = gh.dir.join("sshd_config");
        // `Match` blocks in `extra` go last: everything after a Match belongs to it.
        let (global, matches) = match extra.find("Match ") {
            Some(i) => extra.split_at(i),
            None => (extra, ""),
        };
        gh.share_store_with(&managed.name);
        // The base the benchmarks share (benches/lib.sh), then the tests' own lines.
        let base = include_str!("sshd_config.in")
            .replace("@HOST_KEY@", host_key.to_str().unwrap())
            .replace("@USE_PAM@", if use_pam { "yes" } else { "no" });
        // A port picked free may be taken before sshd binds it; try a few.
        for _ in 0..5 {
            let port = free_port();
            let text = format!(
                "Port {port}\n{base}LogLevel VERBOSE\nMaxStartups 300\nMaxSessions 50\nStrictModes no\n\
                 AuthenticationMethods publickey\nSubsystem sftp /usr/lib/openssh/sftp-server\n{global}\n{dropin}\n{matches}"
            );
            std::fs::write(&config, text).unwrap();
            let mut child = Command::new(program)
                .args(["-D", "-e", "-f", config.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd { child, port, config, log, key_user, managed };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// A system account in the managed group, with the same name added to the store.
    pub fn user(&self, gh: &Gatehouse, store_args: &[&str]) -> SystemUser {
        let user = SystemUser::new("ghu", &gh.dir.path, &[&self.managed.name]);
        let mut args = vec!["user", "add", user.name.as_str()];
        args.extend_from_slice(store_args);
        gh.ok(&args);
        user
    }

    /// `ssh user@127.0.0.1 command` with only `key` offered.
    pub fn ssh(&self, user: &str, key: &Path, command: &[&str]) -> Output {
        self.ssh_command(user, key, command).output().unwrap()
    }

    /// An `ssh` command line for git's GIT_SSH_COMMAND, rsync's `-e` and sftp's `-S`-less
    /// use: this server's port, only `key` offered, no host-key prompts.
    pub fn ssh_line(&self, key: &Path) -> String {
        format!("ssh {} -i {} -p {}", ssh_options().join(" "), key.display(), self.port)
    }

    pub fn ssh_command(&self, user: &str, key: &Path, command: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(ssh_options())
            .args(["-o", "ConnectTimeout=20"])
            .arg("-i")
            .arg(key)
            .args(["-p", &self.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .args(command)
            .stdin(Stdio::null());
        cmd
    }

    /// Tries `ssh user@… true` every 20 ms until it works (how long that took) or `limit`
    /// has passed.
    pub fn wait_for_login(&self, user: &str, key: &Path, limit: Duration) -> Option<Duration> {
        wait_until(Duration::from_millis(20), limit, || self.ssh(user, key, &["true"]).status.success())
    }

    /// `ssh user@… sleep 600`, returned once the user's `sleep` runs: a session that stays
    /// open until something ends it.
    pub fn hold_session(&self, user: &str, key: &Path) -> Child {
        let child =
            self.ssh_command(user, key, &["sleep", "600"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let up = wait_until(Duration::from_millis(10), Duration::from_secs(10), || {
            Command::new("pgrep").args(["-u", user, "-x", "sleep"]).output().unwrap().status.success()
        });
        assert!(up.is_some(), "the session of {user} did not start");
        child
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[web]` section for a gatehoused on 127.0.0.1:`port` over plain http (so cookies
/// without `Secure`), to pass as `Gatehouse::new`'s `extra_config`.
pub fn web_config(port: u16) -> String {
    format!("\n[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\ncookie_secure = false\n")
}

/// The real web service, `gatehoused`, serving a `Gatehouse`'s config on loopback; killed
/// on drop. Its binary lives in the workspace's other package, so `cargo test` does not
/// build it: `cargo build --workspace --bins` (scripts/test) does.
pub struct Gatehoused {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT`, the config's `web.public_url`.
    pub url: String,
    /// Its standard error.
    pub log: PathBuf,
}

impl Gatehoused {
    pub fn binary() -> PathBuf {
        Path::new(env!("CARGO_BIN_EXE_gatehouse")).with_file_name("gatehoused")
    }

    /// Starts it with `gh`'s config, made with `web_config(port)`. Should another process
    /// take that port first, moves to a free one and rewrites the config's `[web]` lines.
    pub fn start(gh: &Gatehouse, port: u16) -> Gatehoused {
        let bin = Gatehoused::binary();
        assert!(
            bin.is_file(),
            "{} is missing: run cargo build --workspace --bins first (scripts/test does)",
            bin.display()
        );
        let log = gh.dir.join("gatehoused.log");
        let mut port = port;
        for _ in 0..5 {
            let mut child = Command::new(&bin)
                .arg("--config")
                .arg(&gh.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            // It says so on standard error once the socket is bound.
            let listening = format!("listening on http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let exited = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if std::fs::read_to_string(&log).unwrap_or_default().contains(&listening) {
                    return Gatehoused { child, port, url: format!("http://127.0.0.1:{port}"), log };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "gatehoused did not listen within 10s: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Exit code 5 with "cannot listen": the port was taken; anything else is a bug.
            assert!(exited.code() == Some(5) && text.contains("cannot listen"), "gatehoused exited ({exited}): {text}");
            let moved = free_port();
            let config = std::fs::read_to_string(&gh.config).unwrap();
            std::fs::write(&gh.config, config.replace(&format!("127.0.0.1:{port}\""), &format!("127.0.0.1:{moved}\"")))
                .unwrap();
            port = moved;
        }
        panic!("gatehoused found no free port: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
}

impl Drop for Gatehoused {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Set in the copy of a test or bench that runs inside [`in_userdb_namespace`].
const USERDB_NAMESPACE: &str = "GATEHOUSE_TEST_USERDB_NAMESPACE";
const USERDB_DIRS: [&str; 2] = ["/run/userdb", "/etc/userdb"];

/// Outside: runs this program again with `args` in a mount namespace of its own
/// (unshare(1)) and returns how that ended. Inside (that copy): mounts empty tmpfs over
/// /run/userdb and /etc/userdb and returns `None`, so systemd user records made there
/// are served by nss-systemd to this copy and what it starts (sshd), and to nobody else.
pub fn in_userdb_namespace(args: &[&str]) -> Option<std::process::ExitStatus> {
    if std::env::var_os(USERDB_NAMESPACE).is_some() {
        for dir in USERDB_DIRS {
            let status = Command::new("mount").args(["-t", "tmpfs", "-o", "mode=0755", "tmpfs", dir]).status();
            assert!(status.is_ok_and(|s| s.success()), "mount tmpfs on {dir}");
        }
        return None;
    }
    // The mount points, where the host has none: made for the run, removed after it.
    let made: Vec<&str> = USERDB_DIRS.into_iter().filter(|d| !Path::new(d).exists()).collect();
    for dir in &made {
        std::fs::create_dir(dir).unwrap();
    }
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args(args)
        .env(USERDB_NAMESPACE, "1")
        .status()
        .unwrap();
    for dir in &made {
        let _ = std::fs::remove_dir(dir);
    }
    Some(status)
}

/// The `[agent]` section for user records in /run/userdb (in place of [`AGENT_USERADD`]).
pub const AGENT_USERDB: &str = "\n[agent]\naccounts = \"userdb\"\nuserdb_dir = \"/run/userdb\"\n";

impl Gatehouse {
    /// The agent makes this instance's accounts as user records (after [`Gatehouse::own_accounts`]).
    pub fn use_userdb(&self) {
        let config = std::fs::read_to_string(&self.config).unwrap().replace(AGENT_USERADD, AGENT_USERDB);
        std::fs::write(&self.config, config).unwrap();
    }
}
