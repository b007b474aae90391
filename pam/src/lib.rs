//! pam_gatehouse.so: a thin shim over `gatehouse::account`. Arguments, the PAM handle and
//! result codes are translated here; every decision is made in the library, where it is
//! unit-tested. pam-bindings wraps each hook in `catch_unwind`, so a panic becomes
//! PAM_ABORT and never unwinds into sshd.

use gatehouse::account::{self, ModuleOptions, PamContext, Verdict};
use pam::constants::{PamFlag, PamResultCode, PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF};
use pam::conv::Conv;
use pam::items::{AuthTok, RHost, Service};
use pam::module::{PamHandle, PamHooks};
use std::ffi::{CStr, CString};
use std::os::raw::c_char;

extern "C" {
    // libpam: the value of `name` in the PAM environment, or NULL. The string belongs to
    // PAM and lives as long as the handle.
    fn pam_getenv(pamh: *mut PamHandle, name: *const c_char) -> *const c_char;
}

struct Handle<'a>(&'a mut PamHandle);

impl PamContext for Handle<'_> {
    fn user(&mut self) -> Option<String> {
        self.0.get_user(None).ok()
    }

    fn service(&self) -> Option<String> {
        let item = self.0.get_item::<Service>().ok().flatten()?;
        item.0.to_str().ok().map(str::to_string)
    }

    fn rhost(&self) -> Option<String> {
        let item = self.0.get_item::<RHost>().ok().flatten()?;
        item.0.to_str().ok().map(str::to_string)
    }

    fn env(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        let handle: *const PamHandle = &*self.0;
        // SAFETY: `handle` is the live handle PAM passed to this hook (we hold the only
        // reference); `name` is a NUL-terminated string that outlives the call.
        let value = unsafe { pam_getenv(handle.cast_mut(), name.as_ptr()) };
        if value.is_null() {
            return None;
        }
        // SAFETY: non-NULL results of pam_getenv are NUL-terminated strings owned by PAM,
        // valid while the handle is; we copy them out at once.
        let text = unsafe { CStr::from_ptr(value) };
        text.to_str().ok().map(str::to_string)
    }

    fn tell(&mut self, message: &str) {
        if let Ok(Some(conv)) = self.0.get_item::<Conv>() {
            let _ = conv.send(PAM_ERROR_MSG, message);
        }
    }

    fn password(&mut self) -> Option<String> {
        if let Ok(Some(token)) = self.0.get_item::<AuthTok>() {
            return std::str::from_utf8(token.as_bytes()).ok().map(str::to_string);
        }
        let conv = self.0.get_item::<Conv>().ok().flatten()?;
        let answer = conv.send(PAM_PROMPT_ECHO_OFF, "Password: ").ok().flatten()?;
        answer.as_str().ok().map(str::to_string)
    }
}

