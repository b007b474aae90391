//! What the PAM module decides, behind a small trait so it is tested without libpam:
//! account checks, session setup and the login record, failure counting.
//! `pam/` (pam_gatehouse.so) and `gatehouse-session` (for pam_exec) are thin shims over it.

use crate::config::Config;
use crate::log::{Level, Logger};
use crate::policy::UserState;
use crate::state::{accepted_key, StateStore};
use crate::store::sqlite::SqliteStore;
use crate::store::LoginStore;
use crate::time::Timestamp;
use std::path::PathBuf;

/// What the module needs from PAM.
pub trait PamContext {
    fn user(&mut self) -> Option<String>;
    fn service(&self) -> Option<String>;
    fn rhost(&self) -> Option<String>;
    /// A variable of the PAM environment (sshd puts `SSH_AUTH_INFO_0` there).
    fn env(&self, name: &str) -> Option<String>;
    /// A message for the person logging in.
    fn tell(&mut self, message: &str);
    /// The password: one an earlier module already read (PAM_AUTHTOK), else asked for.
    fn password(&mut self) -> Option<String>;
}

/// PAM results this module returns.
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
    /// Parses `config=PATH`, `unknown=ignore|deny`, `preauth`, `authfail`, `test_panic`.
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

/// Everything a stage needs, loaded once.
struct Stage {
    now: Timestamp,
    config: Config,
    log: Logger,
    user: String,
    rhost: Option<String>,
    service: Option<String>,
}

impl Stage {
    fn load(ctx: &mut dyn PamContext, opts: &ModuleOptions, program: &'static str) -> Result<Stage, Verdict> {
        if opts.test_panic {
            panic!("test_panic: a panic on purpose");
        }
        let config = match Config::load(opts.config.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                Logger::stderr_only(program).log(Level::Error, &[("error", &e.0)]);
                return Err(Verdict::ServiceError);
            }
        };
        let log = Logger::open(program, &config);
        let Some(user) = ctx.user() else {
            return Err(Verdict::UserUnknown);
        };
        Ok(Stage { now: crate::time::now(), config, log, user, rhost: ctx.rhost(), service: ctx.service() })
    }

    /// Logs a state-file failure; the stage fails closed.
    fn failed(&mut self, stage: &str, error: &str) -> Verdict {
        self.log.log(Level::Error, &[("stage", stage), ("user", &self.user), ("verdict", "refuse"), ("error", error)]);
        Verdict::ServiceError
    }

    fn say(&mut self, level: Level, stage: &str, verdict: &str, reason: &str) {
        let rhost = self.rhost.clone().unwrap_or_else(|| "-".into());
        self.log.log(
            level,
            &[("stage", stage), ("user", &self.user), ("rhost", &rhost), ("verdict", verdict), ("reason", reason)],
        );
    }

    fn state(&mut self) -> Result<StateStore, Verdict> {
        StateStore::open_writer(&self.config.state_path, self.config.busy_timeout_ms, self.config.state_gid()).map_err(
            |e| {
                let text = e.to_string();
                self.log.log(Level::Error, &[("user", &self.user), ("error", &text)]);
                Verdict::ServiceError
            },
        )
    }

    /// The store's view of the user: `Ok(None)` for a user it does not know.
    fn store_user(&mut self, opts: &ModuleOptions, stage: &str) -> Result<Option<crate::store::User>, Verdict> {
        self.store_view(opts, stage, None).map(|v| v.map(|v| v.user))
    }

    /// The user and, with `fingerprint`, that key of theirs if the store has it.
    fn store_view(
        &mut self,
        opts: &ModuleOptions,
        stage: &str,
        fingerprint: Option<&str>,
    ) -> Result<Option<crate::store::LoginView>, Verdict> {
        if !self.config.valid_user_name(&self.user) {
            return self.unknown(opts, stage, "bad-user-name").map(|_| None);
        }
        let store = SqliteStore::open_reader(&self.config.store_path, self.config.login_timeout_ms).map_err(|e| {
            let text = e.to_string();
            self.log.log(Level::Error, &[("stage", stage), ("user", &self.user), ("error", &text)]);
            Verdict::ServiceError
        })?;
        let view = store.login_view(&self.user, fingerprint).map_err(|e| {
            let text = e.to_string();
            self.log.log(Level::Error, &[("stage", stage), ("user", &self.user), ("error", &text)]);
            Verdict::ServiceError
        })?;
        match view {
            Some(v) if !v.fresh(self.config.ldap.as_ref().map(|l| l.staleness_max), self.now) => {
                self.say(Level::Warning, stage, "refuse", "directory-stale");
                Err(Verdict::PermissionDenied)
            }
            Some(v) => Ok(Some(v)),
            None => self.unknown(opts, stage, "unknown-user").map(|_| None),
        }
    }

    fn unknown(&mut self, opts: &ModuleOptions, stage: &str, reason: &str) -> Result<(), Verdict> {
        match opts.unknown {
            Unknown::Ignore => Ok(()),
            Unknown::Deny => {
                self.say(Level::Notice, stage, "refuse", reason);
                Err(Verdict::UserUnknown)
            }
        }
    }
}

