//! The web service's secrets: password hashes, invitations, sessions and API tokens.
//!
//! [`Secrets`] holds the rules (argon2id for passwords, SHA-256 digests of invitation
//! links, session ids and tokens, the lifetimes, how often a use is written down) over a
//! [`SecretRows`], the storage: this host's SQLite file ([`SqliteSecrets`], readable by
//! the service's user alone, because the key store is group-readable by every managed
//! user; see docs/DESIGN.md), or with `[source]` the shared PostgreSQL
//! ([`crate::store::postgres::secrets::PgSecrets`]), so that several gatehoused side by
//! side share sign-ins and tokens. Only hashes are stored: a copy of either opens nothing.

use crate::store::db::{db_error, migrate_connection, upsert, writer_connection};
use crate::store::StoreError;
use crate::time::Timestamp;
use argon2::password_hash::{phc::PasswordHash, PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64ct::{Base64UrlUnpadded, Encoding};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

const MIGRATIONS: &[&str] = &["
    CREATE TABLE passwords (
        user    TEXT PRIMARY KEY,
        hash    TEXT NOT NULL,
        updated INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE invites (
        token_hash TEXT PRIMARY KEY,
        user       TEXT NOT NULL,
        created    INTEGER NOT NULL,
        expires    INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE sessions (
        id_hash   TEXT PRIMARY KEY,
        user      TEXT NOT NULL,
        csrf      TEXT NOT NULL,
        created   INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX sessions_by_user ON sessions (user);
    CREATE TABLE tokens (
        id         INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        scope      TEXT NOT NULL,
        label      TEXT NOT NULL,
        created    INTEGER NOT NULL,
        last_used  INTEGER,
        revoked    INTEGER
    ) STRICT;
    "];

/// A fresh random secret, 32 bytes, base64url.
pub fn random_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the kernel: {e}"))?;
    Ok(Base64UrlUnpadded::encode_string(&bytes))
}

fn digest(secret: &str) -> String {
    Base64UrlUnpadded::encode_string(&Sha256::digest(secret.as_bytes()))
}

/// Compares without an early exit, so timing does not tell how much matched.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an API token may do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum TokenScope {
    /// Everything the API offers.
    Admin,
    /// Only this user's own keys.
    User(String),
}

impl TokenScope {
    pub fn parse(text: &str) -> Result<TokenScope, String> {
        match text {
            "admin" => Ok(TokenScope::Admin),
            t if t.starts_with("user:") && t.len() > 5 => Ok(TokenScope::User(t[5..].to_string())),
            _ => Err(format!("`{}` is not a token scope (admin, user:NAME)", text.escape_debug())),
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            TokenScope::Admin => "admin".to_string(),
            TokenScope::User(u) => format!("user:{u}"),
        }
    }
}

/// A token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub scope: String,
    pub label: String,
    pub created: Timestamp,
    pub last_used: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub csrf: String,
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle: Duration,
    pub absolute: Duration,
}

/// How often the last use of a session or token is written down, at most: a page view or
/// an API call is not a write.
const SEEN_EVERY: Duration = Duration::from_secs(60);

/// A session as stored: who, its CSRF token, when it began and was last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub user: String,
    pub csrf: String,
    pub created: Timestamp,
    pub last_seen: Timestamp,
}

/// A live token as stored: its id, scope and last use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub scope: String,
    pub last_used: Option<Timestamp>,
}

