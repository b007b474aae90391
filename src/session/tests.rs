//! The stages driven by a scripted PAM context over fake backends: every verdict each
//! stage can give, without libpam, root or a directory. The real module is driven by
//! pamtester and sshd in tests/e2e_pam.rs.

use super::host::{Account, Host};
use super::password::{Checked, PasswordCheck, Secret};
use super::*;
use crate::session::datadir::{Outcome, QuotaError};
use crate::store::{Grant, Key, User};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The key sshd reports in `SSH_AUTH_INFO_0`, and its fingerprint.
const KEY_BLOB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";
const KEY_FP: &str = "SHA256:UCUiLr7Pjs9wFFJMDByLgc3NrtdU344OgUM45wZPcIQ";
const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

/// `secs` after [`NOW`].
fn later(secs: u64) -> Timestamp {
    NOW.saturating_add(std::time::Duration::from_secs(secs))
}

struct Ctx {
    user: Option<String>,
    env: HashMap<String, String>,
    password: Option<String>,
    told: Vec<String>,
}

fn ctx(user: &str) -> Ctx {
    Ctx { user: Some(user.into()), env: HashMap::new(), password: None, told: Vec::new() }
}

impl Ctx {
    fn with_key(mut self) -> Ctx {
        self.env.insert("SSH_AUTH_INFO_0".into(), format!("publickey ssh-ed25519 {KEY_BLOB}\n"));
        self
    }
}

impl PamContext for Ctx {
    fn user(&mut self) -> Option<String> {
        self.user.clone()
    }
    fn service(&self) -> Option<String> {
        Some("sshd".into())
    }
    fn rhost(&self) -> Option<String> {
        Some("192.0.2.7".into())
    }
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn tell(&mut self, message: &str) {
        self.told.push(message.into());
    }
    fn password(&mut self) -> Option<Secret> {
        self.password.clone().map(Secret::new)
    }
}

/// Users of the store, each with at most the one key above, of the given scope.
#[derive(Clone, Default)]
struct Store {
    users: Vec<(User, Option<Scope>)>,
    synced: Option<Timestamp>,
    broken: bool,
}

fn user(name: &str, policy: Scope, state: UserState, source: &str) -> User {
    User::for_tests(name, policy, state, source)
}

impl LoginStore for Store {
    fn login_view(&self, name: &str, fingerprint: Option<&str>) -> Result<Option<LoginView>, StoreError> {
        if self.broken {
            return Err(StoreError::Unavailable { path: "store.db".into(), reason: "broken on purpose".into() });
        }
        Ok(self.users.iter().find(|(u, _)| u.name == name).map(|(u, scope)| {
            let keys = match (scope, fingerprint) {
                (Some(scope), Some(KEY_FP)) => vec![Key {
                    user: name.into(),
                    algorithm: "ssh-ed25519".into(),
                    blob: KEY_BLOB.into(),
                    fingerprint: KEY_FP.into(),
                    bits: 256,
                    comment: String::new(),
                    scope: *scope,
                    from: None,
                    expires: None,
                    created: Timestamp::EPOCH,
                    source: "cli".into(),
                }],
                _ => vec![],
            };
            LoginView { user: u.clone(), keys, synced: self.synced, mirrored: None }
        }))
    }
    fn grants_for(&self, _: &[String]) -> Result<Vec<Grant>, StoreError> {
        Ok(vec![])
    }
    fn groups_of(&self, _: &str) -> Result<Vec<String>, StoreError> {
        Ok(vec![])
    }
}

/// What the fake system was asked to do.
#[derive(Default)]
struct Done {
    folders: Vec<String>,
    jails: Vec<String>,
    quotas: Vec<String>,
}

struct FakeHost {
    accounts: HashMap<String, Account>,
    jailed: Vec<String>,
    folder_fails: bool,
    jail_fails: bool,
    quota_fails: bool,
    done: Arc<Mutex<Done>>,
}

