//! The key store on PostgreSQL, the shared source of several login nodes (`[source]`):
//! the [`AdminStore`] the CLI and the web service write through when it is configured,
//! with the same checks (they live in `admin`, above the store) and the same audit trail.
//!
//! Every writing transaction first takes the next number of the change sequence
//! (`UPDATE change_seq ... RETURNING seq`): that row lock serialises writers across
//! every host and makes commit order the order of the numbers, with no gaps a reader
//! could skip. Each change names what it touched in `changes` (a user, the grants, the
//! groups) under that number, and `NOTIFY gatehouse_changes` wakes the nodes at commit.
//! A node's agent ([`crate::store::mirror`]) reads the changes after the last number it
//! applied and copies the current rows of what they name into its local SQLite store.

use super::uids::{self, AccountCheck, HostCheck, UidRange};
use super::*;
use crate::config::{SourceConfig, SourceTls};
use ::postgres::{Client, GenericClient, NoTls, Row, Transaction};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

/// The channel every change is announced on.
pub const CHANNEL: &str = "gatehouse_changes";

/// Versioned schema, as for SQLite: append-only, one entry per version, recorded in
/// `gatehouse_schema`.
const MIGRATIONS: &[&str] = &[
    // 1: what the SQLite store holds at its version 6, the audit trail, and the change log.
    "
    CREATE TABLE users (
        id              bigserial PRIMARY KEY,
        name            text NOT NULL UNIQUE,
        state           text NOT NULL CHECK (state IN ('enabled', 'disabled')),
        policy          text NOT NULL CHECK (policy IN ('shell', 'files', 'git', 'git-read')),
        port_forwarding boolean NOT NULL DEFAULT false,
        created         bigint NOT NULL,
        source          text NOT NULL,
        uid_number      bigint,
        directory_dn    text,
        uid             bigint UNIQUE
    );
    CREATE TABLE keys (
        id            bigserial PRIMARY KEY,
        user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        algorithm     text NOT NULL,
        blob          text NOT NULL,
        fingerprint   text NOT NULL UNIQUE,
        bits          integer NOT NULL,
        comment       text NOT NULL,
        scope         text NOT NULL CHECK (scope IN ('shell', 'files', 'git', 'git-read')),
        from_patterns text,
        expires       bigint,
        created       bigint NOT NULL,
        source        text NOT NULL
    );
    CREATE INDEX keys_by_user ON keys (user_id);
    CREATE TABLE grants (
        id      bigserial PRIMARY KEY,
        subject text NOT NULL,
        pattern text NOT NULL,
        access  text NOT NULL CHECK (access IN ('read', 'write')),
        created bigint NOT NULL,
        UNIQUE (subject, pattern)
    );
    CREATE TABLE group_members (
        grp    text NOT NULL,
        member text NOT NULL,
        source text NOT NULL,
        PRIMARY KEY (grp, member)
    );
    CREATE TABLE retired_uids (
        uid     bigint PRIMARY KEY,
        name    text NOT NULL,
        retired bigint NOT NULL
    );
    CREATE TABLE sync_state (
        source        text PRIMARY KEY,
        last_success  bigint,
        last_attempt  bigint NOT NULL,
        last_error    text,
        high_water    text,
        users         bigint NOT NULL DEFAULT 0,
        keys          bigint NOT NULL DEFAULT 0,
        last_full     bigint
    );
    CREATE TABLE audit (
        id      bigserial PRIMARY KEY,
        time    bigint NOT NULL,
        actor   text NOT NULL,
        action  text NOT NULL,
        subject text NOT NULL,
        detail  text NOT NULL
    );
    CREATE INDEX audit_by_time ON audit (time);
    CREATE INDEX audit_by_subject ON audit (subject, time);
    CREATE TABLE change_seq (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        seq bigint NOT NULL
    );
    INSERT INTO change_seq (one, seq) VALUES (true, 0);
    CREATE TABLE changes (
        seq  bigint NOT NULL,
        kind text NOT NULL CHECK (kind IN ('user', 'grants', 'groups')),
        name text NOT NULL DEFAULT ''
    );
    CREATE INDEX changes_by_seq ON changes (seq);
    ",
    // 2: login state from every node (store::shared_state): the last use of each key, the
    // failed passwords (each node's record once, however often it is sent), lockouts and
    // unlocks. `pushed` is this server's clock (ms) at the write: what nodes pull after.
    // And the change log pruned: each change's time, and the highest number pruned (a
    // node that applied less copies everything, as from a restored database).
    "
    ALTER TABLE changes ADD COLUMN time bigint NOT NULL DEFAULT extract(epoch from now())::bigint;
    CREATE INDEX changes_by_time ON changes (time);
    ALTER TABLE change_seq ADD COLUMN pruned bigint NOT NULL DEFAULT 0;
    CREATE TABLE state_key_use (
        fingerprint text PRIMARY KEY,
        username    text NOT NULL,
        last_used   bigint NOT NULL,
        rhost       text,
        pushed      bigint NOT NULL
    );
    CREATE INDEX state_key_use_by_user ON state_key_use (username);
    CREATE INDEX state_key_use_by_pushed ON state_key_use (pushed);
    CREATE TABLE state_failures (
        node     text NOT NULL,
        id       bigint NOT NULL,
        username text NOT NULL,
        rhost    text,
        time     bigint NOT NULL,
        PRIMARY KEY (node, id)
    );
    CREATE INDEX state_failures_by_user ON state_failures (username, time);
    CREATE INDEX state_failures_by_time ON state_failures (time);
    CREATE TABLE state_lockouts (
        username text PRIMARY KEY,
        until    bigint NOT NULL,
        since    bigint NOT NULL,
        reason   text NOT NULL,
        pushed   bigint NOT NULL
    );
    CREATE INDEX state_lockouts_by_pushed ON state_lockouts (pushed);
    CREATE TABLE state_unlocks (
        username text PRIMARY KEY,
        time     bigint NOT NULL,
        pushed   bigint NOT NULL
    );
    CREATE INDEX state_unlocks_by_pushed ON state_unlocks (pushed);
    ",
    // 3: the web service's secrets (store::secrets), shared by every gatehoused: argon2id
    // hashes of passwords, SHA-256 digests of invitation links, session ids and tokens.
    // The nodes never read them.
    "
    CREATE TABLE web_passwords (
        name    text PRIMARY KEY,
        hash    text NOT NULL,
        updated bigint NOT NULL
    );
    CREATE TABLE web_invites (
        token_hash text PRIMARY KEY,
        name       text NOT NULL,
        created    bigint NOT NULL,
        expires    bigint NOT NULL
    );
    CREATE INDEX web_invites_by_name ON web_invites (name);
    CREATE TABLE web_sessions (
        id_hash   text PRIMARY KEY,
        name      text NOT NULL,
        csrf      text NOT NULL,
        created   bigint NOT NULL,
        last_seen bigint NOT NULL
    );
    CREATE INDEX web_sessions_by_name ON web_sessions (name);
    CREATE TABLE web_tokens (
        id         bigserial PRIMARY KEY,
        token_hash text NOT NULL UNIQUE,
        scope      text NOT NULL,
        label      text NOT NULL,
        created    bigint NOT NULL,
        last_used  bigint,
        revoked    bigint
    );
    ",
];

