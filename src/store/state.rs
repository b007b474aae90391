//! The root side's state: logins, failed attempts, lockouts and the last use of each key.
//!
//! Written by the PAM module and gatehouse-session (as root, inside sshd), never by the key
//! store's writers, so a login never waits on a key change. Readers (the CLI, the web
//! service) open it read-only. Durability is `synchronous=NORMAL`: a power cut may lose the
//! last moments of login history, never consistency; logins must not wait on fsync.

use crate::store::db::{db_error, migrate_connection, truncate_wal, upsert, writer_connection};
use crate::store::StoreError;
use crate::time::Timestamp;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE logins (
        id          INTEGER PRIMARY KEY,
        user        TEXT NOT NULL,
        fingerprint TEXT,
        rhost       TEXT,
        service     TEXT,
        opened      INTEGER NOT NULL,
        closed      INTEGER
    ) STRICT;
    CREATE INDEX logins_by_user ON logins (user, opened);
    CREATE TABLE key_use (
        fingerprint TEXT PRIMARY KEY,
        user        TEXT NOT NULL,
        last_used   INTEGER NOT NULL,
        rhost       TEXT
    ) STRICT;
    CREATE INDEX key_use_by_user ON key_use (user);
    CREATE TABLE failures (
        id    INTEGER PRIMARY KEY,
        user  TEXT NOT NULL,
        rhost TEXT,
        time  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX failures_by_user ON failures (user, time);
    CREATE TABLE lockouts (
        user   TEXT PRIMARY KEY,
        until  INTEGER NOT NULL,
        reason TEXT NOT NULL
    ) STRICT;
    ",
    // 2: the quota each user's data folder was given, so a failed attempt is retried at a
    // later login and a successful one is not repeated at every login.
    "
    CREATE TABLE quotas (
        user       TEXT PRIMARY KEY,
        quota      TEXT NOT NULL,
        filesystem TEXT NOT NULL,
        applied    INTEGER NOT NULL
    ) STRICT;
    ",
    // 3: indexes that fit the login path's queries, so a login costs the same with a year
    // of history: the retention cut by time, and the user's open sessions at close.
    "
    CREATE INDEX logins_by_opened ON logins (opened);
    CREATE INDEX logins_open ON logins (user, rhost, id) WHERE closed IS NULL;
    CREATE INDEX failures_by_time ON failures (time);
    ",
    // 4: several login nodes ([source]): what this node has not yet sent to the shared
    // PostgreSQL (uses of keys, failed passwords, lockouts and unlocks; an id is never
    // given twice, so the source can tell a resend), the node's own name and the pull
    // cursor, and when a lockout began (an unlock lifts the ones that began before it).
    "
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT NOT NULL CHECK (kind IN ('use', 'failure', 'lock', 'unlock')),
        user        TEXT NOT NULL,
        fingerprint TEXT,
        rhost       TEXT,
        time        INTEGER NOT NULL,
        until       INTEGER,
        reason      TEXT
    ) STRICT;
    CREATE INDEX outbox_uses ON outbox (fingerprint) WHERE kind = 'use';
    CREATE TABLE shared (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    ALTER TABLE lockouts ADD COLUMN since INTEGER NOT NULL DEFAULT 0;
    ",
];

/// Login records kept per user, at most (besides [`LOGINS_RETAINED`]).
pub const LOGINS_KEPT: i64 = 10_000;

/// How long login records are kept: a year.
pub const LOGINS_RETAINED: Duration = Duration::from_secs(366 * 86_400);

/// How long failed attempts are kept: a day, longer than any lockout window need be.
pub const FAILURES_RETAINED: Duration = Duration::from_secs(86_400);

/// The span [`StateStore::sessions_last_minute`] counts.
const MINUTE: Duration = Duration::from_secs(60);

/// When and from where a key last logged in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyUse {
    pub last_used: Timestamp,
    pub rhost: Option<String>,
}

/// One login record this node has yet to send to the shared source (`[source]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEvent {
    /// This node's number for it, never given twice: with the node's name, what makes a
    /// resend recognisable.
    pub id: i64,
    pub kind: StateEventKind,
    pub user: String,
    pub time: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEventKind {
    /// A key logged in (from `rhost`).
    Use { fingerprint: String, rhost: Option<String> },
    /// A failed password.
    Failure { rhost: Option<String> },
    /// Locked out by hand until `until`.
    Lock { until: Timestamp, reason: String },
    /// Unlocked by hand: lockouts and failures up to `time` are lifted.
    Unlock,
}

