//! The SQLite plumbing the three databases share (the key store, the state file, the web
//! service's secrets): how writers and readers open them, migrations, error mapping.
//!
//! WAL mode, so readers never wait for a writer and a writer never waits for readers.
//! Readers (the key command, as another uid) open read-only; SQLite then needs the `-wal`
//! and `-shm` files to exist already, because a read-only reader cannot create them. A
//! writer normally deletes both when the last connection closes; our writers turn off the
//! checkpoint-on-close (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE), which keeps them, created with
//! the database file's owner and mode. SQLite's automatic checkpoint does not keep up with
//! short-lived writers (measured: the WAL of state.db only grew), so each writer checkpoints
//! and empties the WAL as it closes. `synchronous=FULL`: a change the CLI reported is on disk.

use super::StoreError;
use crate::time::Timestamp;
use rusqlite::config::DbConfig;
use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Every file keeps a point in time as its Unix seconds, an INTEGER column.
impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_secs()))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Timestamp> {
        i64::column_result(value).map(Timestamp::from_secs)
    }
}

/// What every writer of ours does as it closes: fold the WAL back in and empty it (but
/// leave it in place). Readers that find no writer attached would otherwise rebuild their
/// index from every frame on each lookup, and short-lived writers (a login, a PAM stage)
/// never reach SQLite's automatic checkpoint, so the WAL grew without bound.
pub fn truncate_wal(conn: &Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

pub(crate) fn unavailable(path: &str, e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable { path: path.to_string(), reason: e.to_string() }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// A SQLite error on the file at `path`: busy (another writer held it past the timeout),
/// or unavailable.
pub fn db_error(path: &str, e: rusqlite::Error) -> StoreError {
    if is_busy(&e) {
        StoreError::Busy { path: path.to_string() }
    } else if is_corrupt(&e) {
        StoreError::Corrupt { path: path.to_string(), reason: e.to_string() }
    } else {
        unavailable(path, e)
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

/// A read-write connection as every writer of ours opens it: WAL kept on close (see the
/// module notes), `synchronous=FULL`, foreign keys on, a busy timeout.
pub fn writer_connection(path: &Path, busy_timeout_ms: u32, create: bool) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    if !create && !path.exists() {
        return Err(unavailable(&shown, "does not exist (run `gatehouse init`)"));
    }
    let mut flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let fail = |e| db_error(&shown, e);
    let conn = Connection::open_with_flags(path, flags).map_err(fail)?;
    conn.busy_timeout(Duration::from_millis(u64::from(busy_timeout_ms))).map_err(fail)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(fail)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unavailable(&shown, format!("cannot switch to WAL mode (still {mode})")));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;").map_err(fail)?;
    Ok(conn)
}

/// Writes the row of `table` whose `key` column holds the first of `values`: inserted, or
/// if one is there, its `others` columns set to the rest of `values`, in order.
pub(crate) fn upsert(
    conn: &Connection,
    table: &str,
    key: &str,
    others: &[&str],
    values: impl rusqlite::Params,
) -> rusqlite::Result<()> {
    conn.prepare_cached(&upsert_sql(table, key, others))?.execute(values)?;
    Ok(())
}

fn upsert_sql(table: &str, key: &str, others: &[&str]) -> String {
    let columns = [key].iter().chain(others).copied().collect::<Vec<_>>().join(", ");
    let values = (1..=others.len() + 1).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    let updates = others.iter().map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", ");
    format!("INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key}) DO UPDATE SET {updates}")
}

/// Brings `conn` up to `migrations.len()`, one transaction per step. A file already there
/// is only read: the write lock, which every open would otherwise queue for behind other
/// writers (each PAM stage opens state.db), is taken only when a step is due.
pub fn migrate_connection(conn: &mut Connection, path: &str, migrations: &[&str]) -> Result<i64, StoreError> {
    migrate_schema(conn, "main", path, migrations)
}

/// [`migrate_connection`] for the database attached as `schema`.
pub(crate) fn migrate_schema(
    conn: &mut Connection,
    schema: &str,
    path: &str,
    migrations: &[&str],
) -> Result<i64, StoreError> {
    let expected = migrations.len() as i64;
    let fail = |e| db_error(path, e);
    let version = format!("PRAGMA {schema}.user_version");
    let current: i64 = conn.query_row(&version, [], |r| r.get(0)).map_err(fail)?;
    if current == expected {
        return Ok(current);
    }
    loop {
        // Read again under the lock: another program may have migrated meanwhile.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(fail)?;
        let found: i64 = tx.query_row(&version, [], |r| r.get(0)).map_err(fail)?;
        if found > expected {
            return Err(StoreError::Version { path: path.to_string(), found, expected });
        }
        let Some(sql) = usize::try_from(found).ok().and_then(|i| migrations.get(i)) else {
            return Ok(found);
        };
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(Some(schema), "user_version", found + 1).map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_sets_the_other_columns_of_the_keyed_row() {
        assert_eq!(
            upsert_sql("lockouts", "user", &["until", "reason"]),
            "INSERT INTO lockouts (user, until, reason) VALUES (?1, ?2, ?3) \
             ON CONFLICT (user) DO UPDATE SET until = excluded.until, reason = excluded.reason"
        );
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, a INTEGER, b TEXT) STRICT;").unwrap();
        upsert(&conn, "t", "k", &["a", "b"], rusqlite::params!["x", 1, "one"]).unwrap();
        upsert(&conn, "t", "k", &["a", "b"], rusqlite::params!["y", 2, "two"]).unwrap();
        upsert(&conn, "t", "k", &["a", "b"], rusqlite::params!["x", 3, "three"]).unwrap();
        let rows: Vec<(String, i64, String)> = conn
            .prepare("SELECT k, a, b FROM t ORDER BY k")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, [("x".into(), 3, "three".into()), ("y".into(), 2, "two".into())]);
    }
}