pub mod import;
pub mod secrets;

/// The schema version this build reads and writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// What a change names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Changed {
    User(String),
    Grants,
    Groups,
}

/// The URL as logs and errors show it (it holds no password: the config refuses one).
fn shown(cfg: &SourceConfig) -> String {
    cfg.url.clone()
}

/// A read-only REPEATABLE READ transaction: one snapshot of the source for everything a
/// node reads in it (works on a hot standby too).
pub fn snapshot(client: &mut Client) -> Result<::postgres::Transaction<'_>, ::postgres::Error> {
    client.build_transaction().isolation_level(::postgres::IsolationLevel::RepeatableRead).read_only(true).start()
}

pub(crate) fn pg_error(at: &str, e: ::postgres::Error) -> StoreError {
    let reason = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            // "error performing TLS handshake" alone does not say that the certificate
            // was refused: the causes do.
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            text
        }
    };
    StoreError::Unavailable { path: at.to_string(), reason }
}

/// Reads the password from a file root's (or this service's) alone.
pub fn read_password(path: &std::path::Path) -> Result<String, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let fail = |reason: String| StoreError::Unavailable { path: path.display().to_string(), reason };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if (meta.uid() != 0 && meta.uid() != euid) || meta.mode() & 0o077 != 0 {
        return Err(fail(
            "source.password_file must be root's (or this service's) and readable by its owner alone (0600 or 0400)"
                .into(),
        ));
    }
    crate::trust::check_owned_path(path, &[euid]).map_err(fail)?;
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn tls(cfg: &SourceConfig) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_pki_types::pem::PemObject;
    let fail = |reason: String| StoreError::Unavailable { path: shown(cfg), reason };
    let Some(ca_file) = &cfg.ca_file else {
        return Err(fail("TLS needs source.ca_file".into()));
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| fail(format!("source.ca_file {}: {e}", ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| fail(format!("source.ca_file {}: {e}", ca_file.display())))?;
        roots.add(cert).map_err(|e| fail(format!("source.ca_file {}: {e}", ca_file.display())))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Connects as `[source]` says: TLS with the site's CA unless plain is allowed, the
/// password from its file, every statement bounded by `source.timeout_ms`.
pub fn connect(cfg: &SourceConfig) -> Result<Client, StoreError> {
    let at = shown(cfg);
    let mut pg: ::postgres::Config = cfg
        .url
        .parse()
        .map_err(|e| StoreError::Unavailable { path: at.clone(), reason: format!("source.url: {e}") })?;
    // A node cut off without a reset must notice within about the timeout, not after
    // TCP's retransmissions (minutes): unacknowledged data gives up after it, and an idle
    // connection waiting for a notice is probed from 10 s on.
    pg.connect_timeout(cfg.timeout)
        .tcp_user_timeout(cfg.timeout)
        .keepalives_idle(std::time::Duration::from_secs(10))
        .keepalives_interval(cfg.timeout)
        .keepalives_retries(3)
        .application_name("gatehouse");
    if let Some(file) = &cfg.password_file {
        pg.password(read_password(file)?);
    }
    let mut client = match cfg.tls {
        SourceTls::Plain => pg.ssl_mode(::postgres::config::SslMode::Disable).connect(NoTls),
        SourceTls::Verified => pg.ssl_mode(::postgres::config::SslMode::Require).connect(tls(cfg)?),
    }
    .map_err(|e| pg_error(&at, e))?;
    client
        .batch_execute(&format!("SET statement_timeout = {}", cfg.timeout.as_millis()))
        .map_err(|e| pg_error(&at, e))?;
    Ok(client)
}

/// How long a connection may sit unused before it is checked with a round trip: a
/// server restarted or failed over meanwhile dropped it.
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// Makes `client` again if the server dropped it (a restart, a failover): long-lived
/// holders (gatehoused's pools) would otherwise fail every request from then on. Checked
/// with a round trip only after [`QUIET`], so that a busy service pays nothing.
pub(crate) fn keep_alive(client: &mut Client, cfg: &SourceConfig, used: &Cell<Instant>) -> Result<(), StoreError> {
    if client.is_closed() || (used.get().elapsed() > QUIET && client.is_valid(cfg.timeout).is_err()) {
        *client = connect(cfg)?;
    }
    used.set(Instant::now());
    Ok(())
}

/// The schema version a database is at (0: none yet).
pub(crate) fn version_of(client: &mut Client, at: &str) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('gatehouse_schema') IS NOT NULL", &[])
        .map_err(|e| pg_error(at, e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client.query_one("SELECT version FROM gatehouse_schema", &[]).map_err(|e| pg_error(at, e))?;
    Ok(i64::from(row.get::<_, i32>(0)))
}

pub struct PgStore {
    /// ::postgres::Client wants `&mut` for every query; the traits' readers take `&self`.
    /// A store is used by one thread at a time (gatehoused keeps a pool of them).
    client: RefCell<Client>,
    cfg: SourceConfig,
    used: Cell<Instant>,
    at: String,
    uids: UidRange,
    host_check: HostCheck,
    host_account: AccountCheck,
}

fn scope_of(text: &str, at: &str) -> Result<Scope, StoreError> {
    text.parse().map_err(|e: String| StoreError::Unavailable { path: at.to_string(), reason: e })
}

fn user_from(row: &Row, at: &str) -> Result<User, StoreError> {
    let state: String = row.get("state");
    let policy: String = row.get("policy");
    Ok(User {
        name: row.get("name"),
        state: state.parse().map_err(|e: String| StoreError::Unavailable { path: at.to_string(), reason: e })?,
        policy: scope_of(&policy, at)?,
        port_forwarding: row.get("port_forwarding"),
        created: Timestamp::from_secs(row.get("created")),
        source: row.get("source"),
        uid: row.get::<_, Option<i64>>("uid").and_then(|u| u32::try_from(u).ok()),
    })
}

fn key_from(user: &str, row: &Row, at: &str) -> Result<Key, StoreError> {
    let scope: String = row.get("scope");
    Ok(Key {
        user: user.to_string(),
        algorithm: row.get("algorithm"),
        blob: row.get("blob"),
        fingerprint: row.get("fingerprint"),
        bits: u32::try_from(row.get::<_, i32>("bits")).unwrap_or(0),
        comment: crate::keys::shown(&row.get::<_, String>("comment")),
        scope: scope_of(&scope, at)?,
        from: row.get("from_patterns"),
        expires: row.get::<_, Option<i64>>("expires").map(Timestamp::from_secs),
        created: Timestamp::from_secs(row.get("created")),
        source: row.get("source"),
    })
}

fn grant_from(row: &Row, at: &str) -> Result<Grant, StoreError> {
    let access: String = row.get("access");
    Ok(Grant {
        subject: row.get("subject"),
        pattern: row.get("pattern"),
        access: access.parse().map_err(|e: String| StoreError::Unavailable { path: at.to_string(), reason: e })?,
        created: Timestamp::from_secs(row.get("created")),
    })
}

const USER_COLUMNS: &str = "name, state, policy, port_forwarding, created, source, uid";
const KEY_COLUMNS: &str =
    "k.algorithm, k.blob, k.fingerprint, k.bits, k.comment, k.scope, k.from_patterns, k.expires, k.created, k.source";

/// One writing transaction: holds the change sequence's row until commit.
struct Write<'a> {
    tx: Transaction<'a>,
    seq: i64,
    at: String,
    announced: bool,
}

impl Write<'_> {
    fn changed(&mut self, what: Changed) -> Result<(), StoreError> {
        let (kind, name) = match &what {
            Changed::User(n) => ("user", n.as_str()),
            Changed::Grants => ("grants", ""),
            Changed::Groups => ("groups", ""),
        };
        let (seq, at) = (self.seq, self.at.clone());
        self.tx
            .execute("INSERT INTO changes (seq, kind, name) VALUES ($1, $2, $3)", &[&seq, &kind, &name])
            .map_err(|e| pg_error(&at, e))?;
        if !self.announced {
            self.tx.batch_execute(&format!("NOTIFY {CHANNEL}")).map_err(|e| pg_error(&at, e))?;
            self.announced = true;
        }
        Ok(())
    }

    fn audit(&mut self, actor: &Actor, action: &str, subject: &str, detail: &str) -> Result<(), StoreError> {
        let at = self.at.clone();
        self.tx
            .execute(
                "INSERT INTO audit (time, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
                &[&actor.now.as_secs(), &actor.name, &action, &subject, &detail],
            )
            .map_err(|e| pg_error(&at, e))?;
        Ok(())
    }
}

impl PgStore {
    /// Connects and checks the schema version (see [`PgStore::migrate`]).
    pub fn open(cfg: &SourceConfig, uids: UidRange) -> Result<PgStore, StoreError> {
        let store = PgStore::open_unchecked(cfg, uids)?;
        let mut store = store;
        let found = store.version()?;
        if found != current_version() {
            return Err(StoreError::Version { path: store.at.clone(), found, expected: current_version() });
        }
        Ok(store)
    }

    /// Connects without checking the schema (`gatehouse init`).
    pub fn open_unchecked(cfg: &SourceConfig, uids: UidRange) -> Result<PgStore, StoreError> {
        Ok(PgStore {
            client: RefCell::new(connect(cfg)?),
            cfg: cfg.clone(),
            used: Cell::new(Instant::now()),
            at: shown(cfg),
            uids,
            host_check: uids::held_on_this_host,
            host_account: uids::account_on_this_host,
        })
    }

    /// Uses `uid_held` and `account_of` instead of this host's accounts (tests).
    pub fn with_host(mut self, uid_held: HostCheck, account_of: AccountCheck) -> Self {
        self.host_check = uid_held;
        self.host_account = account_of;
        self
    }

    pub fn path(&self) -> &str {
        &self.at
    }

    /// The schema version the database is at (0: none yet).
    pub fn version(&mut self) -> Result<i64, StoreError> {
        let at = self.at.clone();
        version_of(self.client.get_mut(), &at)
    }

    /// Applies the migrations the database lacks, each in its own transaction, under an
    /// advisory lock so that hosts starting together do not race.
    pub fn migrate(&mut self) -> Result<i64, StoreError> {
        let at = self.at.clone();
        let db = |e| pg_error(&at, e);
        let mut tx = self.client.get_mut().transaction().map_err(db)?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7165516617);
             CREATE TABLE IF NOT EXISTS gatehouse_schema (version integer NOT NULL);
             INSERT INTO gatehouse_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM gatehouse_schema);",
        )
        .map_err(db)?;
        let found = i64::from(tx.query_one("SELECT version FROM gatehouse_schema", &[]).map_err(db)?.get::<_, i32>(0));
        if found > current_version() {
            return Err(StoreError::Version { path: at.clone(), found, expected: current_version() });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            tx.batch_execute(sql).map_err(db)?;
            tx.execute("UPDATE gatehouse_schema SET version = $1", &[&(i as i32 + 1)]).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(current_version())
    }

    /// Runs `f` in one transaction that holds the next change number.
    fn write<T>(&mut self, f: impl FnOnce(&mut Write<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let at = self.at.clone();
        keep_alive(self.client.get_mut(), &self.cfg, &self.used)?;
        let mut tx = self.client.get_mut().transaction().map_err(|e| pg_error(&at, e))?;
        let seq: i64 = tx
            .query_one("UPDATE change_seq SET seq = seq + 1 RETURNING seq", &[])
            .map_err(|e| pg_error(&at, e))?
            .get(0);
        let mut w = Write { tx, seq, at: at.clone(), announced: false };
        let value = f(&mut w)?;
        if seq % PRUNE_EVERY == 0 {
            prune_changes(&mut w.tx, &at, CHANGES_KEPT)?;
        }
        w.tx.commit().map_err(|e| pg_error(&at, e))?;
        Ok(value)
    }

    /// Prunes the change log of what is older than `keep` now, in a transaction of its own
    /// (writers do it every [`PRUNE_EVERY`] changes); the highest number pruned, if any.
    pub fn prune_changes(&mut self, keep: std::time::Duration) -> Result<Option<i64>, StoreError> {
        let at = self.at.clone();
        let mut tx = self.client.get_mut().transaction().map_err(|e| pg_error(&at, e))?;
        // The sequence's row lock: no writer adds changes meanwhile.
        tx.execute("SELECT seq FROM change_seq FOR UPDATE", &[]).map_err(|e| pg_error(&at, e))?;
        let cut = prune_changes(&mut tx, &at, keep)?;
        tx.commit().map_err(|e| pg_error(&at, e))?;
        Ok(cut)
    }

    /// Records an event that is not a change to users or keys (init).
    pub fn record(&mut self, actor: &Actor, action: &str, detail: &str) -> Result<(), StoreError> {
        let subject = self.at.clone();
        self.write(|w| w.audit(actor, action, &subject, detail))
    }

    fn user_id(w: &mut Write<'_>, name: &str) -> Result<Option<(i64, String)>, StoreError> {
        let at = w.at.clone();
        Ok(w.tx
            .query_opt("SELECT id, policy FROM users WHERE name = $1 FOR UPDATE", &[&name])
            .map_err(|e| pg_error(&at, e))?
            .map(|r| (r.get(0), r.get(1))))
    }
}

