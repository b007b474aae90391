//! The key store on SQLite: the [`LoginStore`] and [`AdminStore`] of the embedded
//! backend, with the audit trail attached from its own file. The SQLite plumbing every
//! database shares (WAL, busy timeouts, migrations, error mapping) is in [`super::db`].

use super::db::{db_error, migrate_connection, migrate_schema, truncate_wal, unavailable, writer_connection};
use super::uids::{self, AccountCheck, Allocator, HostCheck, UidRange};
use super::*;
use crate::keys::ValidKey;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct SqliteStore {
    conn: Connection,
    path: String,
    writable: bool,
    /// Whether the audit trail is attached as `trail` (always for writers; for readers
    /// only once the trail is asked for: the login path never reads it).
    trail: std::cell::Cell<bool>,
    /// Where new users' uids come from (writers only).
    uids: Option<UidRange>,
    host_check: HostCheck,
    host_account: AccountCheck,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if self.writable {
            truncate_wal(&self.conn);
        }
    }
}

/// The audit trail's file: `audit.db` beside the store.
pub fn audit_path(store: &Path) -> PathBuf {
    store.with_file_name("audit.db")
}

/// Attaches the audit trail to a writer's connection as `trail`, creating the file when
/// missing (mode 0600, owned like the store, so the service that owns the store can open
/// what root made) and bringing its schema up to date. Writes to both files then share
/// one transaction; in WAL mode SQLite makes that atomic for each file, not across them.
fn attach_trail(conn: &mut Connection, store: &Path) -> Result<(), StoreError> {
    let trail = audit_path(store);
    let shown = trail.display().to_string();
    create_private(&trail, store).map_err(|e| unavailable(&shown, e))?;
    let fail = |e| db_error(&shown, e);
    conn.execute("ATTACH DATABASE ?1 AS trail", [trail.as_os_str().to_string_lossy()]).map_err(fail)?;
    let mode: String = conn.query_row("PRAGMA trail.journal_mode = WAL", [], |r| r.get(0)).map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unavailable(&shown, format!("cannot switch to WAL mode (still {mode})")));
    }
    conn.execute_batch("PRAGMA trail.synchronous = FULL;").map_err(fail)?;
    migrate_schema(conn, "trail", &shown, schema::AUDIT_MIGRATIONS)?;
    Ok(())
}

/// Creates `path` empty, mode 0600, unless it exists; as root, gives it the owner of
/// `like`. Never follows a symbolic link.
fn create_private(path: &Path, like: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    };
    if nix::unistd::geteuid().is_root() {
        if let Ok(meta) = std::fs::metadata(like) {
            std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
        }
    }
    Ok(())
}

/// A UNIQUE violation: the only constraint a valid insert can hit is the fingerprint's.
fn is_duplicate(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

fn parse_scope(text: String) -> rusqlite::Result<Scope> {
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))
}

fn parse_state(text: String) -> rusqlite::Result<UserState> {
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))
}

const USER_COLUMNS: &str = "u.name, u.state, u.policy, u.port_forwarding, u.created, u.source, u.uid";
/// How many columns USER_COLUMNS names: where the key's columns start after them.
const USER_COLUMN_COUNT: usize = 7;

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: row.get(0)?,
        state: parse_state(row.get(1)?)?,
        policy: parse_scope(row.get(2)?)?,
        port_forwarding: row.get(3)?,
        created: row.get(4)?,
        source: row.get(5)?,
        uid: row.get(6)?,
    })
}

const KEY_COLUMNS: &str = "k.algorithm, k.blob, k.fingerprint, k.bits, k.comment, k.scope, k.from_patterns, \
                           k.expires, k.created, k.source";
const KEY_COLUMN_COUNT: usize = 10;

fn key_from_row(user: &str, row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Key> {
    Ok(Key {
        user: user.to_string(),
        algorithm: row.get(at)?,
        blob: row.get(at + 1)?,
        fingerprint: row.get(at + 2)?,
        bits: row.get(at + 3)?,
        // Written before invisible characters were refused, or behind our back: never shown.
        comment: crate::keys::shown(&row.get::<_, String>(at + 4)?),
        scope: parse_scope(row.get(at + 5)?)?,
        from: row.get(at + 6)?,
        expires: row.get(at + 7)?,
        created: row.get(at + 8)?,
        source: row.get(at + 9)?,
    })
}

impl SqliteStore {
    /// Opens the store read-only, as the login path does. Never creates or changes a file.
    pub fn open_reader(path: &Path, busy_timeout_ms: u32) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| match std::fs::symlink_metadata(path) {
            Err(n) if n.kind() == std::io::ErrorKind::NotFound => {
                unavailable(&shown, "does not exist (run `gatehouse init`)")
            }
            _ => db_error(&shown, e),
        })?;
        let store = SqliteStore {
            conn,
            path: shown,
            writable: false,
            trail: std::cell::Cell::new(false),
            uids: None,
            host_check: uids::held_on_this_host,
            host_account: uids::account_on_this_host,
        };
        store.prepare_connection(busy_timeout_ms)?;
        store.check_version().map_err(|e| store.explain_missing_wal(e))?;
        Ok(store)
    }

    /// A read-only reader cannot create the -wal and -shm files; when they are missing
    /// (another tool closed the store last and removed them), say so and how to mend it.
    fn explain_missing_wal(&self, e: StoreError) -> StoreError {
        let shm = format!("{}-shm", self.path);
        match e {
            StoreError::Unavailable { path, reason } if !Path::new(&shm).exists() => StoreError::Unavailable {
                path,
                reason: format!(
                    "{reason}; its -wal and -shm files are missing (a tool other than gatehouse closed it last): \
                     run `gatehouse init` to restore them"
                ),
            },
            other => other,
        }
    }

    /// Opens the store for writing; it must already exist (see [`SqliteStore::create`]).
    /// New users get their uid from `uids`.
    pub fn open_writer(path: &Path, busy_timeout_ms: u32, uids: UidRange) -> Result<SqliteStore, StoreError> {
        Self::open_writable(path, busy_timeout_ms, uids, false)
    }

    /// Opens the store for writing, creating an empty file if missing, without checking or
    /// changing its schema: follow with [`SqliteStore::migrate`].
    pub fn create(path: &Path, busy_timeout_ms: u32, uids: UidRange) -> Result<SqliteStore, StoreError> {
        Self::open_writable(path, busy_timeout_ms, uids, true)
    }

    fn open_writable(
        path: &Path,
        busy_timeout_ms: u32,
        uids: UidRange,
        create: bool,
    ) -> Result<SqliteStore, StoreError> {
        let mut conn = writer_connection(path, busy_timeout_ms, create)?;
        // Deleted rows (a revoked key, the audit table moved out) are zeroed, not left in
        // free pages of a file every managed user may read.
        conn.execute_batch("PRAGMA main.secure_delete = ON;").map_err(|e| db_error(&path.display().to_string(), e))?;
        attach_trail(&mut conn, path)?;
        let store = SqliteStore {
            conn,
            path: path.display().to_string(),
            writable: true,
            trail: std::cell::Cell::new(true),
            uids: Some(uids),
            host_check: uids::held_on_this_host,
            host_account: uids::account_on_this_host,
        };
        if !create {
            store.check_version()?;
        }
        Ok(store)
    }

    fn prepare_connection(&self, busy_timeout_ms: u32) -> Result<(), StoreError> {
        self.conn.busy_timeout(Duration::from_millis(u64::from(busy_timeout_ms))).map_err(|e| self.error(e))
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        if !self.writable && e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
            StoreError::IndexRace { path: self.path.clone(), reason: e.to_string() }
        } else {
            db_error(&self.path, e)
        }
    }

    /// The schema version the store is at.
    pub fn version(&self) -> Result<i64, StoreError> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| self.error(e))
    }

    fn check_version(&self) -> Result<(), StoreError> {
        let found = self.read_retrying(|| self.version())?;
        if found != current_version() {
            return Err(StoreError::Version { path: self.path.clone(), found, expected: current_version() });
        }
        Ok(())
    }

    /// Applies the migrations this store lacks, each in its own transaction.
    pub fn migrate(&mut self) -> Result<i64, StoreError> {
        let path = self.path.clone();
        migrate_connection(&mut self.conn, &path, schema::MIGRATIONS)
    }

    /// Gives a uid to every user without one (stores from before uids were allocated);
    /// `account_uid` is the uid of this host's account of that name, if any. Returns
    /// (user, uid given; `None` when the range is full).
    pub fn assign_missing_uids(
        &mut self,
        account_uid: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Vec<(String, Option<u32>)>, StoreError> {
        let (range, host) = (self.allocation()?, self.host_check);
        let path = self.path.clone();
        self.write(|tx| uids::backfill(tx, range, host, account_uid).map_err(|e| db_error(&path, e)))
    }

    fn allocation(&self) -> Result<UidRange, StoreError> {
        self.uids.ok_or_else(|| unavailable(&self.path, "opened read-only: cannot add users"))
    }

    /// Uses `uid_held` and `account_of` instead of this host's accounts to tell which
    /// uids are taken and which names have an account (tests).
    pub fn with_host(mut self, uid_held: HostCheck, account_of: AccountCheck) -> Self {
        self.host_check = uid_held;
        self.host_account = account_of;
        self
    }

    /// Records an event that is not a change to users or keys (init, upgrade).
    pub fn record(&mut self, actor: &Actor, action: &str, detail: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.write(|tx| audit(tx, actor, action, &path, detail).map_err(|e| db_error(&path, e)))
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Runs `f` in one IMMEDIATE transaction (the write lock taken up front, so a busy
    /// store fails at the start rather than half-way).
    fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let path = self.path.clone();
        let map = |e: rusqlite::Error| db_error(&path, e);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map)?;
        let value = f(&tx)?;
        tx.commit().map_err(map)?;
        Ok(value)
    }
}