/// The storage behind [`Secrets`]: rows keyed by digests, no rules. Every method is one
/// statement or one transaction, so that several services writing the same rows at once
/// (gatehoused side by side on PostgreSQL) never see half a change; an invitation is
/// taken by one delete that returns it, so two services cannot both use it.
pub trait SecretRows: Send {
    /// Where the rows live, for errors.
    fn at(&self) -> &str;
    fn password_hash(&self, user: &str) -> Result<Option<String>, StoreError>;
    fn put_password(&self, user: &str, hash: &str, now: Timestamp) -> Result<(), StoreError>;
    fn put_invite(&self, digest: &str, user: &str, now: Timestamp, expires: Timestamp) -> Result<(), StoreError>;
    /// The user and expiry of an invitation.
    fn invite(&self, digest: &str) -> Result<Option<(String, Timestamp)>, StoreError>;
    /// Deletes an invitation, returning what it was.
    fn take_invite(&self, digest: &str) -> Result<Option<(String, Timestamp)>, StoreError>;
    fn put_session(&self, digest: &str, user: &str, csrf: &str, now: Timestamp) -> Result<(), StoreError>;
    fn session(&self, digest: &str) -> Result<Option<SessionRow>, StoreError>;
    fn touch_session(&self, digest: &str, now: Timestamp) -> Result<(), StoreError>;
    fn end_session(&self, digest: &str) -> Result<(), StoreError>;
    fn end_sessions_of(&self, user: &str) -> Result<(), StoreError>;
    /// In one transaction: `user`'s password, invitations and sessions deleted, live
    /// tokens of `scope` revoked at `now`.
    fn forget_user(&self, user: &str, scope: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Inserts a token; its id.
    fn put_token(&self, digest: &str, scope: &str, label: &str, now: Timestamp) -> Result<i64, StoreError>;
    /// The live (unrevoked) token with this digest.
    fn live_token(&self, digest: &str) -> Result<Option<TokenRow>, StoreError>;
    fn touch_token(&self, id: i64, now: Timestamp) -> Result<(), StoreError>;
    fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;
    /// Revokes a live token; false when there was none with that id.
    fn revoke_token(&self, id: i64, now: Timestamp) -> Result<bool, StoreError>;
}

/// The web service's secrets, wherever they are stored: the one place of their rules.
pub struct Secrets {
    rows: Box<dyn SecretRows>,
}

impl Secrets {
    /// Opens (or with `create`, creates) the secrets file and brings its schema up to date.
    pub fn open(path: &Path, busy_timeout_ms: u32, create: bool) -> Result<Secrets, StoreError> {
        Ok(Secrets::with_rows(Box::new(SqliteSecrets::open(path, busy_timeout_ms, create)?)))
    }

    /// The secrets where `config` keeps them: with `[source]`, the shared PostgreSQL (its
    /// schema must be current: `gatehouse init`); else the file `web.secrets`.
    pub fn for_config(config: &crate::config::Config) -> Result<Secrets, StoreError> {
        #[cfg(feature = "postgres")]
        if let Some(shared) = &config.shared {
            return Ok(Secrets::with_rows(Box::new(crate::store::postgres::secrets::PgSecrets::open(shared)?)));
        }
        Secrets::open(&config.web.secrets, config.store.busy_timeout_ms, false)
    }

    pub fn with_rows(rows: Box<dyn SecretRows>) -> Secrets {
        Secrets { rows }
    }

    fn no_randomness(&self, reason: String) -> StoreError {
        StoreError::Unavailable { path: self.rows.at().to_string(), reason }
    }

    pub fn set_password(&self, user: &str, password: &str, now: Timestamp) -> Result<(), StoreError> {
        let hash = Argon2::default()
            .hash_password(password.as_bytes())
            .map_err(|e| self.no_randomness(format!("argon2: {e}")))?
            .to_string();
        self.rows.put_password(user, &hash, now)
    }

    /// Whether `password` is `user`'s. A user without a password costs the same time as a
    /// wrong password, so the answer does not tell which users exist.
    pub fn check_password(&self, user: &str, password: &str) -> Result<bool, StoreError> {
        // A fixed hash of a random string, verified when the user has none.
        const DUMMY: &str =
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$PcmM4hsnT7v0tq2pOEIOe0H95W0Tk8sFbU6ySbqUSdE";
        let stored = self.rows.password_hash(user)?;
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| DUMMY.to_string());
        let matches = PasswordHash::new(&hash)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        Ok(exists && matches)
    }