/// The account stage: enabled in the store and not locked out.
pub fn account(ctx: &mut dyn PamContext, opts: &ModuleOptions, now: Timestamp) -> Verdict {
    let mut stage = match Stage::load(ctx, opts, "pam_gatehouse") {
        Ok(s) => s,
        Err(v) => return v,
    };
    let user = match stage.store_user(opts, "account") {
        Ok(Some(u)) => u,
        Ok(None) => return Verdict::Ignore,
        Err(v) => return v,
    };
    if user.state != UserState::Enabled {
        stage.say(Level::Notice, "account", "refuse", "disabled");
        ctx.tell("This account is disabled.");
        return Verdict::AccountExpired;
    }
    let state = match stage.state() {
        Ok(s) => s,
        Err(v) => return v,
    };
    match state.locked_until(&stage.user, now) {
        Ok(Some(until)) => {
            stage.say(Level::Notice, "account", "refuse", "locked-out");
            ctx.tell(&format!(
                "This account is locked until {} after too many failed attempts.",
                crate::time::rfc3339(until)
            ));
            Verdict::PermissionDenied
        }
        Ok(None) => {
            stage.say(Level::Info, "account", "accept", "enabled");
            Verdict::Success
        }
        Err(e) => {
            let text = e.to_string();
            stage.log.log(Level::Error, &[("user", &stage.user), ("error", &text)]);
            Verdict::ServiceError
        }
    }
}

/// The auth stage, as pam_faillock does it: `preauth` refuses a locked-out user before any
/// password is asked; `authfail` (after the password modules failed) counts a failure.
pub fn authenticate(ctx: &mut dyn PamContext, opts: &ModuleOptions, now: Timestamp) -> Verdict {
    let mut stage = match Stage::load(ctx, opts, "pam_gatehouse") {
        Ok(s) => s,
        Err(v) => return v,
    };
    // Only store users are counted: root and other local accounts keep their own rules
    // (and could not be unlocked through the store).
    if stage.user == "root" {
        return Verdict::Ignore;
    }
    match stage.store_user(&ModuleOptions { unknown: Unknown::Ignore, ..opts.clone() }, "auth") {
        Ok(Some(_)) => {}
        Ok(None) => return Verdict::Ignore,
        Err(v) => return v,
    }
    let state = match stage.state() {
        Ok(s) => s,
        Err(v) => return v,
    };
    match opts.auth_mode {
        Some(AuthMode::Preauth) => match state.locked_until(&stage.user, now) {
            Ok(Some(_)) => {
                stage.say(Level::Notice, "auth", "refuse", "locked-out");
                Verdict::PermissionDenied
            }
            Ok(None) => Verdict::Success,
            Err(e) => stage.failed("auth", &e.to_string()),
        },
        Some(AuthMode::Authfail) => {
            let c = &stage.config;
            let (threshold, window, duration) = (c.lockout_threshold, c.lockout_window, c.lockout_duration);
            match state.record_failure(&stage.user, stage.rhost.as_deref(), now, threshold, window, duration) {
                Ok(Some(_)) => stage.say(Level::Warning, "auth", "lockout", "too-many-failures"),
                Ok(None) => stage.say(Level::Notice, "auth", "failure", "counted"),
                Err(e) => return stage.failed("auth", &e.to_string()),
            }
            Verdict::AuthError
        }
        // The directory check lives in gatehouse-ldap; pam_gatehouse calls it directly.
        Some(AuthMode::Ldap) | None => Verdict::Ignore,
    }
}

