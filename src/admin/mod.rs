//! The admin CLI's operations. `src/bin/gatehouse.rs` parses arguments and calls these;
//! each writes its report to the writer it is given and returns an [`AdminError`].

pub mod doctor;
pub mod import;
pub mod init;
pub mod provision;
#[cfg(feature = "postgres")]
pub mod source;
pub mod sync_status;
mod table;

use crate::config::Config;
use crate::domain::{PolicyChange, Scope, UserState};
use crate::keys::{parse_public_key, KeyError, MAX_COMMENT};
use crate::log::{Level, Logger};
use crate::store::{Actor, AdminStore, AuditQuery, Key, NewKey, StoreError, User};
use crate::time::{self, Timestamp};
use std::fmt;
use std::io::Write;
use table::Table;

/// Exit statuses, as documented in gatehouse(8).
pub use crate::exit;

#[derive(Debug)]
pub enum AdminError {
    Refused(String),
    Store(StoreError),
    Io(String),
    /// Standard output was closed by its reader (`| head`): not an error, the command stops.
    OutputClosed,
}

impl AdminError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Refused(_) => exit::REFUSED,
            AdminError::Store(
                StoreError::Unavailable { .. }
                | StoreError::IndexRace { .. }
                | StoreError::Version { .. }
                | StoreError::Busy { .. }
                | StoreError::Corrupt { .. },
            ) => exit::STORE,
            AdminError::Store(_) => exit::REFUSED,
            AdminError::Io(_) => exit::REFUSED,
            AdminError::OutputClosed => exit::OK,
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Refused(m) | AdminError::Io(m) => f.write_str(m),
            AdminError::Store(e) => e.fmt(f),
            AdminError::OutputClosed => f.write_str("standard output closed"),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> AdminError {
        AdminError::Store(e)
    }
}

/// An error writing the command's output; a closed pipe is `OutputClosed`.
pub fn io(e: std::io::Error) -> AdminError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return AdminError::OutputClosed;
    }
    AdminError::Io(format!("writing output: {e}"))
}

/// Everything a command needs besides its arguments.
pub struct Admin<'a> {
    pub config: &'a Config,
    pub store: &'a mut dyn AdminStore,
    pub actor: Actor,
    pub log: &'a mut Logger,
    /// Listings get a header line and aligned columns (standard output is a terminal).
    pub columns: bool,
}

/// `cli:<login name>` for the user running the CLI.
pub fn cli_actor(now: Timestamp) -> Actor {
    let uid = nix::unistd::getuid();
    let name = match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => format!("uid{}", uid.as_raw()),
    };
    Actor { name: format!("cli:{name}"), now }
}

/// Options for adding one key.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    pub scope: Option<Scope>,
    pub expires: Option<String>,
    pub from: Option<String>,
    pub comment: Option<String>,
}

/// Characters after `SHA256:` a fingerprint prefix needs to name a key: 6 base64
/// characters, 36 bits, make a chance match among one user's keys negligible.
pub const MIN_FINGERPRINT_PREFIX: usize = 6;

fn select_keys(keys: Vec<crate::domain::Key>, selector: &str) -> Vec<crate::domain::Key> {
    match selector.strip_prefix("SHA256:") {
        Some(rest) if keys.iter().any(|k| k.fingerprint == selector) || rest.len() >= MIN_FINGERPRINT_PREFIX => {
            let exact: Vec<_> = keys.iter().filter(|k| k.fingerprint == selector).cloned().collect();
            if exact.is_empty() {
                keys.into_iter().filter(|k| k.fingerprint.starts_with(selector)).collect()
            } else {
                exact
            }
        }
        Some(_) => Vec::new(),
        None => keys.into_iter().filter(|k| k.comment == selector).collect(),
    }
}

fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), AdminError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| match e.io_error_kind() {
        Some(kind) => io(kind.into()),
        None => AdminError::Io(e.to_string()),
    })?;
    writeln!(out).map_err(io)
}

#[derive(serde::Serialize)]
struct KeyJson<'a> {
    #[serde(flatten)]
    key: &'a Key,
    expires_at: Option<String>,
    created_at: String,
    /// `null`: no use recorded (never, or before the state file knew it).
    last_used_at: Option<String>,
}

