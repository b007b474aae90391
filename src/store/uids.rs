//! Store-allocated uids: every user gets one inside `users.uid_min..uid_max` when it is
//! added, keeps it for life, and a removed user's uid is retired (never handed out again),
//! so no new user inherits an old user's files. Directory users keep their `uidNumber`.

use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashSet;

/// The uids the store hands out: `users.uid_min..=users.uid_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub min: u32,
    pub max: u32,
}

/// Whether a uid is held by an account the store did not make (a local account in the
/// range, one a directory serves through NSS). A lookup that fails counts as held.
pub type HostCheck = fn(u32) -> bool;

pub fn held_on_this_host(uid: u32) -> bool {
    !matches!(nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)), Ok(None))
}

/// The uid of this host's account named `name`, if it has one: a user added for an
/// account that exists already (made by hand, or by useradd before the store gave uids)
/// keeps that account's uid.
pub type AccountCheck = fn(&str) -> Option<u32>;

pub fn account_on_this_host(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name).ok().flatten().filter(|u| u.name == name).map(|u| u.uid.as_raw())
}

/// Hands out uids within one write transaction: the lowest above every uid the store
/// ever gave (so a fresh uid is one step, even in an import of 100,000 users), then, once
/// the top of the range is reached, the gaps below it.
pub(crate) struct Allocator {
    range: UidRange,
    next: u64,
    /// Every uid in the range the store holds or retired; read once the top is reached.
    used: Option<HashSet<u32>>,
    host: HostCheck,
    account: AccountCheck,
}

const USED_IN_RANGE: &str = "SELECT uid FROM users WHERE uid BETWEEN ?1 AND ?2 \
                             UNION ALL SELECT uid FROM retired_uids WHERE uid BETWEEN ?1 AND ?2";

impl Allocator {
    pub fn start(
        tx: &Transaction<'_>,
        range: UidRange,
        host: HostCheck,
        account: AccountCheck,
    ) -> rusqlite::Result<Allocator> {
        let top: Option<u32> =
            tx.query_row(&format!("SELECT max(uid) FROM ({USED_IN_RANGE})"), params![range.min, range.max], |r| {
                r.get(0)
            })?;
        let next = top.map_or(u64::from(range.min), |t| u64::from(t) + 1);
        Ok(Allocator { range, next, used: None, host, account })
    }

    /// The uid for a new user `name`: their existing account's, when it is in the range
    /// and the store has not given it to anyone; else a fresh one.
    pub fn for_user(&mut self, tx: &Transaction<'_>, name: &str) -> rusqlite::Result<Option<u32>> {
        if let Some(uid) = (self.account)(name).filter(|u| (self.range.min..=self.range.max).contains(u)) {
            if holder(tx, uid)?.is_none() {
                return Ok(Some(uid));
            }
        }
        self.take(tx)
    }

