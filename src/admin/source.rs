//! `gatehouse source import`: the move from one host to several. This host's own store
//! (and its web service's secrets) copied into the shared PostgreSQL named by `[source]`;
//! see [`crate::store::postgres::import`] for what is copied and when it refuses.

use super::{AdminError, Config};
use crate::log::{Level, Logger};
use crate::store::postgres::import::ImportOutcome;
use crate::store::postgres::PgStore;
use crate::store::secrets::SqliteSecrets;
use crate::store::sqlite::SqliteStore;
use crate::store::Actor;
use std::io::Write;

pub fn import(
    config: &Config,
    merge: bool,
    actor: &Actor,
    log: &mut Logger,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let Some(shared) = &config.shared else {
        return Err(AdminError::Refused(
            "no [source] in the configuration: add the shared PostgreSQL's url there first".into(),
        ));
    };
    let path = &config.store.path;
    let local = SqliteStore::open_reader(path, config.store.busy_timeout_ms)?;
    let store = local.export()?;
    // The writers' name rule again (names::check), as for every other writer: a store
    // edited by hand, or written before a rule was added, must not carry a reserved or
    // system account's name into the shared source, from which every node would serve it.
    let refused: Vec<String> = store
        .users
        .iter()
        .filter_map(|u| crate::names::check(config, &u.user.name).err())
        .map(|e| e.to_string())
        .collect();
    if !refused.is_empty() {
        return Err(AdminError::Refused(format!("nothing imported: {}", refused.join("; "))));
    }
    let secrets = if config.web.secrets.exists() {
        Some(SqliteSecrets::open(&config.web.secrets, config.store.busy_timeout_ms, false)?.export()?)
    } else {
        None
    };
    let mut pg = PgStore::open(shared, config.users.uid_range())?;
    let report = match pg.import(actor, &store, secrets.as_ref(), merge)? {
        ImportOutcome::Done(report) => report,
        ImportOutcome::Refused(reason) => return Err(AdminError::Refused(reason)),
    };
    let counts = report.counts();
    let from = path.display().to_string();
    let shown: Vec<String> = counts.iter().map(|(k, v)| v.to_string() + " " + k).collect();
    writeln!(out, "imported {from} into {}: {}", pg.path(), shown.join(", ")).map_err(super::io)?;
    let values: Vec<(&str, String)> = counts.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut pairs = vec![("actor", actor.name.as_str()), ("action", "source.import"), ("store", from.as_str())];
    pairs.extend(values.iter().map(|(k, v)| (*k, v.as_str())));
    log.log(Level::Info, &pairs);
    Ok(())
}