/// How long the change log keeps a change: a node that applied nothing for longer (cut off,
/// switched off) copies everything when it is back, as at its first start.
pub const CHANGES_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// A writer prunes the change log once every this many changes.
pub const PRUNE_EVERY: i64 = 1000;

/// Deletes the changes older than `keep` (by the server's clock), up to the highest number
/// among them, and records that number as pruned: a node that applied less cannot follow
/// the log and copies everything ([`crate::store::mirror::read_batch`]).
fn prune_changes(tx: &mut Transaction<'_>, at: &str, keep: std::time::Duration) -> Result<Option<i64>, StoreError> {
    let db = |e| pg_error(at, e);
    let keep = i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
    let cut: Option<i64> = tx
        .query_one("SELECT max(seq) FROM changes WHERE time < extract(epoch from now())::bigint - $1", &[&keep])
        .map_err(db)?
        .get(0);
    if let Some(cut) = cut {
        tx.execute("DELETE FROM changes WHERE seq <= $1", &[&cut]).map_err(db)?;
        tx.execute("UPDATE change_seq SET pruned = greatest(pruned, $1)", &[&cut]).map_err(db)?;
    }
    Ok(cut)
}

/// The lowest free uid above every uid ever handed out, then the gaps below; uids held by
/// accounts on this host that the store did not make are stepped over. Writers are
/// serialised by the change sequence, so two hosts never pick the same one.
fn allocate_uid(
    tx: &mut Transaction<'_>,
    at: &str,
    range: UidRange,
    host: HostCheck,
    account: AccountCheck,
    name: &str,
) -> Result<Option<u32>, StoreError> {
    let db = |e| pg_error(at, e);
    let (min, max) = (i64::from(range.min), i64::from(range.max));
    let free = |tx: &mut Transaction<'_>, uid: u32| -> Result<bool, StoreError> {
        let n = i64::from(uid);
        let taken: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM users WHERE uid = $1) OR EXISTS (SELECT 1 FROM retired_uids WHERE uid = $1)",
                &[&n],
            )
            .map_err(db)?
            .get(0);
        Ok(!taken)
    };
    if let Some(uid) = account(name).filter(|u| (range.min..=range.max).contains(u)) {
        if free(tx, uid)? {
            return Ok(Some(uid));
        }
    }
    let top: Option<i64> = tx
        .query_one(
            "SELECT max(uid) FROM (SELECT uid FROM users WHERE uid BETWEEN $1 AND $2 \
             UNION ALL SELECT uid FROM retired_uids WHERE uid BETWEEN $1 AND $2) u",
            &[&min, &max],
        )
        .map_err(db)?
        .get(0);
    let mut next = top.map_or(min, |t| t + 1);
    while next <= max {
        let uid = next as u32;
        if !host(uid) && free(tx, uid)? {
            return Ok(Some(uid));
        }
        next += 1;
    }
    let gaps = tx
        .query(
            "SELECT g FROM generate_series($1::bigint, $2::bigint) g \
             WHERE NOT EXISTS (SELECT 1 FROM users WHERE uid = g) \
             AND NOT EXISTS (SELECT 1 FROM retired_uids WHERE uid = g) ORDER BY g",
            &[&min, &max],
        )
        .map_err(db)?;
    Ok(gaps.iter().map(|r| r.get::<_, i64>(0) as u32).find(|&uid| !host(uid)))
}

