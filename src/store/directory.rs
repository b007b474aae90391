//! The directory sync's rules, once for every backend: how a directory user is merged
//! with the store's row of that name (added, re-enabled, disabled, refused), which of its
//! keys come and go, what happens to users gone from the directory, and the groups. A
//! backend supplies the row operations ([`DirectoryWrite`]) inside its own transaction;
//! the decisions, the audit trail and the report are made here.

use super::{Actor, DirectorySnapshot, DirectoryUser, NewKey, StoreError, SyncReport};
use crate::domain::{Scope, SOURCE_LDAP};
use crate::time::Timestamp;

/// A user a sync meets again.
pub(crate) struct Known {
    pub id: i64,
    pub source: String,
    pub state: String,
    pub uid_number: Option<i64>,
    pub dn: Option<String>,
}

/// The row operations a directory sync needs, within one transaction of a backend.
pub(crate) trait DirectoryWrite {
    fn find(&mut self, name: &str) -> Result<Option<Known>, StoreError>;
    /// Who holds `uid` (a user's name, or `name (retired)`), after giving back a uid
    /// retired under `name`: the directory says it is the same person.
    fn claim_uid(&mut self, uid: u32, name: &str) -> Result<Option<String>, StoreError>;
    /// A fresh uid for the new user `name`; `None`: the range is full.
    fn allocate_uid(&mut self, name: &str) -> Result<Option<u32>, StoreError>;
    /// Adds the user (source `ldap`) and returns its row id.
    fn insert_user(&mut self, u: &DirectoryUser, policy: Scope, uid: u32, now: Timestamp) -> Result<i64, StoreError>;
    fn set_state(&mut self, id: i64, enabled: bool) -> Result<(), StoreError>;
    fn set_dn(&mut self, id: i64, dn: &str) -> Result<(), StoreError>;
    fn policy(&mut self, id: i64) -> Result<Scope, StoreError>;
    /// Fingerprints of the user's keys from the directory.
    fn directory_keys(&mut self, id: i64) -> Result<Vec<String>, StoreError>;
    /// Adds a key unless its fingerprint is registered; whether it was added.
    fn insert_key(&mut self, id: i64, key: &NewKey, scope: Scope, now: Timestamp) -> Result<bool, StoreError>;
    fn remove_key(&mut self, fingerprint: &str) -> Result<(), StoreError>;
    /// Removes every key of the user from the directory; how many.
    fn remove_directory_keys(&mut self, id: i64) -> Result<u64, StoreError>;
    /// (id, name, state) of every directory user.
    fn directory_users(&mut self) -> Result<Vec<(i64, String, String)>, StoreError>;
    /// Every (group, member) from the directory, sorted.
    fn directory_groups(&mut self) -> Result<Vec<(String, String)>, StoreError>;
    fn replace_groups(&mut self, members: &[(String, String)]) -> Result<(), StoreError>;
    fn audit(&mut self, actor: &Actor, action: &str, subject: &str, detail: &str) -> Result<(), StoreError>;
    /// The user's rows changed (PostgreSQL numbers the change for the nodes).
    fn user_changed(&mut self, name: &str) -> Result<(), StoreError>;
    fn groups_changed(&mut self) -> Result<(), StoreError>;
}

/// The audit detail of a key added.
pub(crate) fn key_detail(new: &NewKey, scope: Scope) -> String {
    let mut detail = String::new();
    crate::log::push_pair(&mut detail, "fingerprint", &new.key.fingerprint);
    crate::log::push_pair(&mut detail, "scope", scope.as_str());
    crate::log::push_pair(&mut detail, "source", &new.source);
    if let Some(from) = &new.from {
        crate::log::push_pair(&mut detail, "from", from);
    }
    if let Some(expires) = new.expires {
        crate::log::push_pair(&mut detail, "expires", &expires.to_string());
    }
    detail
}

/// Makes one directory user the store's. Directory data never overrides a local user of
/// the same name; a changed uidNumber (another person under an old name) disables the
/// user; an incremental sync refuses a second entry for a known name.
pub(crate) fn merge_user(
    w: &mut dyn DirectoryWrite,
    actor: &Actor,
    u: &DirectoryUser,
    default_policy: Scope,
    full: bool,
    report: &mut SyncReport,
) -> Result<(), StoreError> {
    let before = counts(report);
    merge_user_rows(w, actor, u, default_policy, full, report)?;
    // What a node mirrors changed (a DN alone it does not keep).
    if counts(report) != before {
        w.user_changed(&u.name)?;
    }
    Ok(())
}

fn counts(r: &SyncReport) -> (u32, u32, u32, u32, u32) {
    (r.users_added, r.users_disabled, r.users_enabled, r.keys_added, r.keys_removed)
}