    /// A uid no user, retired user or host account holds; `None` when the range is full.
    pub fn take(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<Option<u32>> {
        while self.next <= u64::from(self.range.max) {
            let uid = self.next as u32;
            self.next += 1;
            // A directory's uidNumber, placed in this transaction, may sit above the top.
            if holder(tx, uid)?.is_none() && !(self.host)(uid) {
                if let Some(used) = &mut self.used {
                    used.insert(uid);
                }
                return Ok(Some(uid));
            }
        }
        let used = match &mut self.used {
            Some(used) => used,
            None => self.used.insert(
                tx.prepare(USED_IN_RANGE)?
                    .query_map(params![self.range.min, self.range.max], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
            ),
        };
        let free = (self.range.min..=self.range.max).find(|u| !used.contains(u) && !(self.host)(*u));
        if let Some(uid) = free {
            used.insert(uid);
        }
        Ok(free)
    }
}

/// Who holds `uid` in the store: a user, or a retired user (`name (retired)`).
pub(crate) fn holder(tx: &Transaction<'_>, uid: u32) -> rusqlite::Result<Option<String>> {
    let user: Option<String> = tx.query_row("SELECT name FROM users WHERE uid = ?1", [uid], |r| r.get(0)).optional()?;
    if user.is_some() {
        return Ok(user);
    }
    tx.query_row("SELECT name FROM retired_uids WHERE uid = ?1", [uid], |r| r.get(0))
        .optional()
        .map(|n: Option<String>| n.map(|n| format!("{n} (retired)")))
}

/// A directory user met again under the name and uidNumber they had when removed: the
/// directory says it is the same person, so the uid is theirs again.
pub(crate) fn reclaim(tx: &Transaction<'_>, uid: u32, name: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM retired_uids WHERE uid = ?1 AND name = ?2", params![uid, name]).map(|_| ())
}

/// Before a user's row goes: its uid is kept out of use for good.
pub(crate) fn retire(tx: &Transaction<'_>, name: &str, now: crate::time::Timestamp) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO retired_uids (uid, name, retired) SELECT uid, name, ?2 FROM users \
         WHERE name = ?1 AND uid IS NOT NULL",
        params![name, now],
    )
    .map(|_| ())
}

/// Users from before uids were allocated (schema 5) get one: a directory user its
/// `uidNumber`, a user whose account this host already has that account's uid (when
/// served: from uid_min up), anyone else a fresh one. Returns how many were given a uid.
pub(crate) fn backfill(
    tx: &Transaction<'_>,
    range: UidRange,
    host: HostCheck,
    account_uid: &dyn Fn(&str) -> Option<u32>,
) -> rusqlite::Result<Vec<(String, Option<u32>)>> {
    let missing: Vec<(i64, String, Option<u32>)> = tx
        .prepare("SELECT id, name, uid_number FROM users WHERE uid IS NULL ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut given = Vec::new();
    let mut fresh = Vec::new();
    for (id, name, uid_number) in missing {
        // An account above the range was served before uids were given (the login path
        // serves every uid from uid_min up): it keeps its uid, or its user is locked out.
        let kept = uid_number.or_else(|| account_uid(&name).filter(|u| *u >= range.min));
        match kept {
            Some(uid) if holder(tx, uid)?.is_none() => {
                tx.execute("UPDATE users SET uid = ?2 WHERE id = ?1", params![id, uid])?;
                given.push((name, Some(uid)));
            }
            _ => fresh.push((id, name)),
        }
    }
    // Fresh uids only after every kept one is placed: they must not take a kept one.
    let mut allocator = Allocator::start(tx, range, host, |_| None)?;
    for (id, name) in fresh {
        let uid = allocator.take(tx)?;
        if let Some(uid) = uid {
            tx.execute("UPDATE users SET uid = ?2 WHERE id = ?1", params![id, uid])?;
        }
        given.push((name, uid));
    }
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT UNIQUE, uid INTEGER UNIQUE, uid_number INTEGER);
             CREATE TABLE retired_uids (uid INTEGER PRIMARY KEY, name TEXT NOT NULL, retired INTEGER NOT NULL);",
        )
        .unwrap();
        conn
    }

    const RANGE: UidRange = UidRange { min: 100, max: 104 };

    fn nothing_on_host(_: u32) -> bool {
        false
    }

    fn host_holds_101(uid: u32) -> bool {
        uid == 101
    }

    fn add(tx: &Transaction<'_>, a: &mut Allocator, name: &str) -> Option<u32> {
        let uid = a.take(tx).unwrap();
        tx.execute("INSERT INTO users (name, uid) VALUES (?1, ?2)", params![name, uid]).unwrap();
        uid
    }

    #[test]
    fn uids_are_never_handed_out_twice_even_after_removal() {
        let mut conn = db();
        let tx = conn.transaction().unwrap();
        let mut a = Allocator::start(&tx, RANGE, host_holds_101, |_| None).unwrap();
        assert_eq!(add(&tx, &mut a, "alice"), Some(100));
        assert_eq!(add(&tx, &mut a, "bob"), Some(102), "101 is a host account's");
        retire(&tx, "alice", crate::time::Timestamp::EPOCH).unwrap();
        tx.execute("DELETE FROM users WHERE name = 'alice'", []).unwrap();
        assert_eq!(holder(&tx, 100).unwrap().as_deref(), Some("alice (retired)"));
        // A new allocator (the next transaction) starts above what was ever given.
        let mut a = Allocator::start(&tx, RANGE, host_holds_101, |_| None).unwrap();
        assert_eq!(add(&tx, &mut a, "alice2"), Some(103));
        assert_eq!(add(&tx, &mut a, "carol"), Some(104));
        assert_eq!(a.take(&tx).unwrap(), None, "100 retired, 101 the host's, the rest in use: full");
    }

    #[test]
    fn gaps_below_the_top_are_used_once_the_top_is_reached() {
        let mut conn = db();
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO users (name, uid) VALUES ('top', 104), ('low', 100)", []).unwrap();
        let mut a = Allocator::start(&tx, RANGE, nothing_on_host, |_| None).unwrap();
        assert_eq!(a.take(&tx).unwrap(), Some(101));
        assert_eq!(a.take(&tx).unwrap(), Some(102));
        assert_eq!(a.take(&tx).unwrap(), Some(103));
        assert_eq!(a.take(&tx).unwrap(), None);
    }

    #[test]
    fn backfill_keeps_directory_and_existing_account_uids() {
        let mut conn = db();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(
            "INSERT INTO users (name, uid_number) VALUES ('dir', 103);
             INSERT INTO users (name) VALUES ('legacy'), ('new'), ('outside');",
        )
        .unwrap();
        let accounts = |n: &str| match n {
            "legacy" => Some(100),
            "outside" => Some(5),
            _ => None,
        };
        let given = backfill(&tx, RANGE, nothing_on_host, &accounts).unwrap();
        let uid = |n: &str| given.iter().find(|(g, _)| g == n).and_then(|(_, u)| *u);
        assert_eq!(uid("dir"), Some(103));
        assert_eq!(uid("legacy"), Some(100));
        assert_eq!(uid("new"), Some(104), "above every uid in use");
        assert_eq!(uid("outside"), Some(101), "an account outside the range is not theirs to keep");
    }
}
