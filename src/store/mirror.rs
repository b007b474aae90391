//! A login node's copy of the shared source: the agent's `source` step. It reads the
//! changes PostgreSQL numbered after the last one this node applied (see
//! [`crate::store::postgres`]), the current rows of what they name, all in one
//! REPEATABLE READ snapshot (which works on a hot standby too), and applies them to the
//! local SQLite store in one transaction ([`SqliteStore::apply_mirror`]). The first run,
//! and a source whose numbers went backwards (a restored or replaced database), copies
//! everything. LISTEN/NOTIFY wakes it at each commit; `source.poll_interval_ms` bounds the
//! wait where no notice comes (a standby, a lost connection).
//!
//! Each success is recorded in the local store's `sync_state` (source `postgres`), which
//! is what the login path's staleness rule reads: while the source is out of reach the
//! node serves the last copy, until `source.staleness_max`, then refuses its users.
//!
//! The same thread carries login state the other way ([`crate::store::shared_state`]):
//! every `source.state_interval_ms` it sends what this node's login path recorded and
//! reads back what the others sent, woken early by their `NOTIFY gatehouse_state`.
//!
//! Directory users (`gatehouse-ldap` writing into PostgreSQL) keep their source `ldap`
//! on the node, and the directory sync's own record is copied with every batch: they are
//! refused when either the node's mirror or the directory's sync is too old.

use super::postgres::{self as pg, CHANNEL};
use super::sqlite::SqliteStore;
use super::*;
use crate::config::{Config, SourceConfig};
use crate::log::{Level, Logger};
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, GenericClient};
use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::postgres::pg_error;
use super::shared_state::{self, STATE_CHANNEL};
use super::state::StateStore;

const USER_COLUMNS: &str = "u.id, u.name, u.state, u.policy, u.port_forwarding, u.created, u.source, u.uid";

