//! The root side of a login, as the PAM module and `gatehouse-session` run it: account
//! checks, failure counting and the directory password, session setup and the login
//! record. The shims (`pam/`, `src/bin/gatehouse-session.rs`) translate the PAM handle and
//! open the [`Backends`]; every decision is made here, and tested with fakes of each.

pub mod datadir;
pub mod host;
pub mod password;

use crate::config::Config;
use crate::domain::{Scope, UserState};
use crate::log::{Level, Logger};
use crate::store::state::{accepted_key, StateStore};
use crate::store::{LoginStore, LoginView, StoreError};
use crate::time::Timestamp;
use host::{Account, Host};
use password::{Checked, PasswordCheck, Secret};
use std::path::{Path, PathBuf};

/// What the stages need from PAM.
pub trait PamContext {
    fn user(&mut self) -> Option<String>;
    fn service(&self) -> Option<String>;
    fn rhost(&self) -> Option<String>;
    /// A variable of the PAM environment (sshd puts `SSH_AUTH_INFO_0` there).
    fn env(&self, name: &str) -> Option<String>;
    /// A message for the person logging in.
    fn tell(&mut self, message: &str);
    /// The password: one an earlier module already read (PAM_AUTHTOK), else asked for.
    fn password(&mut self) -> Option<Secret>;
}

/// PAM results the stages return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Not ours to decide (a user outside the store, with `unknown=ignore`).
    Ignore,
    UserUnknown,
    /// Disabled in the store.
    AccountExpired,
    /// Locked out after failures, or by hand.
    PermissionDenied,
    AuthError,
    SessionError,
    /// Configuration or store unreadable: fail closed.
    ServiceError,
    /// The directory could not be asked (PAM_AUTHINFO_UNAVAIL).
    AuthInfoUnavailable,
}

/// What to do with users the store does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    Ignore,
    Deny,
}

/// The module's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleOptions {
    pub config: Option<PathBuf>,
    pub unknown: Unknown,
    /// auth stage: `preauth` (refuse a locked-out user) or `authfail` (count a failure).
    pub auth_mode: Option<AuthMode>,
    /// Panic on purpose, to prove a panic never crosses into the PAM application.
    pub test_panic: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Preauth,
    Authfail,
    /// Check the password against the directory (`[ldap]`).
    Ldap,
}

impl ModuleOptions {
    /// Parses `config=PATH`, `unknown=ignore|deny`, `preauth`, `authfail`, `ldap`, `test_panic`.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<ModuleOptions, String> {
        let mut o = ModuleOptions { config: None, unknown: Unknown::Ignore, auth_mode: None, test_panic: false };
        for arg in args {
            match arg.split_once('=') {
                Some(("config", p)) if p.starts_with('/') => o.config = Some(PathBuf::from(p)),
                Some(("unknown", "ignore")) => o.unknown = Unknown::Ignore,
                Some(("unknown", "deny")) => o.unknown = Unknown::Deny,
                None if arg == "preauth" => o.auth_mode = Some(AuthMode::Preauth),
                None if arg == "authfail" => o.auth_mode = Some(AuthMode::Authfail),
                None if arg == "ldap" => o.auth_mode = Some(AuthMode::Ldap),
                None if arg == "test_panic" => o.test_panic = true,
                _ => return Err(format!("unknown module argument `{}`", arg.escape_debug())),
            }
        }
        Ok(o)
    }
}

/// Opens the key store for the login path.
pub type StoreOpener = Box<dyn Fn(&Config) -> Result<Box<dyn LoginStore + Send>, StoreError> + Send>;

/// Everything the stages work with, opened at most once per process: sshd runs the
/// account and session stages of one login in one process, so the module reads its
/// configuration once and keeps one connection to each SQLite file for the whole login.
pub struct Backends {
    pub config: Config,
    pub log: Logger,
    pub host: Box<dyn Host>,
    pub passwords: Option<Box<dyn PasswordCheck>>,
    open_store: StoreOpener,
    store: Option<Box<dyn LoginStore + Send>>,
    state: Option<StateStore>,
}

impl Backends {
    /// The real ones, for `config`: the SQLite store and state file, this system, and the
    /// directory's password check when `[ldap]` is configured.
    pub fn system(config: Config, program: &'static str) -> Backends {
        let log = Logger::open(program, &config);
        let passwords = config
            .ldap
            .as_ref()
            .map(|l| Box::new(password::DirectoryProgram::new(&config, l)) as Box<dyn PasswordCheck>);
        let open_store: StoreOpener = Box::new(|c: &Config| {
            crate::store::sqlite::SqliteStore::open_reader(&c.store.path, c.store.login_timeout_ms)
                .map(|s| Box::new(s) as Box<dyn LoginStore + Send>)
        });
        Backends::with(config, log, Box::new(host::SystemHost), passwords, open_store)
    }

