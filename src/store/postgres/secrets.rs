//! The web service's secrets on the shared PostgreSQL (`[source]`): the rows behind
//! [`crate::store::secrets::Secrets`] in the `web_*` tables of the source's schema
//! (version 2), so that every gatehoused sees the same passwords, invitations, sessions
//! and tokens. The rules stay in `Secrets`; this is storage only.

use super::{connect, current_version, keep_alive, pg_error, version_of};
use crate::config::SourceConfig;
use crate::store::secrets::{SecretRows, SessionRow, TokenInfo, TokenRow};
use crate::store::StoreError;
use crate::time::Timestamp;
use ::postgres::Client;
use std::cell::{Cell, RefCell};
use std::time::Instant;

pub struct PgSecrets {
    /// One connection, used by one thread at a time (gatehoused keeps a pool).
    client: RefCell<Client>,
    cfg: SourceConfig,
    used: Cell<Instant>,
    at: String,
}

impl PgSecrets {
    /// Connects and checks that the schema is the one this build speaks.
    pub fn open(cfg: &SourceConfig) -> Result<PgSecrets, StoreError> {
        let at = cfg.url.clone();
        let mut client = connect(cfg)?;
        let found = version_of(&mut client, &at)?;
        if found != current_version() {
            return Err(StoreError::Version { path: at, found, expected: current_version() });
        }
        Ok(PgSecrets { client: RefCell::new(client), cfg: cfg.clone(), used: Cell::new(Instant::now()), at })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, ::postgres::Error>) -> Result<T, StoreError> {
        let mut client = self.client.try_borrow_mut().map_err(|_| StoreError::Unavailable {
            path: self.at.clone(),
            reason: "connection already in use".into(),
        })?;
        keep_alive(&mut client, &self.cfg, &self.used)?;
        f(&mut client).map_err(|e| pg_error(&self.at, e))
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

impl SecretRows for PgSecrets {
    fn at(&self) -> &str {
        &self.at
    }

    fn password_hash(&self, user: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| Ok(c.query_opt("SELECT hash FROM web_passwords WHERE name = $1", &[&user])?.map(|r| r.get(0))))
    }

    fn put_password(&self, user: &str, hash: &str, now: Timestamp) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO web_passwords (name, hash, updated) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, updated = excluded.updated",
                &[&user, &hash, &now.as_secs()],
            )
            .map(|_| ())
        })
    }

    fn put_invite(&self, digest: &str, user: &str, now: Timestamp, expires: Timestamp) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO web_invites (token_hash, name, created, expires) VALUES ($1, $2, $3, $4)",
                &[&digest, &user, &now.as_secs(), &expires.as_secs()],
            )
            .map(|_| ())
        })
    }

    fn invite(&self, digest: &str) -> Result<Option<(String, Timestamp)>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt("SELECT name, expires FROM web_invites WHERE token_hash = $1", &[&digest])?
                .map(|r| (r.get(0), at(r.get(1)))))
        })
    }

    fn take_invite(&self, digest: &str) -> Result<Option<(String, Timestamp)>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt("DELETE FROM web_invites WHERE token_hash = $1 RETURNING name, expires", &[&digest])?
                .map(|r| (r.get(0), at(r.get(1)))))
        })
    }

    fn put_session(&self, digest: &str, user: &str, csrf: &str, now: Timestamp) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO web_sessions (id_hash, name, csrf, created, last_seen) VALUES ($1, $2, $3, $4, $4)",
                &[&digest, &user, &csrf, &now.as_secs()],
            )
            .map(|_| ())
        })
    }

    fn session(&self, digest: &str) -> Result<Option<SessionRow>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt("SELECT name, csrf, created, last_seen FROM web_sessions WHERE id_hash = $1", &[&digest])?
                .map(|r| SessionRow { user: r.get(0), csrf: r.get(1), created: at(r.get(2)), last_seen: at(r.get(3)) }))
        })
    }

    fn touch_session(&self, digest: &str, now: Timestamp) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("UPDATE web_sessions SET last_seen = $2 WHERE id_hash = $1", &[&digest, &now.as_secs()])
                .map(|_| ())
        })
    }

    fn end_session(&self, digest: &str) -> Result<(), StoreError> {
        self.with(|c| c.execute("DELETE FROM web_sessions WHERE id_hash = $1", &[&digest]).map(|_| ()))
    }

    fn end_sessions_of(&self, user: &str) -> Result<(), StoreError> {
        self.with(|c| c.execute("DELETE FROM web_sessions WHERE name = $1", &[&user]).map(|_| ()))
    }

    fn forget_user(&self, user: &str, scope: &str, now: Timestamp) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM web_passwords WHERE name = $1", &[&user])?;
            tx.execute("DELETE FROM web_invites WHERE name = $1", &[&user])?;
            tx.execute("DELETE FROM web_sessions WHERE name = $1", &[&user])?;
            tx.execute(
                "UPDATE web_tokens SET revoked = $2 WHERE scope = $1 AND revoked IS NULL",
                &[&scope, &now.as_secs()],
            )?;
            tx.commit()
        })
    }

    fn put_token(&self, digest: &str, scope: &str, label: &str, now: Timestamp) -> Result<i64, StoreError> {
        self.with(|c| {
            Ok(c.query_one(
                "INSERT INTO web_tokens (token_hash, scope, label, created) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&digest, &scope, &label, &now.as_secs()],
            )?
            .get(0))
        })
    }

    fn live_token(&self, digest: &str) -> Result<Option<TokenRow>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT id, scope, last_used FROM web_tokens WHERE token_hash = $1 AND revoked IS NULL",
                &[&digest],
            )?
            .map(|r| TokenRow {
                id: r.get(0),
                scope: r.get(1),
                last_used: r.get::<_, Option<i64>>(2).map(at),
            }))
        })
    }

    fn touch_token(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("UPDATE web_tokens SET last_used = $2 WHERE id = $1", &[&id, &now.as_secs()]).map(|_| ())
        })
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.with(|c| {
            Ok(c.query("SELECT id, scope, label, created, last_used, revoked FROM web_tokens ORDER BY id", &[])?
                .iter()
                .map(|r| TokenInfo {
                    id: r.get(0),
                    scope: r.get(1),
                    label: r.get(2),
                    created: at(r.get(3)),
                    last_used: r.get::<_, Option<i64>>(4).map(at),
                    revoked: r.get::<_, Option<i64>>(5).map(at),
                })
                .collect())
        })
    }

    fn revoke_token(&self, id: i64, now: Timestamp) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE web_tokens SET revoked = $2 WHERE id = $1 AND revoked IS NULL",
                &[&id, &now.as_secs()],
            )? > 0)
        })
    }
}