/// `auth … pam_gatehouse.so ldap`: the password checked by binding to the directory as
/// the user. Failures count towards the lockout; an empty password never reaches it.
fn ldap_authenticate(ctx: &mut dyn PamContext, opts: &ModuleOptions, now: gatehouse::time::Timestamp) -> Verdict {
    use gatehouse::log::{Level, Logger};
    let config = match gatehouse::config::Config::load(opts.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            Logger::stderr_only("pam_gatehouse").log(Level::Error, &[("error", &e.0)]);
            return Verdict::ServiceError;
        }
    };
    let mut log = Logger::open("pam_gatehouse", &config);
    let Some(ldap) = config.ldap.clone() else {
        log.log(Level::Error, &[("stage", "auth"), ("error", "module argument ldap without an [ldap] section")]);
        return Verdict::ServiceError;
    };
    let Some(user) = ctx.user() else {
        return Verdict::UserUnknown;
    };
    if !config.valid_user_name(&user) {
        return Verdict::UserUnknown;
    }
    // Only directory users of the store: a local user's or root's password is not the
    // directory's to accept.
    if user == "root" {
        return Verdict::Ignore;
    }
    use gatehouse::store::LoginStore;
    let from_directory =
        gatehouse::store::sqlite::SqliteStore::open_reader(&config.store_path, config.login_timeout_ms)
            .and_then(|s| s.login_view(&user, None))
            .map(|v| v.is_some_and(|v| v.user.source == "ldap"));
    match from_directory {
        Ok(true) => {}
        Ok(false) => return Verdict::Ignore,
        Err(e) => {
            log.log(Level::Error, &[("stage", "auth"), ("user", &user), ("error", &e.to_string())]);
            return Verdict::ServiceError;
        }
    }
    let rhost = ctx.rhost();
    let shown_rhost = rhost.clone().unwrap_or_else(|| "-".into());
    let say = |log: &mut Logger, level, verdict: &str, reason: &str| {
        log.log(
            level,
            &[("stage", "auth"), ("user", &user), ("rhost", &shown_rhost), ("verdict", verdict), ("reason", reason)],
        );
    };
    match account::locked_out(&config, &user, now) {
        Ok(true) => {
            say(&mut log, Level::Notice, "refuse", "locked-out");
            return Verdict::PermissionDenied;
        }
        Ok(false) => {}
        Err(_) => return Verdict::ServiceError,
    }
    let password = ctx.password().unwrap_or_default();
    let outcome = gatehouse_ldap::password::check(&ldap, &user, &password);
    match outcome {
        Ok(Ok(())) => {
            say(&mut log, Level::Info, "accept", "ldap");
            Verdict::Success
        }
        Ok(Err(why)) => {
            let reason = format!("{why:?}").to_lowercase();
            let locked = account::count_failure(&config, &user, rhost.as_deref(), now).unwrap_or(false);
            say(&mut log, Level::Notice, if locked { "lockout" } else { "failure" }, &reason);
            Verdict::AuthError
        }
        Err(e) => {
            log.log(
                Level::Error,
                &[("stage", "auth"), ("user", &user), ("verdict", "refuse"), ("error", &e.to_string())],
            );
            Verdict::AuthInfoUnavailable
        }
    }
}

fn authenticate(ctx: &mut dyn PamContext, opts: &ModuleOptions, now: gatehouse::time::Timestamp) -> Verdict {
    if opts.test_panic {
        panic!("test_panic: a panic on purpose");
    }
    match opts.auth_mode {
        Some(account::AuthMode::Ldap) => ldap_authenticate(ctx, opts, now),
        _ => account::authenticate(ctx, opts, now),
    }
}

fn options(args: &[&CStr]) -> Result<ModuleOptions, String> {
    let texts: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("\u{fffd}")).collect();
    ModuleOptions::parse(texts)
}

/// Maps our verdict onto PAM's codes.
pub fn code(verdict: Verdict) -> PamResultCode {
    match verdict {
        Verdict::Success => PamResultCode::PAM_SUCCESS,
        Verdict::Ignore => PamResultCode::PAM_IGNORE,
        Verdict::UserUnknown => PamResultCode::PAM_USER_UNKNOWN,
        Verdict::AccountExpired => PamResultCode::PAM_ACCT_EXPIRED,
        Verdict::PermissionDenied => PamResultCode::PAM_PERM_DENIED,
        Verdict::AuthError => PamResultCode::PAM_AUTH_ERR,
        Verdict::SessionError => PamResultCode::PAM_SESSION_ERR,
        Verdict::ServiceError => PamResultCode::PAM_SERVICE_ERR,
        Verdict::AuthInfoUnavailable => PamResultCode::PAM_AUTHINFO_UNAVAIL,
    }
}

type Stage = fn(&mut dyn PamContext, &ModuleOptions, gatehouse::time::Timestamp) -> Verdict;

fn run(pamh: &mut PamHandle, args: Vec<&CStr>, stage: Stage) -> PamResultCode {
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            gatehouse::log::Logger::stderr_only("pam_gatehouse").log(gatehouse::log::Level::Error, &[("error", &e)]);
            return PamResultCode::PAM_SERVICE_ERR;
        }
    };
    code(stage(&mut Handle(pamh), &opts, gatehouse::time::now()))
}

pub struct Gatehouse;

impl PamHooks for Gatehouse {
    fn acct_mgmt(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(pamh, args, account::account)
    }

    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(pamh, args, authenticate)
    }

    fn sm_open_session(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(pamh, args, account::open_session)
    }

    fn sm_close_session(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(pamh, args, account::close_session)
    }

    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }
}

pam::pam_hooks!(Gatehouse);
