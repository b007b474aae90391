//! `gatehouse doctor`: checks what sshd will check, and what would quietly let a revoked
//! key back in, before a user finds out.

use super::init::store_files;
use crate::config::Config;
use crate::trust::check_owned_path;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One finding.
#[derive(Debug, Clone)]
pub struct Finding {
    pub verdict: Verdict,
    pub text: String,
}

/// Where to find sshd and its configuration.
pub struct DoctorOptions<'a> {
    pub sshd: &'a Path,
    pub sshd_config: Option<&'a Path>,
    /// Evaluate sshd's `Match` blocks for this user; default: the first store user with a
    /// system account.
    pub user: Option<&'a str>,
}

struct Report(Vec<Finding>);

impl Report {
    fn ok(&mut self, text: impl Into<String>) {
        self.0.push(Finding { verdict: Verdict::Ok, text: text.into() });
    }
    fn warn(&mut self, text: impl Into<String>) {
        self.0.push(Finding { verdict: Verdict::Warn, text: text.into() });
    }
    fn fail(&mut self, text: impl Into<String>) {
        self.0.push(Finding { verdict: Verdict::Fail, text: text.into() });
    }
}

/// Whether the store holds names Gatehouse must never serve (root, a service account, an
/// account outside the uid range): the login path refuses them anyway, but such an entry
/// is a mistake or an attack, and its keys would work on a host with an older drop-in.
fn served_names(r: &mut Report, config: &Config, store: &crate::store::sqlite::SqliteStore) {
    use crate::store::AdminStore;
    let users = match store.users() {
        Ok(u) => u,
        Err(e) => return r.fail(e.to_string()),
    };
    let refused: Vec<String> =
        users.iter().filter_map(|u| crate::names::check(config, &u.name).err()).map(|e| e.to_string()).collect();
    match refused.as_slice() {
        [] => r.ok(format!("no store user has a reserved name or a system account's ({} checked)", users.len())),
        [first, rest @ ..] => r.fail(format!(
            "{} store user(s) must never be served: {first}{}; remove them with `gatehouse user remove`",
            refused.len(),
            if rest.is_empty() { String::new() } else { format!(" (and {} more)", rest.len()) }
        )),
    }
}

/// Whether `git.root` takes POSIX ACLs, which gatehouse-agent turns grants into: a probe
/// file there gets an entry and goes (root only; others cannot write there).
fn git_root_acls(r: &mut Report, config: &Config) {
    let root = &config.git.root;
    if !std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        return r.warn(format!("git.root {} is not a folder: grants give no file access", root.display()));
    }
    if !nix::unistd::geteuid().is_root() {
        return r.warn(format!("not root: cannot probe whether git.root {} takes POSIX ACLs", root.display()));
    }
    match crate::agent::grants::probe(root) {
        Ok(()) => r.ok(format!("git.root {} takes POSIX ACLs: grants become file access", root.display())),
        Err(e) => r.warn(format!("{e}; grants are decided by gatehouse-shell but give grantees no file access")),
    }
}

/// Accounts looked up for the login-shell check: each is an NSS lookup.
const LOGIN_SHELL_SAMPLE: usize = 1000;

/// Whether gatehouse-agent runs on this host (a process of that name; the kernel keeps 15
/// characters of a name, which is exactly its length).
fn agent_running(r: &mut Report) {
    let agents: Vec<String> = crate::agent::sessions::processes()
        .into_iter()
        .filter(|p| p.comm == "gatehouse-agent")
        .map(|p| p.pid.to_string())
        .collect();
    if agents.is_empty() {
        r.warn(
            "gatehouse-agent is not running: accounts and data folders follow the store only through \
             `gatehouse provision` and the PAM module, and the sessions of disabled users and removed keys go on",
        );
    } else {
        r.ok(format!("gatehouse-agent runs (pid {})", agents.join(", ")));
    }
}

