//! `gatehouse-shell`: the forced command every key line carries.
//!
//! sshd runs it as the logged-in user with the key's fingerprint in its arguments (we wrote
//! them into the key line ourselves), so it knows which key authenticated without trusting
//! the environment. It checks the store again and decides what may run.

use crate::authorized::usable_scope;
use crate::command::{self, GitVerb, Refused, Request, MAX_COMMAND};
use crate::config::Config;
use crate::confine::Confinement;
use crate::keys::is_fingerprint;
use crate::policy::{Scope, UserState};
use crate::repo::{self, Access};
use crate::store::LoginStore;
use crate::time::Timestamp;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const USAGE: &str = "usage: gatehouse-shell [--config FILE] --key FINGERPRINT";

/// Exit codes, as documented in gatehouse-shell(8).
pub mod exit {
    /// Refused: scope, revoked key, disabled user.
    pub const REFUSED: u8 = 1;
    /// Usage error (the key line was not written by gatehouse-keys).
    pub const USAGE: u8 = 2;
    /// Configuration error.
    pub const CONFIG: u8 = 3;
    /// The store could not be read.
    pub const STORE: u8 = 4;
    /// The program to run could not be started.
    pub const EXEC: u8 = 5;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellArgs {
    pub config: Option<PathBuf>,
    pub fingerprint: String,
}

/// How gatehouse-shell was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// As the forced command of a key line: directly, or through `-c` as the login shell.
    Forced(ShellArgs),
    /// As the account's login shell for anything but a key line (a password login, `su`,
    /// cron): `command` is the `-c` argument, `None` for an interactive login.
    LoginShell { config: Option<PathBuf>, command: Option<String> },
}

pub fn parse_args(args: &[OsString]) -> Result<Invocation, String> {
    // As a login shell, sshd runs us as `gatehouse-shell -c "<the forced command>"`: no
    // other shell, and so no startup file, ever runs for the account. The forced command is
    // one we wrote (plain words), naming this program; any other command, or none, is a
    // login that did not come through a key line.
    let (config, rest) = match args {
        [flag, file, rest @ ..] if flag == "--config" && is_login(rest) => (Some(PathBuf::from(file)), rest),
        _ => (None, args),
    };
    match rest {
        [] => return Ok(Invocation::LoginShell { config, command: None }),
        [flag, command] if flag == "-c" => {
            let command = command.to_str().ok_or("-c: not UTF-8")?;
            let mut words = command.split(' ').filter(|w| !w.is_empty()).peekable();
            // Key lines say `exec PROGRAM …` for the shells that would fork otherwise.
            words.next_if_eq(&"exec");
            let program = words.next();
            let named_so = program.is_some_and(|p| crate::config::is_gatehouse_shell(Path::new(p)));
            // shell.path may name the program otherwise; its `--key FINGERPRINT` still tells.
            let all: Vec<&str> = command.split(' ').collect();
            let has_key = all.windows(2).any(|w| w[0] == "--key" && is_fingerprint(w[1]));
            if !named_so && !has_key {
                return Ok(Invocation::LoginShell { config, command: Some(command.to_string()) });
            }
            if config.is_some() {
                return Err("--config: the forced command names its own".to_string());
            }
            let inner: Vec<OsString> = words.map(OsString::from).collect();
            return match parse_options(&inner)? {
                Some(forced) => Ok(Invocation::Forced(forced)),
                None => Err("-c: the forced command has no --key".to_string()),
            };
        }
        _ => {}
    }
    match parse_options(args)? {
        Some(forced) => Ok(Invocation::Forced(forced)),
        None => Err("--key is required".to_string()),
    }
}

/// Whether `rest` is what follows a login shell's options: nothing, or `-c COMMAND`.
fn is_login(rest: &[OsString]) -> bool {
    rest.is_empty() || (rest.len() == 2 && rest[0] == "-c")
}

/// `[--config FILE] --key FINGERPRINT`; `None` without `--key`.
fn parse_options(args: &[OsString]) -> Result<Option<ShellArgs>, String> {
    let mut config = None;
    let mut fingerprint = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--config") => config = Some(PathBuf::from(it.next().ok_or("--config needs a file")?)),
            Some(a) if a.starts_with("--config=") => config = Some(PathBuf::from(&a["--config=".len()..])),
            Some("--key") => {
                let fp = it.next().and_then(|f| f.to_str()).ok_or("--key needs a fingerprint")?;
                if !is_fingerprint(fp) {
                    return Err("--key: not a SHA256 fingerprint".to_string());
                }
                fingerprint = Some(fp.to_string());
            }
            _ => return Err(format!("unexpected argument `{}`", arg.to_string_lossy().escape_debug())),
        }
    }
    Ok(fingerprint.map(|fingerprint| ShellArgs { config, fingerprint }))
}