/// Reads the users named `names` (all, when `None`) with their keys.
fn read_users(c: &mut impl GenericClient, at: &str, names: Option<&[String]>) -> Result<Vec<MirroredUser>, StoreError> {
    let db = |e| pg_error(at, e);
    let users = match names {
        Some(names) => c.query(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.name = ANY($1)"), &[&names]),
        None => c.query(&format!("SELECT {USER_COLUMNS} FROM users u"), &[]),
    }
    .map_err(db)?;
    let keys = match names {
        Some(names) => c.query(
            "SELECT k.user_id, k.algorithm, k.blob, k.fingerprint, k.bits, k.comment, k.scope, k.from_patterns, \
             k.expires, k.created, k.source FROM keys k JOIN users u ON u.id = k.user_id WHERE u.name = ANY($1) \
             ORDER BY k.id",
            &[&names],
        ),
        None => c.query(
            "SELECT k.user_id, k.algorithm, k.blob, k.fingerprint, k.bits, k.comment, k.scope, k.from_patterns, \
             k.expires, k.created, k.source FROM keys k ORDER BY k.id",
            &[],
        ),
    }
    .map_err(db)?;
    let bad = |e: String| StoreError::Unavailable { path: at.to_string(), reason: e };
    let mut by_id: std::collections::HashMap<i64, MirroredUser> = std::collections::HashMap::new();
    for r in &users {
        let state: String = r.get("state");
        let policy: String = r.get("policy");
        let user = User {
            name: r.get("name"),
            state: state.parse().map_err(bad)?,
            policy: policy.parse().map_err(bad)?,
            port_forwarding: r.get("port_forwarding"),
            created: Timestamp::from_secs(r.get("created")),
            source: r.get("source"),
            uid: r.get::<_, Option<i64>>("uid").and_then(|u| u32::try_from(u).ok()),
        };
        by_id.insert(r.get("id"), MirroredUser { user, keys: Vec::new() });
    }
    for r in &keys {
        let Some(m) = by_id.get_mut(&r.get::<_, i64>(0)) else { continue };
        let scope: String = r.get(6);
        m.keys.push(Key {
            user: m.user.name.clone(),
            algorithm: r.get(1),
            blob: r.get(2),
            fingerprint: r.get(3),
            bits: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
            comment: r.get(5),
            scope: scope.parse().map_err(bad)?,
            from: r.get(7),
            expires: r.get::<_, Option<i64>>(8).map(Timestamp::from_secs),
            created: Timestamp::from_secs(r.get(9)),
            source: r.get(10),
        });
    }
    Ok(by_id.into_values().collect())
}

fn read_grants(c: &mut impl GenericClient, at: &str) -> Result<Vec<Grant>, StoreError> {
    let rows = c.query("SELECT subject, pattern, access, created FROM grants", &[]).map_err(|e| pg_error(at, e))?;
    rows.iter()
        .map(|r| {
            let access: String = r.get(2);
            Ok(Grant {
                subject: r.get(0),
                pattern: r.get(1),
                access: access.parse().map_err(|e: String| StoreError::Unavailable { path: at.into(), reason: e })?,
                created: Timestamp::from_secs(r.get(3)),
            })
        })
        .collect()
}

fn read_groups(c: &mut impl GenericClient, at: &str) -> Result<Vec<(String, String)>, StoreError> {
    let rows = c.query("SELECT grp, member FROM group_members", &[]).map_err(|e| pg_error(at, e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The directory sync's record (`gatehouse-ldap` writing into the source), if any.
fn read_directory_sync(c: &mut impl GenericClient, at: &str) -> Result<Option<SyncState>, StoreError> {
    super::postgres::read_sync_state(c, at, crate::domain::SOURCE_LDAP)
}

/// What the source holds after change `after` (everything when `None`), read in one
/// snapshot. `None`: nothing new.
pub fn read_batch(client: &mut Client, at: &str, after: Option<i64>) -> Result<Option<MirrorBatch>, StoreError> {
    let db = |e| pg_error(at, e);
    let mut tx = pg::snapshot(client).map_err(db)?;
    let row = tx.query_one("SELECT seq, pruned FROM change_seq", &[]).map_err(db)?;
    let (top, pruned): (i64, i64) = (row.get(0), row.get(1));
    let batch = match after {
        Some(last) if last == top => None,
        // The log still holds every change after `last` (older ones are pruned).
        Some(last) if last < top && last >= pruned => {
            let rows = tx
                .query("SELECT DISTINCT kind, name FROM changes WHERE seq > $1 AND seq <= $2", &[&last, &top])
                .map_err(db)?;
            let mut names = HashSet::new();
            let (mut grants, mut groups) = (false, false);
            for r in &rows {
                match (r.get::<_, &str>(0), r.get::<_, String>(1)) {
                    ("user", name) => {
                        names.insert(name);
                    }
                    ("grants", _) => grants = true,
                    _ => groups = true,
                }
            }
            let names: Vec<String> = names.into_iter().collect();
            let mut now: std::collections::HashMap<String, MirroredUser> =
                read_users(&mut tx, at, Some(&names))?.into_iter().map(|m| (m.user.name.clone(), m)).collect();
            let users = names.into_iter().map(|n| (n.clone(), now.remove(&n))).collect();
            Some(MirrorBatch {
                full: false,
                users,
                grants: if grants { Some(read_grants(&mut tx, at)?) } else { None },
                groups: if groups { Some(read_groups(&mut tx, at)?) } else { None },
                seq: top,
                directory: read_directory_sync(&mut tx, at)?,
            })
        }
        // First run, the source went back (restored, replaced), or the changes this node
        // lacks were pruned (cut off longer than the log keeps them): copy it all.
        _ => Some(MirrorBatch {
            full: true,
            users: read_users(&mut tx, at, None)?.into_iter().map(|m| (m.user.name.clone(), Some(m))).collect(),
            grants: Some(read_grants(&mut tx, at)?),
            groups: Some(read_groups(&mut tx, at)?),
            seq: top,
            directory: read_directory_sync(&mut tx, at)?,
        }),
    };
    tx.commit().map_err(db)?;
    Ok(batch)
}

/// What one step did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Applied { full: bool, users: usize, seq: i64 },
    Heartbeat { seq: i64 },
    Idle,
}

/// The mirror of one node: the connection to the source (made again after a failure) and
/// the local store it writes.
pub struct Mirror {
    cfg: SourceConfig,
    at: String,
    local: SqliteStore,
    client: Option<Client>,
    last_written: Option<Instant>,
    /// How often a step with nothing new still records a success.
    heartbeat: Duration,
    failing: bool,
    /// The node's state file, opened at the first exchange.
    state: Option<StateStore>,
    state_path: std::path::PathBuf,
    state_gid: Option<u32>,
    busy_timeout_ms: u32,
    lockout: crate::config::LockoutConfig,
    /// Where the last read of the others' records ended (the source's clock, ms).
    pull_cursor: Option<i64>,
    /// Why the last exchange of login state failed, until one works.
    pub state_failing: Option<String>,
    /// The source is a hot standby (read-only, no notices).
    standby: bool,
}

/// What one exchange of login state did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchanged {
    pub sent: usize,
    pub merged: bool,
}

impl Mirror {
    pub fn open(config: &Config, cfg: &SourceConfig) -> Result<Mirror, StoreError> {
        let local =
            SqliteStore::open_writer(&config.store.path, config.store.busy_timeout_ms, config.users.uid_range())?;
        Ok(Mirror {
            at: cfg.url.clone(),
            cfg: cfg.clone(),
            local,
            client: None,
            last_written: None,
            heartbeat: (cfg.staleness_max / 10).clamp(Duration::from_millis(100), Duration::from_secs(300)),
            failing: false,
            state: None,
            state_path: config.state.path.clone(),
            state_gid: config.state.gid(),
            busy_timeout_ms: config.store.busy_timeout_ms,
            lockout: config.lockout.clone(),
            pull_cursor: None,
            state_failing: None,
            standby: false,
        })
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.is_none() {
            let mut c = pg::connect(&self.cfg)?;
            // A hot standby refuses LISTEN (and every write): there the poll is the only
            // wake-up, and this node's login records wait until it follows a primary.
            let standby: bool =
                c.query_one("SELECT pg_is_in_recovery()", &[]).map_err(|e| pg_error(&self.at, e))?.get(0);
            if !standby {
                c.batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {STATE_CHANNEL}"))
                    .map_err(|e| pg_error(&self.at, e))?;
            }
            self.standby = standby;
            self.client = Some(c);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable { path: self.at.clone(), reason: "no connection".into() })
    }

    /// One step: the changes since the last one, applied; or a heartbeat when due.
    pub fn step(&mut self, now: Timestamp) -> Result<Step, StoreError> {
        let after = self.local.mirrored_seq()?;
        let at = self.at.clone();
        let batch = match read_batch(self.client()?, &at, after) {
            Ok(b) => b,
            Err(e) => {
                self.client = None;
                return Err(e);
            }
        };
        let step = match batch {
            Some(batch) => {
                self.local.apply_mirror(&batch, now)?;
                Step::Applied { full: batch.full, users: batch.users.len(), seq: batch.seq }
            }
            None if self.failing || self.last_written.is_none_or(|t| t.elapsed() >= self.heartbeat) => {
                let seq = after.unwrap_or_default();
                self.local.mirror_heartbeat(seq, now)?;
                Step::Heartbeat { seq }
            }
            None => return Ok(Step::Idle),
        };
        self.last_written = Some(Instant::now());
        self.failing = false;
        Ok(step)
    }

    /// Sends this node's login records to the source and merges back what every node
    /// sent since the last time. A record is forgotten here only once the source has it.
    pub fn exchange_state(&mut self) -> Result<Exchanged, StoreError> {
        if self.state.is_none() {
            let state = StateStore::open_writer(&self.state_path, self.busy_timeout_ms, self.state_gid)?.share(true);
            self.pull_cursor = state.shared_value("pull_cursor")?.and_then(|c| c.parse().ok());
            self.state = Some(state);
        }
        self.client()?;
        let (Some(client), Some(state)) = (self.client.as_mut(), self.state.as_ref()) else {
            return Err(StoreError::Unavailable { path: self.at.clone(), reason: "no connection".into() });
        };
        let at = self.at.as_str();
        // Nothing can be written to a standby: the records wait, and the others' are read.
        let sending = if self.standby { Ok(0) } else { shared_state::send(client, at, state, &self.lockout) };
        let result = sending.and_then(|sent| {
            // A write stamped before the cursor may commit after it: read a little back.
            let slack = (self.cfg.timeout * 2).max(Duration::from_secs(10));
            let (pulled, cursor) = shared_state::pull(client, at, self.pull_cursor, slack)?;
            let merged = !pulled.is_empty();
            if merged {
                state.merge_shared(&pulled)?;
                if let Some(c) = cursor {
                    state.set_shared_value("pull_cursor", &c.to_string())?;
                }
            }
            self.pull_cursor = cursor;
            Ok(Exchanged { sent, merged })
        });
        if result.is_err() && self.client.as_ref().is_some_and(Client::is_closed) {
            // The connection is gone: the next step makes a new one.
            self.client = None;
        }
        result
    }

    /// Waits for a change notice, at most `source.poll_interval_ms` (or `limit`).
    pub fn wait(&mut self, limit: Duration) {
        let wait = self.cfg.poll_interval.min(limit);
        let lost = match self.client.as_mut() {
            Some(c) => {
                let mut notices = c.notifications();
                let woke = notices.timeout_iter(wait).next().map(|n| n.is_some());
                // Take the other notices that came with it: one step reads them all.
                if woke.is_ok() {
                    let mut pending = notices.iter();
                    while let Ok(Some(_)) = pending.next() {}
                }
                woke.is_err()
            }
            None => {
                std::thread::sleep(wait);
                false
            }
        };
        if lost {
            self.client = None;
        }
    }

    /// Records a failed step once (not at every retry): the local store keeps the last
    /// copy, and `sync_state` says why it is getting old.
    fn failed(&mut self, now: Timestamp, error: &str) {
        if !self.failing {
            let attempt = SyncAttempt {
                source: crate::domain::SOURCE_SHARED,
                at: now,
                error: Some(error),
                high_water: None,
                full: false,
            };
            let _ = self.local.record_sync(&attempt);
            self.failing = true;
        }
    }
}

/// The agent's `source` step, on a thread of its own: mirrors for ever, logging each
/// batch and each failure (once, then again when it recovers).
pub fn run(config: &Config, cfg: &SourceConfig, log: &mut Logger) -> Result<(), StoreError> {
    let mut mirror = Mirror::open(config, cfg)?;
    log.log(Level::Info, &[("action", "source.start"), ("source", &mirror.at)]);
    let mut retry = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let now = crate::time::now();
        let was_failing = mirror.failing;
        match mirror.step(now) {
            Ok(step) => {
                if was_failing {
                    log.log(Level::Info, &[("action", "source.recovered"), ("source", &mirror.at)]);
                }
                if let Step::Applied { full, users, seq } = step {
                    let (users, seq, ms) =
                        (users.to_string(), seq.to_string(), started.elapsed().as_millis().to_string());
                    let kind = if full { "full" } else { "changes" };
                    log.log(
                        Level::Info,
                        &[("action", "source.sync"), ("kind", kind), ("users", &users), ("seq", &seq), ("ms", &ms)],
                    );
                }
                retry = Duration::from_secs(1);
                exchange(&mut mirror, log);
                mirror.wait(cfg.poll_interval.min(cfg.state_interval));
            }
            Err(e) => {
                let error = e.to_string();
                if !mirror.failing {
                    log.log(Level::Error, &[("action", "source.sync"), ("source", &mirror.at), ("error", &error)]);
                }
                mirror.failed(now, &error);
                std::thread::sleep(retry);
                retry = (retry * 2).min(cfg.poll_interval.max(Duration::from_secs(1)));
            }
        }
    }
}

/// One exchange of login state, logged when it sends something, when it fails (once) and
/// when it works again.
fn exchange(mirror: &mut Mirror, log: &mut Logger) {
    match mirror.exchange_state() {
        Ok(done) => {
            if mirror.state_failing.take().is_some() {
                log.log(Level::Info, &[("action", "state.recovered"), ("source", &mirror.at)]);
            }
            if done.sent > 0 {
                log.log(Level::Info, &[("action", "state.sent"), ("records", &done.sent.to_string())]);
            }
        }
        Err(e) => {
            let error = e.to_string();
            if mirror.state_failing.is_none() {
                log.log(Level::Warning, &[("action", "state.send"), ("source", &mirror.at), ("error", &error)]);
            }
            mirror.state_failing = Some(error);
        }
    }
}

/// Sends what this host's state file holds for the source now (the CLI, after a lock or
/// an unlock by hand, so that it applies cluster-wide without waiting for an agent).
pub fn send_state(config: &Config, cfg: &SourceConfig) -> Result<usize, StoreError> {
    let state =
        StateStore::open_writer(&config.state.path, config.store.busy_timeout_ms, config.state.gid())?.share(true);
    let mut client = pg::connect(cfg)?;
    shared_state::send(&mut client, &cfg.url, &state, &config.lockout)
}

/// Starts the mirror on a thread of its own when `[source]` is set; it runs for the life
/// of the process, opening the local store again should it fail.
pub fn spawn(config: &Config) -> Option<std::thread::JoinHandle<()>> {
    let cfg = config.shared.clone()?;
    let config = config.clone();
    Some(std::thread::spawn(move || {
        let mut log = Logger::open("gatehouse-agent", &config);
        loop {
            if let Err(e) = run(&config, &cfg, &mut log) {
                log.log(Level::Error, &[("action", "source.start"), ("error", &e.to_string())]);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }))
}