    /// Backends of the caller's choosing (tests).
    pub fn with(
        config: Config,
        log: Logger,
        host: Box<dyn Host>,
        passwords: Option<Box<dyn PasswordCheck>>,
        open_store: StoreOpener,
    ) -> Backends {
        Backends { config, log, host, passwords, open_store, store: None, state: None }
    }

    fn store(&mut self) -> Result<&dyn LoginStore, StoreError> {
        if self.store.is_none() {
            self.store = Some((self.open_store)(&self.config)?);
        }
        match &self.store {
            Some(s) => Ok(s.as_ref()),
            None => Err(StoreError::Unavailable {
                path: self.config.store.path.display().to_string(),
                reason: "not open".into(),
            }),
        }
    }

    fn state(&mut self) -> Result<&StateStore, StoreError> {
        if self.state.is_none() {
            let c = &self.config;
            // With [source], what is recorded is also queued for the agent to send.
            let state = StateStore::open_login(&c.state.path, c.store.busy_timeout_ms, c.state.gid())?;
            self.state = Some(state.share(c.shared.is_some()));
        }
        match &self.state {
            Some(s) => Ok(s),
            None => Err(StoreError::Unavailable {
                path: self.config.state.path.display().to_string(),
                reason: "not open".into(),
            }),
        }
    }
}

/// Who is logging in, as PAM says.
struct Login {
    user: String,
    rhost: Option<String>,
    service: Option<String>,
}

impl Login {
    fn read(ctx: &mut dyn PamContext) -> Option<Login> {
        Some(Login { user: ctx.user()?, rhost: ctx.rhost(), service: ctx.service() })
    }

    fn rhost(&self) -> &str {
        self.rhost.as_deref().unwrap_or("-")
    }
}

/// One decision line: `stage user rhost verdict reason`.
fn say(b: &mut Backends, login: &Login, level: Level, stage: &str, verdict: &str, reason: &str) {
    b.log.log(
        level,
        &[("stage", stage), ("user", &login.user), ("rhost", login.rhost()), ("verdict", verdict), ("reason", reason)],
    );
}

/// A backend that failed: logged, and the stage fails closed.
fn failed(b: &mut Backends, login: &Login, stage: &str, error: &StoreError) -> Verdict {
    let text = error.to_string();
    b.log.log(Level::Error, &[("stage", stage), ("user", &login.user), ("verdict", "refuse"), ("error", &text)]);
    Verdict::ServiceError
}

/// The store's view of the user (and, with `fingerprint`, that key of theirs):
/// `Ok(None)` for a user the store does not know, or a name that is not valid, which
/// `unknown=deny` turns into a refusal.
fn store_view(
    b: &mut Backends,
    login: &Login,
    opts: &ModuleOptions,
    stage: &str,
    fingerprint: Option<&str>,
    now: Timestamp,
) -> Result<Option<LoginView>, Verdict> {
    let reason = if b.config.valid_user_name(&login.user) {
        let view = b.store().and_then(|s| s.login_view(&login.user, fingerprint));
        match view {
            Err(e) => return Err(failed(b, login, stage, &e)),
            Ok(Some(v)) if !v.fresh(&|s| b.config.staleness_max(s), now) => {
                let stale = v.stale_source(&|s| b.config.staleness_max(s), now).unwrap_or_default();
                say(b, login, Level::Warning, stage, "refuse", crate::store::LoginView::stale_reason(stale));
                return Err(Verdict::PermissionDenied);
            }
            Ok(Some(v)) => return Ok(Some(v)),
            Ok(None) => "unknown-user",
        }
    } else {
        "bad-user-name"
    };
    match opts.unknown {
        Unknown::Ignore => Ok(None),
        Unknown::Deny => {
            say(b, login, Level::Notice, stage, "refuse", reason);
            Err(Verdict::UserUnknown)
        }
    }
}

