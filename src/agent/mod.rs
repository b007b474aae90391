//! `gatehouse-agent`: the root daemon that makes the host follow the store. It waits for a
//! commit to the store ([`crate::store::watch`]) and then makes one pass:
//!
//! 1. sessions: every process of a user who was disabled or removed is killed, and the
//!    connections that logged in with a key that was removed (see [`sessions`]);
//! 2. accounts: created, locked and unlocked as `gatehouse provision` does (one rule, in
//!    [`crate::admin::provision`]);
//! 3. data folders: made for every enabled user with an account, as the session stage
//!    would at first login, so sftp, rsync and git work without the PAM module;
//! 4. grants: turned into POSIX ACLs on the repositories they cover (see [`grants`]).
//!
//! A pass only reads the store; everything it changes is on the host, and it logs each
//! change. A pass changes nothing when the host already follows the store, so the agent
//! can be killed and restarted at any point: the pass at start-up catches up.

pub mod grants;
pub mod sessions;
pub mod userdb;

use crate::admin::provision::{self, Accounts, Step};
use crate::config::Config;
use crate::domain::UserState;
use crate::log::{Level, Logger};
use crate::session::datadir;
use crate::store::sqlite::SqliteStore;
use crate::store::watch::ChangeWatch;
use crate::store::{AdminStore, StoreError};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

/// A pass also runs this long after the last one when the store did not change, for what
/// changes on the host alone (an account unlocked by hand, a folder removed).
pub const RESWEEP: Duration = Duration::from_secs(600);

/// The least time between the end of one pass and the start of the next. A stream of
/// commits (a node's mirror applying a hundred changes a second) would otherwise wake a
/// pass for each; this way one pass takes in all that came meanwhile. Logins do not wait
/// for passes (the key command reads the store), only the end of revoked sessions does.
const PASS_GAP: Duration = Duration::from_millis(50);

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    /// One line per change, for `--once` and tests: `USER: WHAT`.
    pub changes: Vec<String>,
    /// Steps that failed (each logged, with the reason).
    pub failures: u32,
}

struct Run<'a> {
    config: &'a Config,
    log: &'a mut Logger,
    pass: Pass,
}

impl Run<'_> {
    fn changed(&mut self, user: &str, action: &str, what: String, extra: &[(&str, &str)]) {
        let mut pairs = vec![("action", action), ("user", user)];
        pairs.extend_from_slice(extra);
        self.log.log(Level::Info, &pairs);
        self.pass.changes.push(format!("{user}: {what}"));
    }

    fn failed(&mut self, user: &str, action: &str, error: &str) {
        self.log.log(Level::Error, &[("action", action), ("user", user), ("error", error)]);
        self.pass.changes.push(format!("{user}: {action} FAILED: {error}"));
        self.pass.failures += 1;
    }
}

/// One pass over the whole store.
pub fn reconcile(config: &Config, log: &mut Logger) -> Result<Pass, StoreError> {
    let store = SqliteStore::open_reader(&config.store.path, config.store.busy_timeout_ms)?;
    let users = store.users()?;
    let mut run = Run { config, log, pass: Pass::default() };
    let mut accounts = Accounts::read(config).map_err(|e| StoreError::Unavailable {
        path: "the account databases".into(),
        reason: format!("{e}; nothing changed in this pass"),
    })?;
    // Accounts first: a revoked account is locked before its processes go, so nothing
    // (cron) starts again in between.
    let records = userdb::in_force(config).then(|| userdb::existing(&config.agent.userdb_dir));
    if let Some(Ok(found)) = &records {
        accounts.add_records(found.users.iter().map(|(name, uid)| (name.clone(), *uid)));
        userdb::add_foreign_records(config, found, &mut accounts);
    }
    let mut steps = provision::plan(config, &users, &accounts);
    if let Some(found) = records {
        let (held, now) = sync_records(&mut run, &users, &accounts, found);
        // New records are accounts from now on (no NSS enumeration: see Accounts::read).
        accounts.add_records(now);
        // Records carry their own lock; accounts from /etc/passwd keep usermod's.
        steps.retain(|s| match s {
            Step::Create { .. } => false,
            Step::Lock(u) | Step::Unlock(u) => !held.contains(u.as_str()),
            Step::Skip { .. } => true,
        });
    }
    let created = steps.iter().any(|s| matches!(s, Step::Create { .. }));
    for step in steps {
        apply_account_step(&mut run, &step);
    }
    if config.agent.end_sessions {
        end_revoked_sessions(&mut run, &store, &users, &accounts);
    }
    if created {
        if let Ok(now) = Accounts::read(config) {
            accounts = now;
        }
    }
    make_folders(&mut run, &users, &accounts);
    match store.grants() {
        Ok(all) => {
            let enabled = users.iter().filter(|u| u.state == UserState::Enabled).map(|u| u.name.as_str()).collect();
            grants::sync(&mut run, &all, &accounts, &enabled);
        }
        Err(e) => run.failed("-", "acl", &format!("cannot read the grants: {e}")),
    }
    Ok(run.pass)
}

