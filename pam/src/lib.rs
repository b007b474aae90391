//! pam_gatehouse.so: a thin shim over `gatehouse::session`. Arguments, the PAM handle and
//! result codes are translated here; every decision is made in the library, where it is
//! unit-tested. pam-bindings wraps each hook in `catch_unwind`, so a panic becomes
//! PAM_ABORT and never unwinds into sshd. The module links no directory client: a
//! directory password is checked by `gatehouse-ldap check-password`, run as a child.

use gatehouse::session::password::Secret;
use gatehouse::session::{self, Cache, ModuleOptions, PamContext, Stage, Verdict};
use pam::constants::{PamFlag, PamResultCode, PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF};
use pam::conv::Conv;
use pam::items::{AuthTok, RHost, Service};
use pam::module::{PamHandle, PamHooks};
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::Mutex;

extern "C" {
    // libpam: the value of `name` in the PAM environment, or NULL. The string belongs to
    // PAM and lives as long as the handle.
    fn pam_getenv(pamh: *mut PamHandle, name: *const c_char) -> *const c_char;
}

/// The configuration and the open SQLite files of this process: sshd runs a login's
/// account and session stages in one process, which then reads the configuration once
/// and opens each file once.
static BACKENDS: Mutex<Cache> = Mutex::new(Cache::new());

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

    fn password(&mut self) -> Option<Secret> {
        if let Ok(Some(token)) = self.0.get_item::<AuthTok>() {
            return std::str::from_utf8(token.as_bytes()).ok().map(|p| Secret::new(p.to_string()));
        }
        let conv = self.0.get_item::<Conv>().ok().flatten()?;
        let answer = conv.send(PAM_PROMPT_ECHO_OFF, "Password: ").ok().flatten()?;
        answer.as_str().ok().map(|p| Secret::new(p.to_string()))
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

fn run(pamh: &mut PamHandle, args: Vec<&CStr>, stage: Stage) -> PamResultCode {
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            gatehouse::log::Logger::stderr_only("pam_gatehouse").log(gatehouse::log::Level::Error, &[("error", &e)]);
            return PamResultCode::PAM_SERVICE_ERR;
        }
    };
    // A panic while the lock was held left the cache as it was; it is still usable.
    let mut cache = BACKENDS.lock().unwrap_or_else(|e| e.into_inner());
    code(cache.run(&mut Handle(pamh), &opts, "pam_gatehouse", stage))
}

pub struct Gatehouse;

impl PamHooks for Gatehouse {
    fn acct_mgmt(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(pamh, args, session::account)
    }

    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(pamh, args, session::authenticate)
    }

    fn sm_open_session(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(pamh, args, session::open_session)
    }

    fn sm_close_session(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(pamh, args, session::close_session)
    }

    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }
}

pam::pam_hooks!(Gatehouse);