/// Counts a failed password for `user` (with the lockout rules) and says whether it
/// locked the account. For auth modules that check passwords themselves.
pub fn count_failure(config: &Config, user: &str, rhost: Option<&str>, now: Timestamp) -> Result<bool, String> {
    let state = StateStore::open_writer(&config.state_path, config.busy_timeout_ms, config.state_gid())
        .map_err(|e| e.to_string())?;
    state
        .record_failure(user, rhost, now, config.lockout_threshold, config.lockout_window, config.lockout_duration)
        .map(|l| l.is_some())
        .map_err(|e| e.to_string())
}

/// Whether `user` is locked out now.
pub fn locked_out(config: &Config, user: &str, now: Timestamp) -> Result<bool, String> {
    let state = StateStore::open_writer(&config.state_path, config.busy_timeout_ms, config.state_gid())
        .map_err(|e| e.to_string())?;
    state.locked_until(user, now).map(|u| u.is_some()).map_err(|e| e.to_string())
}

/// Session open: the rate limit, the data folder (and jail), the login record.
pub fn open_session(ctx: &mut dyn PamContext, opts: &ModuleOptions, now: Timestamp) -> Verdict {
    let mut stage = match Stage::load(ctx, opts, "pam_gatehouse") {
        Ok(s) => s,
        Err(v) => return v,
    };
    let fingerprint = ctx.env("SSH_AUTH_INFO_0").and_then(|info| accepted_key(&info));
    let view = match stage.store_view(opts, "session", fingerprint.as_deref()) {
        Ok(Some(v)) => v,
        Ok(None) => return Verdict::Ignore,
        Err(v) => return v,
    };
    let state = match stage.state() {
        Ok(s) => s,
        Err(v) => return v,
    };
    match state.sessions_last_minute(&stage.user, now) {
        Ok(n) if n >= stage.config.sessions_per_minute => {
            stage.say(Level::Notice, "session", "refuse", "rate-limit");
            ctx.tell(&format!(
                "Too many sessions: at most {} a minute. Try again in a minute.",
                stage.config.sessions_per_minute
            ));
            return Verdict::SessionError;
        }
        Ok(_) => {}
        Err(e) => return stage.failed("session", &e.to_string()),
    }
    let account = match nix::unistd::User::from_name(&stage.user) {
        Ok(Some(a)) => a,
        _ => {
            stage.say(Level::Error, "session", "refuse", "no-system-account");
            return Verdict::SessionError;
        }
    };
    if stage.config.require_login_shell && !crate::config::login_shell_is_ours(&stage.config, &account.shell) {
        // The scope this session gets: the key's that logged in, else (a password, or a
        // key from outside the store) the account's policy.
        let key = view.keys.first().filter(|_| fingerprint.is_some());
        let scope = match key {
            Some(k) => crate::authorized::usable_scope(&view.user, k, now).ok(),
            None => Some(view.user.policy),
        };
        if scope != Some(crate::policy::Scope::Shell) {
            // sshd starts the login shell first, with its startup files (bash reads
            // ~/.bashrc even for `-c`), which a files key may have uploaded.
            let shell = account.shell.display().to_string();
            let rhost = stage.rhost.clone().unwrap_or_else(|| "-".into());
            let fp = fingerprint.clone().unwrap_or_else(|| "-".into());
            stage.log.log(
                Level::Warning,
                &[
                    ("stage", "session"),
                    ("user", &stage.user),
                    ("rhost", &rhost),
                    ("fingerprint", &fp),
                    ("shell", &shell),
                    ("verdict", "refuse"),
                    ("reason", "login-shell"),
                ],
            );
            ctx.tell("This account's login shell is not gatehouse-shell, so this session cannot be served; please tell the administrators.");
            return Verdict::SessionError;
        }
    }
    let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());
    let folder = match crate::datadir::ensure(&stage.config, &stage.user, uid, gid) {
        Ok(crate::datadir::Outcome::Created(path)) => {
            let shown = path.display().to_string();
            stage.log.log(Level::Info, &[("stage", "session"), ("user", &stage.user), ("created", &shown)]);
            path
        }
        Ok(crate::datadir::Outcome::Existed(path)) => path,
        Err(e) => {
            stage.log.log(
                Level::Error,
                &[("stage", "session"), ("user", &stage.user), ("verdict", "refuse"), ("error", &e)],
            );
            ctx.tell("Your data folder could not be prepared; please tell the administrators.");
            return Verdict::SessionError;
        }
    };
    if let Some(quota) = stage.config.quota.clone() {
        ensure_quota(&mut stage, &state, &quota, &folder, now);
    }
    if stage.config.jail_group.is_some() {
        let member = crate::datadir::is_jailed(&stage.config, &stage.user, account.gid.as_raw());
        if member {
            if let Err(e) = crate::datadir::ensure_jail(&stage.config, &stage.user, uid, gid) {
                stage.log.log(
                    Level::Error,
                    &[("stage", "session"), ("user", &stage.user), ("jail", "failed"), ("error", &e)],
                );
                return Verdict::SessionError;
            }
        }
    }
    let rhost = stage.rhost.clone();
    match state.record_login(&stage.user, fingerprint.as_deref(), rhost.as_deref(), stage.service.as_deref(), now) {
        Ok(_) => {
            let fp = fingerprint.unwrap_or_else(|| "-".into());
            let rh = rhost.unwrap_or_else(|| "-".into());
            stage.log.log(
                Level::Info,
                &[
                    ("stage", "session"),
                    ("user", &stage.user),
                    ("fingerprint", &fp),
                    ("rhost", &rh),
                    ("verdict", "open"),
                ],
            );
            Verdict::Success
        }
        Err(e) => stage.failed("session", &e.to_string()),
    }
}