/// How the agent makes accounts here, and whether that can work.
fn accounts_mode(r: &mut Report, config: &Config) {
    let dir = &config.agent.userdb_dir;
    if !crate::agent::userdb::in_force(config) {
        r.ok(
            "accounts: useradd (agent.accounts, or nss-systemd not in the passwd and group lines of              /etc/nsswitch.conf): accounts are lines in /etc/passwd",
        );
        return;
    }
    let shown = dir.display().to_string();
    if !crate::agent::userdb::NSS_SYSTEMD_DIRS.contains(&shown.as_str()) {
        r.warn(format!(
            "accounts: userdb, but agent.userdb_dir {shown} is not a folder nss-systemd reads ({}):              the records made there serve no one",
            crate::agent::userdb::NSS_SYSTEMD_DIRS.join(", ")
        ));
    } else if !crate::agent::userdb::nss_systemd_serves(
        &std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default(),
    ) {
        r.fail("accounts: userdb (agent.accounts), but /etc/nsswitch.conf does not ask systemd for passwd and group:                 add `systemd` to both lines (Debian: apt install libnss-systemd)");
    } else {
        r.ok(format!("accounts: userdb (systemd user records in {shown}, served by nss-systemd)"));
        let records = crate::agent::userdb::existing(dir).map(|e| e.users.len()).unwrap_or(0);
        if records > USERDB_RECORDS_WARN {
            r.warn(format!(
                "{records} user records in {shown}: nss-systemd scans its folders at every group lookup, so each \
                 login's initgroups takes ~80 ms at 10,000 records and ~0.4-1 s at 100,000; \
                 above {USERDB_RECORDS_WARN} users, agent.accounts = \"useradd\" is faster"
            ));
        }
    }
}

/// Records above which userdb mode costs logins more than it saves (see gatehouse-agent(8)).
const USERDB_RECORDS_WARN: usize = 10_000;

/// Users the store has not given a uid (stores from before uids were allocated).
fn users_without_uid(r: &mut Report, users: &[crate::store::User]) {
    let missing: Vec<&str> = users.iter().filter(|u| u.uid.is_none()).map(|u| u.name.as_str()).take(5).collect();
    if !missing.is_empty() {
        r.warn(format!(
            "users without a uid in the store (first {}: {}): run `gatehouse init` to give them one",
            missing.len(),
            missing.join(", ")
        ));
    }
}

/// Whether enabled users' accounts have gatehouse-shell as their login shell: with another
/// shell, sshd starts that shell, and its startup files, before every session.
fn login_shells(r: &mut Report, config: &Config, store: &crate::store::sqlite::SqliteStore) {
    use crate::store::AdminStore;
    let users = store.users().unwrap_or_default();
    users_without_uid(r, &users);
    let mut checked = 0;
    let mut others: Vec<String> = Vec::new();
    for u in users.iter().filter(|u| u.state == crate::domain::UserState::Enabled).take(LOGIN_SHELL_SAMPLE) {
        let Ok(Some(account)) = nix::unistd::User::from_name(&u.name) else { continue };
        checked += 1;
        let ours = config.shell.is_ours(&account.shell);
        if !ours {
            others.push(format!("{}: {}", u.name, account.shell.display()));
        }
    }
    let of = if users.len() > LOGIN_SHELL_SAMPLE {
        format!(" (the first {LOGIN_SHELL_SAMPLE} users)")
    } else {
        String::new()
    };
    match (checked, others.len()) {
        (0, _) => {}
        (n, 0) => r.ok(format!("all {n} accounts checked{of} have gatehouse-shell as their login shell")),
        (n, k) => r.warn(format!(
            "{k} of {n} accounts checked{of} have another login shell ({}{}): sshd starts it, and its startup files, \
             before gatehouse-shell in every session; see \"Login shell\" in gatehouse-shell(8)",
            others.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
            if k > 3 { ", ..." } else { "" }
        )),
    }
}

/// `sshd -T`: the effective server configuration, keyword → value(s).
fn sshd_effective(options: &DoctorOptions<'_>, user: Option<&str>) -> Result<HashMap<String, Vec<String>>, String> {
    let mut cmd = Command::new(options.sshd);
    cmd.arg("-T");
    if let Some(cfg) = options.sshd_config {
        cmd.arg("-f").arg(cfg);
    }
    if let Some(user) = user {
        // sshd's Match blocks apply per connection; -C evaluates them for one.
        cmd.arg("-C").arg(format!("user={user},host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport=22"));
    }
    let output = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{}: {e}", options.sshd.display()))?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(format!("`sshd -T` failed: {}", err.lines().last().unwrap_or("no message").trim()));
    }
    let mut settings: HashMap<String, Vec<String>> = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some((k, v)) = line.split_once(' ') {
            settings.entry(k.to_ascii_lowercase()).or_default().push(v.to_string());
        }
    }
    Ok(settings)
}

fn first<'a>(settings: &'a HashMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    settings.get(key).and_then(|v| v.first()).map(String::as_str)
}

