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
    /// On a login node (a store the agent mirrors from the shared source), for a user whose
    /// own source is another (a directory user that reached the node through PostgreSQL):
    /// `Some` with when the mirror last succeeded. `None` on a store that is no mirror.
    pub mirrored: Option<Option<Timestamp>>,
}

/// The `source` a mirrored user keeps on a login node: a directory user stays one (its
/// password is checked against the directory and its sync's staleness applies), every
/// other user is the shared source's.
pub fn mirrored_source(source: &str) -> &'static str {
    if source == SOURCE_LDAP {
        SOURCE_LDAP
    } else {
        SOURCE_SHARED
    }
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
    /// is younger than `staleness_max` of their source ([`crate::config::Config::staleness_max`]).
    /// On a login node a directory user needs both: the directory's sync into the shared
    /// source, and the node's mirror of it.
    pub fn fresh(&self, staleness_max: &dyn Fn(&str) -> Option<Duration>, now: Timestamp) -> bool {
        self.stale_source(staleness_max, now).is_none()
    }

    /// The source whose sync is too old to trust this user's data (the shared source first:
    /// a node cut off cannot know how fresh the directory is); `None`: fresh.
    pub fn stale_source(
        &self,
        staleness_max: &dyn Fn(&str) -> Option<Duration>,
        now: Timestamp,
    ) -> Option<&'static str> {
        let within = |source: &str, synced: Option<Timestamp>| synced_recently(staleness_max(source), synced, now);
        if let Some(mirror) = self.mirrored {
            if !within(SOURCE_SHARED, mirror) {
                return Some(SOURCE_SHARED);
            }
        }
        match self.user.source.as_str() {
            SOURCE_LDAP if !within(SOURCE_LDAP, self.synced) => Some(SOURCE_LDAP),
            SOURCE_SHARED if !within(SOURCE_SHARED, self.synced) => Some(SOURCE_SHARED),
            _ => None,
        }
    }

    /// The reason logged when [`LoginView::fresh`] refuses for `stale_source`.
    pub fn stale_reason(stale_source: &str) -> &'static str {
        if stale_source == SOURCE_SHARED {
            "source-stale"
        } else {
            "directory-stale"
        }
    }
}

#[cfg(test)]
mod freshness_tests {
    use super::*;

    fn view(source: &str, synced: Option<i64>, mirrored: Option<Option<i64>>) -> LoginView {
        LoginView {
            user: User {
                name: "dora".into(),
                state: UserState::Enabled,
                policy: Scope::Shell,
                port_forwarding: false,
                created: Timestamp::EPOCH,
                source: source.into(),
                uid: Some(20001),
            },
            keys: Vec::new(),
            synced: synced.map(Timestamp::from_secs),
            mirrored: mirrored.map(|m| m.map(Timestamp::from_secs)),
        }
    }

    /// A directory user on a login node: refused when either the directory's sync into
    /// the shared source or the node's mirror is too old; the mirror is named first.
    #[test]
    fn a_directory_user_on_a_node_needs_both_syncs_fresh() {
        let max = |s: &str| match s {
            SOURCE_LDAP => Some(Duration::from_secs(100)),
            SOURCE_SHARED => Some(Duration::from_secs(10)),
            _ => None,
        };
        let now = Timestamp::from_secs(1000);
        assert_eq!(view("ldap", Some(950), Some(Some(995))).stale_source(&max, now), None);
        assert_eq!(view("ldap", Some(850), Some(Some(995))).stale_source(&max, now), Some(SOURCE_LDAP));
        assert_eq!(view("ldap", Some(950), Some(Some(980))).stale_source(&max, now), Some(SOURCE_SHARED));
        assert_eq!(view("ldap", Some(850), Some(Some(980))).stale_source(&max, now), Some(SOURCE_SHARED));
        assert_eq!(view("ldap", Some(950), Some(None)).stale_source(&max, now), Some(SOURCE_SHARED));
        // Not a node: the directory alone.
        assert_eq!(view("ldap", Some(950), None).stale_source(&max, now), None);
        // Without [source] on a node that mirrors: fail closed.
        let no_source = |s: &str| (s == SOURCE_LDAP).then(|| Duration::from_secs(100));
        assert_eq!(view("ldap", Some(950), Some(Some(995))).stale_source(&no_source, now), Some(SOURCE_SHARED));
        assert_eq!(view("postgres", Some(995), None).stale_source(&max, now), None);
        assert_eq!(view("postgres", Some(980), None).stale_source(&max, now), Some(SOURCE_SHARED));
        assert_eq!(view("cli", None, None).stale_source(&max, now), None);
        assert_eq!(LoginView::stale_reason(SOURCE_SHARED), "source-stale");
        assert_eq!(LoginView::stale_reason(SOURCE_LDAP), "directory-stale");
    }
}