/// Sets `users.quota` on the folder's filesystem unless the state file says it was set
/// already; a failure is logged, does not stop the login, and is retried at the next one.
fn ensure_quota(stage: &mut Stage, state: &StateStore, quota: &str, folder: &std::path::Path, now: Timestamp) {
    match state.quota_applied(&stage.user) {
        Ok(Some((set, _))) if set == quota => return,
        Ok(_) => {}
        Err(e) => {
            let text = e.to_string();
            stage.log.log(Level::Warning, &[("stage", "session"), ("user", &stage.user), ("error", &text)]);
            return;
        }
    }
    match crate::datadir::apply_quota(quota, &stage.user, folder) {
        Ok(filesystem) => {
            let fs = filesystem.display().to_string();
            if let Err(e) = state.record_quota(&stage.user, quota, &fs, now) {
                let text = e.to_string();
                stage.log.log(Level::Warning, &[("stage", "session"), ("user", &stage.user), ("error", &text)]);
            }
            stage.log.log(
                Level::Info,
                &[("stage", "session"), ("user", &stage.user), ("quota", quota), ("filesystem", &fs)],
            );
        }
        Err(e) => {
            let text = e.to_string();
            stage.log.log(
                Level::Warning,
                &[("stage", "session"), ("user", &stage.user), ("quota", "not-applied"), ("error", &text)],
            );
        }
    }
}

/// Session close: the login record ends.
pub fn close_session(ctx: &mut dyn PamContext, opts: &ModuleOptions, now: Timestamp) -> Verdict {
    let mut stage = match Stage::load(ctx, opts, "pam_gatehouse") {
        Ok(s) => s,
        Err(v) => return v,
    };
    if !stage.config.valid_user_name(&stage.user) {
        return Verdict::Ignore;
    }
    let state = match stage.state() {
        Ok(s) => s,
        Err(v) => return v,
    };
    let rhost = stage.rhost.clone();
    match state.record_logout(&stage.user, rhost.as_deref(), now) {
        Ok(()) => Verdict::Success,
        Err(e) => stage.failed("session", &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_arguments() {
        let o = ModuleOptions::parse(["config=/etc/g.toml", "unknown=deny", "authfail"]).unwrap();
        assert_eq!(o.config, Some(PathBuf::from("/etc/g.toml")));
        assert_eq!(o.unknown, Unknown::Deny);
        assert_eq!(o.auth_mode, Some(AuthMode::Authfail));
        assert!(ModuleOptions::parse(["config=relative"]).is_err());
        assert!(ModuleOptions::parse(["unknown=maybe"]).is_err());
        assert!(ModuleOptions::parse(["debug"]).is_err());
        assert_eq!(ModuleOptions::parse([]).unwrap().unknown, Unknown::Ignore);
    }
}