/// Every `--json` listing gives its items' times as RFC 3339 text beside the raw
/// seconds: `created_at`, and `last_used_at` where uses are recorded.
#[derive(serde::Serialize)]
struct Dated<'a, T: serde::Serialize> {
    #[serde(flatten)]
    item: &'a T,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<Option<String>>,
}

fn dated<T: serde::Serialize>(item: &T, created: Timestamp) -> Dated<'_, T> {
    Dated { item, created_at: created.to_string(), last_used_at: None, revoked_at: None }
}

fn key_json(key: &Key) -> KeyJson<'_> {
    KeyJson {
        key,
        expires_at: key.expires.map(|t| t.to_string()),
        created_at: key.created.to_string(),
        last_used_at: None,
    }
}

/// When each of `user`'s keys last logged in, from the state file; `None` when we may not
/// read it (it is root's unless `state.group` is set). No state file yet: nobody logged in.
/// With `[source]`, the last use on any node: the source's, or (while it cannot be
/// reached) what this host's agent last merged, whichever is later.
pub fn key_use(config: &Config, user: &str) -> Option<std::collections::HashMap<String, crate::store::state::KeyUse>> {
    let local = match crate::store::state::StateStore::open_reader(&config.state.path, config.store.busy_timeout_ms) {
        Ok(Some(s)) => s.key_use(user).ok(),
        Ok(None) => Some(Default::default()),
        Err(_) => None,
    };
    #[cfg(feature = "postgres")]
    if let Some(cfg) = &config.shared {
        // A page must not wait long on a source that is down: a second at most.
        let cfg = cfg.quick(std::time::Duration::from_secs(1));
        let shared = crate::store::postgres::connect(&cfg)
            .and_then(|mut c| crate::store::shared_state::key_use(&mut c, &cfg.url, user));
        if let Ok(shared) = shared {
            let mut all = local.unwrap_or_default();
            for (fp, used) in shared {
                if all.get(&fp).is_none_or(|mine| mine.last_used < used.last_used) {
                    all.insert(fp, used);
                }
            }
            return Some(all);
        }
    }
    local
}