/// Runs every check; the caller prints the findings.
/// Where the programs' log lines go, found as they find it (log.target).
fn log_destination(r: &mut Report, config: &Config) {
    let log = &config.log;
    match crate::log::Logger::open("gatehouse", config).destination() {
        "syslog" => {
            r.ok(format!("log lines go to syslog at {} (log.target {})", log.socket.display(), log.target.as_str()))
        }
        "journal" => r.ok(format!(
            "log lines go to the journal at {} (log.target {}), each pair a GATEHOUSE_* field",
            log.journal_socket.display(),
            log.target.as_str()
        )),
        _ if log.target == crate::config::LogTarget::Stderr => {
            r.warn("log.target stderr: sshd discards gatehouse-keys' standard error, so its decisions are not kept")
        }
        _ => r.warn(format!(
            "neither syslog ({}) nor the journal ({}) answers: log lines go to standard error only, \
             where sshd discards gatehouse-keys' and gatehouse-shell's would reach the user (they are dropped)",
            log.socket.display(),
            log.journal_socket.display()
        )),
    }
}

pub fn diagnose(config: &Config, options: &DoctorOptions<'_>) -> Vec<Finding> {
    let mut r = Report(Vec::new());
    match &config.source {
        Some(p) => r.ok(format!("config {} parsed and trusted", p.display())),
        None => r.warn(format!("no config file at {}; defaults in use", crate::config::DEFAULT_PATH)),
    }
    log_destination(&mut r, config);

    // Store and the files a read-only reader needs.
    for file in store_files(&config.store.path) {
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o002 != 0 => {
                r.fail(format!("{}: world-writable (mode {:04o})", file.display(), meta.mode() & 0o7777))
            }
            Ok(meta) => r.ok(format!(
                "{} exists (uid {}, gid {}, mode {:04o})",
                file.display(),
                meta.uid(),
                meta.gid(),
                meta.mode() & 0o7777
            )),
            Err(e) => r.fail(format!(
                "{}: {e}; read-only readers need the store and its -wal and -shm files (run `gatehouse init`)",
                file.display()
            )),
        }
    }
    // The audit trail says who did what from where: its owner's alone.
    let trail = crate::store::sqlite::audit_path(&config.store.path);
    match std::fs::metadata(&trail) {
        Ok(meta) if meta.mode() & 0o077 != 0 => r.fail(format!(
            "{}: mode {:04o}; the audit trail must be readable by its owner alone (chmod 0600, or run `gatehouse init`)",
            trail.display(),
            meta.mode() & 0o7777
        )),
        Ok(meta) => r.ok(format!("{} is its owner's alone (uid {}, mode {:04o})", trail.display(), meta.uid(), meta.mode() & 0o7777)),
        Err(e) => r.warn(format!("{}: {e}; the next change to the store makes it", trail.display())),
    }
    agent_running(&mut r);
    accounts_mode(&mut r, config);
    let mut sample_user = options.user.map(str::to_string);
    match crate::store::sqlite::SqliteStore::open_reader(&config.store.path, config.store.busy_timeout_ms) {
        Ok(store) => {
            r.ok(format!("store opens read-only, schema version {}", crate::store::current_version()));
            if let Some(ldap) = &config.ldap {
                use crate::store::AdminStore;
                let now = crate::time::now();
                match store.sync_state("ldap") {
                    Ok(Some(s)) => match s.last_success {
                        Some(t) if now.saturating_duration_since(t) <= ldap.staleness_max => {
                            r.ok(format!("last directory sync {t} ({} s ago)", now.secs_since(t)))
                        }
                        last => r.fail(format!(
                            "directory data is stale (last success {}, ldap.staleness_max {} s): directory users are refused{}",
                            last.map_or_else(|| "never".into(), |t| t.to_string()),
                            ldap.staleness_max.as_secs(),
                            s.last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
                        )),
                    },
                    Ok(None) => r.fail("[ldap] is configured but no sync has run: run `gatehouse ldap sync`"),
                    Err(e) => r.fail(e.to_string()),
                }
            }
            if let Some(shared) = &config.shared {
                use crate::store::AdminStore;
                let now = crate::time::now();
                match store.sync_state(crate::domain::SOURCE_SHARED) {
                    Ok(Some(s)) => match s.last_success {
                        Some(t) if now.saturating_duration_since(t) <= shared.staleness_max => r.ok(format!(
                            "last mirror of the source {t} ({} s ago, change {})",
                            now.secs_since(t),
                            s.high_water.unwrap_or_default()
                        )),
                        last => r.fail(format!(
                            "the copy of the source is stale (last success {}, source.staleness_max {} s): its users \
                             are refused{}",
                            last.map_or_else(|| "never".into(), |t| t.to_string()),
                            shared.staleness_max.as_secs(),
                            s.last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
                        )),
                    },
                    Ok(None) => {
                        r.fail("[source] is configured but nothing was mirrored yet: is gatehouse-agent running?")
                    }
                    Err(e) => r.fail(e.to_string()),
                }
                #[cfg(feature = "postgres")]
                match crate::store::postgres::PgStore::open(shared, config.users.uid_range()) {
                    Ok(_) => r.ok(format!(
                        "source {} answers, schema version {}",
                        shared.url,
                        crate::store::postgres::current_version()
                    )),
                    Err(e) => r.fail(format!("source: {e}")),
                }
            }
            served_names(&mut r, config, &store);
            login_shells(&mut r, config, &store);
            if sample_user.is_none() {
                use crate::store::AdminStore;
                sample_user = store
                    .users()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|u| u.name)
                    .find(|name| matches!(nix::unistd::User::from_name(name), Ok(Some(_))));
            }
        }
        Err(e) => r.fail(e.to_string()),
    }

    // The forced command.
    let shell = Path::new(&config.shell.path);
    match std::fs::metadata(shell) {
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            r.fail(format!("shell.path {}: not executable", shell.display()))
        }
        Ok(_) => match check_owned_path(shell, &[]) {
            Ok(()) => r.ok(format!("shell.path {} is root-owned and not writable by others", shell.display())),
            Err(e) => r.fail(format!("shell.path: {e}")),
        },
        Err(e) => r.fail(format!("shell.path {}: {e}", shell.display())),
    }

    // What the forced command serves, and the wall around it.
    let mut programs = vec![
        ("git.program", &config.git.program),
        ("sftp.program", &config.sftp.program),
        ("rsync.program", &config.rsync.program),
    ];
    if let Some(login_shell) = &config.shell.login_shell {
        programs.push(("shell.login_shell", login_shell));
    }
    for (key, program) in programs {
        match std::fs::metadata(program) {
            Ok(meta) if meta.permissions().mode() & 0o111 != 0 => r.ok(format!("{key} {} is there", program.display())),
            _ => r.warn(format!("{key} {}: not an executable file; that service will fail", program.display())),
        }
    }
    if crate::forced::confine::kernel_has_landlock() {
        r.ok("Landlock is available: sessions without shell scope are confined to their folder")
    } else {
        r.warn("Landlock is not available on this kernel: sessions without shell scope rely on the argument allow-lists alone")
    }

    // Grants become ACLs on the repositories (gatehouse-agent): the file system must take them.
    git_root_acls(&mut r, config);

    // The jail, as sshd will check it at every jailed login.
    if config.jail.group.is_some() {
        match crate::session::datadir::check_jail_root(&config.jail.root) {
            Ok(()) => r.ok(format!("jail.root {} is root's and writable by root alone", config.jail.root.display())),
            Err(e) => r.fail(e),
        }
    }

    // What sshd will do.
    match &sample_user {
        Some(u) => r.ok(format!("evaluating sshd's configuration for user {u}")),
        None => r.warn("no store user has a system account; sshd's Match blocks are not evaluated (use --user)"),
    }
    let settings = match sshd_effective(options, sample_user.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            r.fail(format!("cannot read sshd's effective configuration: {e}"));
            return r.0;
        }
    };
    let command = first(&settings, "authorizedkeyscommand").unwrap_or("none");
    let words: Vec<&str> = command.split_whitespace().collect();
    let program = words.first().copied().unwrap_or("none");
    if command == "none" && sample_user.is_none() {
        // A drop-in scoped to `Match Group users.group` (the package's) names the key
        // command for members only, and there is none yet to evaluate sshd for.
        r.warn(format!(
            "sshd names no AuthorizedKeysCommand outside a Match block; with none of the store's users on this \
             system yet, a Match Group {} block is not evaluated: run doctor again after the first user (or --user)",
            config.users.group
        ));
    } else if command == "none" || !program.ends_with("/gatehouse-keys") {
        r.fail(format!(
            "sshd's AuthorizedKeysCommand is `{command}`, not gatehouse-keys (sshd uses the first one it reads)"
        ));
    } else {
        r.ok(format!("sshd runs {command}"));
        let tokens: Vec<&str> = words.iter().copied().filter(|w| w.starts_with('%')).collect();
        if tokens != ["%u", "%U", "%f", "%t", "%k"] {
            r.fail(format!(
                "AuthorizedKeysCommand passes `{}`, not `%u %U %f %t %k`: without %U gatehouse-keys serves no key \
                 (it must see the uid to refuse system accounts)",
                tokens.join(" ")
            ));
        }
        match check_owned_path(Path::new(program), &[]) {
            Ok(()) => r.ok(format!("{program} and its folders are root-owned and not writable by others")),
            Err(e) => r.fail(format!("sshd will refuse the key command: {e}")),
        }
        probe_key_command(&mut r, &settings, &words);
    }
    match first(&settings, "authorizedkeysfile") {
        Some("none") => r.ok("AuthorizedKeysFile none: the store is the only source of keys"),
        Some(files) => r.warn(format!(
            "AuthorizedKeysFile {files}: keys in those files are accepted too, and a key revoked in the store still works if it is also there"
        )),
        None => {}
    }
    if first(&settings, "exposeauthinfo") != Some("yes") {
        r.warn("ExposeAuthInfo is off: sessions cannot tell which key logged in");
    }
    jail_settings(&mut r, config, options);
    r.0
}