/// A program to run in place of gatehouse-shell, fully decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlan {
    /// What the client asked for, for the log: `git-upload-pack`, `sftp`, `rsync`.
    pub verb: &'static str,
    /// The repository or folder served, for the log.
    pub target: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The child's whole environment.
    pub env: Vec<(String, String)>,
    /// `None`: not confined (sftp and rsync for a shell key).
    pub confine: Option<Confinement>,
    /// Create this bare repository first (a first push into one's own root).
    pub init_bare: Option<PathBuf>,
    /// Remove what killed pushes left in this repository's quarantine first.
    pub sweep_quarantine: Option<PathBuf>,
}

/// What to do for this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the user's login shell: interactive when `command` is `None`, else `-c command`.
    Shell { command: Option<String> },
    /// Run a served program directly, no shell in between.
    Exec(ExecPlan),
    /// Print `message` to the client and exit with `code`; `reason` goes to the log.
    Refuse { message: String, reason: &'static str, code: u8 },
}

/// Who is logging in, with which key, asking for what.
pub struct Session<'a> {
    pub user: &'a str,
    /// The account's uid, from the kernel (not from the store or the environment).
    pub uid: u32,
    pub fingerprint: &'a str,
    /// `SSH_ORIGINAL_COMMAND`, when the client asked for a command.
    pub command: Option<&'a str>,
    /// The user's system groups, for `@group` grants; asked only when a grant could
    /// matter (someone else's repository), since each name is a lookup through NSS.
    pub groups: &'a dyn Fn() -> Vec<String>,
    /// The environment sshd gave the session.
    pub env: &'a [(String, String)],
    pub now: Timestamp,
}

/// The PATH served programs get.
pub const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn printable(value: &str) -> bool {
    value.len() <= 256 && !value.chars().any(char::is_control)
}

/// The environment handed to a served program: an allow-list. Nothing that steers git
/// (`GIT_DIR`, `GIT_CONFIG_*`), the loader (`LD_*`) or a shell survives.
pub fn child_env(session: &Session<'_>) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), SAFE_PATH.to_string())];
    for (key, value) in session.env {
        let keep = match key.as_str() {
            "HOME" | "USER" | "LOGNAME" | "LANG" | "LC_ALL" | "TZ" | "SSH_CONNECTION" | "SSH_CLIENT" => {
                printable(value)
            }
            k if k.starts_with("LC_") && k[3..].bytes().all(|b| b.is_ascii_uppercase()) => printable(value),
            // Protocol v2: `version=2`, possibly with more `key=value` items joined by `:`.
            "GIT_PROTOCOL" => {
                !value.is_empty()
                    && value.len() <= 64
                    && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"=:._-".contains(&b))
            }
            _ => false,
        };
        if keep {
            env.push((key.clone(), value.clone()));
        }
    }
    // The user's own git configuration is not read by served git: it could point git at
    // programs to run, and the confinement would hide it anyway.
    env.push(("GIT_CONFIG_GLOBAL".to_string(), "/dev/null".to_string()));
    env
}

fn refuse(message: impl Into<String>, reason: &'static str) -> Action {
    Action::Refuse { message: message.into(), reason, code: exit::REFUSED }
}

fn stale() -> Action {
    refuse(
        "Your account comes from the directory, which has been out of reach too long; try again later.",
        "directory-stale",
    )
}

fn greeting(session: &Session<'_>) -> Action {
    let message = match session.fingerprint {
        NO_KEY => {
            format!("Hi {}! You've authenticated, but shell access is not enabled for this account.", session.user)
        }
        fp => format!(
            "Hi {}! You've authenticated with key {fp}, but shell access is not enabled for this key.",
            session.user
        ),
    };
    refuse(message, "no-shell-access")
}

/// `root` joined with `below`, if that is a folder and no component of `below` is a
/// symbolic link. Links in `root` itself are the operator's (e.g. /data -> /srv/data).
fn real_dir_below(root: &Path, below: &[&str]) -> Option<PathBuf> {
    let mut current = root.to_path_buf();
    if !current.is_dir() {
        return None;
    }
    for component in below {
        if component.is_empty() || *component == "." || *component == ".." || component.contains('/') {
            return None;
        }
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_dir() => {}
            _ => return None,
        }
    }
    Some(current)
}