impl Host for FakeHost {
    fn account(&self, name: &str) -> Option<Account> {
        self.accounts.get(name).cloned()
    }
    fn jailed(&self, _: &Config, user: &str, _: u32) -> bool {
        self.jailed.iter().any(|j| j == user)
    }
    fn data_folder(&self, _: &Config, user: &str, _: &Account) -> Result<Outcome, String> {
        if self.folder_fails {
            return Err("No space left on device".into());
        }
        self.done.lock().unwrap().folders.push(user.into());
        Ok(Outcome::Created(PathBuf::from(format!("/data/{user}"))))
    }
    fn jail(&self, _: &Config, user: &str, _: &Account) -> Result<(), String> {
        if self.jail_fails {
            return Err("jail.root /jail: mode 0775".into());
        }
        self.done.lock().unwrap().jails.push(user.into());
        Ok(())
    }
    fn quota(&self, quota: &str, user: &str, _: &Path) -> Result<PathBuf, QuotaError> {
        if self.quota_fails {
            return Err(QuotaError::NoTools("not installed".into()));
        }
        self.done.lock().unwrap().quotas.push(format!("{user}:{quota}"));
        Ok(PathBuf::from("/data"))
    }
}

struct Passwords(Result<Checked, String>);

impl PasswordCheck for Passwords {
    fn check(&self, _: &str, password: &Secret) -> Result<Checked, String> {
        if password.expose().is_empty() {
            return Ok(Checked::Refused("empty".into()));
        }
        self.0.clone()
    }
}