/// The account stage: enabled in the store and not locked out.
pub fn account(ctx: &mut dyn PamContext, b: &mut Backends, opts: &ModuleOptions, now: Timestamp) -> Verdict {
    let Some(login) = Login::read(ctx) else { return Verdict::UserUnknown };
    let user = match store_view(b, &login, opts, "account", None, now) {
        Ok(Some(v)) => v.user,
        Ok(None) => return Verdict::Ignore,
        Err(v) => return v,
    };
    if user.state != UserState::Enabled {
        say(b, &login, Level::Notice, "account", "refuse", "disabled");
        ctx.tell("This account is disabled.");
        return Verdict::AccountExpired;
    }
    let locked = b.state().and_then(|s| s.locked_until(&login.user, now));
    match locked {
        Ok(Some(until)) => {
            say(b, &login, Level::Notice, "account", "refuse", "locked-out");
            ctx.tell(&format!("This account is locked until {until} after too many failed attempts."));
            Verdict::PermissionDenied
        }
        Ok(None) => {
            say(b, &login, Level::Info, "account", "accept", "enabled");
            Verdict::Success
        }
        Err(e) => failed(b, &login, "account", &e),
    }
}

/// The auth stage, as pam_faillock does it: `preauth` refuses a locked-out user before any
/// password is asked; `authfail` (after the password modules failed) counts a failure;
/// `ldap` checks the password with the directory, for directory users only.
pub fn authenticate(ctx: &mut dyn PamContext, b: &mut Backends, opts: &ModuleOptions, now: Timestamp) -> Verdict {
    let Some(login) = Login::read(ctx) else { return Verdict::UserUnknown };
    // Only store users are counted: root and other local accounts keep their own rules
    // (and could not be unlocked through the store).
    if login.user == "root" {
        return Verdict::Ignore;
    }
    if opts.auth_mode == Some(AuthMode::Ldap) && !b.config.valid_user_name(&login.user) {
        return Verdict::UserUnknown;
    }
    let ignore_unknown = ModuleOptions { unknown: Unknown::Ignore, ..opts.clone() };
    let user = match store_view(b, &login, &ignore_unknown, "auth", None, now) {
        Ok(Some(v)) => v.user,
        Ok(None) => return Verdict::Ignore,
        Err(v) => return v,
    };
    match opts.auth_mode {
        Some(AuthMode::Preauth) => match b.state().and_then(|s| s.locked_until(&login.user, now)) {
            Ok(Some(_)) => {
                say(b, &login, Level::Notice, "auth", "refuse", "locked-out");
                Verdict::PermissionDenied
            }
            Ok(None) => Verdict::Success,
            Err(e) => failed(b, &login, "auth", &e),
        },
        Some(AuthMode::Authfail) => match count_failure(b, &login, now) {
            Ok(locked) => {
                let (level, verdict, reason) = if locked {
                    (Level::Warning, "lockout", "too-many-failures")
                } else {
                    (Level::Notice, "failure", "counted")
                };
                say(b, &login, level, "auth", verdict, reason);
                Verdict::AuthError
            }
            Err(e) => failed(b, &login, "auth", &e),
        },
        // A local user's password is not the directory's to accept.
        Some(AuthMode::Ldap) if user.source != "ldap" => Verdict::Ignore,
        Some(AuthMode::Ldap) => directory_password(ctx, b, &login, now),
        None => Verdict::Ignore,
    }
}

/// Counts a failed password with the lockout rules; true when it locked the user out.
fn count_failure(b: &mut Backends, login: &Login, now: Timestamp) -> Result<bool, StoreError> {
    let (threshold, window, duration) =
        (b.config.lockout.threshold, b.config.lockout.window, b.config.lockout.duration);
    let rhost = login.rhost.clone();
    b.state()?.record_failure(&login.user, rhost.as_deref(), now, threshold, window, duration).map(|l| l.is_some())
}

/// `ldap`: a locked-out user is refused before the directory is asked; a refusal counts
/// towards the lockout; an empty password never reaches the directory.
fn directory_password(ctx: &mut dyn PamContext, b: &mut Backends, login: &Login, now: Timestamp) -> Verdict {
    if b.passwords.is_none() {
        b.log.log(Level::Error, &[("stage", "auth"), ("error", "module argument ldap without an [ldap] section")]);
        return Verdict::ServiceError;
    }
    match b.state().and_then(|s| s.locked_until(&login.user, now)) {
        Ok(Some(_)) => {
            say(b, login, Level::Notice, "auth", "refuse", "locked-out");
            return Verdict::PermissionDenied;
        }
        Ok(None) => {}
        Err(e) => return failed(b, login, "auth", &e),
    }
    let password = ctx.password().unwrap_or_else(|| Secret::new(String::new()));
    let checked = match &b.passwords {
        Some(p) => p.check(&login.user, &password),
        None => return Verdict::ServiceError,
    };
    match checked {
        Ok(Checked::Accepted) => {
            say(b, login, Level::Info, "auth", "accept", "ldap");
            Verdict::Success
        }
        Ok(Checked::Refused(reason)) => {
            let locked = count_failure(b, login, now).unwrap_or(false);
            say(b, login, Level::Notice, "auth", if locked { "lockout" } else { "failure" }, &reason);
            Verdict::AuthError
        }
        Err(e) => {
            b.log.log(Level::Error, &[("stage", "auth"), ("user", &login.user), ("verdict", "refuse"), ("error", &e)]);
            Verdict::AuthInfoUnavailable
        }
    }
}

