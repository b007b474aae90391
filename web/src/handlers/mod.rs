//! Request handlers: the browser's pages and the JSON API. Each takes what it needs from
//! the extractors (`crate::extract`), which have run the session, token, same-origin, CSRF
//! and rate-limit checks, and reaches the databases through `App::blocking` only.

pub mod api;
pub mod health;
pub mod pages;

use crate::error::WebError;
use crate::state::Db;

/// Keys of directory accounts live in the directory, unless `ldap.allow_web_keys`.
fn directory_keys_guard(db: &Db<'_>, user: &str) -> Result<(), WebError> {
    let allowed = db.config.ldap.as_ref().is_none_or(|l| l.allow_web_keys);
    if !allowed && db.store().user(user).is_ok_and(|u| u.source == "ldap") {
        return Err(WebError::Forbidden("this account's keys are managed in the directory".to_string()));
    }
    Ok(())
}