    pub fn has_password(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.rows.password_hash(user)?.is_some())
    }

    /// A one-time invitation for `user`; returns the secret for the link.
    pub fn create_invite(&self, user: &str, now: Timestamp, lifetime: Duration) -> Result<String, StoreError> {
        let token = random_secret().map_err(|e| self.no_randomness(e))?;
        self.rows.put_invite(&digest(&token), user, now, now.saturating_add(lifetime))?;
        Ok(token)
    }

    /// The user an unexpired invitation is for, without using it up.
    pub fn invite_user(&self, token: &str, now: Timestamp) -> Result<Option<String>, StoreError> {
        Ok(self.rows.invite(&digest(token))?.filter(|(_, expires)| *expires > now).map(|(user, _)| user))
    }

    /// Uses up an invitation: deleted whether or not it was still valid.
    pub fn take_invite(&self, token: &str, now: Timestamp) -> Result<Option<String>, StoreError> {
        Ok(self.rows.take_invite(&digest(token))?.filter(|(_, expires)| *expires > now).map(|(user, _)| user))
    }

    /// Starts a session; returns its id (for the cookie) and CSRF token.
    pub fn create_session(&self, user: &str, now: Timestamp) -> Result<(String, String), StoreError> {
        let (id, csrf) =
            (random_secret().map_err(|e| self.no_randomness(e))?, random_secret().map_err(|e| self.no_randomness(e))?);
        self.rows.put_session(&digest(&id), user, &csrf, now)?;
        Ok((id, csrf))
    }

    /// The live session with this id; expired ones are removed on sight.
    pub fn session(&self, id: &str, now: Timestamp, limits: SessionLimits) -> Result<Option<Session>, StoreError> {
        let key = digest(id);
        let Some(row) = self.rows.session(&key)? else {
            return Ok(None);
        };
        let idle = now.saturating_duration_since(row.last_seen);
        if idle > limits.idle || now.saturating_duration_since(row.created) > limits.absolute {
            self.rows.end_session(&key)?;
            return Ok(None);
        }
        if idle >= SEEN_EVERY {
            self.rows.touch_session(&key, now)?;
        }
        Ok(Some(Session { user: row.user, csrf: row.csrf }))
    }

    pub fn end_session(&self, id: &str) -> Result<(), StoreError> {
        self.rows.end_session(&digest(id))
    }

    /// Ends every session of `user` (disabled or removed users, password changes).
    pub fn end_sessions_of(&self, user: &str) -> Result<(), StoreError> {
        self.rows.end_sessions_of(user)
    }

    /// Everything that would let a later user of the same name in: password, invitations,
    /// sessions, and tokens limited to this user (revoked).
    pub fn forget_user(&self, user: &str, now: Timestamp) -> Result<(), StoreError> {
        self.rows.forget_user(user, &TokenScope::User(user.to_string()).as_string(), now)
    }

    /// Creates an API token; returns its id and the token, shown once.
    pub fn create_token(&self, scope: &TokenScope, label: &str, now: Timestamp) -> Result<(i64, String), StoreError> {
        let secret = random_secret().map_err(|e| self.no_randomness(e))?;
        // A prefix of our own, so secret scanners can tell these from other services' tokens.
        let token = format!("gatehouse_{secret}");
        let id = self.rows.put_token(&digest(&token), &scope.as_string(), label, now)?;
        Ok((id, token))
    }

    /// The scope of a live token, recording its use.
    pub fn use_token(&self, token: &str, now: Timestamp) -> Result<Option<(i64, TokenScope)>, StoreError> {
        let Some(row) = self.rows.live_token(&digest(token))? else {
            return Ok(None);
        };
        if row.last_used.is_none_or(|t| now.saturating_duration_since(t) >= SEEN_EVERY) {
            self.rows.touch_token(row.id, now)?;
        }
        Ok(TokenScope::parse(&row.scope).ok().map(|s| (row.id, s)))
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.rows.tokens()
    }

    /// Revokes a token; false when there was no live token with that id.
    pub fn revoke_token(&self, id: i64, now: Timestamp) -> Result<bool, StoreError> {
        self.rows.revoke_token(id, now)
    }
}

/// What a host's secrets file holds that outlives a sign-in, copied as stored (digests
/// and hashes) by `gatehouse source import`. Sessions are not: browsers sign in again.
#[derive(Debug, Clone, Default)]
pub struct SecretsExport {
    /// (user, argon2 hash, updated)
    pub passwords: Vec<(String, String, Timestamp)>,
    /// (digest, user, created, expires), unexpired or not
    pub invites: Vec<(String, String, Timestamp, Timestamp)>,
    /// Every token, revoked ones too, with its digest.
    pub tokens: Vec<(TokenInfo, String)>,
}