const INSERT_KEY: &str = "INSERT INTO keys (user_id, algorithm, blob, fingerprint, bits, comment, scope, \
                          from_patterns, expires, created, source) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const INSERT_AUDIT: &str = "INSERT INTO trail.audit (time, actor, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)";

fn insert_key(
    stmt: &mut rusqlite::Statement<'_>,
    user_id: i64,
    new: &NewKey,
    scope: Scope,
    now: Timestamp,
) -> rusqlite::Result<usize> {
    let ValidKey { algorithm, blob, fingerprint, comment, bits } = &new.key;
    stmt.execute(params![
        user_id,
        algorithm,
        blob,
        fingerprint,
        bits,
        comment,
        scope.as_str(),
        new.from,
        new.expires,
        now,
        new.source
    ])
}

use super::directory::key_detail;

fn audit(tx: &Transaction<'_>, actor: &Actor, action: &str, subject: &str, detail: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(INSERT_AUDIT)?.execute(params![actor.now, actor.name, action, subject, detail])?;
    Ok(())
}

impl LoginStore for SqliteStore {
    fn login_view(&self, user: &str, fingerprint: Option<&str>) -> Result<Option<LoginView>, StoreError> {
        self.read_retrying(|| self.login_view_once(user, fingerprint))
    }

    fn grants_for(&self, subjects: &[String]) -> Result<Vec<Grant>, StoreError> {
        self.read_retrying(|| self.grants_for_once(subjects))
    }

    fn groups_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.read_retrying(|| {
            self.conn
                .prepare("SELECT grp FROM group_members WHERE user = ?1 ORDER BY grp")
                .and_then(|mut s| s.query_map([user], |r| r.get(0))?.collect())
                .map_err(|e| self.error(e))
        })
    }
}

/// Users per transaction in a directory sync: other writers wait at most one batch.
const SYNC_BATCH: usize = 2000;

/// The directory sync's row operations ([`super::directory`]) in one SQLite transaction.
struct DirectoryTx<'a, 't> {
    tx: &'a Transaction<'t>,
    allocator: &'a mut Allocator,
    path: &'a str,
}

impl super::directory::DirectoryWrite for DirectoryTx<'_, '_> {
    fn find(&mut self, name: &str) -> Result<Option<super::directory::Known>, StoreError> {
        self.tx
            .prepare_cached("SELECT id, source, state, uid_number, directory_dn FROM users WHERE name = ?1")
            .and_then(|mut s| {
                s.query_row([name], |r| {
                    Ok(super::directory::Known {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        state: r.get(2)?,
                        uid_number: r.get(3)?,
                        dn: r.get(4)?,
                    })
                })
                .optional()
            })
            .map_err(|e| self.fail(e))
    }

    fn claim_uid(&mut self, uid: u32, name: &str) -> Result<Option<String>, StoreError> {
        uids::reclaim(self.tx, uid, name).and_then(|()| uids::holder(self.tx, uid)).map_err(|e| self.fail(e))
    }

    fn allocate_uid(&mut self, name: &str) -> Result<Option<u32>, StoreError> {
        self.allocator.for_user(self.tx, name).map_err(|e| self.fail(e))
    }

    fn insert_user(&mut self, u: &DirectoryUser, policy: Scope, uid: u32, now: Timestamp) -> Result<i64, StoreError> {
        let state = if u.enabled { "enabled" } else { "disabled" };
        self.tx
            .prepare_cached(
                "INSERT INTO users (name, state, policy, port_forwarding, created, source, uid_number, directory_dn, uid) \
                 VALUES (?1, ?2, ?3, 0, ?4, 'ldap', ?5, ?6, ?7)",
            )
            .and_then(|mut s| s.execute(params![u.name, state, policy.as_str(), now, u.uid_number, u.dn, uid]))
            .map_err(|e| self.fail(e))?;
        Ok(self.tx.last_insert_rowid())
    }

