//! `gatehouse init`: create the store, or bring an existing one up to date.

use super::AdminError;
use crate::config::Config;
use crate::store::sqlite::SqliteStore;
use crate::store::Actor;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn refused(what: impl std::fmt::Display) -> AdminError {
    AdminError::Refused(what.to_string())
}

/// The store file and the two WAL companions that must outlive every writer.
pub fn store_files(store: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = store.as_os_str().to_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    [store.to_path_buf(), with("-wal"), with("-shm")]
}

/// Returns the audit action taken (`store.init`, `store.upgrade`), if any.
/// Creates or upgrades the store at `config.store.path`; the folder is made 0750 and the
/// files 0640, owned by `owner`/`group` when given, so that the key-command user needs only
/// group membership to read.
pub fn init(
    config: &Config,
    owner: Option<&str>,
    group: Option<&str>,
    actor: &Actor,
    out: &mut dyn Write,
) -> Result<Option<&'static str>, AdminError> {
    let uid = match owner {
        Some(name) => Some(
            nix::unistd::User::from_name(name)
                .map_err(|e| refused(format!("--owner {name}: {e}")))?
                .ok_or_else(|| refused(format!("--owner {name}: no such user")))?
                .uid,
        ),
        None => None,
    };
    let gid = match group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .map_err(|e| refused(format!("--group {name}: {e}")))?
                .ok_or_else(|| refused(format!("--group {name}: no such group")))?
                .gid,
        ),
        None => None,
    };
    let path = &config.store.path;
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| refused(format!("creating {}: {e}", dir.display())))?;
            if uid.is_some() || gid.is_some() {
                nix::unistd::chown(dir, uid, gid).map_err(|e| refused(format!("chown {}: {e}", dir.display())))?;
            }
        }
    }
    let mut store = SqliteStore::create(path, config.store.busy_timeout_ms, config.users.uid_range())?;
    let before = store.version()?;
    let version = store.migrate()?;
    // Users from before the store allocated uids keep the account they have here.
    let account_uid = |name: &str| {
        nix::unistd::User::from_name(name).ok().flatten().filter(|u| u.name == name).map(|u| u.uid.as_raw())
    };
    let given = store.assign_missing_uids(&account_uid)?;
    drop(store);
    for (user, uid) in &given {
        let said = match uid {
            Some(uid) => format!("user {user}: uid {uid}"),
            None => format!("user {user}: no uid left in users.uid_min..uid_max; widen the range and run init again"),
        };
        writeln!(out, "{said}").map_err(super::io)?;
    }
    for file in store_files(path) {
        if !file.exists() {
            return Err(refused(format!(
                "{}: missing after init; the store's folder must be writable",
                file.display()
            )));
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640))
            .map_err(|e| refused(format!("chmod {}: {e}", file.display())))?;
        if uid.is_some() || gid.is_some() {
            nix::unistd::chown(&file, uid, gid).map_err(|e| refused(format!("chown {}: {e}", file.display())))?;
        }
    }
    // The audit trail: who did what from where, the owner's alone (the store itself is
    // readable by every managed user).
    for file in store_files(&crate::store::sqlite::audit_path(path)) {
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| refused(format!("chmod {}: {e}", file.display())))?;
            if uid.is_some() {
                nix::unistd::chown(&file, uid, None).map_err(|e| refused(format!("chown {}: {e}", file.display())))?;
            }
        }
    }
    // The web service's secrets: readable by the owner alone.
    let secrets = &config.web.secrets;
    drop(crate::store::secrets::Secrets::open(secrets, config.store.busy_timeout_ms, true)?);
    for file in store_files(secrets) {
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| refused(format!("chmod {}: {e}", file.display())))?;
            if uid.is_some() {
                nix::unistd::chown(&file, uid, None).map_err(|e| refused(format!("chown {}: {e}", file.display())))?;
            }
        }
    }
    let action = match before {
        0 => Some("store.init"),
        v if v < version => Some("store.upgrade"),
        _ => None,
    };
    if let Some(action) = action {
        let mut store = SqliteStore::open_writer(path, config.store.busy_timeout_ms, config.users.uid_range())?;
        store.record(actor, action, &format!("from={before} to={version}"))?;
    }
    #[cfg(feature = "postgres")]
    if let Some(shared) = &config.shared {
        // The shared source's schema; the local store above is this node's mirror.
        let mut pg = crate::store::postgres::PgStore::open_unchecked(shared, config.users.uid_range())?;
        let was = pg.version()?;
        // Already current: nothing to write (a node pointed at a read-only standby).
        let now = if was == crate::store::postgres::current_version() { was } else { pg.migrate()? };
        if was < now {
            pg.record(actor, if was == 0 { "store.init" } else { "store.upgrade" }, &format!("from={was} to={now}"))?;
        }
        writeln!(out, "source {} at schema version {now} (was {was})", pg.path()).map_err(super::io)?;
    }
    let said = match before {
        0 => "created".to_string(),
        v if v < version => format!("upgraded from schema version {v}"),
        _ => "is up to date".to_string(),
    };
    writeln!(out, "store {} {said} (schema version {version})", path.display()).map_err(super::io)?;
    Ok(action)
}