impl Admin<'_> {
    fn logged(&mut self, action: &str, pairs: &[(&str, &str)]) {
        let mut all = vec![("actor", self.actor.name.as_str()), ("action", action)];
        all.extend_from_slice(pairs);
        self.log.log(Level::Info, &all);
    }

    /// The one rule for names that are to carry keys (see [`crate::names`]); a refusal is
    /// logged with what was attempted.
    pub fn check_name(&mut self, action: &str, name: &str) -> Result<(), AdminError> {
        crate::names::check(self.config, name).map_err(|refusal| {
            let reason = refusal.to_string();
            self.log.log(
                Level::Notice,
                &[
                    ("actor", &self.actor.name),
                    ("action", action),
                    ("user", name),
                    ("verdict", "refuse"),
                    ("reason", &reason),
                ],
            );
            AdminError::Refused(reason)
        })
    }

    /// Adds a user; `source` says which writer made it (`cli`, `api`).
    pub fn user_add(
        &mut self,
        name: &str,
        policy: Option<Scope>,
        port_forwarding: bool,
        disabled: bool,
        source: &str,
    ) -> Result<(), AdminError> {
        self.check_name("user.add", name)?;
        let user = User {
            name: name.to_string(),
            state: if disabled { UserState::Disabled } else { UserState::Enabled },
            policy: policy.unwrap_or(self.config.users.default_policy),
            port_forwarding,
            created: self.actor.now,
            source: source.to_string(),
            uid: None,
        };
        self.store.add_user(&self.actor, &user)?;
        self.logged("user.add", &[("user", name), ("policy", user.policy.as_str())]);
        Ok(())
    }

    pub fn user_list(&mut self, out: &mut dyn Write, json: bool) -> Result<(), AdminError> {
        let users = self.store.users()?;
        if json {
            let users: Vec<_> = users.iter().map(|u| dated(u, u.created)).collect();
            return print_json(out, &users);
        }
        let mut table = Table::new(&["NAME", "STATE", "POLICY", "FORWARDING", "UID"], "\t");
        for u in &users {
            table.row(vec![
                u.name.clone(),
                u.state.as_str().to_string(),
                u.policy.to_string(),
                if u.port_forwarding { "forwarding" } else { "-" }.to_string(),
                u.uid.map_or("-".to_string(), |uid| uid.to_string()),
            ]);
        }
        table.write(out, self.columns)
    }

    pub fn user_show(&mut self, out: &mut dyn Write, name: &str, json: bool) -> Result<(), AdminError> {
        let user = self.store.user(name)?;
        let keys = self.store.keys(name)?;
        if json {
            #[derive(serde::Serialize)]
            struct Show<'a> {
                #[serde(flatten)]
                user: &'a User,
                created_at: String,
                keys: Vec<KeyJson<'a>>,
            }
            let used = key_use(self.config, name).unwrap_or_default();
            let keys = keys
                .iter()
                .map(|k| {
                    let mut j = key_json(k);
                    j.last_used_at = used.get(&k.fingerprint).map(|u| u.last_used.to_string());
                    j
                })
                .collect();
            return print_json(out, &Show { user: &user, created_at: user.created.to_string(), keys });
        }
        writeln!(out, "name: {}", user.name).map_err(io)?;
        writeln!(out, "state: {}", user.state.as_str()).map_err(io)?;
        match user.uid {
            Some(uid) => writeln!(out, "uid: {uid}"),
            None => writeln!(out, "uid: none yet (run `gatehouse init`)"),
        }
        .map_err(io)?;
        writeln!(out, "policy: {}", user.policy).map_err(io)?;
        writeln!(out, "port forwarding: {}", crate::domain::yes_no(user.port_forwarding)).map_err(io)?;
        writeln!(out, "created: {} ({})", user.created, user.source).map_err(io)?;
        writeln!(out, "keys: {}", keys.len()).map_err(io)?;
        let used = key_use(self.config, name).unwrap_or_default();
        for k in &keys {
            writeln!(out, "{}", key_cells(k, self.actor.now).join(" ")).map_err(io)?;
            if let Some(u) = used.get(&k.fingerprint) {
                let from = u.rhost.as_deref().unwrap_or("-");
                writeln!(out, "  last used {} from {from}", u.last_used).map_err(io)?;
            }
        }
        Ok(())
    }

    pub fn user_set_state(&mut self, name: &str, state: UserState) -> Result<bool, AdminError> {
        let changed = self.store.set_user_state(&self.actor, name, state)?;
        if state == UserState::Disabled {
            // Signed-in browsers of a disabled user are signed out.
            if let Some(secrets) = self.existing_secrets()? {
                secrets.end_sessions_of(name)?;
            }
        }
        if changed {
            let action = if state == UserState::Enabled { "user.enable" } else { "user.disable" };
            self.logged(action, &[("user", name)]);
        }
        Ok(changed)
    }

    pub fn user_set(&mut self, name: &str, change: PolicyChange) -> Result<(), AdminError> {
        if change.is_empty() {
            return Err(AdminError::Refused("nothing to change: give --policy or --port-forwarding".into()));
        }
        self.store.set_user_policy(&self.actor, name, change)?;
        let mut pairs = vec![("user", name)];
        pairs.extend(change.pairs());
        self.logged("user.set", &pairs);
        Ok(())
    }

    pub fn user_remove(&mut self, name: &str) -> Result<u64, AdminError> {
        let keys = self.store.remove_user(&self.actor, name)?;
        // Nothing of theirs may carry over to a later user of the same name.
        if let Some(secrets) = self.existing_secrets()? {
            secrets.forget_user(name, self.actor.now)?;
        }
        self.logged("user.remove", &[("user", name), ("keys", &keys.to_string())]);
        Ok(keys)
    }

    /// Validates the options of a key to add: expiry within the site maximum, `from`
    /// patterns, comment.
    pub fn new_key(&self, text: &str, options: &KeyOptions, source: &str) -> Result<NewKey, AdminError> {
        let mut key = parse_public_key(text, self.config).map_err(|e| AdminError::Refused(e.to_string()))?;
        if let Some(path) = &self.config.keys.banned {
            let list =
                banned_list(path).map_err(|e| AdminError::Refused(format!("keys.banned {}: {e}", path.display())))?;
            if crate::keys::is_banned(&list, &key.fingerprint) {
                return Err(AdminError::Refused(format!(
                    "key {} is on this server's list of banned keys",
                    key.fingerprint
                )));
            }
        }
        if let Some(comment) = &options.comment {
            if comment.chars().any(|c| c.is_control() || crate::keys::is_invisible(c)) {
                return Err(AdminError::Refused(
                    "--comment: control, invisible and text-direction characters are not allowed".into(),
                ));
            }
            if comment.chars().count() > MAX_COMMENT {
                return Err(AdminError::Refused(KeyError::CommentTooLong.to_string()));
            }
            key.comment = comment.trim().to_string();
        }
        let now = self.actor.now;
        let latest = self.config.keys.max_lifetime.map(|life| now.saturating_add(life));
        let expires = match &options.expires {
            Some(text) => {
                let t = time::parse_expiry(text, now).map_err(|e| AdminError::Refused(format!("--expires: {e}")))?;
                if t <= now {
                    return Err(AdminError::Refused(format!("--expires: {t} is in the past")));
                }
                if latest.is_some_and(|l| t > l) {
                    return Err(AdminError::Refused(format!(
                        "--expires: {t} is beyond the site's maximum key lifetime (keys.max_lifetime)"
                    )));
                }
                Some(t)
            }
            None => latest,
        };
        if let Some(from) = &options.from {
            crate::keycmd::lines::valid_from_patterns(from).map_err(|e| AdminError::Refused(format!("--from: {e}")))?;
        }
        Ok(NewKey { key, scope: options.scope, from: options.from.clone(), expires, source: source.to_string() })
    }

    pub fn key_add(&mut self, user: &str, text: &str, options: &KeyOptions) -> Result<String, AdminError> {
        self.key_add_from(user, text, options, "cli")
    }

    /// Adds a key recorded as coming from `source` (`cli`, `web`, `api`).
    pub fn key_add_from(
        &mut self,
        user: &str,
        text: &str,
        options: &KeyOptions,
        source: &str,
    ) -> Result<String, AdminError> {
        self.check_name("key.add", user)?;
        let new = self.new_key(text, options, source)?;
        let result = self.store.add_key(&self.actor, user, &new, self.config.keys.max_per_user);
        if let Err(e) = &result {
            let reason = e.to_string();
            self.log.log(
                Level::Notice,
                &[
                    ("actor", &self.actor.name),
                    ("action", "key.add"),
                    ("user", user),
                    ("fingerprint", &new.key.fingerprint),
                    ("verdict", "refuse"),
                    ("reason", &reason),
                ],
            );
        }
        result?;
        self.logged("key.add", &[("user", user), ("fingerprint", &new.key.fingerprint)]);
        Ok(new.key.fingerprint)
    }

    pub fn key_list(&mut self, out: &mut dyn Write, user: &str, json: bool) -> Result<(), AdminError> {
        let keys = self.store.keys(user)?;
        if json {
            let used = key_use(self.config, user).unwrap_or_default();
            let keys: Vec<_> = keys
                .iter()
                .map(|k| {
                    let mut j = key_json(k);
                    j.last_used_at = used.get(&k.fingerprint).map(|u| u.last_used.to_string());
                    j
                })
                .collect();
            return print_json(out, &keys);
        }
        let mut table = Table::new(&["FINGERPRINT", "TYPE", "BITS", "SCOPE", "EXPIRY", "COMMENT"], " ");
        for k in &keys {
            table.row(key_cells(k, self.actor.now));
        }
        table.write(out, self.columns)
    }

    /// The keys of `user` that `selector` names: a whole fingerprint, a prefix of one
    /// (`SHA256:` and at least [`MIN_FINGERPRINT_PREFIX`] characters), or a comment, exactly.
    pub fn keys_named(&mut self, user: &str, selector: &str) -> Result<Vec<crate::domain::Key>, AdminError> {
        let keys = self.store.keys(user)?;
        Ok(select_keys(keys, selector))
    }

    pub fn key_remove(&mut self, user: &str, fingerprint: &str) -> Result<(), AdminError> {
        self.store.remove_key(&self.actor, user, fingerprint)?;
        self.logged("key.remove", &[("user", user), ("fingerprint", fingerprint)]);
        Ok(())
    }

    fn state(&self) -> Result<crate::store::state::StateStore, AdminError> {
        Ok(crate::store::state::StateStore::open_writer(
            &self.config.state.path,
            self.config.store.busy_timeout_ms,
            self.config.state.gid(),
        )?
        .share(self.config.shared.is_some()))
    }

    pub fn user_lock(&mut self, name: &str, duration: Option<&str>) -> Result<Timestamp, AdminError> {
        self.store.user(name)?;
        let span = match duration {
            Some(d) => time::parse_duration(d).map_err(|e| AdminError::Refused(format!("--for: {e}")))?,
            None => self.config.lockout.duration,
        };
        let until = self.actor.now.saturating_add(span);
        self.state()?.lock(name, until, &format!("locked by {}", self.actor.name), self.actor.now)?;
        self.store.record_event(&self.actor, "user.lock", name, &format!("until={until}"))?;
        self.logged("user.lock", &[("user", name), ("until", &until.to_string())]);
        self.send_state(name);
        Ok(until)
    }

    /// With `[source]`, sends a lock or unlock by hand to the shared source at once, so it
    /// applies on every node; when the source cannot be reached, it stays queued in this
    /// host's state file for its agent to send, and the log says so.
    fn send_state(&mut self, user: &str) {
        #[cfg(feature = "postgres")]
        if let Some(cfg) = &self.config.shared {
            if let Err(e) = crate::store::mirror::send_state(self.config, cfg) {
                let error = e.to_string();
                let pairs = [("actor", self.actor.name.as_str()), ("action", "state.send"), ("user", user)];
                let mut all = pairs.to_vec();
                all.push(("error", &error));
                all.push(("queued", "this host's agent sends it"));
                self.log.log(Level::Warning, &all);
            }
        }
        #[cfg(not(feature = "postgres"))]
        let _ = user;
    }

    /// Lifts a lockout. Any valid name: failures may have been counted for an account
    /// the store does not (or no longer does) know.
    pub fn user_unlock(&mut self, name: &str) -> Result<bool, AdminError> {
        if !self.config.valid_user_name(name) {
            return Err(AdminError::Refused(format!("`{}` is not a valid user name", name.escape_debug())));
        }
        let was = self.state()?.unlock(name, self.actor.now)?;
        self.store.record_event(&self.actor, "user.unlock", name, "")?;
        self.logged("user.unlock", &[("user", name)]);
        self.send_state(name);
        Ok(was)
    }

    /// Brings system accounts in line with the store; returns how many steps failed.
    pub fn provision(&mut self, out: &mut dyn Write, dry_run: bool) -> Result<u32, AdminError> {
        let users = self.store.users()?;
        let accounts = crate::admin::provision::Accounts::read(self.config).map_err(AdminError::Refused)?;
        let mut failed = 0;
        for step in crate::admin::provision::plan(self.config, &users, &accounts) {
            use crate::admin::provision::Step;
            let (user, what) = step.describe();
            let user = user.to_string();
            if dry_run || matches!(step, Step::Skip { .. }) {
                writeln!(out, "{user}: {what}{}", if dry_run { " (dry run)" } else { "" }).map_err(io)?;
                continue;
            }
            match crate::admin::provision::apply(self.config, &step) {
                Ok(()) => {
                    writeln!(out, "{user}: {what}").map_err(io)?;
                    self.logged("provision", &[("user", &user), ("step", &what)]);
                }
                Err(e) => {
                    failed += 1;
                    writeln!(out, "{user}: {what} FAILED: {e}").map_err(io)?;
                    self.log.log(Level::Error, &[("action", "provision"), ("user", &user), ("error", &e)]);
                }
            }
        }
        Ok(failed)
    }

    /// The web service's secrets, when its side has been set up (always with `[source]`:
    /// they live in the shared PostgreSQL).
    fn existing_secrets(&self) -> Result<Option<crate::store::secrets::Secrets>, AdminError> {
        if self.config.shared.is_none() && !self.config.web.secrets.exists() {
            return Ok(None);
        }
        self.secrets().map(Some)
    }

    fn secrets(&self) -> Result<crate::store::secrets::Secrets, AdminError> {
        Ok(crate::store::secrets::Secrets::for_config(self.config)?)
    }

    /// A one-time sign-in link for `name`.
    pub fn user_invite(&mut self, name: &str, expires: Option<&str>) -> Result<String, AdminError> {
        let user = self.store.user(name)?;
        if user.state != UserState::Enabled {
            return Err(AdminError::Refused(format!("user {name} is disabled")));
        }
        let lifetime = match expires {
            Some(text) => time::parse_duration(text).map_err(|e| AdminError::Refused(format!("--expires: {e}")))?,
            None => self.config.web.invite_lifetime,
        };
        let token = self.secrets()?.create_invite(name, self.actor.now, lifetime)?;
        let expires = self.actor.now.saturating_add(lifetime).to_string();
        self.store.record_event(&self.actor, "user.invite", name, &format!("expires={expires}"))?;
        self.logged("user.invite", &[("user", name), ("expires", &expires)]);
        Ok(format!("{}/invite/{token}", self.config.web.public_url))
    }

    pub fn token_create(&mut self, scope: &str, label: &str) -> Result<(i64, String), AdminError> {
        let parsed = crate::store::secrets::TokenScope::parse(scope).map_err(AdminError::Refused)?;
        if let crate::store::secrets::TokenScope::User(u) = &parsed {
            self.store.user(u)?;
        }
        if label.chars().any(|c| c.is_control() || crate::keys::is_invisible(c)) || label.len() > 200 {
            return Err(AdminError::Refused("--label: at most 200 printable characters".into()));
        }
        let (id, token) = self.secrets()?.create_token(&parsed, label, self.actor.now)?;
        self.store.record_event(&self.actor, "token.create", &format!("token{id}"), &format!("scope={scope}"))?;
        self.logged("token.create", &[("token", &id.to_string()), ("scope", scope)]);
        Ok((id, token))
    }

    pub fn token_list(&mut self, out: &mut dyn Write, json: bool) -> Result<(), AdminError> {
        let tokens = self.secrets()?.tokens()?;
        if json {
            let tokens: Vec<_> = tokens
                .iter()
                .map(|t| Dated {
                    last_used_at: Some(t.last_used.map(|at| at.to_string())),
                    revoked_at: Some(t.revoked.map(|at| at.to_string())),
                    ..dated(t, t.created)
                })
                .collect();
            return print_json(out, &tokens);
        }
        let mut table = Table::new(&["ID", "SCOPE", "STATE", "LAST USED", "LABEL"], "\t");
        for t in &tokens {
            let state = match t.revoked {
                Some(at) => format!("revoked {at}"),
                None => "live".to_string(),
            };
            let used = t.last_used.map_or_else(|| "never used".to_string(), |at| at.to_string());
            table.row(vec![t.id.to_string(), t.scope.to_string(), state, used, t.label.clone()]);
        }
        table.write(out, self.columns)
    }

    pub fn token_revoke(&mut self, id: i64) -> Result<(), AdminError> {
        if !self.secrets()?.revoke_token(id, self.actor.now)? {
            return Err(AdminError::Refused(format!("no live token {id}")));
        }
        self.store.record_event(&self.actor, "token.revoke", &format!("token{id}"), "")?;
        self.logged("token.revoke", &[("token", &id.to_string())]);
        Ok(())
    }

    pub fn grant_add(
        &mut self,
        subject: &str,
        pattern: &str,
        access: crate::domain::repo::Access,
    ) -> Result<bool, AdminError> {
        let name = subject.strip_prefix('@').unwrap_or(subject);
        if !self.config.valid_user_name(name) {
            return Err(AdminError::Refused(format!("`{}` is neither a user name nor @GROUP", subject.escape_debug())));
        }
        if !subject.starts_with('@') {
            self.store.user(subject)?;
        }
        let pattern = &crate::domain::repo::valid_pattern(pattern).map_err(AdminError::Refused)?;
        let grant = crate::store::Grant {
            subject: subject.to_string(),
            pattern: pattern.to_string(),
            access,
            created: self.actor.now,
        };
        let changed = self.store.add_grant(&self.actor, &grant)?;
        if changed {
            self.logged("grant.add", &[("subject", subject), ("pattern", pattern), ("access", access.as_str())]);
        }
        Ok(changed)
    }

    pub fn grant_list(&mut self, out: &mut dyn Write, json: bool) -> Result<(), AdminError> {
        let grants = self.store.grants()?;
        if json {
            let grants: Vec<_> = grants.iter().map(|g| dated(g, g.created)).collect();
            return print_json(out, &grants);
        }
        let mut table = Table::new(&["SUBJECT", "PATTERN", "ACCESS"], "\t");
        for g in &grants {
            table.row(vec![g.subject.clone(), g.pattern.clone(), g.access.to_string()]);
        }
        table.write(out, self.columns)
    }

    pub fn grant_remove(&mut self, subject: &str, pattern: &str) -> Result<(), AdminError> {
        self.store.remove_grant(&self.actor, subject, pattern)?;
        self.logged("grant.remove", &[("subject", subject), ("pattern", pattern)]);
        Ok(())
    }

    pub fn audit(&mut self, out: &mut dyn Write, query: &AuditQuery, json: bool) -> Result<(), AdminError> {
        let events = self.store.audit(query)?;
        if json {
            #[derive(serde::Serialize)]
            struct EventJson<'a> {
                #[serde(flatten)]
                event: &'a crate::store::AuditEvent,
                time_at: String,
            }
            let events: Vec<_> = events.iter().map(|e| EventJson { event: e, time_at: e.time.to_string() }).collect();
            return print_json(out, &events);
        }
        let mut table = Table::new(&["TIME", "ACTOR", "ACTION", "SUBJECT", "DETAIL"], " ");
        for e in &events {
            table.row(vec![e.time.to_string(), e.actor.clone(), e.action.clone(), e.subject.clone(), e.detail.clone()]);
        }
        table.write(out, self.columns)
    }
}