    fn set_state(&mut self, id: i64, enabled: bool) -> Result<(), StoreError> {
        let state = if enabled { "enabled" } else { "disabled" };
        self.run("UPDATE users SET state = ?2 WHERE id = ?1", params![id, state]).map(|_| ())
    }

    fn set_dn(&mut self, id: i64, dn: &str) -> Result<(), StoreError> {
        self.run("UPDATE users SET directory_dn = ?2 WHERE id = ?1", params![id, dn]).map(|_| ())
    }

    fn policy(&mut self, id: i64) -> Result<Scope, StoreError> {
        self.tx
            .prepare_cached("SELECT policy FROM users WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| parse_scope(r.get(0)?)))
            .map_err(|e| self.fail(e))
    }

    fn directory_keys(&mut self, id: i64) -> Result<Vec<String>, StoreError> {
        self.tx
            .prepare_cached("SELECT fingerprint FROM keys WHERE user_id = ?1 AND source = 'ldap'")
            .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
            .map_err(|e| self.fail(e))
    }

    fn insert_key(&mut self, id: i64, key: &NewKey, scope: Scope, now: Timestamp) -> Result<bool, StoreError> {
        let mut statement = self.tx.prepare_cached(INSERT_KEY).map_err(|e| self.fail(e))?;
        match insert_key(&mut statement, id, key, scope, now) {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn remove_key(&mut self, fingerprint: &str) -> Result<(), StoreError> {
        self.run("DELETE FROM keys WHERE fingerprint = ?1", params![fingerprint]).map(|_| ())
    }

    fn remove_directory_keys(&mut self, id: i64) -> Result<u64, StoreError> {
        self.run("DELETE FROM keys WHERE user_id = ?1 AND source = 'ldap'", params![id]).map(|n| n as u64)
    }

    fn directory_users(&mut self) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.tx
            .prepare_cached("SELECT id, name, state FROM users WHERE source = 'ldap'")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .map_err(|e| self.fail(e))
    }

    fn directory_groups(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        self.tx
            .prepare_cached("SELECT grp, user FROM group_members WHERE source = 'ldap' ORDER BY grp, user")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.fail(e))
    }

    fn replace_groups(&mut self, members: &[(String, String)]) -> Result<(), StoreError> {
        self.run("DELETE FROM group_members WHERE source = 'ldap'", params![])?;
        let mut insert = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO group_members (grp, user, source) VALUES (?1, ?2, 'ldap')")
            .map_err(|e| self.fail(e))?;
        for (group, member) in members {
            insert.execute(params![group, member]).map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    fn audit(&mut self, actor: &Actor, action: &str, subject: &str, detail: &str) -> Result<(), StoreError> {
        audit(self.tx, actor, action, subject, detail).map_err(|e| self.fail(e))
    }

    fn user_changed(&mut self, _name: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn groups_changed(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl DirectoryTx<'_, '_> {
    fn fail(&self, e: rusqlite::Error) -> StoreError {
        db_error(self.path, e)
    }

    fn run(&self, sql: &str, p: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.tx.prepare_cached(sql).and_then(|mut s| s.execute(p)).map_err(|e| self.fail(e))
    }
}

impl SqliteStore {
    /// Runs a read, again if a read-only connection caught the WAL index mid-update.
    ///
    /// A reader that may not write the `-shm` file cannot repair an index it finds
    /// inconsistent, and SQLite reports that as SQLITE_READONLY_RECOVERY (or _CANTINIT)
    /// rather than waiting in the busy handler. Under concurrent commits this happens now
    /// and then; the writer has finished by the next try. Bounded: about 0.2 s in all.
    fn read_retrying<T>(&self, mut read: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            match read() {
                Err(StoreError::IndexRace { .. }) if attempt < 100 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(StoreError::IndexRace { path, reason }) => return Err(StoreError::Unavailable { path, reason }),
                other => return other,
            }
        }
    }

    fn login_view_once(&self, user: &str, fingerprint: Option<&str>) -> Result<Option<LoginView>, StoreError> {
        // One statement: on the login path, parsing SQL costs more than running it.
        let sql = format!(
            "SELECT {USER_COLUMNS}, {KEY_COLUMNS}, \
             (SELECT last_success FROM sync_state WHERE source = u.source), \
             (SELECT 1 FROM sync_state WHERE source = ?3 AND last_success IS NOT NULL AND u.source <> ?3), \
             (SELECT last_success FROM sync_state WHERE source = ?3) FROM users u \
             LEFT JOIN keys k ON k.user_id = u.id AND (?2 IS NULL OR k.fingerprint = ?2) \
             WHERE u.name = ?1 ORDER BY k.id"
        );
        let mut view: Option<LoginView> = None;
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.error(e))?;
        let shared = crate::domain::SOURCE_SHARED;
        let mut rows = stmt.query(params![user, fingerprint, shared]).map_err(|e| self.error(e))?;
        while let Some(row) = rows.next().map_err(|e| self.error(e))? {
            let v = match &mut view {
                Some(v) => v,
                None => view.insert(LoginView {
                    user: user_from_row(row).map_err(|e| self.error(e))?,
                    keys: Vec::new(),
                    synced: row.get(USER_COLUMN_COUNT + KEY_COLUMN_COUNT).map_err(|e| self.error(e))?,
                    // A store the agent mirrors (a mirror of the shared source has succeeded:
                    // until then the store is the host's own, as apply_mirror's guard
                    // holds), and a user whose own source is another: the mirror's
                    // freshness counts too.
                    mirrored: match row.get::<_, Option<i64>>(USER_COLUMN_COUNT + KEY_COLUMN_COUNT + 1) {
                        Ok(Some(_)) => {
                            Some(row.get(USER_COLUMN_COUNT + KEY_COLUMN_COUNT + 2).map_err(|e| self.error(e))?)
                        }
                        Ok(None) => None,
                        Err(e) => return Err(self.error(e)),
                    },
                }),
            };
            let has_key: Option<String> = row.get(USER_COLUMN_COUNT).map_err(|e| self.error(e))?;
            if has_key.is_some() {
                v.keys.push(key_from_row(user, row, USER_COLUMN_COUNT).map_err(|e| self.error(e))?);
            }
        }
        Ok(view)
    }

    fn grants_for_once(&self, subjects: &[String]) -> Result<Vec<Grant>, StoreError> {
        let subjects = serde_json::to_string(subjects).map_err(|e| unavailable(&self.path, e))?;
        self.conn
            .prepare(
                "SELECT subject, pattern, access, created FROM grants \
                 WHERE subject IN (SELECT value FROM json_each(?1))",
            )
            .and_then(|mut s| s.query_map([subjects], grant_from_row)?.collect())
            .map_err(|e| self.error(e))
    }
}

fn grant_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Grant> {
    let access: String = row.get(2)?;
    Ok(Grant {
        subject: row.get(0)?,
        pattern: row.get(1)?,
        access: access
            .parse()
            .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into()))?,
        created: row.get(3)?,
    })
}

impl AdminStore for SqliteStore {
    fn ready(&mut self) -> Result<(), StoreError> {
        // The write lock, taken and given back: the file is writable and no writer holds
        // it past the busy timeout.
        self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK").map_err(|e| self.error(e))
    }

    fn apply_directory(
        &mut self,
        actor: &Actor,
        snapshot: &DirectorySnapshot,
        default_policy: Scope,
    ) -> Result<SyncReport, StoreError> {
        let full = snapshot.full;
        let mut report = SyncReport::default();
        let (range, host, account) = (self.allocation()?, self.host_check, self.host_account);
        let path = self.path.clone();
        for batch in snapshot.users.chunks(SYNC_BATCH) {
            self.write(|tx| {
                let mut allocator = Allocator::start(tx, range, host, account).map_err(|e| db_error(&path, e))?;
                let mut w = DirectoryTx { tx, allocator: &mut allocator, path: &path };
                for u in batch {
                    super::directory::merge_user(&mut w, actor, u, default_policy, full, &mut report)?;
                }
                Ok(())
            })?;
        }
        self.write(|tx| {
            let mut allocator = Allocator::start(tx, range, host, account).map_err(|e| db_error(&path, e))?;
            super::directory::finish(
                &mut DirectoryTx { tx, allocator: &mut allocator, path: &path },
                actor,
                snapshot,
                &mut report,
            )
        })?;
        Ok(report)
    }

    fn record_sync(&mut self, attempt: &SyncAttempt<'_>) -> Result<(), StoreError> {
        let SyncAttempt { source, at, error, high_water, full } = *attempt;
        let path = self.path.clone();
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let users: i64 =
                tx.query_row("SELECT count(*) FROM users WHERE source = ?1", [source], |r| r.get(0)).map_err(db)?;
            let keys: i64 =
                tx.query_row("SELECT count(*) FROM keys WHERE source = ?1", [source], |r| r.get(0)).map_err(db)?;
            tx.execute(
                "INSERT INTO sync_state (source, last_success, last_attempt, last_error, high_water, users, keys, last_full) \
                 VALUES (?1, CASE WHEN ?3 IS NULL THEN ?2 END, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?3 IS NULL AND ?7 THEN ?2 END) \
                 ON CONFLICT (source) DO UPDATE SET \
                   last_success = CASE WHEN ?3 IS NULL THEN ?2 ELSE last_success END, \
                   last_attempt = ?2, last_error = ?3, \
                   high_water = coalesce(?4, high_water), users = ?5, keys = ?6, \
                   last_full = CASE WHEN ?3 IS NULL AND ?7 THEN ?2 ELSE last_full END",
                params![source, at, error, high_water, users, keys, full],
            )
            .map_err(db)?;
            Ok(())
        })
    }