/// The secrets in their own SQLite file (`web.secrets`).
pub struct SqliteSecrets {
    conn: Connection,
    path: String,
}

impl SqliteSecrets {
    pub fn open(path: &Path, busy_timeout_ms: u32, create: bool) -> Result<SqliteSecrets, StoreError> {
        let mut conn = writer_connection(path, busy_timeout_ms, create)?;
        let shown = path.display().to_string();
        migrate_connection(&mut conn, &shown, MIGRATIONS)?;
        Ok(SqliteSecrets { conn, path: shown })
    }

    fn fail(&self, e: rusqlite::Error) -> StoreError {
        db_error(&self.path, e)
    }

    /// Everything [`SecretsExport`] names, read in one transaction.
    pub fn export(&self) -> Result<SecretsExport, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.fail(e))?;
        let read = || -> rusqlite::Result<SecretsExport> {
            let passwords = tx
                .prepare("SELECT user, hash, updated FROM passwords ORDER BY user")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let invites = tx
                .prepare("SELECT token_hash, user, created, expires FROM invites ORDER BY created")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let tokens = tx
                .prepare("SELECT id, scope, label, created, last_used, revoked, token_hash FROM tokens ORDER BY id")?
                .query_map([], |r| {
                    Ok((
                        TokenInfo {
                            id: r.get(0)?,
                            scope: r.get(1)?,
                            label: r.get(2)?,
                            created: r.get(3)?,
                            last_used: r.get(4)?,
                            revoked: r.get(5)?,
                        },
                        r.get(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(SecretsExport { passwords, invites, tokens })
        };
        let export = read().map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))?;
        Ok(export)
    }
}

impl SecretRows for SqliteSecrets {
    fn at(&self) -> &str {
        &self.path
    }

    fn password_hash(&self, user: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT hash FROM passwords WHERE user = ?1", [user], |r| r.get(0))
            .optional()
            .map_err(|e| self.fail(e))
    }

    fn put_password(&self, user: &str, hash: &str, now: Timestamp) -> Result<(), StoreError> {
        upsert(&self.conn, "passwords", "user", &["hash", "updated"], params![user, hash, now])
            .map_err(|e| self.fail(e))
    }

    fn put_invite(&self, digest: &str, user: &str, now: Timestamp, expires: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO invites (token_hash, user, created, expires) VALUES (?1, ?2, ?3, ?4)",
                params![digest, user, now, expires],
            )
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn invite(&self, digest: &str) -> Result<Option<(String, Timestamp)>, StoreError> {
        self.conn
            .query_row("SELECT user, expires FROM invites WHERE token_hash = ?1", [digest], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.fail(e))
    }

    fn take_invite(&self, digest: &str) -> Result<Option<(String, Timestamp)>, StoreError> {
        self.conn
            .query_row("DELETE FROM invites WHERE token_hash = ?1 RETURNING user, expires", [digest], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.fail(e))
    }

    fn put_session(&self, digest: &str, user: &str, csrf: &str, now: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sessions (id_hash, user, csrf, created, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![digest, user, csrf, now],
            )
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn session(&self, digest: &str) -> Result<Option<SessionRow>, StoreError> {
        self.conn
            .query_row("SELECT user, csrf, created, last_seen FROM sessions WHERE id_hash = ?1", [digest], |r| {
                Ok(SessionRow { user: r.get(0)?, csrf: r.get(1)?, created: r.get(2)?, last_seen: r.get(3)? })
            })
            .optional()
            .map_err(|e| self.fail(e))
    }

    fn touch_session(&self, digest: &str, now: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1", params![digest, now])
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn end_session(&self, digest: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [digest]).map(|_| ()).map_err(|e| self.fail(e))
    }

    fn end_sessions_of(&self, user: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM sessions WHERE user = ?1", [user]).map(|_| ()).map_err(|e| self.fail(e))
    }

    fn forget_user(&self, user: &str, scope: &str, now: Timestamp) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM passwords WHERE user = ?1", [user]).map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM invites WHERE user = ?1", [user]).map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM sessions WHERE user = ?1", [user]).map_err(|e| self.fail(e))?;
        tx.execute("UPDATE tokens SET revoked = ?2 WHERE scope = ?1 AND revoked IS NULL", params![scope, now])
            .map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))
    }

    fn put_token(&self, digest: &str, scope: &str, label: &str, now: Timestamp) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO tokens (token_hash, scope, label, created) VALUES (?1, ?2, ?3, ?4)",
                params![digest, scope, label, now],
            )
            .map_err(|e| self.fail(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn live_token(&self, digest: &str) -> Result<Option<TokenRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, scope, last_used FROM tokens WHERE token_hash = ?1 AND revoked IS NULL",
                [digest],
                |r| Ok(TokenRow { id: r.get(0)?, scope: r.get(1)?, last_used: r.get(2)? }),
            )
            .optional()
            .map_err(|e| self.fail(e))
    }

    fn touch_token(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE tokens SET last_used = ?2 WHERE id = ?1", params![id, now])
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.conn
            .prepare("SELECT id, scope, label, created, last_used, revoked FROM tokens ORDER BY id")
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok(TokenInfo {
                        id: r.get(0)?,
                        scope: r.get(1)?,
                        label: r.get(2)?,
                        created: r.get(3)?,
                        last_used: r.get(4)?,
                        revoked: r.get(5)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.fail(e))
    }

    fn revoke_token(&self, id: i64, now: Timestamp) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .execute("UPDATE tokens SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL", params![id, now])
            .map_err(|e| self.fail(e))?;
        Ok(changed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn secrets() -> (std::path::PathBuf, Secrets) {
        let dir = std::env::temp_dir().join(format!("gh-secrets-{}-{}", std::process::id(), random_secret().unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Secrets::open(&dir.join("web.db"), 1000, true).unwrap();
        (dir, s)
    }

    #[test]
    fn passwords_invites_sessions_tokens() {
        let (dir, s) = secrets();
        assert!(!s.check_password("alice", "pw").unwrap());
        s.set_password("alice", "correct horse", at(0)).unwrap();
        assert!(s.check_password("alice", "correct horse").unwrap());
        assert!(!s.check_password("alice", "wrong").unwrap());

        let invite = s.create_invite("alice", at(100), Duration::from_secs(50)).unwrap();
        assert_eq!(s.invite_user(&invite, at(120)).unwrap().as_deref(), Some("alice"));
        assert_eq!(s.invite_user(&invite, at(150)).unwrap(), None, "expired");
        assert_eq!(s.take_invite(&invite, at(120)).unwrap().as_deref(), Some("alice"));
        assert_eq!(s.take_invite(&invite, at(120)).unwrap(), None, "used twice");

        let limits = SessionLimits { idle: Duration::from_secs(100), absolute: Duration::from_secs(1000) };
        let (id, csrf) = s.create_session("alice", at(0)).unwrap();
        assert_eq!(s.session(&id, at(70), limits).unwrap(), Some(Session { user: "alice".into(), csrf: csrf.clone() }));
        assert_eq!(s.session(&id, at(151), limits).unwrap(), Some(Session { user: "alice".into(), csrf }));
        assert_eq!(s.session(&id, at(1001), limits).unwrap(), None, "absolute timeout");
        let (id2, _) = s.create_session("alice", at(0)).unwrap();
        assert_eq!(s.session(&id2, at(101), limits).unwrap(), None, "idle timeout");
        assert_eq!(s.session("forged", at(1), limits).unwrap(), None);

        let (tid, token) = s.create_token(&TokenScope::User("alice".into()), "ci", at(0)).unwrap();
        assert_eq!(s.use_token(&token, at(5)).unwrap(), Some((tid, TokenScope::User("alice".into()))));
        assert_eq!(s.use_token("gatehouse_nope", at(5)).unwrap(), None);
        assert!(s.revoke_token(tid, at(6)).unwrap());
        assert_eq!(s.use_token(&token, at(7)).unwrap(), None);
        assert_eq!(s.tokens().unwrap()[0].revoked, Some(at(6)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn helpers() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert_ne!(random_secret().unwrap(), random_secret().unwrap());
        assert_eq!(TokenScope::parse("user:bob"), Ok(TokenScope::User("bob".into())));
        assert!(TokenScope::parse("user:").is_err());
        assert!(TokenScope::parse("root").is_err());
    }
}