/// What the other nodes recorded, read back from the shared source, to merge into this
/// node's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedState {
    /// (fingerprint, user, last use, from where)
    pub uses: Vec<(String, String, KeyUse)>,
    /// (user, until, since, reason): lockouts in force on the cluster.
    pub lockouts: Vec<(String, Timestamp, Timestamp, String)>,
    /// (user, time): unlocks by hand.
    pub unlocks: Vec<(String, Timestamp)>,
}

impl SharedState {
    pub fn is_empty(&self) -> bool {
        self.uses.is_empty() && self.lockouts.is_empty() && self.unlocks.is_empty()
    }
}

/// What waits to be sent: how many records, and the time of the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    pub records: i64,
    pub oldest: Option<Timestamp>,
}

pub struct StateStore {
    conn: Connection,
    path: String,
    /// Records are also queued for the shared source (`[source]` is set).
    shared: bool,
    /// Fold the WAL back in and empty it on close (writers outside the login path).
    truncate_on_close: bool,
}

impl Drop for StateStore {
    fn drop(&mut self) {
        if self.truncate_on_close {
            truncate_wal(&self.conn);
        }
    }
}

/// WAL pages after which a login-path writer checkpoints (SQLite's own automatic
/// checkpoint, at a commit), and the size the WAL file is cut back to afterwards: a few
/// logins' worth, so the file stays small without an fsync at every login.
const LOGIN_CHECKPOINT_PAGES: u32 = 16;
const LOGIN_WAL_LIMIT: u32 = 64 * 1024;

impl StateStore {
    /// Opens for writing (creating it when missing), as the root side does. The files are
    /// kept 0600, or 0640 with `group` (e.g. the web service's, to show last use of keys):
    /// they hold where everyone logged in from.
    pub fn open_writer(path: &Path, busy_timeout_ms: u32, group: Option<u32>) -> Result<StateStore, StoreError> {
        let mut conn = writer_connection(path, busy_timeout_ms, true)?;
        let shown = path.display().to_string();
        restrict_files(path, group).map_err(|e| StoreError::Unavailable { path: shown.clone(), reason: e })?;
        conn.execute_batch("PRAGMA synchronous = NORMAL;").map_err(|e| db_error(&shown, e))?;
        migrate_connection(&mut conn, &shown, MIGRATIONS)?;
        Ok(StateStore { conn, path: shown, shared: false, truncate_on_close: true })
    }