    fn directory_dns(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.conn
            .prepare("SELECT name, directory_dn FROM users WHERE source = 'ldap' AND directory_dn IS NOT NULL")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.error(e))
    }

    fn sync_state(&self, source: &str) -> Result<Option<SyncState>, StoreError> {
        self.conn
            .query_row(
                "SELECT last_success, last_attempt, last_error, high_water, users, keys, last_full \
                 FROM sync_state WHERE source = ?1",
                [source],
                |r| {
                    Ok(SyncState {
                        last_success: r.get(0)?,
                        last_attempt: r.get(1)?,
                        last_error: r.get(2)?,
                        high_water: r.get(3)?,
                        users: r.get(4)?,
                        keys: r.get(5)?,
                        last_full: r.get(6)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    fn record_event(&mut self, actor: &Actor, action: &str, subject: &str, detail: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.write(|tx| audit(tx, actor, action, subject, detail).map_err(|e| db_error(&path, e)))
    }

    fn add_grant(&mut self, actor: &Actor, grant: &Grant) -> Result<bool, StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let old: Option<String> = tx
                .query_row(
                    "SELECT access FROM grants WHERE subject = ?1 AND pattern = ?2",
                    params![grant.subject, grant.pattern],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if old.as_deref() == Some(grant.access.as_str()) {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO grants (subject, pattern, access, created) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (subject, pattern) DO UPDATE SET access = excluded.access",
                params![grant.subject, grant.pattern, grant.access.as_str(), actor.now],
            )
            .map_err(db)?;
            let mut detail = String::new();
            crate::log::push_pair(&mut detail, "pattern", &grant.pattern);
            crate::log::push_pair(&mut detail, "access", grant.access.as_str());
            audit(tx, actor, "grant.add", &grant.subject, &detail).map_err(db)?;
            Ok(true)
        })
    }

    fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        self.conn
            .prepare("SELECT subject, pattern, access, created FROM grants ORDER BY subject, pattern")
            .and_then(|mut s| s.query_map([], grant_from_row)?.collect())
            .map_err(|e| self.error(e))
    }

    fn remove_grant(&mut self, actor: &Actor, subject: &str, pattern: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let removed = tx
                .execute("DELETE FROM grants WHERE subject = ?1 AND pattern = ?2", params![subject, pattern])
                .map_err(db)?;
            if removed == 0 {
                return Err(StoreError::NoSuchGrant { subject: subject.to_string(), pattern: pattern.to_string() });
            }
            let mut detail = String::new();
            crate::log::push_pair(&mut detail, "pattern", pattern);
            audit(tx, actor, "grant.remove", subject, &detail).map_err(db)
        })
    }

    fn import_keys(
        &mut self,
        actor: &Actor,
        items: &[(String, NewKey)],
        import: &mut KeyImport,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let path = self.path.clone();
        let (range, host, account) = (self.allocation()?, self.host_check, self.host_account);
        self.write(|tx| {
            let db = |e: rusqlite::Error| db_error(&path, e);
            let mut allocator: Option<Allocator> = None;
            let mut find_user = tx.prepare_cached("SELECT id, policy FROM users WHERE name = ?1").map_err(db)?;
            let mut count_keys = tx.prepare_cached("SELECT count(*) FROM keys WHERE user_id = ?1").map_err(db)?;
            let mut insert_user = tx
                .prepare_cached(
                    "INSERT INTO users (name, state, policy, port_forwarding, created, source, uid) \
                     VALUES (?1, 'enabled', ?2, 0, ?3, 'import', ?4)",
                )
                .map_err(db)?;
            let mut insert_key_stmt = tx.prepare_cached(INSERT_KEY).map_err(db)?;
            let mut owner_of = tx
                .prepare_cached("SELECT u.name FROM keys k JOIN users u ON u.id = k.user_id WHERE k.fingerprint = ?1")
                .map_err(db)?;
            let mut audit = tx.prepare_cached(INSERT_AUDIT).map_err(db)?;
            let mut results = Vec::with_capacity(items.len());
            for (user, new) in items {
                if !import.users.contains_key(user) {
                    let found: Option<(i64, String)> =
                        find_user.query_row([user], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(db)?;
                    let found = match (found, import.create_users) {
                        (Some((id, policy)), _) => Some((id, parse_scope(policy).map_err(db)?)),
                        (None, Some(policy)) => {
                            let allocator = match &mut allocator {
                                Some(a) => a,
                                None => allocator.insert(Allocator::start(tx, range, host, account).map_err(db)?),
                            };
                            let uid = allocator
                                .for_user(tx, user)
                                .map_err(db)?
                                .ok_or(StoreError::UidsExhausted { min: range.min, max: range.max })?;
                            insert_user.execute(params![user, policy.as_str(), actor.now, uid]).map_err(db)?;
                            let id = tx.last_insert_rowid();
                            audit
                                .execute(params![actor.now, actor.name, "user.add", user, "source=import"])
                                .map_err(db)?;
                            Some((id, policy))
                        }
                        (None, None) => None,
                    };
                    if let Some((id, policy)) = found {
                        let keys: u32 = count_keys.query_row([id], |r| r.get(0)).map_err(db)?;
                        import.users.insert(user.clone(), ImportUser { id, policy, keys });
                    }
                }
                let (id, scope) = match import.admit(user, new) {
                    Ok(admitted) => admitted,
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                };
                match insert_key(&mut insert_key_stmt, id, new, scope, actor.now) {
                    Ok(_) => {
                        if let Some(entry) = import.users.get_mut(user) {
                            entry.keys += 1;
                        }
                        audit
                            .execute(params![actor.now, actor.name, "key.add", user, key_detail(new, scope)])
                            .map_err(db)?;
                        results.push(Ok(()));
                    }
                    Err(e) if is_duplicate(&e) => {
                        let owner: String = owner_of
                            .query_row([&new.key.fingerprint], |r| r.get(0))
                            .optional()
                            .map_err(db)?
                            .unwrap_or_default();
                        results.push(Err(StoreError::KeyTaken { fingerprint: new.key.fingerprint.clone(), owner }));
                    }
                    Err(e) => return Err(db(e)),
                }
            }
            Ok(results)
        })
    }

    fn add_user(&mut self, actor: &Actor, user: &User) -> Result<u32, StoreError> {
        let path = self.path.clone();
        let (range, host, account) = (self.allocation()?, self.host_check, self.host_account);
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let exists: bool =
                tx.query_row("SELECT count(*) FROM users WHERE name = ?1", [&user.name], |r| r.get(0)).map_err(db)?;
            if exists {
                return Err(StoreError::UserExists(user.name.clone()));
            }
            let uid = Allocator::start(tx, range, host, account)
                .and_then(|mut a| a.for_user(tx, &user.name))
                .map_err(db)?
                .ok_or(StoreError::UidsExhausted { min: range.min, max: range.max })?;
            tx.execute(
                "INSERT INTO users (name, state, policy, port_forwarding, created, source, uid) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    user.name,
                    user.state.as_str(),
                    user.policy.as_str(),
                    user.port_forwarding,
                    actor.now,
                    user.source,
                    uid
                ],
            )
            .map_err(db)?;
            let mut detail = String::new();
            crate::log::push_pair(&mut detail, "uid", &uid.to_string());
            crate::log::push_pair(&mut detail, "state", user.state.as_str());
            crate::log::push_pair(&mut detail, "policy", user.policy.as_str());
            crate::log::push_pair(&mut detail, "port_forwarding", crate::domain::yes_no(user.port_forwarding));
            audit(tx, actor, "user.add", &user.name, &detail).map_err(db)?;
            Ok(uid)
        })
    }

    fn user(&self, name: &str) -> Result<User, StoreError> {
        self.conn
            .query_row(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.name = ?1"), [name], user_from_row)
            .optional()
            .map_err(|e| self.error(e))?
            .ok_or_else(|| StoreError::NoSuchUser(name.to_string()))
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        self.conn
            .prepare(&format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.name"))
            .and_then(|mut s| s.query_map([], user_from_row)?.collect())
            .map_err(|e| self.error(e))
    }

    fn set_user_state(&mut self, actor: &Actor, name: &str, state: UserState) -> Result<bool, StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let old: Option<String> =
                tx.query_row("SELECT state FROM users WHERE name = ?1", [name], |r| r.get(0)).optional().map_err(db)?;
            let Some(old) = old else {
                return Err(StoreError::NoSuchUser(name.to_string()));
            };
            if old == state.as_str() {
                return Ok(false);
            }
            tx.execute("UPDATE users SET state = ?2 WHERE name = ?1", params![name, state.as_str()]).map_err(db)?;
            let action = match state {
                UserState::Enabled => "user.enable",
                UserState::Disabled => "user.disable",
            };
            audit(tx, actor, action, name, "").map_err(db)?;
            Ok(true)
        })
    }

    fn set_user_policy(&mut self, actor: &Actor, name: &str, change: PolicyChange) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let changed = tx
                .execute(
                    "UPDATE users SET policy = coalesce(?2, policy), port_forwarding = coalesce(?3, port_forwarding) \
                     WHERE name = ?1",
                    params![name, change.policy.map(Scope::as_str), change.port_forwarding],
                )
                .map_err(db)?;
            if changed == 0 {
                return Err(StoreError::NoSuchUser(name.to_string()));
            }
            let mut detail = String::new();
            for (key, value) in change.pairs() {
                crate::log::push_pair(&mut detail, key, value);
            }
            audit(tx, actor, "user.set", name, &detail).map_err(db)
        })
    }

    fn remove_user(&mut self, actor: &Actor, name: &str) -> Result<u64, StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let keys: i64 = tx
                .query_row(
                    "SELECT count(*) FROM keys WHERE user_id = (SELECT id FROM users WHERE name = ?1)",
                    [name],
                    |r| r.get(0),
                )
                .map_err(db)?;
            uids::retire(tx, name, actor.now).map_err(db)?;
            if tx.execute("DELETE FROM users WHERE name = ?1", [name]).map_err(db)? == 0 {
                return Err(StoreError::NoSuchUser(name.to_string()));
            }
            // A user added later under the same name must not inherit these.
            tx.execute("DELETE FROM grants WHERE subject = ?1", [name]).map_err(db)?;
            audit(tx, actor, "user.remove", name, &format!("keys={keys}")).map_err(db)?;
            Ok(keys.max(0) as u64)
        })
    }

    fn add_key(&mut self, actor: &Actor, user: &str, key: &NewKey, max_keys: u32) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let found: Option<(i64, String)> = tx
                .query_row("SELECT id, policy FROM users WHERE name = ?1", [user], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?;
            let Some((user_id, policy)) = found else {
                return Err(StoreError::NoSuchUser(user.to_string()));
            };
            let policy = parse_scope(policy).map_err(db)?;
            let scope = key.scope.unwrap_or(policy);
            if !policy.includes(scope) {
                return Err(StoreError::ScopeOutsidePolicy { scope, policy });
            }
            let count: u32 =
                tx.query_row("SELECT count(*) FROM keys WHERE user_id = ?1", [user_id], |r| r.get(0)).map_err(db)?;
            if count >= max_keys {
                return Err(StoreError::TooManyKeys { user: user.to_string(), max: max_keys });
            }
            match tx.prepare_cached(INSERT_KEY).and_then(|mut s| insert_key(&mut s, user_id, key, scope, actor.now)) {
                Ok(_) => {}
                Err(e) if is_duplicate(&e) => {
                    let owner: String = tx
                        .query_row(
                            "SELECT u.name FROM keys k JOIN users u ON u.id = k.user_id WHERE k.fingerprint = ?1",
                            [&key.key.fingerprint],
                            |r| r.get(0),
                        )
                        .map_err(db)?;
                    return Err(StoreError::KeyTaken { fingerprint: key.key.fingerprint.clone(), owner });
                }
                Err(e) => return Err(db(e)),
            }
            audit(tx, actor, "key.add", user, &key_detail(key, scope)).map_err(db)
        })
    }

    fn keys(&self, user: &str) -> Result<Vec<Key>, StoreError> {
        self.user(user)?;
        self.conn
            .prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM keys k JOIN users u ON u.id = k.user_id WHERE u.name = ?1 ORDER BY k.id"
            ))
            .and_then(|mut s| s.query_map([user], |r| key_from_row(user, r, 0))?.collect())
            .map_err(|e| self.error(e))
    }

    fn remove_key(&mut self, actor: &Actor, user: &str, fingerprint: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let removed = tx
                .execute(
                    "DELETE FROM keys WHERE fingerprint = ?2 AND user_id = (SELECT id FROM users WHERE name = ?1)",
                    params![user, fingerprint],
                )
                .map_err(db)?;
            if removed == 0 {
                return Err(StoreError::NoSuchKey { user: user.to_string(), fingerprint: fingerprint.to_string() });
            }
            let mut detail = String::new();
            crate::log::push_pair(&mut detail, "fingerprint", fingerprint);
            audit(tx, actor, "key.remove", user, &detail).map_err(db)
        })
    }

    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        if !self.trail.get() {
            let trail = audit_path(Path::new(&self.path));
            if !trail.exists() {
                // No writer has run since the store was made: nothing happened yet.
                return Ok(Vec::new());
            }
            let shown = trail.display().to_string();
            self.conn
                .execute("ATTACH DATABASE ?1 AS trail", [trail.as_os_str().to_string_lossy()])
                .map_err(|e| db_error(&shown, e))?;
            self.trail.set(true);
        }
        self.conn
            .prepare(
                "SELECT time, actor, action, subject, detail FROM trail.audit \
                 WHERE (?1 IS NULL OR subject = ?1) AND (?2 IS NULL OR time >= ?2) \
                 ORDER BY id DESC LIMIT ?3",
            )
            .and_then(|mut s| {
                let mut events: Vec<AuditEvent> = s
                    .query_map(params![query.subject, query.since, query.limit.map_or(-1, i64::from)], |r| {
                        Ok(AuditEvent {
                            time: r.get(0)?,
                            actor: r.get(1)?,
                            action: r.get(2)?,
                            subject: r.get(3)?,
                            detail: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                events.reverse();
                Ok(events)
            })
            .map_err(|e| self.error(e))
    }
}

impl SqliteStore {
    /// Applies one batch mirrored from the shared source in one transaction, and records
    /// it as the source's last successful sync (`sync_state`, source
    /// [`crate::domain::SOURCE_SHARED`], the change number as high water), so the login
    /// path never sees half a batch and judges staleness by it. Mirrored users keep their
    /// uid and get the source `postgres`, directory users keep `ldap`
    /// ([`crate::domain::mirrored_source`]) and the directory sync's record comes with
    /// every batch, so both stalenesses apply to them; nothing is audited here (the source
    /// audits the change itself).
    pub fn apply_mirror(&mut self, batch: &MirrorBatch, now: Timestamp) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            let db = |e| db_error(&path, e);
            let shared = crate::domain::SOURCE_SHARED;
            if batch.full {
                refuse_foreign_users(tx, &path, batch).map_err(|e| match e {
                    Refusal::Db(e) => db(e),
                    Refusal::Foreign(e) => e,
                })?;
                tx.execute_batch("DELETE FROM keys; DELETE FROM users; DELETE FROM grants; DELETE FROM group_members;")
                    .map_err(db)?;
            } else {
                let mut remove = tx.prepare_cached("DELETE FROM users WHERE name = ?1").map_err(db)?;
                for (name, _) in &batch.users {
                    remove.execute([name]).map_err(db)?;
                }
            }
            let mut add_user = tx
                .prepare_cached(
                    "INSERT INTO users (name, state, policy, port_forwarding, created, source, uid) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(db)?;
            let mut add_key = tx
                .prepare_cached(
                    "INSERT INTO keys (user_id, algorithm, blob, fingerprint, bits, comment, scope, from_patterns, \
                     expires, created, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(db)?;
            for m in batch.users.iter().filter_map(|(_, m)| m.as_ref()) {
                let u = &m.user;
                add_user
                    .execute(params![
                        u.name,
                        u.state.as_str(),
                        u.policy.as_str(),
                        u.port_forwarding,
                        u.created,
                        crate::domain::mirrored_source(&u.source),
                        u.uid
                    ])
                    .map_err(db)?;
                let id = tx.last_insert_rowid();
                for k in &m.keys {
                    add_key
                        .execute(params![
                            id,
                            k.algorithm,
                            k.blob,
                            k.fingerprint,
                            k.bits,
                            k.comment,
                            k.scope.as_str(),
                            k.from,
                            k.expires,
                            k.created,
                            k.source
                        ])
                        .map_err(db)?;
                }
            }
            if let Some(grants) = &batch.grants {
                tx.execute("DELETE FROM grants", []).map_err(db)?;
                let mut add = tx
                    .prepare_cached("INSERT INTO grants (subject, pattern, access, created) VALUES (?1, ?2, ?3, ?4)")
                    .map_err(db)?;
                for g in grants {
                    add.execute(params![g.subject, g.pattern, g.access.as_str(), g.created]).map_err(db)?;
                }
            }
            if let Some(groups) = &batch.groups {
                tx.execute("DELETE FROM group_members", []).map_err(db)?;
                let mut add = tx
                    .prepare_cached("INSERT OR IGNORE INTO group_members (grp, user, source) VALUES (?1, ?2, ?3)")
                    .map_err(db)?;
                for (group, member) in groups {
                    add.execute(params![group, member, shared]).map_err(db)?;
                }
            }
            if let Some(d) = &batch.directory {
                // The directory sync as the source recorded it: the login path judges the
                // staleness of directory users by it (and by the mirror's own record).
                tx.execute(
                    "INSERT INTO sync_state (source, last_success, last_attempt, last_error, high_water, users, keys, \
                     last_full) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (source) DO UPDATE SET \
                     last_success = ?2, last_attempt = ?3, last_error = ?4, high_water = ?5, users = ?6, keys = ?7, \
                     last_full = ?8",
                    params![
                        crate::domain::SOURCE_LDAP,
                        d.last_success,
                        d.last_attempt,
                        d.last_error,
                        d.high_water,
                        d.users,
                        d.keys,
                        d.last_full
                    ],
                )
                .map_err(db)?;
            }
            record_success(tx, shared, now, &batch.seq.to_string(), batch.full).map_err(db)
        })
    }

    /// Records that the shared source was reached and had nothing new: the heartbeat that
    /// keeps mirrored users fresh.
    pub fn mirror_heartbeat(&mut self, seq: i64, now: Timestamp) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            record_success(tx, crate::domain::SOURCE_SHARED, now, &seq.to_string(), false)
                .map_err(|e| db_error(&path, e))
        })
    }

    /// The change number the local store is mirrored up to; `None`: never mirrored.
    pub fn mirrored_seq(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.sync_state(crate::domain::SOURCE_SHARED)?.and_then(|s| s.high_water).and_then(|h| h.parse().ok()))
    }
}