/// The banned-keys file, read again only when it changes (a bulk import checks every key).
fn banned_list(path: &std::path::Path) -> std::io::Result<std::sync::Arc<String>> {
    type Cached = Option<(std::path::PathBuf, std::time::SystemTime, std::sync::Arc<String>)>;
    static CACHE: std::sync::Mutex<Cached> = std::sync::Mutex::new(None);
    let modified = std::fs::metadata(path)?.modified()?;
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((p, m, text)) = cache.as_ref() {
        if p == path && *m == modified {
            return Ok(text.clone());
        }
    }
    let text = std::sync::Arc::new(std::fs::read_to_string(path)?);
    *cache = Some((path.to_path_buf(), modified, text.clone()));
    Ok(text)
}

/// A key's cells: fingerprint, type and size, scope, expiry (and `from=`), comment.
fn key_cells(k: &Key, now: Timestamp) -> Vec<String> {
    let expiry = match k.expires {
        Some(t) if t <= now => format!("expired {t}"),
        Some(t) => format!("expires {t}"),
        None => "no-expiry".to_string(),
    };
    let from = k.from.as_deref().map(|f| format!(" from={f}")).unwrap_or_default();
    vec![
        k.fingerprint.clone(),
        k.algorithm.clone(),
        k.bits.to_string(),
        k.scope.to_string(),
        format!("{expiry}{from}"),
        k.comment.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Key;

    fn key(fingerprint: &str, comment: &str) -> Key {
        Key {
            user: "alice".into(),
            algorithm: "ssh-ed25519".into(),
            blob: String::new(),
            fingerprint: fingerprint.into(),
            bits: 256,
            comment: comment.into(),
            scope: crate::domain::Scope::Shell,
            from: None,
            expires: None,
            created: Timestamp::EPOCH,
            source: "cli".into(),
        }
    }

    fn named(selector: &str) -> Vec<String> {
        let keys = vec![
            key("SHA256:abcdefGHIJ1", "laptop"),
            key("SHA256:abcdefXYZ22", "laptop"),
            key("SHA256:zzzzzz00000", "desktop"),
        ];
        select_keys(keys, selector).into_iter().map(|k| k.fingerprint).collect()
    }

    #[test]
    fn keys_are_named_by_fingerprint_prefix_or_comment() {
        assert_eq!(named("SHA256:zzzzzz00000"), ["SHA256:zzzzzz00000"]);
        assert_eq!(named("SHA256:zzzzzz"), ["SHA256:zzzzzz00000"]);
        assert_eq!(named("SHA256:abcdefG"), ["SHA256:abcdefGHIJ1"]);
        // A prefix two keys share names both; the caller asks before removing them.
        assert_eq!(named("SHA256:abcdef").len(), 2);
        // Too short a prefix names nothing, whatever it would match.
        assert!(named("SHA256:abc").is_empty());
        assert!(named("SHA256:").is_empty());
        assert_eq!(named("desktop"), ["SHA256:zzzzzz00000"]);
        assert_eq!(named("laptop").len(), 2);
        // Comments match whole, not in part; fingerprints without SHA256: are not prefixes.
        assert!(named("lap").is_empty());
        assert!(named("zzzzzz00000").is_empty());
    }
}
