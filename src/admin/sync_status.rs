//! `gatehouse sync status`: for this node, each synced source (the shared PostgreSQL of
//! `[source]`, the directory of `[ldap]`): the last successful sync and its age against
//! the source's `staleness_max` (the login path's rule, [`crate::domain::synced_recently`]),
//! the last failure, and for PostgreSQL the change applied here against the source's
//! newest (asked with a short timeout) and the login records still to be sent. Read-only.

use crate::config::Config;
use crate::store::sqlite::SqliteStore;
use crate::store::AdminStore;
use crate::time::Timestamp;
use std::io::Write;
use std::time::Duration;

/// How long the source may take to answer `sync status`, at most.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One synced source, as this node sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceStatus {
    /// `postgres` or `ldap`.
    pub source: &'static str,
    /// Where it is (the URL).
    pub url: String,
    pub last_success: Option<Timestamp>,
    pub age_secs: Option<u64>,
    pub staleness_max_secs: u64,
    /// Within `staleness_max`: its users are served.
    pub fresh: bool,
    pub last_attempt: Option<Timestamp>,
    /// Why the last attempt failed; `None`: it succeeded.
    pub last_error: Option<String>,
    /// PostgreSQL: the change number this node applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_change: Option<i64>,
    /// PostgreSQL: the source's newest change number, asked now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_change: Option<i64>,
    /// PostgreSQL: why it could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_error: Option<String>,
    /// PostgreSQL: login records waiting to be sent, and the time of the oldest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_backlog: Option<crate::store::state::Backlog>,
}

impl SourceStatus {
    /// Fresh, its last attempt worked, and (PostgreSQL) it answers now.
    pub fn healthy(&self) -> bool {
        self.fresh && self.last_error.is_none() && self.source_error.is_none()
    }
}

fn from_store(
    store: Option<&SqliteStore>,
    source: &'static str,
    url: &str,
    max: Duration,
    now: Timestamp,
) -> SourceStatus {
    let (state, read_error) = match store.map(|s| s.sync_state(source)) {
        Some(Ok(state)) => (state, None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let last_success = state.as_ref().and_then(|s| s.last_success);
    SourceStatus {
        source,
        url: url.to_string(),
        last_success,
        age_secs: last_success.map(|t| now.saturating_duration_since(t).as_secs()),
        staleness_max_secs: max.as_secs(),
        fresh: crate::domain::synced_recently(Some(max), last_success, now),
        last_attempt: state.as_ref().map(|s| s.last_attempt),
        last_error: read_error.or_else(|| state.and_then(|s| s.last_error)),
        applied_change: None,
        source_change: None,
        source_error: None,
        state_backlog: None,
    }
}

/// Each source this node syncs from; empty when its own store is the source.
pub fn status(config: &Config, now: Timestamp) -> Vec<SourceStatus> {
    let store = SqliteStore::open_reader(&config.store.path, config.store.busy_timeout_ms);
    let (store, open_error) = match store {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut all = Vec::new();
    if let Some(shared) = &config.shared {
        let mut s = from_store(store.as_ref(), crate::domain::SOURCE_SHARED, &shared.url, shared.staleness_max, now);
        if let Some(e) = &open_error {
            s.last_error = Some(e.clone());
        }
        s.applied_change = store.as_ref().and_then(|st| st.mirrored_seq().ok().flatten());
        #[cfg(feature = "postgres")]
        {
            let quick = shared.quick(ASK_TIMEOUT);
            let asked = crate::store::postgres::connect(&quick).and_then(|mut c| {
                c.query_one("SELECT seq FROM change_seq", &[])
                    .map(|r| r.get::<_, i64>(0))
                    .map_err(|e| crate::store::postgres::pg_error(&quick.url, e))
            });
            match asked {
                Ok(top) => s.source_change = Some(top),
                Err(e) => s.source_error = Some(e.to_string()),
            }
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = ASK_TIMEOUT;
            s.source_error = Some("this build has no PostgreSQL client".into());
        }
        let backlog = crate::store::state::StateStore::open_reader(&config.state.path, config.store.busy_timeout_ms)
            .and_then(|st| st.map(|st| st.backlog()).transpose());
        match backlog {
            Ok(b) => s.state_backlog = Some(b.unwrap_or(crate::store::state::Backlog { records: 0, oldest: None })),
            Err(e) => s.last_error = s.last_error.or(Some(e.to_string())),
        }
        all.push(s);
    }
    if let Some(ldap) = &config.ldap {
        let mut s = from_store(store.as_ref(), crate::domain::SOURCE_LDAP, &ldap.url, ldap.staleness_max, now);
        if let Some(e) = &open_error {
            s.last_error = Some(e.clone());
        }
        all.push(s);
    }
    all
}

/// Prints `sources` for a reader (or as JSON); true when every one is healthy.
pub fn print(sources: &[SourceStatus], json: bool, out: &mut dyn Write) -> std::io::Result<bool> {
    let healthy = sources.iter().all(SourceStatus::healthy);
    if json {
        let value = serde_json::json!({ "healthy": healthy, "sources": sources });
        serde_json::to_writer_pretty(&mut *out, &value).map_err(std::io::Error::other)?;
        writeln!(out)?;
        return Ok(healthy);
    }
    if sources.is_empty() {
        writeln!(out, "no synced source: this host's store is the source")?;
    }
    for s in sources {
        let what = if s.source == crate::domain::SOURCE_SHARED { "source" } else { "directory" };
        writeln!(out, "{what} {} ({})", s.url, s.source)?;
        let key = if s.source == crate::domain::SOURCE_SHARED { "source" } else { "ldap" };
        match (s.last_success, s.age_secs) {
            (Some(t), Some(age)) => writeln!(
                out,
                "  last success: {t} ({age} s ago); {key}.staleness_max {} s: {}",
                s.staleness_max_secs,
                if s.fresh { "fresh" } else { "STALE, its users are refused" }
            )?,
            _ => writeln!(out, "  last success: never; its users are refused")?,
        }
        if let Some(e) = &s.last_error {
            let at = s.last_attempt.map(|t| format!(" at {t}")).unwrap_or_default();
            writeln!(out, "  last attempt failed{at}: {e}")?;
        }
        if s.source == crate::domain::SOURCE_SHARED {
            let applied = s.applied_change.map_or("none".to_string(), |n| n.to_string());
            match (&s.source_change, &s.source_error) {
                (Some(top), _) => writeln!(out, "  change applied here: {applied}; the source's newest: {top}")?,
                (None, Some(e)) => writeln!(out, "  change applied here: {applied}; the source does not answer: {e}")?,
                (None, None) => writeln!(out, "  change applied here: {applied}")?,
            }
            if let Some(b) = &s.state_backlog {
                let oldest = b.oldest.map(|t| format!(", the oldest from {t}")).unwrap_or_default();
                writeln!(out, "  login records waiting to be sent: {}{oldest}", b.records)?;
            }
        }
    }
    Ok(healthy)
}
