//! Password checks against the directory: find the user's entry (as the service account,
//! with the name escaped into the filter), require exactly one, then bind as it.

use crate::client::{Directory, DirectoryError};
use gatehouse::config::LdapConfig;

/// Why a password was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Empty passwords never reach the directory: an empty simple bind is an
    /// "unauthenticated bind", which many servers answer with success.
    Empty,
    NoSuchUser,
    /// The name matched more than one entry.
    Ambiguous,
    Locked,
    WrongPassword,
}

/// Checks `password` for `user`. `Ok(Err(_))` is a refusal; `Err` the directory failing
/// (which the caller must treat as a refusal too, and log differently).
pub fn check(cfg: &LdapConfig, user: &str, password: &str) -> Result<Result<(), Refusal>, DirectoryError> {
    if password.is_empty() {
        return Ok(Err(Refusal::Empty));
    }
    if password.contains('\0') || password.len() > 1024 {
        return Ok(Err(Refusal::WrongPassword));
    }
    let mut dir = Directory::connect(cfg)?;
    let filter = format!("(&{}({}={}))", cfg.user_filter, cfg.user_attribute, ldap3::ldap_escape(user));
    let entries = dir.search(&filter, &crate::sync::STATE_ATTRIBUTES)?;
    dir.unbind();
    let entry = match entries.as_slice() {
        [] => return Ok(Err(Refusal::NoSuchUser)),
        [one] => one,
        _ => return Ok(Err(Refusal::Ambiguous)),
    };
    if !crate::sync::entry_enabled(entry, gatehouse::time::now()) {
        return Ok(Err(Refusal::Locked));
    }
    // A fresh connection, so the user's bind never rides on the service account's.
    let mut as_user = Directory::connect_anonymous(cfg)?;
    let result = match as_user.bind(&entry.dn, password) {
        Ok(()) => Ok(Ok(())),
        Err(DirectoryError::Search(_)) => Ok(Err(Refusal::WrongPassword)),
        Err(e) => Err(e),
    };
    as_user.unbind();
    result
}