/// Session open: the rate limit, the login shell, the data folder (and jail, quota), the
/// login record.
pub fn open_session(ctx: &mut dyn PamContext, b: &mut Backends, opts: &ModuleOptions, now: Timestamp) -> Verdict {
    let Some(login) = Login::read(ctx) else { return Verdict::UserUnknown };
    let fingerprint = ctx.env("SSH_AUTH_INFO_0").and_then(|info| accepted_key(&info));
    let view = match store_view(b, &login, opts, "session", fingerprint.as_deref(), now) {
        Ok(Some(v)) => v,
        Ok(None) => return Verdict::Ignore,
        Err(v) => return v,
    };
    match b.state().and_then(|s| s.sessions_last_minute(&login.user, now)) {
        Ok(n) if n >= b.config.lockout.sessions_per_minute => {
            say(b, &login, Level::Notice, "session", "refuse", "rate-limit");
            ctx.tell(&format!(
                "Too many sessions: at most {} a minute. Try again in a minute.",
                b.config.lockout.sessions_per_minute
            ));
            return Verdict::SessionError;
        }
        Ok(_) => {}
        Err(e) => return failed(b, &login, "session", &e),
    }
    let Some(account) = b.host.account(&login.user) else {
        say(b, &login, Level::Error, "session", "refuse", "no-system-account");
        return Verdict::SessionError;
    };
    if let Some(verdict) = login_shell_check(ctx, b, &login, &view, fingerprint.as_deref(), &account, now) {
        return verdict;
    }
    let folder = match b.host.data_folder(&b.config, &login.user, &account) {
        Ok(crate::session::datadir::Outcome::Created(path)) => {
            let shown = path.display().to_string();
            b.log.log(Level::Info, &[("stage", "session"), ("user", &login.user), ("created", &shown)]);
            path
        }
        Ok(crate::session::datadir::Outcome::Existed(path)) => path,
        Err(e) => {
            b.log.log(
                Level::Error,
                &[("stage", "session"), ("user", &login.user), ("verdict", "refuse"), ("error", &e)],
            );
            ctx.tell("Your data folder could not be prepared; please tell the administrators.");
            return Verdict::SessionError;
        }
    };
    if let Some(quota) = b.config.users.quota.clone() {
        ensure_quota(b, &login, &quota, &folder, now);
    }
    if b.config.jail.group.is_some() && b.host.jailed(&b.config, &login.user, account.gid) {
        if let Err(e) = b.host.jail(&b.config, &login.user, &account) {
            b.log.log(Level::Error, &[("stage", "session"), ("user", &login.user), ("jail", "failed"), ("error", &e)]);
            return Verdict::SessionError;
        }
    }
    let service = login.service.clone();
    let recorded = b.state().and_then(|s| {
        s.record_login(&login.user, fingerprint.as_deref(), login.rhost.as_deref(), service.as_deref(), now)
    });
    match recorded {
        Ok(_) => {
            let fp = fingerprint.as_deref().unwrap_or("-");
            b.log.log(
                Level::Info,
                &[
                    ("stage", "session"),
                    ("user", &login.user),
                    ("fingerprint", fp),
                    ("rhost", login.rhost()),
                    ("verdict", "open"),
                ],
            );
            Verdict::Success
        }
        Err(e) => failed(b, &login, "session", &e),
    }
}

/// With `shell.require_login_shell`: a session whose scope is not `shell` on an account
/// whose login shell is not gatehouse-shell is refused, since sshd starts that shell, and
/// its startup files (bash reads ~/.bashrc even for `-c`), before the forced command.
fn login_shell_check(
    ctx: &mut dyn PamContext,
    b: &mut Backends,
    login: &Login,
    view: &LoginView,
    fingerprint: Option<&str>,
    account: &Account,
    now: Timestamp,
) -> Option<Verdict> {
    if !b.config.shell.require_login_shell || b.config.shell.is_ours(&account.shell) {
        return None;
    }
    // The key's scope when a key of the store logged in; else (a password, a key from
    // elsewhere) the account's policy.
    let key = view.keys.first().filter(|_| fingerprint.is_some());
    let scope = match key {
        Some(k) => crate::keycmd::lines::usable_scope(&view.user, k, now).ok(),
        None => Some(view.user.policy),
    };
    if scope == Some(Scope::Shell) {
        return None;
    }
    let shell = account.shell.display().to_string();
    b.log.log(
        Level::Warning,
        &[
            ("stage", "session"),
            ("user", &login.user),
            ("rhost", login.rhost()),
            ("fingerprint", fingerprint.unwrap_or("-")),
            ("shell", &shell),
            ("verdict", "refuse"),
            ("reason", "login-shell"),
        ],
    );
    ctx.tell(
        "This account's login shell is not gatehouse-shell, so this session cannot be served; please tell the administrators.",
    );
    Some(Verdict::SessionError)
}