use super::directory::key_detail;

/// Inserts a key unless its fingerprint is registered; returns whether it was inserted.
fn insert_key(w: &mut Write<'_>, user_id: i64, new: &NewKey, scope: Scope, now: Timestamp) -> Result<bool, StoreError> {
    let at = w.at.clone();
    let k = &new.key;
    let bits = i32::try_from(k.bits).unwrap_or(i32::MAX);
    let expires = new.expires.map(Timestamp::as_secs);
    let n = w
        .tx
        .execute(
            "INSERT INTO keys (user_id, algorithm, blob, fingerprint, bits, comment, scope, from_patterns, expires, \
             created, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (fingerprint) DO NOTHING",
            &[
                &user_id,
                &k.algorithm,
                &k.blob,
                &k.fingerprint,
                &bits,
                &k.comment,
                &scope.as_str(),
                &new.from,
                &expires,
                &now.as_secs(),
                &new.source,
            ],
        )
        .map_err(|e| pg_error(&at, e))?;
    Ok(n == 1)
}

fn owner_of(w: &mut Write<'_>, fingerprint: &str) -> Result<String, StoreError> {
    let at = w.at.clone();
    Ok(w.tx
        .query_opt(
            "SELECT u.name FROM keys k JOIN users u ON u.id = k.user_id WHERE k.fingerprint = $1",
            &[&fingerprint],
        )
        .map_err(|e| pg_error(&at, e))?
        .map(|r| r.get(0))
        .unwrap_or_default())
}

/// The last sync of `source` as recorded in the database.
pub(crate) fn read_sync_state(
    c: &mut impl GenericClient,
    at: &str,
    source: &str,
) -> Result<Option<SyncState>, StoreError> {
    Ok(c.query_opt(
        "SELECT last_success, last_attempt, last_error, high_water, users, keys, last_full \
         FROM sync_state WHERE source = $1",
        &[&source],
    )
    .map_err(|e| pg_error(at, e))?
    .map(|r| SyncState {
        last_success: r.get::<_, Option<i64>>(0).map(Timestamp::from_secs),
        last_attempt: Timestamp::from_secs(r.get(1)),
        last_error: r.get(2),
        high_water: r.get(3),
        users: r.get(4),
        keys: r.get(5),
        last_full: r.get::<_, Option<i64>>(6).map(Timestamp::from_secs),
    }))
}

