//! What every part of Gatehouse speaks of: users, their keys, repository grants, scopes.
//! The store keeps them, the login path and the admin side decide with them; none of
//! them knows how they are stored.

pub mod repo;
mod scope;

pub use scope::{Scope, UserState};

use crate::time::Timestamp;
use std::time::Duration;

/// A user as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub name: String,
    pub state: UserState,
    pub policy: Scope,
    pub port_forwarding: bool,
    pub created: Timestamp,
    pub source: String,
    /// The account's uid, allocated by the store (`None`: the store was made before
    /// uids were, and `gatehouse init` has not run since).
    pub uid: Option<u32>,
}

#[cfg(test)]
impl User {
    /// A user as unit tests write them: no forwarding, made at the epoch, no uid yet.
    pub fn for_tests(name: &str, policy: Scope, state: UserState, source: &str) -> User {
        User {
            name: name.into(),
            state,
            policy,
            port_forwarding: false,
            created: Timestamp::EPOCH,
            source: source.into(),
            uid: None,
        }
    }
}

/// A change to a user's policy; `None` leaves that part as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyChange {
    pub policy: Option<Scope>,
    pub port_forwarding: Option<bool>,
}

impl PolicyChange {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.port_forwarding.is_none()
    }

    /// What it changes, as the audit trail and the log name it.
    pub fn pairs(&self) -> Vec<(&'static str, &'static str)> {
        let mut pairs = Vec::new();
        if let Some(p) = self.policy {
            pairs.push(("policy", p.as_str()));
        }
        if let Some(f) = self.port_forwarding {
            pairs.push(("port_forwarding", yes_no(f)));
        }
        pairs
    }
}

/// A flag as the audit trail and the log write it.
pub fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Key {
    pub user: String,
    pub algorithm: String,
    pub blob: String,
    pub fingerprint: String,
    pub bits: u32,
    pub comment: String,
    pub scope: Scope,
    pub from: Option<String>,
    pub expires: Option<Timestamp>,
    pub created: Timestamp,
    pub source: String,
}

/// A repository grant: `subject` (a user name, or `@group` for a system group) may read or
/// write repositories whose `owner/name.git` path matches `pattern`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    pub subject: String,
    pub pattern: String,
    pub access: repo::Access,
    pub created: Timestamp,
}

/// The `source` of users synced from a directory.
pub const SOURCE_LDAP: &str = "ldap";
/// The `source` of users a login node mirrors from the shared PostgreSQL database (`[source]`).
pub const SOURCE_SHARED: &str = "postgres";

/// What the login path needs: the user and the keys asked for.
#[derive(Debug, Clone)]
pub struct LoginView {
    pub user: User,
    pub keys: Vec<Key>,
    /// For a user synced from a directory or mirrored from the shared source: when that
    /// sync last succeeded.
    pub synced: Option<Timestamp>,
}

/// The staleness rule of synced sources: the last successful sync (`synced`) is no older
/// than `staleness_max`. What [`LoginView::fresh`] applies to each login, and `gatehouse
/// sync status` reports.
pub fn synced_recently(staleness_max: Option<Duration>, synced: Option<Timestamp>, now: Timestamp) -> bool {
    match (staleness_max, synced) {
        (Some(max), Some(at)) => now.saturating_duration_since(at) <= max,
        // No [ldap] or [source] section any more, or never synced: fail closed.
        _ => false,
    }
}

impl LoginView {
    /// Whether the user's data may still be trusted: always for local users; for directory
    /// users and users mirrored from the shared source only while the last successful sync
    /// is younger than `staleness_max` (the one of their source: [`crate::config::Config::staleness_max`]).
    pub fn fresh(&self, staleness_max: Option<Duration>, now: Timestamp) -> bool {
        if self.user.source != SOURCE_LDAP && self.user.source != SOURCE_SHARED {
            return true;
        }
        synced_recently(staleness_max, self.synced, now)
    }

    /// The reason logged when [`LoginView::fresh`] refuses.
    pub fn stale_reason(&self) -> &'static str {
        if self.user.source == SOURCE_SHARED {
            "source-stale"
        } else {
            "directory-stale"
        }
    }
}
