//! The web service's secrets: password hashes, invitations, sessions and API tokens.
//!
//! They live in their own SQLite file, readable by the service's user alone, because the
//! key store is group-readable by every managed user (see docs/DESIGN.md). Only hashes of
//! invitation links, session ids and tokens are stored: a copy of the file opens nothing.

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

pub struct Secrets {
    conn: Connection,
    path: String,
}

impl Secrets {
    /// Opens (or with `create`, creates) the secrets file and brings its schema up to date.
    pub fn open(path: &Path, busy_timeout_ms: u32, create: bool) -> Result<Secrets, StoreError> {
        let mut conn = writer_connection(path, busy_timeout_ms, create)?;
        let shown = path.display().to_string();
        migrate_connection(&mut conn, &shown, MIGRATIONS)?;
        Ok(Secrets { conn, path: shown })
    }

    fn fail(&self, e: rusqlite::Error) -> StoreError {
        db_error(&self.path, e)
    }

    pub fn set_password(&self, user: &str, password: &str, now: Timestamp) -> Result<(), StoreError> {
        let hash = Argon2::default()
            .hash_password(password.as_bytes())
            .map_err(|e| StoreError::Unavailable { path: self.path.clone(), reason: format!("argon2: {e}") })?
            .to_string();
        upsert(&self.conn, "passwords", "user", &["hash", "updated"], params![user, hash, now])
            .map_err(|e| self.fail(e))
    }

    /// Whether `password` is `user`'s. A user without a password costs the same time as a
    /// wrong password, so the answer does not tell which users exist.
    pub fn check_password(&self, user: &str, password: &str) -> Result<bool, StoreError> {
        // A fixed hash of a random string, verified when the user has none.
        const DUMMY: &str =
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$PcmM4hsnT7v0tq2pOEIOe0H95W0Tk8sFbU6ySbqUSdE";
        let stored: Option<String> = self
            .conn
            .query_row("SELECT hash FROM passwords WHERE user = ?1", [user], |r| r.get(0))
            .optional()
            .map_err(|e| self.fail(e))?;
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| DUMMY.to_string());
        let matches = PasswordHash::new(&hash)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        Ok(exists && matches)
    }

    pub fn has_password(&self, user: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT 1 FROM passwords WHERE user = ?1", [user], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.fail(e))
    }

    /// A one-time invitation for `user`; returns the secret for the link.
    pub fn create_invite(&self, user: &str, now: Timestamp, lifetime: Duration) -> Result<String, StoreError> {
        let token = random_secret().map_err(|e| StoreError::Unavailable { path: self.path.clone(), reason: e })?;
        self.conn
            .execute(
                "INSERT INTO invites (token_hash, user, created, expires) VALUES (?1, ?2, ?3, ?4)",
                params![digest(&token), user, now, now.saturating_add(lifetime)],
            )
            .map_err(|e| self.fail(e))?;
        Ok(token)
    }

    /// The user an unexpired invitation is for, without using it up.
    pub fn invite_user(&self, token: &str, now: Timestamp) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT user FROM invites WHERE token_hash = ?1 AND expires > ?2",
                params![digest(token), now],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Uses up an invitation: deleted whether or not it was still valid.
    pub fn take_invite(&self, token: &str, now: Timestamp) -> Result<Option<String>, StoreError> {
        let user = self.invite_user(token, now)?;
        self.conn.execute("DELETE FROM invites WHERE token_hash = ?1", [digest(token)]).map_err(|e| self.fail(e))?;
        Ok(user)
    }

    /// Starts a session; returns its id (for the cookie) and CSRF token.
    pub fn create_session(&self, user: &str, now: Timestamp) -> Result<(String, String), StoreError> {
        let random = || random_secret().map_err(|e| StoreError::Unavailable { path: self.path.clone(), reason: e });
        let (id, csrf) = (random()?, random()?);
        self.conn
            .execute(
                "INSERT INTO sessions (id_hash, user, csrf, created, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![digest(&id), user, csrf, now],
            )
            .map_err(|e| self.fail(e))?;
        Ok((id, csrf))
    }

    /// The live session with this id; expired ones are removed on sight.
    pub fn session(&self, id: &str, now: Timestamp, limits: SessionLimits) -> Result<Option<Session>, StoreError> {
        let found: Option<(String, String, Timestamp, Timestamp)> = self
            .conn
            .query_row("SELECT user, csrf, created, last_seen FROM sessions WHERE id_hash = ?1", [digest(id)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(|e| self.fail(e))?;
        let Some((user, csrf, created, last_seen)) = found else {
            return Ok(None);
        };
        let idle = now.saturating_duration_since(last_seen);
        if idle > limits.idle || now.saturating_duration_since(created) > limits.absolute {
            self.end_session(id)?;
            return Ok(None);
        }
        if idle >= SEEN_EVERY {
            self.conn
                .execute("UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1", params![digest(id), now])
                .map_err(|e| self.fail(e))?;
        }
        Ok(Some(Session { user, csrf }))
    }

    pub fn end_session(&self, id: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [digest(id)]).map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Ends every session of `user` (disabled or removed users, password changes).
    pub fn end_sessions_of(&self, user: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM sessions WHERE user = ?1", [user]).map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Everything that would let a later user of the same name in: password, invitations,
    /// sessions, and tokens limited to this user (revoked).
    pub fn forget_user(&self, user: &str, now: Timestamp) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM passwords WHERE user = ?1", [user]).map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM invites WHERE user = ?1", [user]).map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM sessions WHERE user = ?1", [user]).map_err(|e| self.fail(e))?;
        tx.execute(
            "UPDATE tokens SET revoked = ?2 WHERE scope = ?1 AND revoked IS NULL",
            params![format!("user:{user}"), now],
        )
        .map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))
    }

    /// Creates an API token; returns its id and the token, shown once.
    pub fn create_token(&self, scope: &TokenScope, label: &str, now: Timestamp) -> Result<(i64, String), StoreError> {
        let secret = random_secret().map_err(|e| StoreError::Unavailable { path: self.path.clone(), reason: e })?;
        // A prefix of our own, so secret scanners can tell these from other services' tokens.
        let token = format!("gatehouse_{secret}");
        self.conn
            .execute(
                "INSERT INTO tokens (token_hash, scope, label, created) VALUES (?1, ?2, ?3, ?4)",
                params![digest(&token), scope.as_string(), label, now],
            )
            .map_err(|e| self.fail(e))?;
        Ok((self.conn.last_insert_rowid(), token))
    }

    /// The scope of a live token, recording its use.
    pub fn use_token(&self, token: &str, now: Timestamp) -> Result<Option<(i64, TokenScope)>, StoreError> {
        let found: Option<(i64, String, Option<Timestamp>)> = self
            .conn
            .query_row(
                "SELECT id, scope, last_used FROM tokens WHERE token_hash = ?1 AND revoked IS NULL",
                [digest(token)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.fail(e))?;
        let Some((id, scope, last_used)) = found else {
            return Ok(None);
        };
        if last_used.is_none_or(|t| now.saturating_duration_since(t) >= SEEN_EVERY) {
            self.conn
                .execute("UPDATE tokens SET last_used = ?2 WHERE id = ?1", params![id, now])
                .map_err(|e| self.fail(e))?;
        }
        Ok(TokenScope::parse(&scope).ok().map(|s| (id, s)))
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
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

    /// Revokes a token; false when there was no live token with that id.
    pub fn revoke_token(&self, id: i64, now: Timestamp) -> Result<bool, StoreError> {
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
