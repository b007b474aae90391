//! `gatehouse-shell`: the forced command every key line carries.
//!
//! sshd runs it as the logged-in user with the key's fingerprint in its arguments (we wrote
//! them into the key line ourselves), so it knows which key authenticated without trusting
//! the environment. It checks the store again and decides what may run.

pub mod command;
pub mod confine;
pub mod rsync;

use crate::config::Config;
use crate::domain::repo::{self, Access};
use crate::domain::{Scope, UserState};
use crate::keycmd::lines::usable_scope;
use crate::keys::is_fingerprint;
use crate::store::{LoginStore, StoreError};
use crate::time::Timestamp;
use command::{GitVerb, Refused, Request, MAX_COMMAND};
use confine::Confinement;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const USAGE: &str = "usage: gatehouse-shell [--config FILE] --key FINGERPRINT";

/// Exit statuses, as documented in gatehouse-shell(8): 1 refused, 2 usage (the key line
/// was not written by gatehouse-keys), 3 configuration, 4 store, 5 the program could not
/// be started.
pub use crate::exit;

/// Why a session was refused, as logged (`reason=`) and listed in gatehouse-shell(8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadUserName,
    SystemAccount,
    UidMismatch,
    KeyNotValid,
    UserDisabled,
    Expired,
    ScopeOutsidePolicy,
    BadStoredField,
    DirectoryStale,
    SourceStale,
    CommandTooLong,
    BadCommand,
    CommandNotUtf8,
    NoShellAccess,
    Scope,
    ReadOnlyKey,
    BadRepositoryPath,
    NoAccess,
    NoSuchRepository,
    NoDataFolder,
    NotInStore,
    LoginShellIsGatehouseShell,
    InitFailed,
    ConfinementFailed,
}

impl Reason {
    pub const ALL: [Reason; 24] = [
        Reason::BadUserName,
        Reason::SystemAccount,
        Reason::UidMismatch,
        Reason::KeyNotValid,
        Reason::UserDisabled,
        Reason::Expired,
        Reason::ScopeOutsidePolicy,
        Reason::BadStoredField,
        Reason::DirectoryStale,
        Reason::SourceStale,
        Reason::CommandTooLong,
        Reason::BadCommand,
        Reason::CommandNotUtf8,
        Reason::NoShellAccess,
        Reason::Scope,
        Reason::ReadOnlyKey,
        Reason::BadRepositoryPath,
        Reason::NoAccess,
        Reason::NoSuchRepository,
        Reason::NoDataFolder,
        Reason::NotInStore,
        Reason::LoginShellIsGatehouseShell,
        Reason::InitFailed,
        Reason::ConfinementFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadUserName => "bad-user-name",
            Reason::SystemAccount => "system-account",
            Reason::UidMismatch => "uid-mismatch",
            Reason::KeyNotValid => "key-not-valid",
            Reason::UserDisabled => "user-disabled",
            Reason::Expired => "expired",
            Reason::ScopeOutsidePolicy => "scope-outside-policy",
            Reason::BadStoredField => "bad-stored-field",
            Reason::DirectoryStale => "directory-stale",
            Reason::SourceStale => "source-stale",
            Reason::CommandTooLong => "command-too-long",
            Reason::BadCommand => "bad-command",
            Reason::CommandNotUtf8 => "command-not-utf-8",
            Reason::NoShellAccess => "no-shell-access",
            Reason::Scope => "scope",
            Reason::ReadOnlyKey => "read-only-key",
            Reason::BadRepositoryPath => "bad-repository-path",
            Reason::NoAccess => "no-access",
            Reason::NoSuchRepository => "no-such-repository",
            Reason::NoDataFolder => "no-data-folder",
            Reason::NotInStore => "not-in-store",
            Reason::LoginShellIsGatehouseShell => "login-shell-is-gatehouse-shell",
            Reason::InitFailed => "init-failed",
            Reason::ConfinementFailed => "confinement-failed",
        }
    }
}