/// A test world: a config whose state file lives in a fresh folder, the store, the host.
struct World {
    dir: PathBuf,
    backends: Backends,
    done: Arc<Mutex<Done>>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn world(name: &str, extra_config: &str, store: Store, shell: &str) -> World {
    world_with(name, extra_config, store, shell, |_| {})
}

fn world_with(name: &str, extra_config: &str, store: Store, shell: &str, tweak: impl FnOnce(&mut FakeHost)) -> World {
    let dir = std::env::temp_dir().join(format!("gh-session-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[state]\npath = \"{}\"\n[lockout]\nthreshold = 2\nsessions_per_minute = 3\n{extra_config}",
        dir.join("state.db").display()
    );
    let config = Config::parse("t.toml", &text).unwrap();
    let done = Arc::new(Mutex::new(Done::default()));
    let mut host = FakeHost {
        accounts: [("alice", 20_001), ("bob", 20_002), ("dora", 20_004)]
            .into_iter()
            .map(|(n, uid)| (n.to_string(), Account { uid, gid: uid, shell: PathBuf::from(shell) }))
            .collect(),
        jailed: vec![],
        folder_fails: false,
        jail_fails: false,
        quota_fails: false,
        done: done.clone(),
    };
    tweak(&mut host);
    let log = Logger::open_at("pam_gatehouse", Path::new("/nonexistent/log.sock"), false);
    let open: StoreOpener = Box::new(move |_: &Config| Ok(Box::new(store.clone()) as Box<dyn LoginStore + Send>));
    let passwords: Box<dyn PasswordCheck> = Box::new(Passwords(Ok(Checked::Accepted)));
    let backends = Backends::with(config, log, Box::new(host), Some(passwords), open);
    World { dir, backends, done }
}

fn store() -> Store {
    Store {
        users: vec![
            (user("alice", Scope::Shell, UserState::Enabled, "cli"), Some(Scope::Shell)),
            (user("bob", Scope::Files, UserState::Enabled, "cli"), Some(Scope::Files)),
            (user("carol", Scope::Shell, UserState::Disabled, "cli"), None),
            (user("dora", Scope::Shell, UserState::Enabled, "ldap"), Some(Scope::Shell)),
        ],
        synced: Some(NOW.saturating_sub(std::time::Duration::from_secs(60))),
        broken: false,
    }
}

const LDAP: &str = "[ldap]\nurl = \"ldap://127.0.0.1\"\nbase_dn = \"dc=example,dc=org\"\n";
const GH_SHELL: &str = "/usr/bin/gatehouse-shell";

fn opts(args: &[&str]) -> ModuleOptions {
    ModuleOptions::parse(args.iter().copied()).unwrap()
}

#[test]
fn module_arguments() {
    let o = opts(&["config=/etc/g.toml", "unknown=deny", "authfail"]);
    assert_eq!(o.config, Some(PathBuf::from("/etc/g.toml")));
    assert_eq!(o.unknown, Unknown::Deny);
    assert_eq!(o.auth_mode, Some(AuthMode::Authfail));
    assert!(ModuleOptions::parse(["config=relative"]).is_err());
    assert!(ModuleOptions::parse(["unknown=maybe"]).is_err());
    assert!(ModuleOptions::parse(["debug"]).is_err());
    assert_eq!(ModuleOptions::parse([]).unwrap().unknown, Unknown::Ignore);
}

#[test]
fn account_stage() {
    let mut w = world("account", "", store(), GH_SHELL);
    let b = &mut w.backends;
    let none = opts(&[]);
    let deny = opts(&["unknown=deny"]);
    assert_eq!(account(&mut ctx("alice"), b, &none, NOW), Verdict::Success);
    let mut c = ctx("carol");
    assert_eq!(account(&mut c, b, &none, NOW), Verdict::AccountExpired);
    assert_eq!(c.told, ["This account is disabled."]);
    assert_eq!(account(&mut ctx("zed"), b, &none, NOW), Verdict::Ignore);
    assert_eq!(account(&mut ctx("zed"), b, &deny, NOW), Verdict::UserUnknown);
    assert_eq!(account(&mut ctx("Not Valid"), b, &none, NOW), Verdict::Ignore);
    assert_eq!(account(&mut ctx("Not Valid"), b, &deny, NOW), Verdict::UserUnknown);
    assert_eq!(account(&mut Ctx { user: None, ..ctx("x") }, b, &none, NOW), Verdict::UserUnknown);
    // Locked out, whatever the method.
    b.state().unwrap().lock("alice", later(60), "test", NOW).unwrap();
    let mut c = ctx("alice");
    assert_eq!(account(&mut c, b, &none, NOW), Verdict::PermissionDenied);
    assert!(c.told[0].starts_with("This account is locked until"), "{:?}", c.told);
    assert_eq!(account(&mut ctx("alice"), b, &none, later(61)), Verdict::Success, "the lockout ended");
}

#[test]
fn stale_directory_users_and_a_broken_store() {
    // dora comes from the directory; without [ldap] her data cannot be trusted.
    let mut w = world("stale", "", store(), GH_SHELL);
    assert_eq!(account(&mut ctx("dora"), &mut w.backends, &opts(&[]), NOW), Verdict::PermissionDenied);
    let mut w = world("fresh", LDAP, store(), GH_SHELL);
    assert_eq!(account(&mut ctx("dora"), &mut w.backends, &opts(&[]), NOW), Verdict::Success);
    let old = later(2 * 86_400);
    assert_eq!(account(&mut ctx("dora"), &mut w.backends, &opts(&[]), old), Verdict::PermissionDenied);
    let mut w = world("broken", "", Store { broken: true, ..store() }, GH_SHELL);
    for stage in [account as Stage, open_session] {
        assert_eq!(stage(&mut ctx("alice"), &mut w.backends, &opts(&[]), NOW), Verdict::ServiceError);
    }
}

#[test]
fn auth_stage_counts_failures_and_refuses_locked_out_users() {
    let mut w = world("auth", "", store(), GH_SHELL);
    let b = &mut w.backends;
    let (pre, fail) = (opts(&["preauth"]), opts(&["authfail"]));
    assert_eq!(authenticate(&mut ctx("alice"), b, &pre, NOW), Verdict::Success);
    assert_eq!(authenticate(&mut ctx("alice"), b, &fail, NOW), Verdict::AuthError);
    assert_eq!(authenticate(&mut ctx("alice"), b, &pre, NOW), Verdict::Success, "one failure of two");
    assert_eq!(authenticate(&mut ctx("alice"), b, &fail, NOW), Verdict::AuthError);
    assert_eq!(authenticate(&mut ctx("alice"), b, &pre, NOW), Verdict::PermissionDenied, "locked out");
    // Root and users outside the store are not ours to count.
    assert_eq!(authenticate(&mut ctx("root"), b, &fail, NOW), Verdict::Ignore);
    assert_eq!(authenticate(&mut ctx("zed"), b, &fail, NOW), Verdict::Ignore);
    assert_eq!(b.state().unwrap().locked_until("zed", NOW).unwrap(), None);
    assert_eq!(authenticate(&mut ctx("alice"), b, &opts(&[]), NOW), Verdict::Ignore, "no mode");
}

#[test]
fn directory_passwords() {
    let ldap = opts(&["ldap"]);
    let mut w = world("ldap", LDAP, store(), GH_SHELL);
    let with_password = |p: &str| Ctx { password: Some(p.into()), ..ctx("dora") };
    assert_eq!(authenticate(&mut with_password("right"), &mut w.backends, &ldap, NOW), Verdict::Success);
    // A local user's password is not the directory's.
    assert_eq!(
        authenticate(&mut Ctx { password: Some("x".into()), ..ctx("alice") }, &mut w.backends, &ldap, NOW),
        Verdict::Ignore
    );
    assert_eq!(authenticate(&mut ctx("Bad Name"), &mut w.backends, &ldap, NOW), Verdict::UserUnknown);
    // Refusals count towards the lockout (threshold 2), and then the directory is not asked.
    w.backends.passwords = Some(Box::new(Passwords(Ok(Checked::Refused("wrongpassword".into())))));
    assert_eq!(authenticate(&mut with_password("wrong"), &mut w.backends, &ldap, NOW), Verdict::AuthError);
    assert_eq!(authenticate(&mut with_password(""), &mut w.backends, &ldap, NOW), Verdict::AuthError);
    w.backends.passwords = Some(Box::new(Passwords(Ok(Checked::Accepted))));
    assert_eq!(authenticate(&mut with_password("right"), &mut w.backends, &ldap, NOW), Verdict::PermissionDenied);
    // The directory out of reach.
    let mut w = world("ldapdown", LDAP, store(), GH_SHELL);
    w.backends.passwords = Some(Box::new(Passwords(Err("connection refused".into()))));
    assert_eq!(authenticate(&mut with_password("right"), &mut w.backends, &ldap, NOW), Verdict::AuthInfoUnavailable);
    // `ldap` without an [ldap] section: misconfigured, refused.
    let mut w = world("noldap", LDAP, store(), GH_SHELL);
    w.backends.passwords = None;
    assert_eq!(authenticate(&mut with_password("right"), &mut w.backends, &ldap, NOW), Verdict::ServiceError);
}

#[test]
fn session_open_lays_out_and_records_the_login() {
    let mut w = world("session", "[users]\nquota = \"10M\"\n", store(), GH_SHELL);
    let b = &mut w.backends;
    assert_eq!(open_session(&mut ctx("alice").with_key(), b, &opts(&[]), NOW), Verdict::Success);
    assert_eq!(open_session(&mut ctx("alice"), b, &opts(&[]), later(1)), Verdict::Success);
    let done = w.done.lock().unwrap();
    assert_eq!(done.folders, ["alice", "alice"]);
    assert_eq!(done.quotas, ["alice:10M"], "set once, then recorded");
    assert!(done.jails.is_empty());
    drop(done);
    let used = b.state().unwrap().key_use("alice").unwrap();
    assert_eq!(used[KEY_FP].last_used, NOW, "the key that logged in");
    assert_eq!(close_session(&mut ctx("alice"), b, &opts(&[]), later(5)), Verdict::Success);
    assert_eq!(close_session(&mut ctx("Not Valid"), b, &opts(&[]), later(5)), Verdict::Ignore);
    // Users outside the store are someone else's.
    assert_eq!(open_session(&mut ctx("zed"), b, &opts(&[]), NOW), Verdict::Ignore);
    assert_eq!(open_session(&mut ctx("zed"), b, &opts(&["unknown=deny"]), NOW), Verdict::UserUnknown);
}

#[test]
fn session_refusals() {
    let mut w = world("refusals", "", store(), GH_SHELL);
    let b = &mut w.backends;
    // The rate limit: three a minute.
    for i in 0..3 {
        assert_eq!(open_session(&mut ctx("alice"), b, &opts(&[]), later(i)), Verdict::Success);
    }
    let mut c = ctx("alice");
    assert_eq!(open_session(&mut c, b, &opts(&[]), later(3)), Verdict::SessionError);
    assert!(c.told[0].starts_with("Too many sessions"), "{:?}", c.told);
    // In the store, but no system account.
    let mut s = store();
    s.users.push((user("erin", Scope::Shell, UserState::Enabled, "cli"), None));
    let mut w = world("noaccount", "", s, GH_SHELL);
    assert_eq!(open_session(&mut ctx("erin"), &mut w.backends, &opts(&[]), NOW), Verdict::SessionError);
    // A folder that cannot be made; a jail that cannot be laid out.
    let mut w = world_with("nofolder", "", store(), GH_SHELL, |h| h.folder_fails = true);
    let mut c = ctx("alice");
    assert_eq!(open_session(&mut c, &mut w.backends, &opts(&[]), NOW), Verdict::SessionError);
    assert_eq!(c.told, ["Your data folder could not be prepared; please tell the administrators."]);
    let jail = "[jail]\ngroup = \"jailed\"\n";
    let mut w = world_with("nojail", jail, store(), GH_SHELL, |h| {
        h.jailed = vec!["alice".into()];
        h.jail_fails = true;
    });
    assert_eq!(open_session(&mut ctx("alice"), &mut w.backends, &opts(&[]), NOW), Verdict::SessionError);
    let mut w = world_with("jail", jail, store(), GH_SHELL, |h| h.jailed = vec!["alice".into()]);
    assert_eq!(open_session(&mut ctx("alice"), &mut w.backends, &opts(&[]), NOW), Verdict::Success);
    assert_eq!(w.done.lock().unwrap().jails, ["alice"]);
    // A quota that cannot be set does not stop the login.
    let mut w = world_with("noquota", "[users]\nquota = \"1G\"\n", store(), GH_SHELL, |h| h.quota_fails = true);
    assert_eq!(open_session(&mut ctx("alice"), &mut w.backends, &opts(&[]), NOW), Verdict::Success);
}

#[test]
fn sessions_without_shell_scope_need_gatehouse_shell_as_login_shell() {
    let mut w = world("loginshell", "", store(), "/bin/bash");
    let b = &mut w.backends;
    // bob's key and policy are files: bash would run ~/.bashrc first.
    let mut c = ctx("bob").with_key();
    assert_eq!(open_session(&mut c, b, &opts(&[]), NOW), Verdict::SessionError);
    assert!(c.told[0].contains("login shell is not gatehouse-shell"), "{:?}", c.told);
    assert_eq!(open_session(&mut ctx("bob"), b, &opts(&[]), NOW), Verdict::SessionError, "a password login too");
    assert!(w.done.lock().unwrap().folders.is_empty(), "refused before anything was made");
    // A shell key may have bash.
    assert_eq!(open_session(&mut ctx("alice").with_key(), &mut w.backends, &opts(&[]), NOW), Verdict::Success);
    // gatehouse-shell as the login shell; or the check turned off.
    let mut w = world("ghshell", "", store(), GH_SHELL);
    assert_eq!(open_session(&mut ctx("bob").with_key(), &mut w.backends, &opts(&[]), NOW), Verdict::Success);
    let mut w = world("optout", "[shell]\nrequire_login_shell = false\n", store(), "/bin/bash");
    assert_eq!(open_session(&mut ctx("bob").with_key(), &mut w.backends, &opts(&[]), NOW), Verdict::Success);
}