/// What sshd gives a jailed user: a chroot, and no forwarding. gatehouse-keys withholds
/// forwarding from jailed users' key lines in any case; this says whether sshd agrees.
fn jail_settings(r: &mut Report, config: &Config, options: &DoctorOptions<'_>) {
    let Some(group) = &config.jail.group else { return };
    let Ok(Some(g)) = nix::unistd::Group::from_name(group) else {
        return r.warn(format!("jail.group {group} does not exist"));
    };
    let Some(member) = g.mem.first() else {
        return r.ok(format!("jail.group {group} has no members to evaluate sshd's configuration for"));
    };
    match sshd_effective(options, Some(member)) {
        Ok(settings) => {
            if first(&settings, "chrootdirectory").is_none_or(|c| c == "none") {
                r.warn(format!(
                    "sshd gives jailed user {member} no ChrootDirectory: see \"Jails\" in pam_gatehouse(8)"
                ));
            }
            match first(&settings, "allowtcpforwarding") {
                Some("no") => r.ok(format!("sshd gives jailed user {member} no TCP forwarding")),
                other => r.warn(format!(
                    "sshd gives jailed user {member} AllowTcpForwarding {}: gatehouse-keys withholds forwarding from \
                     jailed users' key lines, but put `AllowTcpForwarding no` in the jail's Match block, ahead of \
                     the gatehouse drop-in",
                    other.unwrap_or("yes")
                )),
            }
        }
        Err(e) => r.warn(format!("cannot evaluate sshd's configuration for jailed user {member}: {e}")),
    }
}

