//! Noticing, from another process, that someone committed to the key store: what the
//! agent waits on.
//!
//! Two signals, on purpose. inotify on the store's folder wakes us the moment a writer
//! appends to the `-wal` (or checkpoints into the main file); it costs nothing while
//! nothing happens, but it says only "a write", not "a commit", and the first write of a
//! transaction comes before its commit. SQLite's `PRAGMA data_version` on a connection
//! kept open says exactly whether another connection committed since we last asked. So a
//! wake-up is confirmed by `data_version`, and `data_version` is also asked on a timer,
//! in case an event was missed (the queue overflowed, the file was replaced).
//!
//! The connection lives as long as the watch and holds SQLite's shared lock on the WAL
//! index: whoever else closes the store, no one is its last connection, so no tool
//! removes the `-wal` and `-shm` files the read-only login path needs.

use super::db::{db_error, unavailable, writer_connection};
use super::StoreError;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use rusqlite::{Connection, OpenFlags};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct ChangeWatch {
    conn: Connection,
    inotify: Inotify,
    path: PathBuf,
    version: i64,
    /// Whether opening had to bring back a missing `-wal`/`-shm`.
    pub restored: bool,
}

impl ChangeWatch {
    /// Opens the store read-only and starts watching its folder. When the `-wal` or `-shm`
    /// file is missing (another tool closed the store last before we ran), a writer
    /// connection brings them back first; it changes no data.
    pub fn open(path: &Path, busy_timeout_ms: u32) -> Result<ChangeWatch, StoreError> {
        let shown = path.display().to_string();
        let Some(folder) = path.parent().filter(|_| path.file_name().is_some()) else {
            return Err(unavailable(&shown, "not a file path"));
        };
        // Watch before the first data_version: a commit in between is then seen either way.
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| unavailable(&shown, format!("inotify: {e}")))?;
        let mask = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE;
        inotify
            .add_watch(folder, mask)
            .map_err(|e| unavailable(&folder.display().to_string(), format!("inotify: {e}")))?;
        let missing = !Path::new(&format!("{shown}-wal")).exists() || !Path::new(&format!("{shown}-shm")).exists();
        // Held until the reader is open, so the files it made are not removed in between.
        let restorer = if missing { Some(writer_connection(path, busy_timeout_ms, false)?) } else { None };
        let flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| db_error(&shown, e))?;
        conn.busy_timeout(Duration::from_millis(u64::from(busy_timeout_ms))).map_err(|e| db_error(&shown, e))?;
        let mut watch =
            ChangeWatch { conn, inotify, path: path.to_path_buf(), version: 0, restored: restorer.is_some() };
        // Reading a page takes the shared lock on the WAL index that keeps the files alive.
        watch.version = watch.data_version()?;
        drop(restorer);
        Ok(watch)
    }

    fn data_version(&self) -> Result<i64, StoreError> {
        let shown = self.path.display().to_string();
        // The pragma opens a read transaction, which is when SQLite looks at the WAL index.
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(|e| db_error(&shown, e))
    }

    /// Whether another connection committed since the last call; waits up to `timeout`
    /// for it. Returns at once when a commit happened in the meantime.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.data_version()?;
            if now != self.version {
                self.version = now;
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.sleep_until_write(left)?;
        }
    }

    /// Sleeps until a write in the store's folder or `left` has passed. Writes to the other
    /// files there (the state file, on every login) wake us too; the caller's
    /// `data_version` tells them apart for a few microseconds.
    fn sleep_until_write(&self, left: Duration) -> Result<(), StoreError> {
        let shown = self.path.display().to_string();
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(unavailable(&shown, format!("poll: {e}"))),
        }
        // One read empties what is queued now; under a stream of writes, data_version
        // decides and the next poll returns at once.
        match self.inotify.read_events() {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => Ok(()),
            Err(e) => Err(unavailable(&shown, format!("inotify: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// A new, empty store in a folder of its own: (folder, store path).
    fn fresh_store(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("gh-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        SqliteStore::create(&path, 1000, crate::config::UsersConfig::default().uid_range()).unwrap().migrate().unwrap();
        (dir, path)
    }

    #[test]
    fn a_commit_wakes_the_watch_and_nothing_else_does() {
        let (dir, path) = fresh_store("wake");
        let mut watch = ChangeWatch::open(&path, 1000).unwrap();
        assert!(!watch.wait(Duration::from_millis(30)).unwrap(), "woke without a commit");
        // Another file in the folder is written: no commit to the store.
        std::fs::write(dir.join("state.db"), b"x").unwrap();
        assert!(!watch.wait(Duration::from_millis(30)).unwrap());
        // A commit from another connection, made while the watch sleeps.
        let writer = std::thread::spawn({
            let path = path.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                let conn = writer_connection(&path, 1000, false).unwrap();
                conn.execute_batch("BEGIN; CREATE TABLE scratch (x); INSERT INTO scratch VALUES (1); COMMIT;").unwrap();
            }
        });
        let started = Instant::now();
        assert!(watch.wait(Duration::from_secs(5)).unwrap(), "the commit was not noticed");
        // Woken by the write, not by the 5 s timeout.
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        writer.join().unwrap();
        // Seen once.
        assert!(!watch.wait(Duration::from_millis(30)).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_wal_files_are_brought_back() {
        let (dir, path) = fresh_store("restore");
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let watch = ChangeWatch::open(&path, 1000).unwrap();
        assert!(watch.restored);
        assert!(Path::new(&format!("{}-shm", path.display())).exists());
        // And a read-only reader (the login path) can open the store again.
        assert!(SqliteStore::open_reader(&path, 1000).is_ok());
        drop(watch);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