fn merge_user_rows(
    w: &mut dyn DirectoryWrite,
    actor: &Actor,
    u: &DirectoryUser,
    default_policy: Scope,
    full: bool,
    report: &mut SyncReport,
) -> Result<(), StoreError> {
    let id = match w.find(&u.name)? {
        None => {
            // Directory users keep their uidNumber; one another user holds (or held) is
            // refused, so nobody inherits someone else's files.
            let uid = match u.uid_number.map(u32::try_from) {
                Some(Ok(n)) => match w.claim_uid(n, &u.name)? {
                    None => Some(n),
                    Some(holder) => {
                        report.conflicts.push(format!("{}: uidNumber {n} is already {holder}'s; skipped", u.name));
                        return Ok(());
                    }
                },
                Some(Err(_)) => {
                    let n = u.uid_number.unwrap_or_default();
                    report.conflicts.push(format!("{}: uidNumber {n} is not a uid; skipped", u.name));
                    return Ok(());
                }
                None => w.allocate_uid(&u.name)?,
            };
            let Some(uid) = uid else {
                report.conflicts.push(format!("{}: no uid left in users.uid_min..uid_max; skipped", u.name));
                return Ok(());
            };
            let id = w.insert_user(u, default_policy, uid, actor.now)?;
            w.audit(actor, "user.add", &u.name, "source=ldap")?;
            report.users_added += 1;
            id
        }
        Some(k) if k.source != SOURCE_LDAP => {
            report
                .conflicts
                .push(format!("{}: a local user of that name exists; the directory entry is ignored", u.name));
            return Ok(());
        }
        Some(Known { id, state, uid_number: Some(old), .. }) if u.uid_number.is_some_and(|new| new != old) => {
            // Another person under an old name: nothing of the old one's may serve them,
            // and nothing stays usable until someone looks.
            report.conflicts.push(format!(
                "{}: uidNumber changed from {old} to {}: another person under an old name; disabled, resolve by hand",
                u.name,
                u.uid_number.unwrap_or_default()
            ));
            if state != "disabled" {
                w.set_state(id, false)?;
                w.audit(actor, "user.disable", &u.name, "source=ldap reason=uid-number-changed")?;
                report.users_disabled += 1;
            }
            report.keys_removed += w.remove_directory_keys(id)? as u32;
            return Ok(());
        }
        // Another entry for a name we know from elsewhere in the directory: only a full
        // read can tell a move from a second person, so an incremental sync refuses it.
        Some(Known { dn: Some(old_dn), .. }) if !full && !old_dn.eq_ignore_ascii_case(&u.dn) => {
            report.conflicts.push(format!(
                "{}: a second directory entry ({}) for the user known as {old_dn}; skipped (a full sync settles moves)",
                u.name, u.dn
            ));
            return Ok(());
        }
        Some(Known { id, state: old_state, dn: old_dn, .. }) => {
            if old_dn.as_deref() != Some(u.dn.as_str()) {
                w.set_dn(id, &u.dn)?;
            }
            let state = if u.enabled { "enabled" } else { "disabled" };
            if old_state != state {
                w.set_state(id, u.enabled)?;
                let action = if u.enabled { "user.enable" } else { "user.disable" };
                w.audit(actor, action, &u.name, "source=ldap")?;
                if u.enabled {
                    report.users_enabled += 1;
                } else {
                    report.users_disabled += 1;
                }
            }
            id
        }
    };
    let existing = w.directory_keys(id)?;
    // The user's policy is each new key's scope: read once, when the first new key needs it.
    let mut policy_scope = None;
    for key in &u.keys {
        if existing.contains(&key.fingerprint) {
            continue;
        }
        let new = NewKey { key: key.clone(), scope: None, from: None, expires: None, source: SOURCE_LDAP.to_string() };
        let scope = match policy_scope {
            Some(s) => s,
            None => *policy_scope.insert(w.policy(id)?),
        };
        if w.insert_key(id, &new, scope, actor.now)? {
            w.audit(actor, "key.add", &u.name, &key_detail(&new, scope))?;
            report.keys_added += 1;
        } else {
            report.conflicts.push(format!("{}: key {} is registered to another user", u.name, key.fingerprint));
        }
    }
    for fp in existing.iter().filter(|fp| !u.keys.iter().any(|k| &&k.fingerprint == fp)) {
        w.remove_key(fp)?;
        let mut detail = String::new();
        crate::log::push_pair(&mut detail, "fingerprint", fp);
        crate::log::push_pair(&mut detail, "source", SOURCE_LDAP);
        w.audit(actor, "key.remove", &u.name, &detail)?;
        report.keys_removed += 1;
    }
    Ok(())
}

/// After a full read: directory users it lacks are disabled and lose their directory keys;
/// then the groups become the directory's.
pub(crate) fn finish(
    w: &mut dyn DirectoryWrite,
    actor: &Actor,
    snapshot: &DirectorySnapshot,
    report: &mut SyncReport,
) -> Result<(), StoreError> {
    if snapshot.full {
        let listed: std::collections::HashSet<&str> = snapshot.users.iter().map(|u| u.name.as_str()).collect();
        for (id, name, state) in w.directory_users()?.into_iter().filter(|(_, n, _)| !listed.contains(n.as_str())) {
            let mut changed = false;
            if state != "disabled" {
                w.set_state(id, false)?;
                w.audit(actor, "user.disable", &name, "source=ldap reason=gone-from-directory")?;
                report.users_disabled += 1;
                changed = true;
            }
            let removed = w.remove_directory_keys(id)?;
            report.keys_removed += removed as u32;
            if changed || removed > 0 {
                w.user_changed(&name)?;
            }
        }
    }
    let mut members: Vec<(String, String)> = snapshot
        .groups
        .iter()
        .flat_map(|(group, members)| members.iter().map(move |m| (group.clone(), m.clone())))
        .collect();
    members.sort();
    members.dedup();
    if w.directory_groups()? != members {
        w.replace_groups(&members)?;
        w.groups_changed()?;
    }
    Ok(())
}