/// The user's data folder, if it exists as a real folder (the part that `%u` names is
/// checked for links; the configured prefix is the operator's).
fn data_folder(config: &Config, user: &str) -> Option<PathBuf> {
    let path = config.data_dir_of(user);
    let template = Path::new(&config.data_dir);
    // The components from the first one holding %u down are the user's to check.
    let split = template.components().position(|c| c.as_os_str().to_string_lossy().contains("%u"))?;
    let root: PathBuf = path.components().take(split).collect();
    let below: Vec<String> =
        path.components().skip(split).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let below: Vec<&str> = below.iter().map(String::as_str).collect();
    real_dir_below(&root, &below)
}

/// A refusal for an account Gatehouse never serves, whatever the store says: a name that
/// fails the name rule or is reserved, uid 0, or a uid below `users.uid_min`.
fn not_served(config: &Config, session: &Session<'_>) -> Option<Action> {
    if !config.valid_user_name(session.user) {
        return Some(refuse("Your account name is not one Gatehouse serves.", "bad-user-name"));
    }
    if !crate::names::uid_served(config, session.uid) || crate::names::is_reserved(session.user) {
        return Some(refuse("This account is not one Gatehouse serves.", "system-account"));
    }
    None
}

/// Decides what the session may do, from the store alone.
pub fn decide(config: &Config, store: &dyn LoginStore, session: &Session<'_>) -> Result<Action, String> {
    let revoked =
        || refuse(format!("Key {} is no longer valid for {}.", session.fingerprint, session.user), "key-not-valid");
    if let Some(refusal) = not_served(config, session) {
        return Ok(refusal);
    }
    let Some(view) = store.login_view(session.user, Some(session.fingerprint)).map_err(|e| e.to_string())? else {
        return Ok(revoked());
    };
    let Some(key) = view.keys.first() else {
        return Ok(revoked());
    };
    if !view.fresh(config.ldap.as_ref().map(|l| l.staleness_max), session.now) {
        return Ok(stale());
    }
    let scope = match usable_scope(&view.user, key, session.now) {
        Ok(scope) => scope,
        Err(refusal) => {
            return Ok(refuse(
                format!("Key {} is no longer valid for {}.", session.fingerprint, session.user),
                refusal.as_str(),
            ))
        }
    };
    decide_for_scope(config, store, session, scope)
}

/// What `scope` lets the session run: the key's effective scope, or, for a login that did
/// not come through a key line, the account's policy.
fn decide_for_scope(
    config: &Config,
    store: &dyn LoginStore,
    session: &Session<'_>,
    scope: Scope,
) -> Result<Action, String> {
    if scope != Scope::Shell && session.command.is_some_and(|c| c.len() > MAX_COMMAND) {
        return Ok(refuse(format!("Command longer than {MAX_COMMAND} bytes refused."), "command-too-long"));
    }
    let request = match command::parse(session.command) {
        Ok(r) => r,
        // A shell key may run anything its shell accepts; the parse only serves the others.
        Err(_) if scope == Scope::Shell => Request::Other(session.command.unwrap_or_default().to_string()),
        Err(Refused(why)) => return Ok(refuse(format!("Refused: {why}."), "bad-command")),
    };
    // A shell key asking git for a path that is not OWNER/NAME.git means a repository of
    // its own (e.g. in its home): its shell serves that, as it would without Gatehouse.
    let request = match request {
        Request::Git { path, .. }
            if scope == Scope::Shell && repo::parse_repo_path(&path, |o| config.valid_user_name(o)).is_err() =>
        {
            Request::Other(session.command.unwrap_or_default().to_string())
        }
        other => other,
    };
    let confined = scope != Scope::Shell;
    match request {
        Request::Interactive | Request::Other(_) if scope == Scope::Shell => {
            Ok(Action::Shell { command: session.command.map(str::to_string) })
        }
        Request::Interactive | Request::Other(_) => Ok(greeting(session)),
        Request::Git { verb, path } => {
            if !scope.includes(Scope::GitRead) {
                return Ok(refuse("Git is not enabled for this key.", "scope"));
            }
            if verb.writes() && !scope.includes(Scope::Git) {
                return Ok(refuse("This key is read-only: pushing is not enabled for it.", "read-only-key"));
            }
            git_plan(config, store, session, verb, &path)
        }
        Request::Sftp | Request::Rsync { .. } => {
            if !scope.includes(Scope::Files) {
                return Ok(refuse("File transfer is not enabled for this key.", "scope"));
            }
            let Some(data) = data_folder(config, session.user) else {
                let shown = config.data_dir_of(session.user);
                return Ok(refuse(
                    format!("Your data folder {} does not exist yet.", shown.display()),
                    "no-data-folder",
                ));
            };
            let (verb, program, args): (_, _, Vec<OsString>) = match request {
                Request::Rsync { args } => {
                    ("rsync", config.rsync_program.clone(), args.into_iter().map(Into::into).collect())
                }
                _ => (
                    "sftp",
                    config.sftp_program.clone(),
                    [
                        "-d".into(),
                        data.clone().into_os_string(),
                        "-f".into(),
                        "AUTHPRIV".into(),
                        "-l".into(),
                        "INFO".into(),
                    ]
                    .into(),
                ),
            };
            Ok(Action::Exec(ExecPlan {
                verb,
                target: data.display().to_string(),
                program,
                args,
                cwd: data.clone(),
                env: child_env(session),
                confine: confined.then(|| Confinement { read_write: vec![data], read_only: vec![] }),
                init_bare: None,
                sweep_quarantine: None,
            }))
        }
    }
}