/// Runs the key command as its configured user, to prove that user can read the store.
fn probe_key_command(r: &mut Report, settings: &HashMap<String, Vec<String>>, words: &[&str]) {
    let Some(user) = first(settings, "authorizedkeyscommanduser").filter(|u| *u != "none") else {
        r.fail("AuthorizedKeysCommandUser is not set; sshd will not run the key command");
        return;
    };
    let gid = match nix::unistd::User::from_name(user) {
        Ok(Some(account)) => account.gid.to_string(),
        _ => {
            r.fail(format!("AuthorizedKeysCommandUser {user} does not exist"));
            return;
        }
    };
    if !nix::unistd::geteuid().is_root() {
        r.warn(format!("not root: cannot run the key command as {user} to prove it can read the store"));
        return;
    }
    // setpriv --init-groups gives the probe the supplementary groups sshd would give it.
    let args: Vec<&str> = words[1..]
        .iter()
        .filter(|w| !["%f", "%t", "%k"].contains(w))
        .map(|w| match *w {
            "%u" => "gatehouse-doctor-probe",
            "%U" => "4294967294",
            w => w,
        })
        .collect();
    let output = Command::new("setpriv")
        .args(["--reuid", user, "--regid", &gid, "--init-groups", "--"])
        .arg(words[0])
        .args(&args)
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(o) if o.status.success() => r.ok(format!("the key command runs as {user} and reads the store")),
        Ok(o) => r.fail(format!(
            "the key command as {user} exited with {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("see syslog").trim()
        )),
        Err(e) => r.warn(format!("cannot run setpriv to probe the key command: {e}")),
    }
}

/// Prints findings; returns true when none failed.
pub fn print(findings: &[Finding], out: &mut dyn Write) -> std::io::Result<bool> {
    for f in findings {
        let tag = match f.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        writeln!(out, "{tag} {}", f.text)?;
    }
    Ok(!findings.iter().any(|f| f.verdict == Verdict::Fail))
}