/// userdb mode: the records follow the store. Returns the names that had or have a
/// record of ours, and the records there are after the pass (name, uid).
fn sync_records(
    run: &mut Run<'_>,
    users: &[crate::store::User],
    accounts: &Accounts,
    found: Result<userdb::Existing, String>,
) -> (HashSet<String>, Vec<(String, u32)>) {
    match found.and_then(|found| userdb::sync(run.config, users, accounts, &found)) {
        Ok(out) => {
            for (user, what) in &out.written {
                run.changed(user, "account", what.clone(), &[("step", what.as_str()), ("mode", "userdb")]);
            }
            for user in &out.removed {
                let what = "user record removed (uid retired, folder kept)".to_string();
                run.changed(user, "account", what.clone(), &[("step", &what), ("mode", "userdb")]);
            }
            for (user, why) in &out.refused {
                run.failed(user, "account", &format!("no user record: {why}"));
            }
            let held = out.now.iter().map(|(name, _)| name.clone()).chain(out.before).collect();
            (held, out.now)
        }
        Err(e) => {
            run.failed("-", "account", &format!("user records in {}: {e}", run.config.agent.userdb_dir.display()));
            (HashSet::new(), Vec::new())
        }
    }
}

fn apply_account_step(run: &mut Run<'_>, step: &Step) {
    if matches!(step, Step::Skip { .. }) {
        // Said once by `gatehouse provision`; the agent would repeat it on every pass.
        return;
    }
    let (user, what) = step.describe();
    match provision::apply(run.config, step) {
        Ok(()) => run.changed(user, "account", what.clone(), &[("step", &what)]),
        Err(e) => run.failed(user, "account", &format!("{what}: {e}")),
    }
}

/// Every enabled user with an account in the UID range gets a data folder.
fn make_folders(run: &mut Run<'_>, users: &[crate::store::User], accounts: &Accounts) {
    for u in users.iter().filter(|u| u.state == UserState::Enabled) {
        if !run.config.valid_user_name(&u.name) {
            continue;
        }
        let Some(account) = accounts.managed(run.config, &u.name) else { continue };
        if datadir::is_jailed(run.config, &u.name, account.gid) {
            // A jailed user's folder is laid out with the jail, by the session stage.
            continue;
        }
        match datadir::ensure(run.config, &u.name, account.uid, account.gid) {
            Ok(datadir::Outcome::Created(path)) => {
                let shown = path.display().to_string();
                run.changed(&u.name, "folder", format!("folder {shown} made"), &[("folder", &shown)]);
            }
            Ok(datadir::Outcome::Existed(_)) => {}
            Err(e) => run.failed(&u.name, "folder", &e),
        }
    }
}

fn end_revoked_sessions(run: &mut Run<'_>, store: &SqliteStore, users: &[crate::store::User], accounts: &Accounts) {
    let known: HashMap<&str, UserState> = users.iter().map(|u| (u.name.as_str(), u.state)).collect();
    let revoked = provision::revoked(run.config, users, accounts);
    let uids: Vec<u32> = revoked.iter().map(|(_, uid)| *uid).collect();
    let mut ended = sessions::end_users(&uids);
    for (name, uid) in revoked {
        let reason = if known.contains_key(name.as_str()) { "user-disabled" } else { "user-removed" };
        match ended.remove(&uid) {
            None | Some(Ok(0)) => {}
            Some(Ok(killed)) => {
                let n = killed.to_string();
                let what = format!("{killed} processes ended ({reason})");
                run.changed(&name, "sessions.end", what, &[("reason", reason), ("processes", &n)]);
            }
            Some(Err(e)) => run.failed(&name, "sessions.end", &format!("{reason}: {e}")),
        }
    }
    // The connections of keys that are gone, for users who may still log in.
    let uids: HashMap<u32, String> = users
        .iter()
        .filter(|u| u.state == UserState::Enabled)
        .filter_map(|u| accounts.managed(run.config, &u.name).map(|a| (a.uid, u.name.clone())))
        .collect();
    let keys: RefCell<HashMap<String, Option<HashSet<String>>>> = RefCell::new(HashMap::new());
    let alive = |user: &str, fingerprint: &str| {
        let mut keys = keys.borrow_mut();
        let held = keys
            .entry(user.to_string())
            .or_insert_with(|| store.keys(user).ok().map(|ks| ks.into_iter().map(|k| k.fingerprint).collect()));
        // A store that cannot be read now ends nothing.
        held.as_ref().is_none_or(|h| h.contains(fingerprint))
    };
    for sessions::EndedKey { user, fingerprint, ended } in sessions::end_stale_keys(&uids, &alive) {
        match ended {
            Ok(pids) => {
                let n = pids.len().to_string();
                let what = format!("{n} processes of key {fingerprint} ended (key-removed)");
                let pairs = [("reason", "key-removed"), ("fingerprint", fingerprint.as_str()), ("processes", &n)];
                run.changed(&user, "sessions.end", what, &pairs);
            }
            Err(e) => run.failed(&user, "sessions.end", &format!("key-removed {fingerprint}: {e}")),
        }
    }
}