/// One user of a host's store with everything `gatehouse source import` carries over.
#[derive(Debug, Clone)]
pub struct ExportedUser {
    pub user: User,
    pub uid_number: Option<i64>,
    pub directory_dn: Option<String>,
    pub keys: Vec<Key>,
}

/// A host's whole store, as `gatehouse source import` copies it into the shared source.
#[derive(Debug, Clone, Default)]
pub struct StoreExport {
    pub users: Vec<ExportedUser>,
    pub grants: Vec<Grant>,
    /// (group, member, source)
    pub groups: Vec<(String, String, String)>,
    /// (uid, name, retired)
    pub retired: Vec<(u32, String, Timestamp)>,
    /// Oldest first.
    pub audit: Vec<AuditEvent>,
}

impl SqliteStore {
    /// Everything [`StoreExport`] names; users, keys, grants, groups and retired uids in
    /// one read transaction.
    pub fn export(&self) -> Result<StoreExport, StoreError> {
        let audit = self.audit(&AuditQuery::default())?;
        let tx = self.conn.unchecked_transaction().map_err(|e| self.error(e))?;
        let read = || -> rusqlite::Result<StoreExport> {
            let mut by_id = std::collections::HashMap::new();
            let mut users = Vec::new();
            let mut rows = tx.prepare(&format!(
                "SELECT {USER_COLUMNS}, u.uid_number, u.directory_dn, u.id FROM users u ORDER BY u.id"
            ))?;
            let mut q = rows.query([])?;
            while let Some(r) = q.next()? {
                let at = USER_COLUMN_COUNT;
                by_id.insert(r.get::<_, i64>(at + 2)?, users.len());
                users.push(ExportedUser {
                    user: user_from_row(r)?,
                    uid_number: r.get(at)?,
                    directory_dn: r.get(at + 1)?,
                    keys: Vec::new(),
                });
            }
            let mut rows = tx.prepare(&format!("SELECT k.user_id, {KEY_COLUMNS} FROM keys k ORDER BY k.id"))?;
            let mut q = rows.query([])?;
            while let Some(r) = q.next()? {
                if let Some(&i) = by_id.get(&r.get::<_, i64>(0)?) {
                    let key = key_from_row(&users[i].user.name, r, 1)?;
                    users[i].keys.push(key);
                }
            }
            let grants = tx
                .prepare("SELECT subject, pattern, access, created FROM grants ORDER BY id")?
                .query_map([], grant_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let groups = tx
                .prepare("SELECT grp, user, source FROM group_members ORDER BY grp, user")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let retired = tx
                .prepare("SELECT uid, name, retired FROM retired_uids ORDER BY uid")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(StoreExport { users, grants, groups, retired, audit: Vec::new() })
        };
        let mut export = read().map_err(|e| self.error(e))?;
        drop(tx);
        export.audit = audit;
        Ok(export)
    }
}

enum Refusal {
    Db(rusqlite::Error),
    Foreign(StoreError),
}

/// A full copy replaces the local store. One that was never a copy of the source (no
/// successful mirror recorded) and holds users the source does not know is a host's own
/// store, [source] added to its config: replacing it would drop those users. Refused,
/// naming the fix, until they are in the source (`gatehouse source import`).
fn refuse_foreign_users(tx: &Transaction<'_>, path: &str, batch: &MirrorBatch) -> Result<(), Refusal> {
    let mirrored: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sync_state WHERE source = ?1 AND last_success IS NOT NULL)",
            [crate::domain::SOURCE_SHARED],
            |r| r.get(0),
        )
        .map_err(Refusal::Db)?;
    if mirrored {
        return Ok(());
    }
    let known: std::collections::HashSet<&str> =
        batch.users.iter().filter(|(_, m)| m.is_some()).map(|(n, _)| n.as_str()).collect();
    let mut unknown = Vec::new();
    let mut names = tx.prepare("SELECT name FROM users ORDER BY name").map_err(Refusal::Db)?;
    let mut rows = names.query([]).map_err(Refusal::Db)?;
    while let Some(r) = rows.next().map_err(Refusal::Db)? {
        let name: String = r.get(0).map_err(Refusal::Db)?;
        if !known.contains(name.as_str()) {
            unknown.push(name);
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
    let more =
        if unknown.len() > shown.len() { format!(" and {} more", unknown.len() - shown.len()) } else { String::new() };
    Err(Refusal::Foreign(StoreError::Unavailable {
        path: path.to_string(),
        reason: format!(
            "not replaced by the source's copy: it holds {} user(s) the source does not know ({}{more}) and was \
             never a copy of it; run `gatehouse source import` on this host to copy them into the source first \
             (or move the store aside to start from the source's)",
            unknown.len(),
            shown.join(", ")
        ),
    }))
}

fn record_success(
    tx: &Transaction<'_>,
    source: &str,
    at: Timestamp,
    high_water: &str,
    full: bool,
) -> rusqlite::Result<()> {
    let users: i64 = tx.query_row("SELECT count(*) FROM users WHERE source = ?1", [source], |r| r.get(0))?;
    let keys: i64 = tx.query_row(
        "SELECT count(*) FROM keys WHERE user_id IN (SELECT id FROM users WHERE source = ?1)",
        [source],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO sync_state (source, last_success, last_attempt, last_error, high_water, users, keys, last_full) \
         VALUES (?1, ?2, ?2, NULL, ?3, ?4, ?5, CASE WHEN ?6 THEN ?2 END) \
         ON CONFLICT (source) DO UPDATE SET last_success = ?2, last_attempt = ?2, last_error = NULL, \
           high_water = ?3, users = ?4, keys = ?5, last_full = CASE WHEN ?6 THEN ?2 ELSE last_full END",
        params![source, at, high_water, users, keys, full],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gh-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn version_4_stores_move_their_audit_trail_out_and_zero_it() {
        let dir = temp_dir("audit-move");
        let path = dir.join("store.db");
        {
            // A store as version 4 left it, with an audit trail inside.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
            for sql in &schema::MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 4;
                 INSERT INTO audit (time, actor, action, subject, detail)
                     VALUES (1, 'web:alice@203.0.113.77', 'key.add', 'alice', 'fingerprint=SHA256:x'),
                            (2, 'cli:root', 'user.add', 'bob', '');",
            )
            .unwrap();
        }
        let mut store = SqliteStore::create(&path, 1000, crate::config::UsersConfig::default().uid_range()).unwrap();
        assert_eq!(store.migrate().unwrap(), current_version());
        let events = store.audit(&AuditQuery::default()).unwrap();
        let actors: Vec<&str> = events.iter().map(|e| e.actor.as_str()).collect();
        assert_eq!(actors, ["web:alice@203.0.113.77", "cli:root"], "kept, in order");
        let left: i64 = store
            .conn
            .query_row("SELECT count(*) FROM main.sqlite_master WHERE name = 'audit'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "no audit table in the group-readable store");
        drop(store);
        // Nothing of it is left in the store's bytes either (secure_delete, WAL emptied).
        for file in ["store.db", "store.db-wal"] {
            let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
            assert!(!bytes.windows(12).any(|w| w == b"203.0.113.77"), "{file} still holds the old trail");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(audit_path(&path)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "audit.db is its owner's alone: {mode:o}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn changes_and_their_audit_events_are_written_together() {
        let dir = temp_dir("audit-write");
        let path = dir.join("store.db");
        let mut store = SqliteStore::create(&path, 1000, crate::config::UsersConfig::default().uid_range()).unwrap();
        store.migrate().unwrap();
        let actor = Actor { name: "cli:test".into(), now: Timestamp::from_secs(5) };
        let user = User {
            name: "alice".into(),
            state: UserState::Enabled,
            policy: Scope::Shell,
            port_forwarding: false,
            created: actor.now,
            source: "cli".into(),
            uid: None,
        };
        store.add_user(&actor, &user).unwrap();
        drop(store);
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let tables: Vec<String> = reader
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!tables.contains(&"audit".to_string()), "{tables:?}");
        let store = SqliteStore::open_writer(&path, 1000, crate::config::UsersConfig::default().uid_range()).unwrap();
        let events = store.audit(&AuditQuery::default()).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].action.as_str(), events[0].subject.as_str()), ("user.add", "alice"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn no_host_account(_: u32) -> bool {
        false
    }

    fn no_account(_: &str) -> Option<u32> {
        None
    }

    #[test]
    fn uids_are_given_kept_retired_and_taken_over_by_no_one() {
        let dir = temp_dir("uids");
        let path = dir.join("store.db");
        let range = UidRange { min: 30000, max: 30002 };
        let mut store = SqliteStore::create(&path, 1000, range).unwrap().with_host(no_host_account, no_account);
        store.migrate().unwrap();
        let actor = Actor { name: "cli:test".into(), now: Timestamp::from_secs(5) };
        let user = |name: &str| User {
            name: name.into(),
            state: UserState::Enabled,
            policy: Scope::Shell,
            port_forwarding: false,
            created: actor.now,
            source: "cli".into(),
            uid: Some(1),
        };
        assert_eq!(store.add_user(&actor, &user("alice")).unwrap(), 30000, "the uid asked for is ignored");
        assert!(matches!(store.add_user(&actor, &user("alice")), Err(StoreError::UserExists(_))));
        assert_eq!(store.user("alice").unwrap().uid, Some(30000));
        store.remove_user(&actor, "alice").unwrap();
        assert_eq!(store.add_user(&actor, &user("alice")).unwrap(), 30001, "the old uid is retired");
        // A directory user with a retired uid (not theirs) or a held one: refused.
        let entry = |name: &str, uid: i64| DirectoryUser {
            name: name.into(),
            dn: format!("uid={name},dc=test"),
            uid_number: Some(uid),
            enabled: true,
            keys: Vec::new(),
        };
        let snapshot = DirectorySnapshot {
            users: vec![entry("mallory", 30000), entry("trudy", 30001), entry("dora", 30002)],
            groups: Vec::new(),
            high_water: None,
            full: false,
        };
        let report = store.apply_directory(&actor, &snapshot, Scope::Shell).unwrap();
        assert_eq!(report.users_added, 1, "{:?}", report.conflicts);
        assert!(report.conflicts.iter().any(|c| c.contains("mallory: uidNumber 30000 is already alice (retired)'s")));
        assert!(report.conflicts.iter().any(|c| c.contains("trudy: uidNumber 30001 is already alice's")));
        assert_eq!(store.user("dora").unwrap().uid, Some(30002));
        // The range is full.
        let err = store.add_user(&actor, &user("zoe")).unwrap_err();
        assert!(err.to_string().contains("no uid left in users.uid_min..uid_max (30000..30002)"), "{err}");
        // dora removed from the store and met again in the directory: the same person.
        store.remove_user(&actor, "dora").unwrap();
        let again = DirectorySnapshot { users: vec![entry("dora", 30002)], ..snapshot };
        let report = store.apply_directory(&actor, &again, Scope::Shell).unwrap();
        assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
        assert_eq!(store.user("dora").unwrap().uid, Some(30002));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn users_from_before_uids_get_one_at_init() {
        let dir = temp_dir("uid-backfill");
        let path = dir.join("store.db");
        let range = UidRange { min: 30000, max: 30999 };
        let mut store = SqliteStore::create(&path, 1000, range).unwrap().with_host(no_host_account, no_account);
        store.migrate().unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO users (name, state, policy, created, source) VALUES ('old', 'enabled', 'shell', 0, 'cli');
                 INSERT INTO users (name, state, policy, created, source) VALUES ('local', 'enabled', 'shell', 0, 'cli');
                 INSERT INTO users (name, state, policy, created, source, uid_number)
                     VALUES ('dir', 'enabled', 'shell', 0, 'ldap', 30500);",
            )
            .unwrap();
        let accounts = |name: &str| (name == "local").then_some(30007);
        let mut given = store.assign_missing_uids(&accounts).unwrap();
        given.sort();
        assert_eq!(
            given,
            [("dir".to_string(), Some(30500)), ("local".to_string(), Some(30007)), ("old".to_string(), Some(30501))]
        );
        assert!(store.assign_missing_uids(&accounts).unwrap().is_empty(), "a second run changes nothing");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