/// The reads the login path's trait asks for; the admin side uses them too.
fn read_login_view(
    c: &mut impl GenericClient,
    at: &str,
    user: &str,
    fingerprint: Option<&str>,
) -> Result<Option<LoginView>, StoreError> {
    let db = |e| pg_error(at, e);
    let Some(row) = c
        .query_opt(
            &format!(
                "SELECT id, {USER_COLUMNS}, (SELECT last_success FROM sync_state s WHERE s.source = u.source) AS synced \
                 FROM users u WHERE name = $1"
            ),
            &[&user],
        )
        .map_err(db)?
    else {
        return Ok(None);
    };
    let id: i64 = row.get("id");
    let rows = c
        .query(
            &format!(
                "SELECT {KEY_COLUMNS} FROM keys k WHERE k.user_id = $1 AND ($2::text IS NULL OR k.fingerprint = $2) \
                 ORDER BY k.id"
            ),
            &[&id, &fingerprint],
        )
        .map_err(db)?;
    let keys = rows.iter().map(|r| key_from(user, r, at)).collect::<Result<_, _>>()?;
    Ok(Some(LoginView {
        user: user_from(&row, at)?,
        keys,
        synced: row.get::<_, Option<i64>>("synced").map(Timestamp::from_secs),
        mirrored: None,
    }))
}

impl PgStore {
    /// Runs a read on the one connection.
    fn read<T>(&self, f: impl FnOnce(&mut Client, &str) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut client = self.client.try_borrow_mut().map_err(|_| StoreError::Unavailable {
            path: self.at.clone(),
            reason: "connection already in use".into(),
        })?;
        keep_alive(&mut client, &self.cfg, &self.used)?;
        f(&mut client, &self.at)
    }
}

impl LoginStore for PgStore {
    fn login_view(&self, user: &str, fingerprint: Option<&str>) -> Result<Option<LoginView>, StoreError> {
        self.read(|c, at| read_login_view(c, at, user, fingerprint))
    }

    fn grants_for(&self, subjects: &[String]) -> Result<Vec<Grant>, StoreError> {
        self.read(|c, at| {
            c.query("SELECT subject, pattern, access, created FROM grants WHERE subject = ANY($1)", &[&subjects])
                .map_err(|e| pg_error(at, e))?
                .iter()
                .map(|r| grant_from(r, at))
                .collect()
        })
    }