    /// Opens for writing as the login path does (the PAM module, once per login): like
    /// [`StateStore::open_writer`], but `synchronous=NORMAL` commits make no fsync, and the
    /// WAL is checkpointed by SQLite every [`LOGIN_CHECKPOINT_PAGES`] pages instead of at
    /// every close, so a login costs no fsync at all most of the time. A power cut may lose
    /// the last logins' records, never the file's consistency.
    pub fn open_login(path: &Path, busy_timeout_ms: u32, group: Option<u32>) -> Result<StateStore, StoreError> {
        let mut store = StateStore::open_writer(path, busy_timeout_ms, group)?;
        store.truncate_on_close = false;
        store
            .conn
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = {LOGIN_CHECKPOINT_PAGES}; PRAGMA journal_size_limit = {LOGIN_WAL_LIMIT};"
            ))
            .map_err(|e| store.fail(e))?;
        Ok(store)
    }

    /// Opens read-only; `None` when there is no state file yet (nobody has logged in).
    pub fn open_reader(path: &Path, busy_timeout_ms: u32) -> Result<Option<StateStore>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let shown = path.display().to_string();
        let flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| db_error(&shown, e))?;
        conn.busy_timeout(Duration::from_millis(u64::from(busy_timeout_ms))).map_err(|e| db_error(&shown, e))?;
        Ok(Some(StateStore { conn, path: shown, shared: false, truncate_on_close: false }))
    }

    /// Queues what is recorded from now on for the shared source too (with `[source]`):
    /// the agent sends it ([`StateStore::outbox`], [`StateStore::sent`]).
    pub fn share(mut self, shared: bool) -> StateStore {
        self.shared = shared;
        self
    }

    fn fail(&self, e: rusqlite::Error) -> StoreError {
        db_error(&self.path, e)
    }

    /// Records a session opening; returns its id.
    pub fn record_login(
        &self,
        user: &str,
        fingerprint: Option<&str>,
        rhost: Option<&str>,
        service: Option<&str>,
        now: Timestamp,
    ) -> Result<i64, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.fail(e))?;
        tx.execute(
            "INSERT INTO logins (user, fingerprint, rhost, service, opened) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user, fingerprint, rhost, service, now],
        )
        .map_err(|e| self.fail(e))?;
        let id = tx.last_insert_rowid();
        if let Some(fp) = fingerprint {
            upsert(&tx, "key_use", "fingerprint", &["user", "last_used", "rhost"], params![fp, user, now, rhost])
                .map_err(|e| self.fail(e))?;
            if self.shared {
                // One pending use per key: only the latest matters to the others.
                tx.execute("DELETE FROM outbox WHERE kind = 'use' AND fingerprint = ?1", [fp])
                    .map_err(|e| self.fail(e))?;
                tx.execute(
                    "INSERT INTO outbox (kind, user, fingerprint, rhost, time) VALUES ('use', ?1, ?2, ?3, ?4)",
                    params![user, fp, rhost, now],
                )
                .map_err(|e| self.fail(e))?;
            }
        }
        // Keep the history bounded: a year of logins, each user's latest LOGINS_KEPT (checked
        // at one login in 64, which is enough to hold the bound), a day of failures.
        tx.execute("DELETE FROM logins WHERE opened < ?1", [now.saturating_sub(LOGINS_RETAINED)])
            .map_err(|e| self.fail(e))?;
        if id % 64 == 0 {
            tx.execute(
                "DELETE FROM logins WHERE user = ?1 AND opened < (SELECT opened FROM logins WHERE user = ?1 \
                 ORDER BY opened DESC LIMIT 1 OFFSET ?2)",
                params![user, LOGINS_KEPT],
            )
            .map_err(|e| self.fail(e))?;
        }
        tx.execute("DELETE FROM failures WHERE time < ?1", [now.saturating_sub(FAILURES_RETAINED)])
            .map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))?;
        Ok(id)
    }

    /// Marks the user's latest open session from `rhost` as closed.
    pub fn record_logout(&self, user: &str, rhost: Option<&str>, now: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE logins SET closed = ?3 WHERE id = (SELECT id FROM logins WHERE user = ?1 \
                 AND closed IS NULL AND rhost IS ?2 ORDER BY id DESC LIMIT 1)",
                params![user, rhost, now],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Sessions the user opened in the minute before `now`.
    pub fn sessions_last_minute(&self, user: &str, now: Timestamp) -> Result<u32, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM logins WHERE user = ?1 AND opened > ?2",
                params![user, now.saturating_sub(MINUTE)],
                |r| r.get(0),
            )
            .map_err(|e| self.fail(e))
    }

    /// Records a failed attempt; locks the user out when the window holds `threshold` of
    /// them. Returns the lockout's end when this failure caused one.
    pub fn record_failure(
        &self,
        user: &str,
        rhost: Option<&str>,
        now: Timestamp,
        threshold: u32,
        window: Duration,
        duration: Duration,
    ) -> Result<Option<Timestamp>, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.fail(e))?;
        tx.execute("INSERT INTO failures (user, rhost, time) VALUES (?1, ?2, ?3)", params![user, rhost, now])
            .map_err(|e| self.fail(e))?;
        if self.shared {
            tx.execute(
                "INSERT INTO outbox (kind, user, rhost, time) VALUES ('failure', ?1, ?2, ?3)",
                params![user, rhost, now],
            )
            .map_err(|e| self.fail(e))?;
        }
        let recent: u32 = tx
            .query_row(
                "SELECT count(*) FROM failures WHERE user = ?1 AND time > ?2",
                params![user, now.saturating_sub(window)],
                |r| r.get(0),
            )
            .map_err(|e| self.fail(e))?;
        let mut locked = None;
        if recent >= threshold {
            let until = now.saturating_add(duration);
            tx.execute(
                "INSERT INTO lockouts (user, until, reason, since) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (user) DO UPDATE SET until = max(until, excluded.until), reason = excluded.reason, \
                 since = max(since, excluded.since)",
                params![user, until, format!("{recent} failures in {} s", window.as_secs()), now],
            )
            .map_err(|e| self.fail(e))?;
            locked = Some(until);
        }
        tx.commit().map_err(|e| self.fail(e))?;
        Ok(locked)
    }

    /// The end of the user's lockout, if one is in force.
    pub fn locked_until(&self, user: &str, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
        self.conn
            .query_row("SELECT until FROM lockouts WHERE user = ?1 AND until > ?2", params![user, now], |r| r.get(0))
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Locks a user out by hand, from `now` until `until`.
    pub fn lock(&self, user: &str, until: Timestamp, reason: &str, now: Timestamp) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.fail(e))?;
        upsert(&tx, "lockouts", "user", &["until", "reason", "since"], params![user, until, reason, now])
            .map_err(|e| self.fail(e))?;
        if self.shared {
            tx.execute(
                "INSERT INTO outbox (kind, user, time, until, reason) VALUES ('lock', ?1, ?2, ?3, ?4)",
                params![user, now, until, reason],
            )
            .map_err(|e| self.fail(e))?;
        }
        tx.commit().map_err(|e| self.fail(e))
    }

    /// Lifts a lockout and forgets the failures behind it; true when one was in force.
    pub fn unlock(&self, user: &str, now: Timestamp) -> Result<bool, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.fail(e))?;
        let removed = tx.execute("DELETE FROM lockouts WHERE user = ?1", [user]).map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM failures WHERE user = ?1", [user]).map_err(|e| self.fail(e))?;
        if self.shared {
            tx.execute("INSERT INTO outbox (kind, user, time) VALUES ('unlock', ?1, ?2)", params![user, now])
                .map_err(|e| self.fail(e))?;
        }
        tx.commit().map_err(|e| self.fail(e))?;
        Ok(removed > 0)
    }

    /// The oldest `limit` records waiting for the shared source, in the order recorded.
    pub fn outbox(&self, limit: u32) -> Result<Vec<StateEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, kind, user, fingerprint, rhost, time, until, reason FROM outbox ORDER BY id LIMIT ?1")
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([limit], |r| {
                let kind: String = r.get(1)?;
                let fingerprint: Option<String> = r.get(3)?;
                let rhost: Option<String> = r.get(4)?;
                let until: Option<Timestamp> = r.get(6)?;
                let reason: Option<String> = r.get(7)?;
                let kind = match kind.as_str() {
                    "use" => StateEventKind::Use { fingerprint: fingerprint.unwrap_or_default(), rhost },
                    "failure" => StateEventKind::Failure { rhost },
                    "lock" => StateEventKind::Lock {
                        until: until.unwrap_or(Timestamp::from_secs(0)),
                        reason: reason.unwrap_or_default(),
                    },
                    _ => StateEventKind::Unlock,
                };
                Ok(StateEvent { id: r.get(0)?, kind, user: r.get(2)?, time: r.get(5)? })
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.fail(e))
    }

    /// Forgets the records up to `id`: the shared source has them.
    pub fn sent(&self, id: i64) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM outbox WHERE id <= ?1", [id]).map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// What waits to be sent.
    pub fn backlog(&self) -> Result<Backlog, StoreError> {
        self.conn
            .query_row("SELECT count(*), min(time) FROM outbox", [], |r| {
                Ok(Backlog { records: r.get(0)?, oldest: r.get(1)? })
            })
            .map_err(|e| self.fail(e))
    }

    /// A value this node keeps about the shared source (its name, the pull cursor).
    pub fn shared_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM shared WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(|e| self.fail(e))
    }

    pub fn set_shared_value(&self, name: &str, value: &str) -> Result<(), StoreError> {
        upsert(&self.conn, "shared", "name", &["value"], params![name, value]).map_err(|e| self.fail(e))
    }

    /// This node's name on the shared source: `fresh` the first time, then the same.
    pub fn node_name(&self, fresh: impl FnOnce() -> String) -> Result<String, StoreError> {
        if let Some(name) = self.shared_value("node")? {
            return Ok(name);
        }
        self.conn
            .execute("INSERT OR IGNORE INTO shared (name, value) VALUES ('node', ?1)", [fresh()])
            .map_err(|e| self.fail(e))?;
        self.shared_value("node")?.ok_or_else(|| StoreError::Unavailable {
            path: self.path.clone(),
            reason: "the node's name was not kept".into(),
        })
    }

    /// Merges what the other nodes recorded, in one transaction: the later use of each
    /// key; unlocks (which lift lockouts that began, and failures made, up to them), then
    /// lockouts in force on the cluster that no unlock here lifted. Merging the same twice
    /// changes nothing more.
    pub fn merge_shared(&self, shared: &SharedState) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.fail(e))?;
        for (fp, user, used) in &shared.uses {
            tx.execute(
                "INSERT INTO key_use (fingerprint, user, last_used, rhost) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (fingerprint) DO UPDATE SET user = excluded.user, last_used = excluded.last_used, \
                 rhost = excluded.rhost WHERE excluded.last_used > key_use.last_used",
                params![fp, user, used.last_used, used.rhost],
            )
            .map_err(|e| self.fail(e))?;
        }
        for (user, time) in &shared.unlocks {
            tx.execute("DELETE FROM lockouts WHERE user = ?1 AND since <= ?2", params![user, time])
                .map_err(|e| self.fail(e))?;
            tx.execute("DELETE FROM failures WHERE user = ?1 AND time <= ?2", params![user, time])
                .map_err(|e| self.fail(e))?;
        }
        for (user, until, since, reason) in &shared.lockouts {
            if shared.unlocks.iter().any(|(u, t)| u == user && t >= since) {
                continue;
            }
            tx.execute(
                "INSERT INTO lockouts (user, until, reason, since) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (user) DO UPDATE SET until = excluded.until, reason = excluded.reason, \
                 since = excluded.since WHERE excluded.until > lockouts.until",
                params![user, until, reason, since],
            )
            .map_err(|e| self.fail(e))?;
        }
        tx.commit().map_err(|e| self.fail(e))
    }

    /// The quota last set for the user's folder, if any: (limit, filesystem).
    pub fn quota_applied(&self, user: &str) -> Result<Option<(String, String)>, StoreError> {
        self.conn
            .query_row("SELECT quota, filesystem FROM quotas WHERE user = ?1", [user], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Records that `quota` was set for the user on `filesystem`.
    pub fn record_quota(&self, user: &str, quota: &str, filesystem: &str, now: Timestamp) -> Result<(), StoreError> {
        upsert(&self.conn, "quotas", "user", &["quota", "filesystem", "applied"], params![user, quota, filesystem, now])
            .map_err(|e| self.fail(e))
    }

    /// When each of the user's keys last logged in.
    pub fn key_use(&self, user: &str) -> Result<HashMap<String, KeyUse>, StoreError> {
        self.conn
            .prepare("SELECT fingerprint, last_used, rhost FROM key_use WHERE user = ?1")
            .and_then(|mut s| {
                s.query_map([user], |r| Ok((r.get(0)?, KeyUse { last_used: r.get(1)?, rhost: r.get(2)? })))?.collect()
            })
            .map_err(|e| self.fail(e))
    }
}

fn restrict_files(path: &Path, group: Option<u32>) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = if group.is_some() { 0o640 } else { 0o600 };
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = std::fs::symlink_metadata(&file) else { continue };
        if meta.mode() & 0o777 != mode {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
        }
        if let Some(gid) = group {
            if meta.gid() != gid && nix::unistd::geteuid().is_root() {
                nix::unistd::chown(&file, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// The fingerprint of the key that authenticated, from sshd's `SSH_AUTH_INFO_0`
/// (`ExposeAuthInfo yes`): one line per method that succeeded, `publickey TYPE BLOB`.
pub fn accepted_key(auth_info: &str) -> Option<String> {
    auth_info.lines().filter_map(|line| line.strip_prefix("publickey ")).find_map(|key| {
        ssh_key::PublicKey::from_openssh(key.trim())
            .ok()
            .map(|k| k.key_data().fingerprint(ssh_key::HashAlg::Sha256).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    const MINUTE: Duration = Duration::from_secs(60);
    const TEN_MINUTES: Duration = Duration::from_secs(600);

    #[test]
    fn lockout_after_threshold_and_unlock() {
        let dir = std::env::temp_dir().join(format!("gh-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = StateStore::open_writer(&dir.join("state.db"), 1000, None).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join("state.db")).unwrap().permissions().mode() & 0o777, 0o600);
        for i in 0..2 {
            assert_eq!(
                s.record_failure("alice", Some("192.0.2.1"), at(100 + i), 3, MINUTE, TEN_MINUTES).unwrap(),
                None
            );
        }
        assert_eq!(s.record_failure("alice", None, at(102), 3, MINUTE, TEN_MINUTES).unwrap(), Some(at(702)));
        assert_eq!(s.locked_until("alice", at(103)).unwrap(), Some(at(702)));
        assert_eq!(s.locked_until("alice", at(702)).unwrap(), None, "over");
        assert_eq!(s.locked_until("bob", at(103)).unwrap(), None);
        assert!(s.unlock("alice", at(103)).unwrap());
        assert_eq!(s.locked_until("alice", at(103)).unwrap(), None);
        // Old failures fall out of the window.
        assert_eq!(s.record_failure("carol", None, at(0), 2, MINUTE, TEN_MINUTES).unwrap(), None);
        assert_eq!(s.record_failure("carol", None, at(100), 2, MINUTE, TEN_MINUTES).unwrap(), None);

        let id = s.record_login("alice", Some("SHA256:x"), Some("192.0.2.1"), Some("sshd"), at(1000)).unwrap();
        assert!(id > 0);
        assert_eq!(s.sessions_last_minute("alice", at(1030)).unwrap(), 1);
        assert_eq!(s.sessions_last_minute("alice", at(1061)).unwrap(), 0);
        assert_eq!(s.key_use("alice").unwrap()["SHA256:x"].last_used, at(1000));
        s.record_logout("alice", Some("192.0.2.1"), at(1100)).unwrap();
        assert_eq!(s.quota_applied("alice").unwrap(), None);
        s.record_quota("alice", "10M", "/data", at(1100)).unwrap();
        s.record_quota("alice", "20M", "/data", at(1200)).unwrap();
        assert_eq!(s.quota_applied("alice").unwrap(), Some(("20M".into(), "/data".into())));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn records_are_queued_for_the_source_and_merged_back() {
        let dir = std::env::temp_dir().join(format!("gh-state-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = StateStore::open_writer(&dir.join("plain.db"), 1000, None).unwrap();
        plain.record_failure("alice", None, at(100), 5, MINUTE, TEN_MINUTES).unwrap();
        assert!(plain.outbox(10).unwrap().is_empty(), "nothing is queued without [source]");

        let s = StateStore::open_writer(&dir.join("state.db"), 1000, None).unwrap().share(true);
        s.record_login("alice", Some("SHA256:a"), Some("192.0.2.1"), None, at(100)).unwrap();
        s.record_login("alice", Some("SHA256:a"), Some("192.0.2.2"), None, at(110)).unwrap();
        s.record_failure("bob", Some("192.0.2.9"), at(120), 5, MINUTE, TEN_MINUTES).unwrap();
        s.lock("carol", at(900), "by hand", at(130)).unwrap();
        s.unlock("carol", at(140)).unwrap();
        let queued = s.outbox(10).unwrap();
        let kinds: Vec<_> = queued.iter().map(|e| (e.user.as_str(), e.time)).collect();
        // One pending use per key, the latest.
        assert_eq!(kinds, [("alice", at(110)), ("bob", at(120)), ("carol", at(130)), ("carol", at(140))]);
        assert_eq!(
            queued[0].kind,
            StateEventKind::Use { fingerprint: "SHA256:a".into(), rhost: Some("192.0.2.2".into()) }
        );
        assert!(queued.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(s.backlog().unwrap(), Backlog { records: 4, oldest: Some(at(110)) });
        s.sent(queued[1].id).unwrap();
        assert_eq!(s.outbox(10).unwrap().len(), 2);
        // Ids are never given twice, even once the newest was sent and forgotten.
        let last = queued[3].id;
        s.sent(last).unwrap();
        s.record_failure("bob", None, at(150), 5, MINUTE, TEN_MINUTES).unwrap();
        assert!(s.outbox(10).unwrap()[0].id > last);
        assert_eq!(s.node_name(|| "n1".into()).unwrap(), "n1");
        assert_eq!(s.node_name(|| "n2".into()).unwrap(), "n1", "a node keeps its name");

        // Merged back: the later use wins, a lockout applies here, an unlock lifts the
        // lockouts and failures up to it; merging twice changes nothing more.
        let shared = SharedState {
            uses: vec![
                ("SHA256:a".into(), "alice".into(), KeyUse { last_used: at(105), rhost: Some("old".into()) }),
                ("SHA256:b".into(), "alice".into(), KeyUse { last_used: at(200), rhost: None }),
            ],
            lockouts: vec![("dave".into(), at(1000), at(160), "5 failures".into())],
            unlocks: vec![("bob".into(), at(155))],
        };
        for _ in 0..2 {
            s.merge_shared(&shared).unwrap();
            let used = s.key_use("alice").unwrap();
            assert_eq!(used["SHA256:a"].last_used, at(110), "an older use does not win");
            assert_eq!(used["SHA256:b"].last_used, at(200));
            assert_eq!(s.locked_until("dave", at(170)).unwrap(), Some(at(1000)));
        }
        let bob_failures: i64 =
            s.conn.query_row("SELECT count(*) FROM failures WHERE user = 'bob'", [], |r| r.get(0)).unwrap();
        assert_eq!(bob_failures, 0, "the unlock lifted the failures before it");
        // A lockout that began after an unlock stays; one an unlock lifted is not brought back.
        s.merge_shared(&SharedState { unlocks: vec![("dave".into(), at(150))], ..Default::default() }).unwrap();
        assert_eq!(s.locked_until("dave", at(170)).unwrap(), Some(at(1000)));
        let lifted = SharedState {
            lockouts: vec![("erin".into(), at(1000), at(160), "x".into())],
            unlocks: vec![("erin".into(), at(170))],
            ..Default::default()
        };
        s.merge_shared(&lifted).unwrap();
        assert_eq!(s.locked_until("erin", at(180)).unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_wal_does_not_grow_with_short_lived_writers() {
        let dir = std::env::temp_dir().join(format!("gh-state-wal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        for i in 0..300 {
            let s = StateStore::open_writer(&path, 1000, None).unwrap();
            s.record_login("alice", Some("SHA256:x"), None, None, at(1000 + i)).unwrap();
        }
        let wal = std::fs::metadata(dir.join("state.db-wal")).unwrap().len();
        assert!(wal < 64 * 1024, "the WAL grew to {wal} bytes");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn accepted_key_from_auth_info() {
        let info = "publickey ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti\n";
        assert_eq!(accepted_key(info).as_deref(), Some("SHA256:UCUiLr7Pjs9wFFJMDByLgc3NrtdU344OgUM45wZPcIQ"));
        assert_eq!(accepted_key("password\n"), None);
        assert_eq!(accepted_key("publickey ssh-ed25519 garbage"), None);
        assert_eq!(accepted_key(""), None);
    }

    #[test]
    fn the_login_path_uses_indexes_whatever_the_history() {
        let dir = std::env::temp_dir().join(format!("gh-state-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = StateStore::open_login(&dir.join("state.db"), 1000, None).unwrap();
        // The statements of one login, as the module runs them.
        for sql in [
            "SELECT count(*) FROM logins WHERE user = 'a' AND opened > 1",
            "DELETE FROM logins WHERE opened < 1",
            "DELETE FROM failures WHERE time < 1",
            "SELECT id FROM logins WHERE user = 'a' AND closed IS NULL AND rhost IS 'h' ORDER BY id DESC LIMIT 1",
            "SELECT opened FROM logins WHERE user = 'a' ORDER BY opened DESC LIMIT 1 OFFSET 5",
            "SELECT count(*) FROM failures WHERE user = 'a' AND time > 1",
            "SELECT until FROM lockouts WHERE user = 'a' AND until > 1",
            "DELETE FROM outbox WHERE kind = 'use' AND fingerprint = 'x'",
        ] {
            let plan: Vec<String> = s
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(plan.iter().all(|step| !step.starts_with("SCAN")), "{sql}: {plan:?}");
        }
        // Each user's history is bounded.
        let tx = s.conn.unchecked_transaction().unwrap();
        for i in 0..(LOGINS_KEPT + 500) {
            tx.execute("INSERT INTO logins (user, opened) VALUES ('ci', ?1)", [i]).unwrap();
        }
        tx.commit().unwrap();
        for i in 0..64 {
            s.record_login("ci", None, None, None, at(LOGINS_KEPT + 500 + i)).unwrap();
        }
        let kept: i64 = s.conn.query_row("SELECT count(*) FROM logins WHERE user = 'ci'", [], |r| r.get(0)).unwrap();
        assert!(kept <= LOGINS_KEPT + 64, "{kept} rows kept");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
