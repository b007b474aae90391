//! Gatehouse's SQLite files: the key store (users, keys, grants, directory data, with the
//! audit trail attached from `audit.db`), the root side's state file ([`state`]) and the
//! web service's secrets ([`secrets`]); [`db`] holds the plumbing they share.
//!
//! Callers of the key store speak to two traits: [`LoginStore`] for the read-only login
//! path and [`AdminStore`] for the writers (CLI, web service, directory sync). Neither
//! shows SQLite: no row ids, no connections. SQLite is the embedded backend; another (a
//! synced replica, PostgreSQL) can stand beside it by implementing the same traits.

pub mod db;
mod directory;
#[cfg(feature = "postgres")]
pub mod mirror;
#[cfg(feature = "postgres")]
pub mod postgres;
mod schema;
#[cfg(feature = "admin")]
pub mod secrets;
#[cfg(feature = "postgres")]
pub mod shared_state;
pub mod sqlite;
pub mod state;
pub mod uids;
#[cfg(feature = "admin")]
pub mod watch;

pub use crate::domain::{Grant, Key, LoginView, PolicyChange, User};
use crate::domain::{Scope, UserState};
use crate::time::Timestamp;
use std::fmt;

pub use schema::current_version;

/// A key to add, already validated.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: crate::keys::ValidKey,
    /// `None`: the owner's policy.
    pub scope: Option<Scope>,
    pub from: Option<String>,
    pub expires: Option<Timestamp>,
    pub source: String,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    pub time: Timestamp,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

/// Who makes a change, and when; recorded with it.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub now: Timestamp,
}

#[derive(Debug)]
pub enum StoreError {
    /// The store cannot be opened or read; names the path.
    Unavailable {
        path: String,
        reason: String,
    },
    /// A read-only reader found the WAL index mid-update; worth another try.
    IndexRace {
        path: String,
        reason: String,
    },
    /// The store's schema is not the one this build speaks.
    Version {
        path: String,
        found: i64,
        expected: i64,
    },
    NoSuchUser(String),
    UserExists(String),
    NoSuchGrant {
        subject: String,
        pattern: String,
    },
    NoSuchKey {
        user: String,
        fingerprint: String,
    },
    KeyTaken {
        fingerprint: String,
        owner: String,
    },
    TooManyKeys {
        user: String,
        max: u32,
    },
    ScopeOutsidePolicy {
        scope: Scope,
        policy: Scope,
    },
    Busy {
        path: String,
    },
    /// Every uid in users.uid_min..uid_max is in use or retired.
    UidsExhausted {
        min: u32,
        max: u32,
    },
    /// The file is not a SQLite database, or is damaged: waiting will not help.
    Corrupt {
        path: String,
        reason: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable { path, reason } | StoreError::IndexRace { path, reason } => {
                write!(f, "store {path}: {reason}")
            }
            StoreError::Version { path, found, expected } if found > expected => write!(
                f,
                "store {path}: schema version {found} was written by a newer Gatehouse; this build speaks {expected}: \
                 install the newer version"
            ),
            StoreError::Version { path, found, expected } => write!(
                f,
                "store {path}: schema version {found}, this build speaks {expected} (run `gatehouse init` to upgrade)"
            ),
            StoreError::NoSuchUser(u) => write!(f, "no such user: {u}"),
            StoreError::UserExists(u) => write!(f, "user {u} already exists"),
            StoreError::NoSuchKey { user, fingerprint } => write!(f, "user {user} has no key {fingerprint}"),
            StoreError::NoSuchGrant { subject, pattern } => write!(f, "no grant for {subject} on {pattern}"),
            StoreError::KeyTaken { fingerprint, owner } => {
                write!(f, "key {fingerprint} is already registered (to user {owner})")
            }
            StoreError::TooManyKeys { user, max } => write!(f, "user {user} already has {max} keys, the most allowed"),
            StoreError::ScopeOutsidePolicy { scope, policy } => {
                write!(f, "scope {scope} is wider than the user's policy {policy}")
            }
            StoreError::UidsExhausted { min, max } => write!(
                f,
                "no uid left in users.uid_min..uid_max ({min}..{max}): every one is in use or retired; widen the range"
            ),
            StoreError::Busy { path } => {
                write!(f, "store {path}: still locked by another writer after the busy timeout")
            }
            StoreError::Corrupt { path, reason } => {
                write!(f, "store {path} is damaged ({reason}): restore it from a backup; `gatehouse doctor` checks it")
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// The read-only login path.
pub trait LoginStore {
    /// The user and their keys; only the key with `fingerprint` when one is given.
    /// `None` when the user is not in the store.
    fn login_view(&self, user: &str, fingerprint: Option<&str>) -> Result<Option<LoginView>, StoreError>;
    /// Grants whose subject is one of `subjects` (a user name, `@group` names).
    fn grants_for(&self, subjects: &[String]) -> Result<Vec<Grant>, StoreError>;
    /// Groups the store knows the user to be in (from a directory).
    fn groups_of(&self, user: &str) -> Result<Vec<String>, StoreError>;
}

/// Filters for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub subject: Option<String>,
    pub since: Option<Timestamp>,
    pub limit: Option<u32>,
}

/// One user as the directory describes them.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    pub name: String,
    /// The entry's DN: a second entry for the same name is refused, not merged.
    pub dn: String,
    pub uid_number: Option<i64>,
    pub enabled: bool,
    pub keys: Vec<crate::keys::ValidKey>,
}

/// What one sync read from the directory.
#[derive(Debug, Clone, Default)]
pub struct DirectorySnapshot {
    pub users: Vec<DirectoryUser>,
    /// Group name and member user names.
    pub groups: Vec<(String, Vec<String>)>,
    /// The newest modification time seen, for the next incremental sync.
    pub high_water: Option<String>,
    /// Whether this is the whole directory, so that users it lacks were removed from it;
    /// an incremental snapshot holds only what changed.
    pub full: bool,
}

/// One sync of a source, as the store records it for status and for the login path's
/// staleness check.
#[derive(Debug, Clone, Copy)]
pub struct SyncAttempt<'a> {
    pub source: &'a str,
    pub at: Timestamp,
    /// Why it failed; `None`: it succeeded.
    pub error: Option<&'a str>,
    /// The newest modification time it read; `None` keeps the one recorded before.
    pub high_water: Option<&'a str>,
    /// Whether it read the whole directory.
    pub full: bool,
}