impl From<crate::keycmd::lines::Refusal> for Reason {
    fn from(r: crate::keycmd::lines::Refusal) -> Reason {
        use crate::keycmd::lines::Refusal as R;
        match r {
            R::UserDisabled => Reason::UserDisabled,
            R::Expired => Reason::Expired,
            R::ScopeOutsidePolicy => Reason::ScopeOutsidePolicy,
            R::BadStoredField => Reason::BadStoredField,
        }
    }
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
    /// Run `shell` (the account's, or `shell.login_shell` when the account's is
    /// gatehouse-shell): interactive when `command` is `None`, else `-c command`.
    Shell { shell: PathBuf, command: Option<String> },
    /// Run a served program directly, no shell in between.
    Exec(ExecPlan),
    /// Print `message` to the client and exit with `code`; `reason` goes to the log.
    Refuse { message: String, reason: Reason, code: u8 },
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
    /// The account's login shell, from the password database.
    pub account_shell: &'a Path,
    /// gatehouse-shell runs as the login shell for something other than a key line.
    pub login_mode: bool,
}

/// The PATH served programs get.
pub const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Set for everything a key's session starts: the key's fingerprint, by which the agent
/// finds the sessions of a key that was removed (see `agent::sessions`).
pub const SESSION_KEY_VAR: &str = "GATEHOUSE_KEY";

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
    if !session.login_mode {
        env.push((SESSION_KEY_VAR.to_string(), session.fingerprint.to_string()));
    }
    env
}

fn refuse(message: impl Into<String>, reason: Reason) -> Action {
    Action::Refuse { message: message.into(), reason, code: exit::REFUSED }
}

fn stale(source: &str) -> Action {
    if source == crate::domain::SOURCE_SHARED {
        refuse(
            "Your account comes from the shared database, which has been out of reach too long; try again later.",
            Reason::SourceStale,
        )
    } else {
        refuse(
            "Your account comes from the directory, which has been out of reach too long; try again later.",
            Reason::DirectoryStale,
        )
    }
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
    refuse(message, Reason::NoShellAccess)
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
    let template = Path::new(&config.users.data_dir);
    // The components from the first one holding %u down are the user's to check.
    let split = template.components().position(|c| c.as_os_str().to_string_lossy().contains("%u"))?;
    let root: PathBuf = path.components().take(split).collect();
    let below: Vec<String> =
        path.components().skip(split).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let below: Vec<&str> = below.iter().map(String::as_str).collect();
    real_dir_below(&root, &below)
}

/// The shell a `shell` session gets: the account's own, or, when that is gatehouse-shell
/// (or this program runs as the login shell), `shell.login_shell`, since starting
/// gatehouse-shell again would loop.
fn shell_for(config: &Config, session: &Session<'_>) -> Action {
    let command = session.command.map(str::to_string);
    if !session.login_mode && !crate::config::is_gatehouse_shell(session.account_shell) {
        return Action::Shell { shell: session.account_shell.to_path_buf(), command };
    }
    match &config.shell.login_shell {
        Some(shell) => Action::Shell { shell: shell.clone(), command },
        None => refuse(
            format!("Shell access needs a real login shell for {}; ask an administrator.", session.user),
            Reason::LoginShellIsGatehouseShell,
        ),
    }
}

/// A refusal for an account Gatehouse never serves, whatever the store says: a name that
/// fails the name rule or is reserved, uid 0, or a uid below `users.uid_min`.
fn not_served(config: &Config, session: &Session<'_>) -> Option<Action> {
    if !config.valid_user_name(session.user) {
        return Some(refuse("Your account name is not one Gatehouse serves.", Reason::BadUserName));
    }
    if !crate::names::uid_served(config, session.uid) || crate::names::is_reserved(session.user) {
        return Some(refuse("This account is not one Gatehouse serves.", Reason::SystemAccount));
    }
    None
}