/// The fingerprint of a session that did not come through a key line, as logged.
pub const NO_KEY: &str = "-";

/// Decides a session that did not come through a key line, with gatehouse-shell as the
/// account's login shell (a password login, `su`, cron): the account's own policy is its
/// scope, so a `files` user gets sftp and rsync, a `git` user git, and only a `shell` user
/// a shell (`shell.login_shell`).
pub fn decide_login_shell(config: &Config, store: &dyn LoginStore, session: &Session<'_>) -> Result<Action, String> {
    if let Some(refusal) = not_served(config, session) {
        return Ok(refusal);
    }
    let Some(view) = store.login_view(session.user, None).map_err(|e| e.to_string())? else {
        return Ok(refuse("This account is not served by Gatehouse.", "not-in-store"));
    };
    if !view.fresh(config.ldap.as_ref().map(|l| l.staleness_max), session.now) {
        return Ok(stale());
    }
    if view.user.state != UserState::Enabled {
        return Ok(refuse(format!("Account {} is disabled.", session.user), "user-disabled"));
    }
    decide_for_scope(config, store, session, view.user.policy)
}

fn git_plan(
    config: &Config,
    store: &dyn LoginStore,
    session: &Session<'_>,
    verb: GitVerb,
    path: &str,
) -> Result<Action, String> {
    let repo = match repo::parse_repo_path(path, |o| config.valid_user_name(o)) {
        Ok(r) => r,
        Err(why) => return Ok(refuse(why, "bad-repository-path")),
    };
    // The same words for a forbidden repository and a missing one; the log tells them apart.
    let not_found =
        |reason| refuse(format!("Repository {} not found, or you do not have access to it.", repo.relative()), reason);
    let grants = if repo.owner == session.user {
        Vec::new()
    } else {
        let mut subjects = vec![session.user.to_string()];
        subjects.extend((session.groups)().into_iter().map(|g| format!("@{g}")));
        // Groups known from the directory, for sites without NSS for it.
        subjects.extend(store.groups_of(session.user).map_err(|e| e.to_string())?.into_iter().map(|g| format!("@{g}")));
        store.grants_for(&subjects).map_err(|e| e.to_string())?
    };
    let need = if verb.writes() { Access::Write } else { Access::Read };
    let Some(granted) = repo::access(session.user, &repo, &grants) else {
        return Ok(not_found("no-access"));
    };
    if granted < need {
        return Ok(not_found("no-access"));
    }
    let dir = config.git_root.join(&repo.owner).join(&repo.name);
    let mut init_bare = None;
    let found = real_dir_below(&config.git_root, &[&repo.owner, &repo.name]);
    if found.is_none() || !dir.join("HEAD").is_file() {
        let own_first_push = verb.writes() && repo.owner == session.user && config.git_create_on_push;
        let parent_ok = real_dir_below(&config.git_root, &[&repo.owner]).is_some();
        if !own_first_push || std::fs::symlink_metadata(&dir).is_ok() || !parent_ok {
            return Ok(not_found("no-such-repository"));
        }
        init_bare = Some(dir.clone());
    }
    let mut args: Vec<OsString> = vec!["-c".into(), format!("safe.directory={}", dir.display()).into()];
    if repo.owner != session.user {
        // Someone else's repository must not run programs as this user: no hooks, and no
        // alternate-refs command (command-line settings outrank the repository's own).
        args.extend([
            "-c".into(),
            "core.hooksPath=/dev/null".into(),
            "-c".into(),
            "core.alternateRefsCommand=true".into(),
        ]);
    }
    if verb == GitVerb::ReceivePack {
        // git's own checks on what is pushed: `.GIT/config` and other `.git` look-alikes
        // in a tree, `.gitmodules` names that climb out (`../../hooks`), submodule URLs
        // that read as options. Refused before any ref moves.
        args.extend(["-c".into(), "receive.fsckObjects=true".into(), "-c".into(), "transfer.fsckObjects=true".into()]);
    }
    args.push(verb.subcommand().into());
    if verb == GitVerb::UploadPack {
        args.push("--strict".into());
    }
    args.push(dir.clone().into_os_string());
    let verb_name = match verb {
        GitVerb::UploadPack => "git-upload-pack",
        GitVerb::ReceivePack => "git-receive-pack",
        GitVerb::UploadArchive => "git-upload-archive",
    };
    // Served git is confined for every scope, shell keys too: it needs nothing but the
    // repository, and whatever the repository's configuration starts stays inside it.
    let confine = Some(if verb.writes() {
        Confinement { read_write: vec![dir.clone()], read_only: vec![] }
    } else {
        Confinement { read_write: vec![], read_only: vec![dir.clone()] }
    });
    Ok(Action::Exec(ExecPlan {
        verb: verb_name,
        target: repo.relative(),
        program: config.git_program.clone(),
        args,
        cwd: if init_bare.is_some() { config.git_root.join(&repo.owner) } else { dir.clone() },
        env: child_env(session),
        confine,
        init_bare,
        sweep_quarantine: verb.writes().then(|| dir.join("objects")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    const FP: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

    #[test]
    fn arguments() {
        let forced = |config: Option<&str>| {
            Ok(Invocation::Forced(ShellArgs { config: config.map(PathBuf::from), fingerprint: FP.into() }))
        };
        let login = |config: Option<&str>, command: Option<&str>| {
            Ok(Invocation::LoginShell { config: config.map(PathBuf::from), command: command.map(String::from) })
        };
        assert_eq!(parse_args(&os(&["--key", FP])), forced(None));
        assert_eq!(parse_args(&os(&["--config", "/c", "--key", FP])), forced(Some("/c")));
        assert!(parse_args(&os(&["--key", "SHA256:short"])).is_err());
        assert!(parse_args(&os(&["--key", FP, "-c", "sh"])).is_err());
        assert!(parse_args(&os(&["--key"])).is_err());
        assert!(parse_args(&os(&["--config", "/c"])).is_ok());
        assert!(parse_args(&os(&["-l"])).is_err());
        assert!(parse_args(&os(&["--config", "/c", "-x"])).is_err());
        // As a login shell, for a key line.
        let line = format!("/usr/bin/gatehouse-shell --config /c --key {FP}");
        assert_eq!(parse_args(&os(&["-c", &line])), forced(Some("/c")));
        assert_eq!(parse_args(&os(&["-c", &format!("exec {line}")])), forced(Some("/c")));
        // shell.path named otherwise: the fingerprint tells.
        assert_eq!(parse_args(&os(&["-c", &format!("exec /usr/libexec/gh --key {FP}")])), forced(None));
        assert!(parse_args(&os(&["-c", "/usr/bin/gatehouse-shell -c x"])).is_err());
        assert!(parse_args(&os(&["-c", "exec /usr/bin/gatehouse-shell"])).is_err());
        assert!(parse_args(&os(&["--config", "/d", "-c", &line])).is_err());
        // As a login shell for anything else.
        assert_eq!(parse_args(&os(&[])), login(None, None));
        assert_eq!(parse_args(&os(&["--config", "/c"])), login(Some("/c"), None));
        assert_eq!(parse_args(&os(&["-c", "id"])), login(None, Some("id")));
        assert_eq!(parse_args(&os(&["--config", "/c", "-c", "ls -l"])), login(Some("/c"), Some("ls -l")));
        assert_eq!(parse_args(&os(&["-c", "exec"])), login(None, Some("exec")));
        assert!(parse_args(&[OsString::from("-c"), std::os::unix::ffi::OsStringExt::from_vec(vec![0xff])]).is_err());
    }

    /// One user, no keys, no grants.
    struct OneUser(Option<crate::store::User>);

    impl LoginStore for OneUser {
        fn login_view(
            &self,
            user: &str,
            _: Option<&str>,
        ) -> Result<Option<crate::store::LoginView>, crate::store::StoreError> {
            Ok(self.0.clone().filter(|u| u.name == user).map(|user| crate::store::LoginView {
                user,
                keys: vec![],
                synced: None,
            }))
        }
        fn grants_for(&self, _: &[String]) -> Result<Vec<crate::store::Grant>, crate::store::StoreError> {
            Ok(vec![])
        }
        fn groups_of(&self, _: &str) -> Result<Vec<String>, crate::store::StoreError> {
            Ok(vec![])
        }
    }

    fn user(policy: Scope, state: UserState, source: &str) -> OneUser {
        OneUser(Some(crate::store::User {
            name: "erin".into(),
            state,
            policy,
            port_forwarding: false,
            created: 0,
            source: source.into(),
        }))
    }

    #[test]
    fn login_shell_sessions_follow_the_account_policy() {
        let config = Config::parse("g.toml", "[users]\ndata_dir = \"/nonexistent/%u\"\n").unwrap();
        let decide = |store: &OneUser, user: &str, command: Option<&str>| {
            let groups = Vec::new;
            let session =
                Session { user, uid: 20_000, fingerprint: NO_KEY, command, groups: &groups, env: &[], now: 100 };
            decide_login_shell(&config, store, &session).unwrap()
        };
        let reason = |store: &OneUser, user: &str, command: Option<&str>| match decide(store, user, command) {
            Action::Refuse { reason, code, message } => {
                assert_eq!(code, exit::REFUSED);
                assert!(!message.contains("key -"), "{message}");
                reason
            }
            Action::Shell { .. } => "shell",
            Action::Exec(plan) => plan.verb,
        };
        let shell = user(Scope::Shell, UserState::Enabled, "local");
        assert_eq!(decide(&shell, "erin", Some("ls -l")), Action::Shell { command: Some("ls -l".into()) });
        assert_eq!(reason(&shell, "erin", None), "shell");
        assert_eq!(reason(&shell, "dave", None), "not-in-store");
        assert_eq!(reason(&shell, "Erin", None), "bad-user-name");
        // The policy is the scope: no shell for a files user, sftp where its folder exists.
        let files = user(Scope::Files, UserState::Enabled, "local");
        assert_eq!(reason(&files, "erin", None), "no-shell-access");
        assert_eq!(reason(&files, "erin", Some("id")), "no-shell-access");
        assert_eq!(reason(&files, "erin", Some("/usr/lib/openssh/sftp-server")), "no-data-folder");
        assert_eq!(reason(&files, "erin", Some("git-upload-pack 'erin/x.git'")), "scope");
        assert_eq!(reason(&user(Scope::Shell, UserState::Disabled, "local"), "erin", None), "user-disabled");
        // A directory user without a recent sync: refused, as for key logins.
        assert_eq!(reason(&user(Scope::Shell, UserState::Enabled, "ldap"), "erin", None), "directory-stale");
        assert_eq!(reason(&OneUser(None), "erin", None), "not-in-store");
    }

    #[test]
    fn system_accounts_are_refused_whatever_the_store_says() {
        let config = Config::parse(
            "g.toml",
            "[users]
uid_min = 2000
uid_max = 2999
",
        )
        .unwrap();
        let mut root = user(Scope::Shell, UserState::Enabled, "local");
        if let Some(u) = root.0.as_mut() {
            u.name = "root".into();
        }
        let erin = user(Scope::Shell, UserState::Enabled, "local");
        let groups = Vec::new;
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        for (store, name, uid) in [(&root, "root", 0), (&root, "root", 2500), (&erin, "erin", 0), (&erin, "erin", 1999)]
        {
            for fingerprint in [NO_KEY, fp] {
                let session =
                    Session { user: name, uid, fingerprint, command: None, groups: &groups, env: &[], now: 1 };
                let action = if fingerprint == NO_KEY {
                    decide_login_shell(&config, store, &session)
                } else {
                    decide(&config, store, &session)
                };
                assert!(
                    matches!(action, Ok(Action::Refuse { reason: "system-account", .. })),
                    "{name} uid {uid}: {action:?}"
                );
            }
        }
        let session =
            Session { user: "erin", uid: 2000, fingerprint: NO_KEY, command: None, groups: &groups, env: &[], now: 1 };
        assert_eq!(decide_login_shell(&config, &erin, &session), Ok(Action::Shell { command: None }));
    }
}