/// Sets `users.quota` on the folder's filesystem unless the state file says it was set
/// already; a failure is logged, does not stop the login, and is retried at the next one.
fn ensure_quota(b: &mut Backends, login: &Login, quota: &str, folder: &Path, now: Timestamp) {
    let user = login.user.as_str();
    match b.state().and_then(|s| s.quota_applied(user)) {
        Ok(Some((set, _))) if set == quota => return,
        Ok(_) => {}
        Err(e) => {
            let text = e.to_string();
            b.log.log(Level::Warning, &[("stage", "session"), ("user", user), ("error", &text)]);
            return;
        }
    }
    match b.host.quota(quota, user, folder) {
        Ok(filesystem) => {
            let fs = filesystem.display().to_string();
            if let Err(e) = b.state().and_then(|s| s.record_quota(user, quota, &fs, now)) {
                let text = e.to_string();
                b.log.log(Level::Warning, &[("stage", "session"), ("user", user), ("error", &text)]);
            }
            b.log.log(Level::Info, &[("stage", "session"), ("user", user), ("quota", quota), ("filesystem", &fs)]);
        }
        Err(e) => {
            let text = e.to_string();
            b.log.log(
                Level::Warning,
                &[("stage", "session"), ("user", user), ("quota", "not-applied"), ("error", &text)],
            );
        }
    }
}

/// Session close: the login record ends.
pub fn close_session(ctx: &mut dyn PamContext, b: &mut Backends, _opts: &ModuleOptions, now: Timestamp) -> Verdict {
    let Some(login) = Login::read(ctx) else { return Verdict::UserUnknown };
    if !b.config.valid_user_name(&login.user) {
        return Verdict::Ignore;
    }
    match b.state().and_then(|s| s.record_logout(&login.user, login.rhost.as_deref(), now)) {
        Ok(()) => Verdict::Success,
        Err(e) => failed(b, &login, "session", &e),
    }
}

/// A stage as the shims call it.
pub type Stage = fn(&mut dyn PamContext, &mut Backends, &ModuleOptions, Timestamp) -> Verdict;

/// Loads the configuration the module arguments name; an error is logged to standard
/// error and syslog's default socket (the configured one is not known yet).
pub fn load_config(opts: &ModuleOptions, program: &'static str) -> Result<Config, Verdict> {
    Config::load(opts.config.as_deref()).map_err(|e| {
        Logger::stderr_only(program).log(Level::Error, &[("error", &e.0)]);
        Verdict::ServiceError
    })
}

/// The backends of one process, kept between stages (sshd runs a login's account and
/// session stages in one process). They are opened again when the configuration file
/// changes, or another one is named.
#[derive(Default)]
pub struct Cache {
    held: Option<(Option<PathBuf>, Option<crate::config::FileStamp>, Backends)>,
}

impl Cache {
    pub const fn new() -> Cache {
        Cache { held: None }
    }

    /// Runs `stage` with this process's backends, loading them first when needed.
    pub fn run(
        &mut self,
        ctx: &mut dyn PamContext,
        opts: &ModuleOptions,
        program: &'static str,
        stage: Stage,
    ) -> Verdict {
        if opts.test_panic {
            panic!("test_panic: a panic on purpose");
        }
        let path = opts.config.clone();
        let stamp = crate::config::FileStamp::of(path.as_deref().unwrap_or(Path::new(crate::config::DEFAULT_PATH)));
        let fresh = matches!(&self.held, Some((p, s, _)) if *p == path && *s == stamp && stamp.is_some());
        if !fresh {
            self.held = None;
            let config = match load_config(opts, program) {
                Ok(c) => c,
                Err(v) => return v,
            };
            self.held = Some((path, stamp, Backends::system(config, program)));
        }
        match &mut self.held {
            Some((_, _, backends)) => stage(ctx, backends, opts, crate::time::now()),
            None => Verdict::ServiceError,
        }
    }
}

#[cfg(test)]
mod tests;