/// A refusal when the account is not the one the store gave the user (its uid differs):
/// a former user's, under a name that was added again (the old uid is retired), or one
/// made by hand.
fn other_account(view: &crate::store::LoginView, session: &Session<'_>) -> Option<Action> {
    view.user
        .uid
        .is_some_and(|uid| uid != session.uid)
        .then(|| refuse("This account is not the one Gatehouse made for you.", Reason::UidMismatch))
}

/// Decides what the session may do, from the store alone.
pub fn decide(config: &Config, store: &dyn LoginStore, session: &Session<'_>) -> Result<Action, StoreError> {
    let revoked =
        || refuse(format!("Key {} is no longer valid for {}.", session.fingerprint, session.user), Reason::KeyNotValid);
    if let Some(refusal) = not_served(config, session) {
        return Ok(refusal);
    }
    let Some(view) = store.login_view(session.user, Some(session.fingerprint))? else {
        return Ok(revoked());
    };
    if let Some(refusal) = other_account(&view, session) {
        return Ok(refusal);
    }
    let Some(key) = view.keys.first() else {
        return Ok(revoked());
    };
    if let Some(source) = view.stale_source(&|s| config.staleness_max(s), session.now) {
        return Ok(stale(source));
    }
    let scope = match usable_scope(&view.user, key, session.now) {
        Ok(scope) => scope,
        Err(refusal) => {
            return Ok(refuse(
                format!("Key {} is no longer valid for {}.", session.fingerprint, session.user),
                refusal.into(),
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
) -> Result<Action, StoreError> {
    if scope != Scope::Shell && session.command.is_some_and(|c| c.len() > MAX_COMMAND) {
        return Ok(refuse(format!("Command longer than {MAX_COMMAND} bytes refused."), Reason::CommandTooLong));
    }
    let request = match command::parse(session.command) {
        Ok(r) => r,
        // A shell key may run anything its shell accepts; the parse only serves the others.
        Err(_) if scope == Scope::Shell => Request::Other(session.command.unwrap_or_default().to_string()),
        Err(Refused(why)) => return Ok(refuse(format!("Refused: {why}."), Reason::BadCommand)),
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
        Request::Interactive | Request::Other(_) if scope == Scope::Shell => Ok(shell_for(config, session)),
        Request::Interactive | Request::Other(_) => Ok(greeting(session)),
        Request::Git { verb, path } => {
            if !scope.includes(Scope::GitRead) {
                return Ok(refuse("Git is not enabled for this key.", Reason::Scope));
            }
            if verb.writes() && !scope.includes(Scope::Git) {
                return Ok(refuse("This key is read-only: pushing is not enabled for it.", Reason::ReadOnlyKey));
            }
            git_plan(config, store, session, verb, &path)
        }
        Request::Sftp | Request::Rsync { .. } => {
            if !scope.includes(Scope::Files) {
                return Ok(refuse("File transfer is not enabled for this key.", Reason::Scope));
            }
            let Some(data) = data_folder(config, session.user) else {
                let shown = config.data_dir_of(session.user);
                return Ok(refuse(
                    format!("Your data folder {} does not exist yet.", shown.display()),
                    Reason::NoDataFolder,
                ));
            };
            let (verb, program, args): (_, _, Vec<OsString>) = match request {
                Request::Rsync { args } => {
                    ("rsync", config.rsync.program.clone(), args.into_iter().map(Into::into).collect())
                }
                _ => (
                    "sftp",
                    config.sftp.program.clone(),
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
pub fn decide_login_shell(
    config: &Config,
    store: &dyn LoginStore,
    session: &Session<'_>,
) -> Result<Action, StoreError> {
    if let Some(refusal) = not_served(config, session) {
        return Ok(refusal);
    }
    let Some(view) = store.login_view(session.user, None)? else {
        return Ok(refuse("This account is not served by Gatehouse.", Reason::NotInStore));
    };
    if let Some(refusal) = other_account(&view, session) {
        return Ok(refusal);
    }
    if let Some(source) = view.stale_source(&|s| config.staleness_max(s), session.now) {
        return Ok(stale(source));
    }
    if view.user.state != UserState::Enabled {
        return Ok(refuse(format!("Account {} is disabled.", session.user), Reason::UserDisabled));
    }
    decide_for_scope(config, store, session, view.user.policy)
}

fn git_plan(
    config: &Config,
    store: &dyn LoginStore,
    session: &Session<'_>,
    verb: GitVerb,
    path: &str,
) -> Result<Action, StoreError> {
    let repo = match repo::parse_repo_path(path, |o| config.valid_user_name(o)) {
        Ok(r) => r,
        Err(why) => return Ok(refuse(why, Reason::BadRepositoryPath)),
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
        subjects.extend(store.groups_of(session.user)?.into_iter().map(|g| format!("@{g}")));
        store.grants_for(&subjects)?
    };
    let need = if verb.writes() { Access::Write } else { Access::Read };
    let Some(granted) = repo::access(session.user, &repo, &grants) else {
        return Ok(not_found(Reason::NoAccess));
    };
    if granted < need {
        return Ok(not_found(Reason::NoAccess));
    }
    let dir = config.git.root.join(&repo.owner).join(&repo.name);
    let mut init_bare = None;
    let found = real_dir_below(&config.git.root, &[&repo.owner, &repo.name]);
    if found.is_none() || !dir.join("HEAD").is_file() {
        let own_first_push = verb.writes() && repo.owner == session.user && config.git.create_on_push;
        let parent_ok = real_dir_below(&config.git.root, &[&repo.owner]).is_some();
        if !own_first_push || std::fs::symlink_metadata(&dir).is_ok() || !parent_ok {
            return Ok(not_found(Reason::NoSuchRepository));
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
        program: config.git.program.clone(),
        args,
        cwd: if init_bare.is_some() { config.git.root.join(&repo.owner) } else { dir.clone() },
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

    /// A store of users, each with keys of the given scopes (fingerprints `fp(i)`), and
    /// grants.
    #[derive(Default)]
    struct Store {
        users: Vec<(crate::store::User, Vec<Scope>)>,
        grants: Vec<crate::store::Grant>,
        synced: Option<Timestamp>,
    }

    /// A distinct, well-formed fingerprint for key `i`.
    fn fp(i: usize) -> String {
        format!("SHA256:{i:0>43}")
    }

    impl LoginStore for Store {
        fn login_view(
            &self,
            user: &str,
            fingerprint: Option<&str>,
        ) -> Result<Option<crate::store::LoginView>, crate::store::StoreError> {
            Ok(self.users.iter().find(|(u, _)| u.name == user).map(|(u, scopes)| crate::store::LoginView {
                user: u.clone(),
                keys: scopes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| fingerprint.is_none_or(|f| f == fp(*i)))
                    .map(|(i, scope)| crate::store::Key {
                        user: user.into(),
                        algorithm: "ssh-ed25519".into(),
                        blob: "AAAA".into(),
                        fingerprint: fp(i),
                        bits: 256,
                        comment: String::new(),
                        scope: *scope,
                        from: None,
                        expires: (i == 9).then_some(Timestamp::from_secs(50)),
                        created: Timestamp::EPOCH,
                        source: "cli".into(),
                    })
                    .collect(),
                synced: self.synced,
                mirrored: None,
            }))
        }
        fn grants_for(&self, subjects: &[String]) -> Result<Vec<crate::store::Grant>, crate::store::StoreError> {
            Ok(self.grants.iter().filter(|g| subjects.contains(&g.subject)).cloned().collect())
        }
        fn groups_of(&self, _: &str) -> Result<Vec<String>, crate::store::StoreError> {
            Ok(vec![])
        }
    }

    fn user(name: &str, policy: Scope, state: UserState, source: &str) -> crate::store::User {
        crate::store::User::for_tests(name, policy, state, source)
    }

    /// What a decision comes to, in a word: the verb run, `shell`, or the refusal's reason.
    fn outcome(action: &Action) -> &'static str {
        match action {
            Action::Refuse { reason, code, message } => {
                assert_eq!(*code, exit::REFUSED);
                assert!(!message.contains('\n'), "{message}");
                reason.as_str()
            }
            Action::Shell { .. } => "shell",
            Action::Exec(plan) => plan.verb,
        }
    }

    /// A git root with the repositories `alice/thesis.git` and `bob/shared.git`, and data
    /// folders for alice and bob; removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let root = std::env::temp_dir().join(format!("gh-decide-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for repo in ["git/alice/thesis.git", "git/bob/shared.git"] {
                std::fs::create_dir_all(root.join(repo)).unwrap();
                std::fs::write(root.join(repo).join("HEAD"), "ref: refs/heads/main\n").unwrap();
            }
            std::fs::create_dir_all(root.join("data")).unwrap();
            Tree(root)
        }

        fn config(&self, extra: &str) -> Config {
            let root = self.0.display();
            Config::parse(
                "g.toml",
                &format!("[users]\ndata_dir = \"{root}/data/%u\"\n[git]\nroot = \"{root}/git\"\n{extra}"),
            )
            .unwrap()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const SFTP: &str = "/usr/lib/openssh/sftp-server";
    const RSYNC: &str = "rsync --server -vlogDtpre.iLsfxCIvu . project/";

    /// Every scope against every kind of request, for key lines and for logins that did
    /// not come through one, with grants and the policy narrowing keys.
    #[test]
    fn decide_over_scopes_policies_grants_and_commands() {
        let tree = Tree::new("table");
        let config = tree.config("");
        let grant = |subject: &str, pattern: &str, access| crate::store::Grant {
            subject: subject.into(),
            pattern: pattern.into(),
            access,
            created: Timestamp::EPOCH,
        };
        // alice's keys: 0 shell, 1 files, 2 git, 3 git-read, 9 shell but expired.
        let alice_keys = vec![
            Scope::Shell,
            Scope::Files,
            Scope::Git,
            Scope::GitRead,
            Scope::Shell,
            Scope::Shell,
            Scope::Shell,
            Scope::Shell,
            Scope::Shell,
            Scope::Shell,
        ];
        let store = Store {
            users: vec![
                (user("alice", Scope::Shell, UserState::Enabled, "cli"), alice_keys),
                // bob's policy was narrowed to git: his shell key works as a git key.
                (user("bob", Scope::Git, UserState::Enabled, "cli"), vec![Scope::Shell, Scope::Files]),
                (user("carol", Scope::Shell, UserState::Disabled, "cli"), vec![Scope::Shell]),
                (user("dora", Scope::Shell, UserState::Enabled, "ldap"), vec![Scope::Shell]),
            ],
            grants: vec![grant("alice", "bob/*.git", Access::Read)],
            synced: None,
        };
        let groups = Vec::new;
        let run = |name: &str, key: Option<usize>, command: Option<&str>| {
            let fingerprint = key.map(fp);
            let session = Session {
                user: name,
                uid: 20_000,
                fingerprint: fingerprint.as_deref().unwrap_or(NO_KEY),
                command,
                groups: &groups,
                env: &[],
                now: Timestamp::from_secs(100),
                account_shell: Path::new("/bin/bash"),
                login_mode: key.is_none(),
            };
            let action = match key {
                Some(_) => decide(&config, &store, &session),
                None => decide_login_shell(&config, &store, &session),
            };
            outcome(&action.unwrap())
        };
        let clone_own = Some("git-upload-pack 'alice/thesis.git'");
        let push_own = Some("git-receive-pack 'alice/thesis.git'");
        let clone_bobs = Some("git-upload-pack 'bob/shared.git'");
        let push_bobs = Some("git-receive-pack 'bob/shared.git'");
        let missing = Some("git-upload-pack 'alice/none.git'");
        #[rustfmt::skip]
        let table: &[(&str, Option<usize>, Option<&str>, &str)] = &[
            // A shell key: everything, git and files served directly.
            ("alice", Some(0), None, "shell"),
            ("alice", Some(0), Some("ls -l"), "shell"),
            ("alice", Some(0), clone_own, "git-upload-pack"),
            ("alice", Some(0), Some(SFTP), "no-data-folder"),
            ("alice", Some(0), Some("git-upload-pack '~/x.git'"), "shell"),
            // files: sftp and rsync only; the data folder must exist (it does not yet).
            ("alice", Some(1), None, "no-shell-access"),
            ("alice", Some(1), Some("id"), "no-shell-access"),
            ("alice", Some(1), Some(SFTP), "no-data-folder"),
            ("alice", Some(1), Some(RSYNC), "no-data-folder"),
            ("alice", Some(1), Some("rsync --server --rsh=sh . x"), "bad-command"),
            ("alice", Some(1), clone_own, "scope"),
            // git and git-read.
            ("alice", Some(2), clone_own, "git-upload-pack"),
            ("alice", Some(2), push_own, "git-receive-pack"),
            ("alice", Some(2), Some(SFTP), "scope"),
            ("alice", Some(3), clone_own, "git-upload-pack"),
            ("alice", Some(3), push_own, "read-only-key"),
            ("alice", Some(2), missing, "no-such-repository"),
            ("alice", Some(2), Some("git-upload-pack '../etc.git'"), "bad-repository-path"),
            ("alice", Some(2), Some("git-upload-pack 'alice/x.git' extra"), "bad-command"),
            // Grants: alice reads bob's repositories, never writes them.
            ("alice", Some(2), clone_bobs, "git-upload-pack"),
            ("alice", Some(2), push_bobs, "no-access"),
            ("bob", Some(0), clone_own, "no-access"),
            // A policy narrowed below the key: bob's shell key is a git key now, his files
            // key has nothing in common with git.
            ("bob", Some(0), None, "no-shell-access"),
            ("bob", Some(0), push_bobs, "git-receive-pack"),
            ("bob", Some(1), Some(SFTP), "scope-outside-policy"),
            // Keys and users that cannot be used.
            ("alice", Some(9), None, "expired"),
            ("alice", Some(7), Some(&"x".repeat(5000)), "shell"),
            ("alice", Some(1), Some(&"x".repeat(5000)), "command-too-long"),
            ("alice", Some(5), Some("ls"), "shell"),
            ("alice", Some(12), None, "key-not-valid"),
            ("carol", Some(0), None, "user-disabled"),
            ("dora", Some(0), None, "directory-stale"),
            ("erin", Some(0), None, "key-not-valid"),
            ("Not-valid", Some(0), None, "bad-user-name"),
            // Logins without a key line: the policy is the scope.
            ("alice", None, None, "shell"),
            ("bob", None, None, "no-shell-access"),
            ("bob", None, clone_bobs, "git-upload-pack"),
            ("bob", None, Some(SFTP), "scope"),
            ("carol", None, None, "user-disabled"),
            ("erin", None, None, "not-in-store"),
        ];
        for (name, key, command, want) in table {
            let got = run(name, *key, *command);
            assert_eq!(
                got,
                *want,
                "{name} key {key:?} command {:?}",
                command.map(|c| c.chars().take(40).collect::<String>())
            );
        }
        // With the data folder in place, files keys are served, and confined to it.
        std::fs::create_dir_all(tree.0.join("data/alice")).unwrap();
        assert_eq!(run("alice", Some(1), Some(SFTP)), "sftp");
        assert_eq!(run("alice", Some(1), Some(RSYNC)), "rsync");
        assert_eq!(run("alice", Some(0), Some(SFTP)), "sftp");
    }

    #[test]
    fn the_shell_a_shell_session_gets() {
        let tree = Tree::new("shell");
        let store = Store {
            users: vec![(user("alice", Scope::Shell, UserState::Enabled, "cli"), vec![Scope::Shell])],
            ..Store::default()
        };
        let groups = Vec::new;
        let key = fp(0);
        let shell = |config: &Config, account_shell: &str, login_mode: bool| {
            let session = Session {
                user: "alice",
                uid: 20_000,
                fingerprint: if login_mode { NO_KEY } else { &key },
                command: Some("ls"),
                groups: &groups,
                env: &[],
                now: Timestamp::from_secs(100),
                account_shell: Path::new(account_shell),
                login_mode,
            };
            if login_mode { decide_login_shell(config, &store, &session) } else { decide(config, &store, &session) }
                .unwrap()
        };
        let config = tree.config("");
        let sh = |p: &str| Action::Shell { shell: PathBuf::from(p), command: Some("ls".into()) };
        // The account's own shell, unless it is gatehouse-shell: then shell.login_shell.
        assert_eq!(shell(&config, "/bin/zsh", false), sh("/bin/zsh"));
        assert_eq!(shell(&config, "/usr/bin/gatehouse-shell", false), sh("/bin/bash"));
        assert_eq!(shell(&config, "/usr/local/bin/gatehouse-shell", true), sh("/bin/bash"));
        let custom = tree.config("[shell]\nlogin_shell = \"/bin/zsh\"\n");
        assert_eq!(shell(&custom, "/usr/bin/gatehouse-shell", false), sh("/bin/zsh"));
        // With shell.login_shell empty, there is none to give.
        let none = tree.config("[shell]\nlogin_shell = \"\"\n");
        assert_eq!(outcome(&shell(&none, "/usr/bin/gatehouse-shell", false)), "login-shell-is-gatehouse-shell");
        assert_eq!(outcome(&shell(&none, "/bin/sh", true)), "login-shell-is-gatehouse-shell");
        assert_eq!(shell(&none, "/bin/sh", false), sh("/bin/sh"));
    }

    #[test]
    fn system_accounts_are_refused_whatever_the_store_says() {
        let config = Config::parse("g.toml", "[users]\nuid_min = 2000\nuid_max = 2999\n").unwrap();
        let store = Store {
            users: vec![
                (user("root", Scope::Shell, UserState::Enabled, "cli"), vec![Scope::Shell]),
                (user("erin", Scope::Shell, UserState::Enabled, "cli"), vec![Scope::Shell]),
            ],
            ..Store::default()
        };
        for (name, uid) in [("root", 0), ("root", 2500), ("erin", 0), ("erin", 1999)] {
            for reason in reasons_in_both_modes(&config, &store, name, uid) {
                assert_eq!(reason, "system-account", "{name} uid {uid}");
            }
        }
    }

    /// The outcome of a session of `name` with `uid`, through a key and as a login shell.
    fn reasons_in_both_modes(config: &Config, store: &Store, name: &str, uid: u32) -> Vec<&'static str> {
        let groups = Vec::new;
        let key = fp(0);
        [NO_KEY, key.as_str()]
            .into_iter()
            .map(|fingerprint| {
                let session = Session {
                    user: name,
                    uid,
                    fingerprint,
                    command: Some("id"),
                    groups: &groups,
                    env: &[],
                    now: Timestamp::from_secs(1),
                    account_shell: Path::new("/bin/bash"),
                    login_mode: fingerprint == NO_KEY,
                };
                let action = if fingerprint == NO_KEY {
                    decide_login_shell(config, store, &session)
                } else {
                    decide(config, store, &session)
                };
                outcome(&action.unwrap())
            })
            .collect()
    }

    #[test]
    fn an_account_with_another_uid_than_the_stores_is_refused() {
        let config = Config::parse("g.toml", "[users]\nuid_min = 2000\nuid_max = 2999\n").unwrap();
        let mut erin = user("erin", Scope::Shell, UserState::Enabled, "cli");
        erin.uid = Some(2500);
        let store = Store { users: vec![(erin, vec![Scope::Shell])], ..Store::default() };
        for (uid, want) in [(2501, true), (2500, false)] {
            for reason in reasons_in_both_modes(&config, &store, "erin", uid) {
                assert_eq!(reason == "uid-mismatch", want, "uid {uid}: {reason}");
            }
        }
    }

    #[test]
    fn every_reason_has_one_name() {
        let names: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
    }
}