/// A pass with failed steps (useradd finding /etc/passwd locked, say) is run again this
/// long after, doubling up to [`RETRY_MAX`], until one succeeds.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// The daemon: a pass at start, then one after every commit to the store (or
/// [`RESWEEP`] after the last, or a retry after a failure). Returns only when watching
/// the store fails.
pub fn run(config: &Config, log: &mut Logger) -> Result<(), StoreError> {
    let busy_ms = config.store.busy_timeout_ms;
    let mut watch = ChangeWatch::open(&config.store.path, busy_ms)?;
    let store = config.store.path.display().to_string();
    if watch.restored {
        log.log(
            Level::Warning,
            &[("action", "store.restore"), ("store", &store), ("detail", "-wal/-shm were missing")],
        );
    }
    log.log(Level::Info, &[("action", "agent.start"), ("store", &store)]);
    // With [source], the local store follows the shared PostgreSQL (on a thread of its
    // own); its commits wake the passes below like any other writer's.
    #[cfg(feature = "postgres")]
    let _source = crate::store::mirror::spawn(config);
    let mut last = Instant::now();
    let mut due = true;
    let mut retry: Option<(Instant, Duration)> = None;
    loop {
        if due {
            if let Some(wait) = PASS_GAP.checked_sub(last.elapsed()) {
                std::thread::sleep(wait);
            }
            let started = Instant::now();
            let failed = match reconcile(config, log) {
                Ok(pass) => {
                    if !pass.changes.is_empty() || pass.failures > 0 {
                        let (n, failed, ms) = (
                            pass.changes.len().to_string(),
                            pass.failures.to_string(),
                            started.elapsed().as_millis().to_string(),
                        );
                        log.log(
                            Level::Info,
                            &[("action", "agent.pass"), ("changes", &n), ("failures", &failed), ("ms", &ms)],
                        );
                    }
                    pass.failures > 0
                }
                // Busy or briefly unreadable: logged, and tried again.
                Err(e) => {
                    log.log(Level::Error, &[("action", "agent.pass"), ("store", &store), ("error", &e.to_string())]);
                    true
                }
            };
            last = Instant::now();
            retry = failed.then(|| {
                let wait = retry.map_or(RETRY_FIRST, |(_, w)| (w * 2).min(RETRY_MAX));
                (last + wait, wait)
            });
        }
        let timeout = match retry {
            Some((at, _)) => config.agent.poll_interval.min(at.saturating_duration_since(Instant::now())),
            None => config.agent.poll_interval,
        };
        due = watch.wait(timeout)? || last.elapsed() >= RESWEEP || retry.is_some_and(|(at, _)| Instant::now() >= at);
    }
}

/// `--once`: one pass, its changes printed; returns how many steps failed.
pub fn once(config: &Config, log: &mut Logger, out: &mut dyn Write) -> Result<u32, StoreError> {
    let mut failed = 0;
    #[cfg(feature = "postgres")]
    if let Some(shared) = &config.shared {
        let mut mirror = crate::store::mirror::Mirror::open(config, shared)?;
        let step = mirror.step(crate::time::now())?;
        let _ = writeln!(out, "source: {step:?}");
        match mirror.exchange_state() {
            Ok(done) => {
                let _ = writeln!(out, "login state: {} record(s) sent", done.sent);
            }
            Err(e) => {
                let _ = writeln!(out, "login state: not sent: {e}");
                failed += 1;
            }
        }
    }
    let pass = reconcile(config, log)?;
    for line in &pass.changes {
        let _ = writeln!(out, "{line}");
    }
    Ok(pass.failures + failed)
}