    fn groups_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.read(|c, at| {
            Ok(c.query("SELECT grp FROM group_members WHERE member = $1 ORDER BY grp", &[&user])
                .map_err(|e| pg_error(at, e))?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }
}

/// The directory sync's row operations ([`super::directory`]) in one PostgreSQL
/// transaction: each user it changes is named in the change log for the nodes.
struct DirectoryTx<'a, 'b> {
    w: &'a mut Write<'b>,
    range: UidRange,
    host: HostCheck,
    account: AccountCheck,
}

impl DirectoryTx<'_, '_> {
    fn run(&mut self, sql: &str, p: &[&(dyn ::postgres::types::ToSql + Sync)]) -> Result<u64, StoreError> {
        let at = self.w.at.clone();
        self.w.tx.execute(sql, p).map_err(|e| pg_error(&at, e))
    }

    fn rows(&mut self, sql: &str, p: &[&(dyn ::postgres::types::ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let at = self.w.at.clone();
        self.w.tx.query(sql, p).map_err(|e| pg_error(&at, e))
    }
}

impl super::directory::DirectoryWrite for DirectoryTx<'_, '_> {
    fn find(&mut self, name: &str) -> Result<Option<super::directory::Known>, StoreError> {
        let rows = self.rows(
            "SELECT id, source, state, uid_number, directory_dn FROM users WHERE name = $1 FOR UPDATE",
            &[&name],
        )?;
        Ok(rows.first().map(|r| super::directory::Known {
            id: r.get(0),
            source: r.get(1),
            state: r.get(2),
            uid_number: r.get(3),
            dn: r.get(4),
        }))
    }

    fn claim_uid(&mut self, uid: u32, name: &str) -> Result<Option<String>, StoreError> {
        let n = i64::from(uid);
        self.run("DELETE FROM retired_uids WHERE uid = $1 AND name = $2", &[&n, &name])?;
        if let Some(r) = self.rows("SELECT name FROM users WHERE uid = $1", &[&n])?.first() {
            return Ok(Some(r.get(0)));
        }
        Ok(self.rows("SELECT name FROM retired_uids WHERE uid = $1", &[&n])?.first().map(|r| {
            let name: String = r.get(0);
            format!("{name} (retired)")
        }))
    }

    fn allocate_uid(&mut self, name: &str) -> Result<Option<u32>, StoreError> {
        let at = self.w.at.clone();
        allocate_uid(&mut self.w.tx, &at, self.range, self.host, self.account, name)
    }

    fn insert_user(&mut self, u: &DirectoryUser, policy: Scope, uid: u32, now: Timestamp) -> Result<i64, StoreError> {
        let state = if u.enabled { "enabled" } else { "disabled" };
        let rows = self.rows(
            "INSERT INTO users (name, state, policy, port_forwarding, created, source, uid_number, directory_dn, uid) \
             VALUES ($1, $2, $3, false, $4, 'ldap', $5, $6, $7) RETURNING id",
            &[&u.name, &state, &policy.as_str(), &now.as_secs(), &u.uid_number, &u.dn, &i64::from(uid)],
        )?;
        rows.first().map(|r| r.get(0)).ok_or_else(|| StoreError::Unavailable {
            path: self.w.at.clone(),
            reason: format!("adding directory user {}: no row id returned", u.name),
        })
    }

    fn set_state(&mut self, id: i64, enabled: bool) -> Result<(), StoreError> {
        let state = if enabled { "enabled" } else { "disabled" };
        self.run("UPDATE users SET state = $2 WHERE id = $1", &[&id, &state]).map(|_| ())
    }

    fn set_dn(&mut self, id: i64, dn: &str) -> Result<(), StoreError> {
        self.run("UPDATE users SET directory_dn = $2 WHERE id = $1", &[&id, &dn]).map(|_| ())
    }

    fn policy(&mut self, id: i64) -> Result<Scope, StoreError> {
        let at = self.w.at.clone();
        let policy: String =
            self.rows("SELECT policy FROM users WHERE id = $1", &[&id])?.first().map(|r| r.get(0)).unwrap_or_default();
        scope_of(&policy, &at)
    }

    fn directory_keys(&mut self, id: i64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .rows("SELECT fingerprint FROM keys WHERE user_id = $1 AND source = 'ldap' ORDER BY id", &[&id])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn insert_key(&mut self, id: i64, key: &NewKey, scope: Scope, now: Timestamp) -> Result<bool, StoreError> {
        insert_key(self.w, id, key, scope, now)
    }

    fn remove_key(&mut self, fingerprint: &str) -> Result<(), StoreError> {
        self.run("DELETE FROM keys WHERE fingerprint = $1", &[&fingerprint]).map(|_| ())
    }

    fn remove_directory_keys(&mut self, id: i64) -> Result<u64, StoreError> {
        self.run("DELETE FROM keys WHERE user_id = $1 AND source = 'ldap'", &[&id])
    }

    fn directory_users(&mut self) -> Result<Vec<(i64, String, String)>, StoreError> {
        Ok(self
            .rows("SELECT id, name, state FROM users WHERE source = 'ldap'", &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn directory_groups(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        // Sorted as Rust sorts (bytes), whatever the database's collation.
        let mut members: Vec<(String, String)> = self
            .rows("SELECT grp, member FROM group_members WHERE source = 'ldap'", &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        members.sort();
        Ok(members)
    }

    fn replace_groups(&mut self, members: &[(String, String)]) -> Result<(), StoreError> {
        self.run("DELETE FROM group_members WHERE source = 'ldap'", &[])?;
        for (group, member) in members {
            self.run(
                "INSERT INTO group_members (grp, member, source) VALUES ($1, $2, 'ldap') ON CONFLICT DO NOTHING",
                &[group, member],
            )?;
        }
        Ok(())
    }

    fn audit(&mut self, actor: &Actor, action: &str, subject: &str, detail: &str) -> Result<(), StoreError> {
        self.w.audit(actor, action, subject, detail)
    }

    fn user_changed(&mut self, name: &str) -> Result<(), StoreError> {
        self.w.changed(Changed::User(name.to_string()))
    }

    fn groups_changed(&mut self) -> Result<(), StoreError> {
        self.w.changed(Changed::Groups)
    }
}

impl AdminStore for PgStore {
    fn ready(&mut self) -> Result<(), StoreError> {
        let at = self.at.clone();
        keep_alive(self.client.get_mut(), &self.cfg, &self.used)?;
        let row = self.client.get_mut().query_one("SHOW transaction_read_only", &[]).map_err(|e| pg_error(&at, e))?;
        if row.get::<_, String>(0) == "on" {
            return Err(StoreError::Unavailable { path: at, reason: "the server takes no writes (a standby?)".into() });
        }
        Ok(())
    }

    fn add_user(&mut self, actor: &Actor, user: &User) -> Result<u32, StoreError> {
        let (range, host, account) = (self.uids, self.host_check, self.host_account);
        self.write(|w| {
            let at = w.at.clone();
            if PgStore::user_id(w, &user.name)?.is_some() {
                return Err(StoreError::UserExists(user.name.clone()));
            }
            let uid = allocate_uid(&mut w.tx, &at, range, host, account, &user.name)?
                .ok_or(StoreError::UidsExhausted { min: range.min, max: range.max })?;
            w.tx.execute(
                "INSERT INTO users (name, state, policy, port_forwarding, created, source, uid) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &user.name,
                    &user.state.as_str(),
                    &user.policy.as_str(),
                    &user.port_forwarding,
                    &actor.now.as_secs(),
                    &user.source,
                    &i64::from(uid),
                ],
            )
            .map_err(|e| pg_error(&at, e))?;
            let mut detail = String::new();
            crate::log::push_pair(&mut detail, "uid", &uid.to_string());
            crate::log::push_pair(&mut detail, "state", user.state.as_str());
            crate::log::push_pair(&mut detail, "policy", user.policy.as_str());
            crate::log::push_pair(&mut detail, "port_forwarding", crate::domain::yes_no(user.port_forwarding));
            w.audit(actor, "user.add", &user.name, &detail)?;
            w.changed(Changed::User(user.name.clone()))?;
            Ok(uid)
        })
    }

    fn user(&self, name: &str) -> Result<User, StoreError> {
        self.read(|c, at| {
            let row = c
                .query_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"), &[&name])
                .map_err(|e| pg_error(at, e))?
                .ok_or_else(|| StoreError::NoSuchUser(name.to_string()))?;
            user_from(&row, at)
        })
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        self.read(|c, at| {
            c.query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"), &[])
                .map_err(|e| pg_error(at, e))?
                .iter()
                .map(|r| user_from(r, at))
                .collect()
        })
    }

    fn set_user_state(&mut self, actor: &Actor, name: &str, state: UserState) -> Result<bool, StoreError> {
        self.write(|w| {
            let at = w.at.clone();
            let old: Option<String> =
                w.tx.query_opt("SELECT state FROM users WHERE name = $1 FOR UPDATE", &[&name])
                    .map_err(|e| pg_error(&at, e))?
                    .map(|r| r.get(0));
            let Some(old) = old else {
                return Err(StoreError::NoSuchUser(name.to_string()));
            };
            if old == state.as_str() {
                return Ok(false);
            }
            w.tx.execute("UPDATE users SET state = $2 WHERE name = $1", &[&name, &state.as_str()])
                .map_err(|e| pg_error(&at, e))?;
            let action = match state {
                UserState::Enabled => "user.enable",
                UserState::Disabled => "user.disable",
            };
            w.audit(actor, action, name, "")?;
            w.changed(Changed::User(name.to_string()))?;
            Ok(true)
        })
    }

    fn set_user_policy(&mut self, actor: &Actor, name: &str, change: PolicyChange) -> Result<(), StoreError> {
        self.write(|w| {
            let at = w.at.clone();
            let changed =
                w.tx.execute(
                    "UPDATE users SET policy = coalesce($2, policy), port_forwarding = coalesce($3, port_forwarding) \
                     WHERE name = $1",
                    &[&name, &change.policy.map(Scope::as_str), &change.port_forwarding],
                )
                .map_err(|e| pg_error(&at, e))?;
            if changed == 0 {
                return Err(StoreError::NoSuchUser(name.to_string()));
            }
            let mut detail = String::new();
            for (key, value) in change.pairs() {
                crate::log::push_pair(&mut detail, key, value);
            }
            w.audit(actor, "user.set", name, &detail)?;
            w.changed(Changed::User(name.to_string()))
        })
    }

    fn remove_user(&mut self, actor: &Actor, name: &str) -> Result<u64, StoreError> {
        self.write(|w| {
            let at = w.at.clone();
            let db = |e| pg_error(&at, e);
            let Some(row) =
                w.tx.query_opt("SELECT id, uid FROM users WHERE name = $1 FOR UPDATE", &[&name]).map_err(db)?
            else {
                return Err(StoreError::NoSuchUser(name.to_string()));
            };
            let (id, uid): (i64, Option<i64>) = (row.get(0), row.get(1));
            let keys: i64 = w.tx.query_one("SELECT count(*) FROM keys WHERE user_id = $1", &[&id]).map_err(db)?.get(0);
            if let Some(uid) = uid {
                w.tx.execute(
                    "INSERT INTO retired_uids (uid, name, retired) VALUES ($1, $2, $3) ON CONFLICT (uid) DO NOTHING",
                    &[&uid, &name, &actor.now.as_secs()],
                )
                .map_err(db)?;
            }
            w.tx.execute("DELETE FROM users WHERE id = $1", &[&id]).map_err(db)?;
            // A user added later under the same name must not inherit these.
            let grants = w.tx.execute("DELETE FROM grants WHERE subject = $1", &[&name]).map_err(db)?;
            w.audit(actor, "user.remove", name, &format!("keys={keys}"))?;
            w.changed(Changed::User(name.to_string()))?;
            if grants > 0 {
                w.changed(Changed::Grants)?;
            }
            Ok(keys.max(0) as u64)
        })
    }

    fn add_key(&mut self, actor: &Actor, user: &str, key: &NewKey, max_keys: u32) -> Result<(), StoreError> {
        self.write(|w| {
            let at = w.at.clone();
            let Some((user_id, policy)) = PgStore::user_id(w, user)? else {
                return Err(StoreError::NoSuchUser(user.to_string()));
            };
            let policy = scope_of(&policy, &at)?;
            let scope = key.scope.unwrap_or(policy);
            if !policy.includes(scope) {
                return Err(StoreError::ScopeOutsidePolicy { scope, policy });
            }
            let count: i64 =
                w.tx.query_one("SELECT count(*) FROM keys WHERE user_id = $1", &[&user_id])
                    .map_err(|e| pg_error(&at, e))?
                    .get(0);
            if count >= i64::from(max_keys) {
                return Err(StoreError::TooManyKeys { user: user.to_string(), max: max_keys });
            }
            if !insert_key(w, user_id, key, scope, actor.now)? {
                let owner = owner_of(w, &key.key.fingerprint)?;
                return Err(StoreError::KeyTaken { fingerprint: key.key.fingerprint.clone(), owner });
            }
            w.audit(actor, "key.add", user, &key_detail(key, scope))?;
            w.changed(Changed::User(user.to_string()))
        })
    }

    fn keys(&self, user: &str) -> Result<Vec<Key>, StoreError> {
        self.user(user)?;
        self.read(|c, at| {
            c.query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM keys k JOIN users u ON u.id = k.user_id WHERE u.name = $1 ORDER BY k.id"
                ),
                &[&user],
            )
            .map_err(|e| pg_error(at, e))?
            .iter()
            .map(|r| key_from(user, r, at))
            .collect()
        })
    }

    fn remove_key(&mut self, actor: &Actor, user: &str, fingerprint: &str) -> Result<(), StoreError> {
        self.write(|w| {
            let at = w.at.clone();
            let removed =
                w.tx.execute(
                    "DELETE FROM keys WHERE fingerprint = $2 AND user_id = (SELECT id FROM users WHERE name = $1)",
                    &[&user, &fingerprint],
                )
                .map_err(|e| pg_error(&at, e))?;
            if removed == 0 {
                return Err(StoreError::NoSuchKey { user: user.to_string(), fingerprint: fingerprint.to_string() });
            }
            let mut detail = String::new();
            crate::log::push_pair(&mut detail, "fingerprint", fingerprint);
            w.audit(actor, "key.remove", user, &detail)?;
            w.changed(Changed::User(user.to_string()))
        })
    }

    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(|c, at| {
            let limit = query.limit.map_or(i64::MAX, i64::from);
            let since = query.since.map(Timestamp::as_secs);
            let mut events: Vec<AuditEvent> = c
                .query(
                    "SELECT time, actor, action, subject, detail FROM audit \
                     WHERE ($1::text IS NULL OR subject = $1) AND ($2::bigint IS NULL OR time >= $2) \
                     ORDER BY id DESC LIMIT $3",
                    &[&query.subject, &since, &limit],
                )
                .map_err(|e| pg_error(at, e))?
                .iter()
                .map(|r| AuditEvent {
                    time: Timestamp::from_secs(r.get(0)),
                    actor: r.get(1),
                    action: r.get(2),
                    subject: r.get(3),
                    detail: r.get(4),
                })
                .collect();
            events.reverse();
            Ok(events)
        })
    }

    /// One transaction, so one change number: the nodes take the whole sync at once.
    fn apply_directory(
        &mut self,
        actor: &Actor,
        snapshot: &DirectorySnapshot,
        default_policy: Scope,
    ) -> Result<SyncReport, StoreError> {
        let (range, host, account) = (self.uids, self.host_check, self.host_account);
        self.write(|w| {
            let mut report = SyncReport::default();
            let mut d = DirectoryTx { w, range, host, account };
            for u in &snapshot.users {
                super::directory::merge_user(&mut d, actor, u, default_policy, snapshot.full, &mut report)?;
            }
            super::directory::finish(&mut d, actor, snapshot, &mut report)?;
            Ok(report)
        })
    }

    /// A change number of its own even when nothing else changed: the nodes read the
    /// directory's `sync_state` with every batch, and judge its users' staleness by it.
    fn record_sync(&mut self, attempt: &SyncAttempt<'_>) -> Result<(), StoreError> {
        let SyncAttempt { source, at, error, high_water, full } = *attempt;
        self.write(|w| {
            let here = w.at.clone();
            let db = |e| pg_error(&here, e);
            let (users, keys): (i64, i64) = {
                let r =
                    w.tx.query_one(
                        "SELECT (SELECT count(*) FROM users WHERE source = $1), \
                         (SELECT count(*) FROM keys WHERE source = $1)",
                        &[&source],
                    )
                    .map_err(db)?;
                (r.get(0), r.get(1))
            };
            w.tx.execute(
                "INSERT INTO sync_state AS s (source, last_success, last_attempt, last_error, high_water, users, keys, \
                 last_full) VALUES ($1, CASE WHEN $3::text IS NULL THEN $2::bigint END, $2::bigint, $3::text, $4::text, \
                 $5::bigint, $6::bigint, CASE WHEN $3::text IS NULL AND $7::boolean THEN $2::bigint END) \
                 ON CONFLICT (source) DO UPDATE SET \
                   last_success = CASE WHEN $3::text IS NULL THEN $2 ELSE s.last_success END, \
                   last_attempt = $2, last_error = $3, high_water = coalesce($4, s.high_water), users = $5, keys = $6, \
                   last_full = CASE WHEN $3::text IS NULL AND $7 THEN $2 ELSE s.last_full END",
                &[&source, &at.as_secs(), &error, &high_water, &users, &keys, &full],
            )
            .map_err(|e| pg_error(&here, e))?;
            // Wakes the nodes: the record is what keeps directory users fresh there.
            w.tx.batch_execute(&format!("NOTIFY {CHANNEL}")).map_err(|e| pg_error(&here, e))?;
            w.announced = true;
            Ok(())
        })
    }

    fn sync_state(&self, source: &str) -> Result<Option<SyncState>, StoreError> {
        self.read(|c, at| read_sync_state(c, at, source))
    }

    fn directory_dns(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c, at| {
            Ok(c.query("SELECT name, directory_dn FROM users WHERE source = 'ldap' AND directory_dn IS NOT NULL", &[])
                .map_err(|e| pg_error(at, e))?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn record_event(&mut self, actor: &Actor, action: &str, subject: &str, detail: &str) -> Result<(), StoreError> {
        self.write(|w| w.audit(actor, action, subject, detail))
    }

    fn add_grant(&mut self, actor: &Actor, grant: &Grant) -> Result<bool, StoreError> {
        self.write(|w| {
            let at = w.at.clone();
            let db = |e| pg_error(&at, e);
            let old: Option<String> =
                w.tx.query_opt(
                    "SELECT access FROM grants WHERE subject = $1 AND pattern = $2",
                    &[&grant.subject, &grant.pattern],
                )
                .map_err(db)?
                .map(|r| r.get(0));
            if old.as_deref() == Some(grant.access.as_str()) {
                return Ok(false);
            }
            w.tx.execute(
                "INSERT INTO grants (subject, pattern, access, created) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (subject, pattern) DO UPDATE SET access = excluded.access",
                &[&grant.subject, &grant.pattern, &grant.access.as_str(), &actor.now.as_secs()],
            )
            .map_err(db)?;
            let mut detail = String::new();
            crate::log::push_pair(&mut detail, "pattern", &grant.pattern);
            crate::log::push_pair(&mut detail, "access", grant.access.as_str());
            w.audit(actor, "grant.add", &grant.subject, &detail)?;
            w.changed(Changed::Grants)?;
            Ok(true)
        })
    }

    fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        self.read(|c, at| {
            c.query("SELECT subject, pattern, access, created FROM grants ORDER BY subject, pattern", &[])
                .map_err(|e| pg_error(at, e))?
                .iter()
                .map(|r| grant_from(r, at))
                .collect()
        })
    }

    fn remove_grant(&mut self, actor: &Actor, subject: &str, pattern: &str) -> Result<(), StoreError> {
        self.write(|w| {
            let at = w.at.clone();
            let removed =
                w.tx.execute("DELETE FROM grants WHERE subject = $1 AND pattern = $2", &[&subject, &pattern])
                    .map_err(|e| pg_error(&at, e))?;
            if removed == 0 {
                return Err(StoreError::NoSuchGrant { subject: subject.to_string(), pattern: pattern.to_string() });
            }
            let mut detail = String::new();
            crate::log::push_pair(&mut detail, "pattern", pattern);
            w.audit(actor, "grant.remove", subject, &detail)?;
            w.changed(Changed::Grants)
        })
    }

    fn import_keys(
        &mut self,
        actor: &Actor,
        items: &[(String, NewKey)],
        import: &mut KeyImport,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let (range, host, account) = (self.uids, self.host_check, self.host_account);
        self.write(|w| {
            let at = w.at.clone();
            let mut results = Vec::with_capacity(items.len());
            let mut touched = std::collections::HashSet::new();
            for (user, new) in items {
                if !import.users.contains_key(user) {
                    let found = match (PgStore::user_id(w, user)?, import.create_users) {
                        (Some((id, policy)), _) => Some((id, scope_of(&policy, &at)?)),
                        (None, Some(policy)) => {
                            let uid = allocate_uid(&mut w.tx, &at, range, host, account, user)?
                                .ok_or(StoreError::UidsExhausted { min: range.min, max: range.max })?;
                            let id: i64 =
                                w.tx.query_one(
                                    "INSERT INTO users (name, state, policy, port_forwarding, created, source, uid) \
                                     VALUES ($1, 'enabled', $2, false, $3, 'import', $4) RETURNING id",
                                    &[user, &policy.as_str(), &actor.now.as_secs(), &i64::from(uid)],
                                )
                                .map_err(|e| pg_error(&at, e))?
                                .get(0);
                            w.audit(actor, "user.add", user, "source=import")?;
                            touched.insert(user.clone());
                            Some((id, policy))
                        }
                        (None, None) => None,
                    };
                    if let Some((id, policy)) = found {
                        let keys: i64 =
                            w.tx.query_one("SELECT count(*) FROM keys WHERE user_id = $1", &[&id])
                                .map_err(|e| pg_error(&at, e))?
                                .get(0);
                        import.users.insert(
                            user.clone(),
                            ImportUser { id, policy, keys: u32::try_from(keys).unwrap_or(u32::MAX) },
                        );
                    }
                }
                let (id, scope) = match import.admit(user, new) {
                    Ok(admitted) => admitted,
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                };
                if insert_key(w, id, new, scope, actor.now)? {
                    if let Some(e) = import.users.get_mut(user) {
                        e.keys += 1;
                    }
                    w.audit(actor, "key.add", user, &key_detail(new, scope))?;
                    touched.insert(user.clone());
                    results.push(Ok(()));
                } else {
                    let owner = owner_of(w, &new.key.fingerprint)?;
                    results.push(Err(StoreError::KeyTaken { fingerprint: new.key.fingerprint.clone(), owner }));
                }
            }
            for user in touched {
                w.changed(Changed::User(user))?;
            }
            Ok(results)
        })
    }
}