/// What a sync changed, and what it refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub users_added: u32,
    pub users_disabled: u32,
    pub users_enabled: u32,
    pub keys_added: u32,
    pub keys_removed: u32,
    pub conflicts: Vec<String>,
}

/// The last sync of a source, for status and for the login path's staleness check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncState {
    pub last_success: Option<Timestamp>,
    pub last_attempt: Timestamp,
    pub last_error: Option<String>,
    pub high_water: Option<String>,
    pub users: i64,
    pub keys: i64,
    pub last_full: Option<Timestamp>,
}

/// One bulk import of keys, handed to every batch of it: the rules each batch follows,
/// and what the store learnt about the users it met, from one batch to the next. What it
/// learns is the backend's business (row ids, for SQLite).
#[derive(Debug)]
pub struct KeyImport {
    /// Users missing from the store are created with this policy; `None`: refused.
    pub create_users: Option<Scope>,
    /// The most keys a user may have.
    pub max_keys: u32,
    pub(crate) users: std::collections::HashMap<String, ImportUser>,
}

impl KeyImport {
    pub fn new(create_users: Option<Scope>, max_keys: u32) -> KeyImport {
        KeyImport { create_users, max_keys, users: std::collections::HashMap::new() }
    }

    /// The bulk import's rule for one key of `user`, for every backend: a user the import
    /// knows, room for one more key, a scope within the user's policy. The row id and the
    /// scope the key gets.
    pub(crate) fn admit(&self, user: &str, new: &NewKey) -> Result<(i64, Scope), StoreError> {
        let entry = self.users.get(user).ok_or_else(|| StoreError::NoSuchUser(user.to_string()))?;
        if entry.keys >= self.max_keys {
            return Err(StoreError::TooManyKeys { user: user.to_string(), max: self.max_keys });
        }
        let scope = new.scope.unwrap_or(entry.policy);
        if !entry.policy.includes(scope) {
            return Err(StoreError::ScopeOutsidePolicy { scope, policy: entry.policy });
        }
        Ok((entry.id, scope))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ImportUser {
    pub(crate) id: i64,
    pub(crate) policy: Scope,
    pub(crate) keys: u32,
}

/// The writers' side.
pub trait AdminStore: LoginStore {
    /// Whether a write could go through now, without making one (a web service's
    /// readiness): the store answers, and takes writes (SQLite: its write lock can be had;
    /// PostgreSQL: the server is no read-only standby).
    fn ready(&mut self) -> Result<(), StoreError>;
    /// Adds a user (its `uid` field is ignored) and returns the uid the store gave it.
    fn add_user(&mut self, actor: &Actor, user: &User) -> Result<u32, StoreError>;
    fn user(&self, name: &str) -> Result<User, StoreError>;
    fn users(&self) -> Result<Vec<User>, StoreError>;
    fn set_user_state(&mut self, actor: &Actor, name: &str, state: UserState) -> Result<bool, StoreError>;
    fn set_user_policy(&mut self, actor: &Actor, name: &str, change: PolicyChange) -> Result<(), StoreError>;
    fn remove_user(&mut self, actor: &Actor, name: &str) -> Result<u64, StoreError>;
    fn add_key(&mut self, actor: &Actor, user: &str, key: &NewKey, max_keys: u32) -> Result<(), StoreError>;
    fn keys(&self, user: &str) -> Result<Vec<Key>, StoreError>;
    fn remove_key(&mut self, actor: &Actor, user: &str, fingerprint: &str) -> Result<(), StoreError>;
    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Makes the directory's users, keys and groups the store's; users it adds get
    /// `default_policy`. Directory data never overrides local users of the same name.
    fn apply_directory(
        &mut self,
        actor: &Actor,
        snapshot: &DirectorySnapshot,
        default_policy: Scope,
    ) -> Result<SyncReport, StoreError>;
    /// Records one sync, successful or not.
    fn record_sync(&mut self, attempt: &SyncAttempt<'_>) -> Result<(), StoreError>;
    fn sync_state(&self, source: &str) -> Result<Option<SyncState>, StoreError>;
    /// (name, DN) of every user synced from a directory, for group members given as DNs.
    fn directory_dns(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Records an event about `subject` that changed something outside the store.
    fn record_event(&mut self, actor: &Actor, action: &str, subject: &str, detail: &str) -> Result<(), StoreError>;
    /// Adds or changes a grant; returns false when it existed with the same access.
    fn add_grant(&mut self, actor: &Actor, grant: &Grant) -> Result<bool, StoreError>;
    fn grants(&self) -> Result<Vec<Grant>, StoreError>;
    fn remove_grant(&mut self, actor: &Actor, subject: &str, pattern: &str) -> Result<(), StoreError>;
    /// Adds one batch of `import`'s keys in one transaction. Returns one result per item; a
    /// refused item does not stop the others.
    fn import_keys(
        &mut self,
        actor: &Actor,
        items: &[(String, NewKey)],
        import: &mut KeyImport,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;
}

/// A user as a login node mirrors it from the shared source, with every key.
#[derive(Debug, Clone)]
pub struct MirroredUser {
    pub user: User,
    pub keys: Vec<Key>,
}

/// One batch of changes from the shared source, applied to a node's local store in one
/// transaction, with the change number it brings the store up to.
#[derive(Debug, Clone, Default)]
pub struct MirrorBatch {
    /// The local store becomes exactly this (first start, or the source was replaced):
    /// every user not in `users` goes.
    pub full: bool,
    /// Users changed since the last batch: their rows now, or `None` when removed.
    pub users: Vec<(String, Option<MirroredUser>)>,
    /// Every grant, when one changed.
    pub grants: Option<Vec<Grant>>,
    /// Every (group, member), when one changed.
    pub groups: Option<Vec<(String, String)>>,
    /// The source's change number this batch is complete up to.
    pub seq: i64,
    /// The directory sync's record in the source (`sync_state` of [`crate::domain::SOURCE_LDAP`]),
    /// read with every batch: directory users on the node go stale with it.
    pub directory: Option<SyncState>,
}
