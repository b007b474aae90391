//! Login state across the nodes of a shared source (`[source]`, issue 14 item 3): each
//! node's agent sends what its login path recorded (uses of keys, failed passwords,
//! lockouts and unlocks by hand; [`StateStore::outbox`]) to PostgreSQL, where it is merged,
//! and reads back what every node sent, into its own state file
//! ([`StateStore::merge_shared`]). The login path never leaves the node: PAM and
//! gatehouse-keys read and write the local state file as before.
//!
//! The merge is idempotent, so a batch sent twice (the node crashed between PostgreSQL's
//! commit and forgetting it locally) counts once: a failure is keyed by the node's name and
//! its number there, the last use of a key is the latest, lockouts and unlocks keep the
//! latest. Failures are counted across nodes within `lockout.window`: when a user reaches
//! `lockout.threshold`, the source records a lockout every node reads back, and the PAM
//! module's `preauth` and account stages refuse it there as they do a local one.

use super::postgres::{self as pg, pg_error};
use super::state::{KeyUse, SharedState, StateEvent, StateEventKind, StateStore};
use super::StoreError;
use crate::config::LockoutConfig;
use crate::time::Timestamp;
use ::postgres::{Client, GenericClient};
use std::collections::HashMap;
use std::time::Duration;

/// The channel a merge is announced on, so the other nodes read it back at once.
pub const STATE_CHANNEL: &str = "gatehouse_state";

/// The server's clock in milliseconds: when a row was written, for the nodes' cursors.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Records sent in one transaction, at most.
pub const BATCH: u32 = 500;

/// How long the source keeps failures and ended lockouts: a day, longer than any
/// lockout window need be (as on a node).
const KEPT_SECS: i64 = 86_400;

/// Merges one node's records, in one transaction, and announces it.
pub fn push(
    client: &mut Client,
    at: &str,
    node: &str,
    events: &[StateEvent],
    lockout: &LockoutConfig,
) -> Result<(), StoreError> {
    let db = |e| pg_error(at, e);
    let mut tx = client.transaction().map_err(db)?;
    // The latest failure of each user in this batch: where their count is taken.
    let mut failed: HashMap<&str, i64> = HashMap::new();
    for e in events {
        let (user, time) = (e.user.as_str(), e.time.as_secs());
        match &e.kind {
            StateEventKind::Use { fingerprint, rhost } => {
                tx.execute(
                    &format!(
                        "INSERT INTO state_key_use (fingerprint, username, last_used, rhost, pushed) \
                         VALUES ($1, $2, $3, $4, {NOW_MS}) ON CONFLICT (fingerprint) DO UPDATE SET \
                         username = excluded.username, last_used = excluded.last_used, rhost = excluded.rhost, \
                         pushed = excluded.pushed WHERE excluded.last_used > state_key_use.last_used"
                    ),
                    &[fingerprint, &user, &time, rhost],
                )
                .map_err(db)?;
            }
            StateEventKind::Failure { rhost } => {
                tx.execute(
                    "INSERT INTO state_failures (node, id, username, rhost, time) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (node, id) DO NOTHING",
                    &[&node, &e.id, &user, rhost, &time],
                )
                .map_err(db)?;
                let latest = failed.entry(user).or_insert(time);
                *latest = (*latest).max(time);
            }
            StateEventKind::Lock { until, reason } => {
                lock(&mut tx, at, user, until.as_secs(), time, reason)?;
            }
            StateEventKind::Unlock => {
                tx.execute(
                    &format!(
                        "INSERT INTO state_unlocks (username, time, pushed) VALUES ($1, $2, {NOW_MS}) \
                         ON CONFLICT (username) DO UPDATE SET time = greatest(state_unlocks.time, excluded.time), \
                         pushed = excluded.pushed"
                    ),
                    &[&user, &time],
                )
                .map_err(db)?;
                tx.execute("DELETE FROM state_lockouts WHERE username = $1 AND since <= $2", &[&user, &time])
                    .map_err(db)?;
                tx.execute("DELETE FROM state_failures WHERE username = $1 AND time <= $2", &[&user, &time])
                    .map_err(db)?;
            }
        }
    }
    let window = i64::try_from(lockout.window.as_secs()).unwrap_or(i64::MAX);
    for (user, latest) in failed {
        // The cluster's count, as a node counts its own: failures in the window that ends
        // at the latest one, none from before an unlock.
        let count: i64 = tx
            .query_one(
                "SELECT count(*) FROM state_failures WHERE username = $1 AND time > $2 AND time <= $3 \
                 AND time > coalesce((SELECT time FROM state_unlocks WHERE username = $1), -1)",
                &[&user, &latest.saturating_sub(window), &latest],
            )
            .map_err(db)?
            .get(0);
        if count >= i64::from(lockout.threshold) {
            let until = Timestamp::from_secs(latest).saturating_add(lockout.duration).as_secs();
            let reason = format!("{count} failures in {} s on the cluster", lockout.window.as_secs());
            lock(&mut tx, at, user, until, latest, &reason)?;
        }
    }
    tx.execute("DELETE FROM state_failures WHERE time < extract(epoch from now())::bigint - $1", &[&KEPT_SECS])
        .map_err(db)?;
    tx.execute("DELETE FROM state_lockouts WHERE until < extract(epoch from now())::bigint - $1", &[&KEPT_SECS])
        .map_err(db)?;
    tx.batch_execute(&format!("NOTIFY {STATE_CHANNEL}")).map_err(db)?;
    tx.commit().map_err(db)
}

fn lock(
    tx: &mut impl GenericClient,
    at: &str,
    user: &str,
    until: i64,
    since: i64,
    reason: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO state_lockouts (username, until, since, reason, pushed) VALUES ($1, $2, $3, $4, {NOW_MS}) \
             ON CONFLICT (username) DO UPDATE SET until = greatest(state_lockouts.until, excluded.until), \
             since = greatest(state_lockouts.since, excluded.since), reason = excluded.reason, \
             pushed = excluded.pushed"
        ),
        &[&user, &until, &since, &reason],
    )
    .map_err(|e| pg_error(at, e))?;
    Ok(())
}

/// What was written since `after` (a cursor this returned before; `None`: everything),
/// less `slack` (a write that took its time stamp before the cursor may commit after it),
/// and the cursor for next time: the newest time stamp read. Time stamps are all the
/// primary's clock (only it takes writes), so a node on a standby, whatever its lag and
/// its clock, reads on from where it was. Read-only: works on a hot standby.
pub fn pull(
    client: &mut Client,
    at: &str,
    after: Option<i64>,
    slack: Duration,
) -> Result<(SharedState, Option<i64>), StoreError> {
    let db = |e| pg_error(at, e);
    let mut tx = pg::snapshot(client).map_err(db)?;
    let slack = i64::try_from(slack.as_millis()).unwrap_or(i64::MAX);
    let since = after.map_or(i64::MIN, |c| c.saturating_sub(slack));
    let mut newest = after;
    let mut seen = |pushed: i64| newest = Some(newest.map_or(pushed, |n| n.max(pushed)));
    let mut uses = Vec::new();
    for r in tx
        .query("SELECT fingerprint, username, last_used, rhost, pushed FROM state_key_use WHERE pushed > $1", &[&since])
        .map_err(db)?
    {
        seen(r.get(4));
        uses.push((r.get(0), r.get(1), KeyUse { last_used: Timestamp::from_secs(r.get(2)), rhost: r.get(3) }));
    }
    let mut lockouts = Vec::new();
    for r in tx
        .query(
            "SELECT username, until, since, reason, pushed FROM state_lockouts WHERE pushed > $1 \
             AND until > extract(epoch from now())::bigint",
            &[&since],
        )
        .map_err(db)?
    {
        seen(r.get(4));
        lockouts.push((r.get(0), Timestamp::from_secs(r.get(1)), Timestamp::from_secs(r.get(2)), r.get(3)));
    }
    let mut unlocks = Vec::new();
    for r in tx.query("SELECT username, time, pushed FROM state_unlocks WHERE pushed > $1", &[&since]).map_err(db)? {
        seen(r.get(2));
        unlocks.push((r.get(0), Timestamp::from_secs(r.get(1))));
    }
    tx.commit().map_err(db)?;
    Ok((SharedState { uses, lockouts, unlocks }, newest))
}

/// A name for a node that has none yet: its host name and a random part (two nodes may
/// share a host name, or run on one host).
pub fn fresh_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut bytes = [0u8; 6];
    let random = match getrandom::fill(&mut bytes) {
        Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        Err(_) => format!("{}-{}", std::process::id(), crate::time::now().as_secs()),
    };
    format!("{}-{random}", host.trim())
}

/// Sends everything `state` holds for the source, a batch per transaction; returns how
/// many records went. What was sent is forgotten only once the source committed it.
pub fn send(client: &mut Client, at: &str, state: &StateStore, lockout: &LockoutConfig) -> Result<usize, StoreError> {
    let node = state.node_name(fresh_node_name)?;
    let mut sent = 0;
    loop {
        let events = state.outbox(BATCH)?;
        let Some(last) = events.last() else { break };
        push(client, at, &node, &events, lockout)?;
        state.sent(last.id)?;
        sent += events.len();
        if events.len() < BATCH as usize {
            break;
        }
    }
    Ok(sent)
}

/// The last use of each of `user`'s keys on any node, as the source holds it.
pub fn key_use(client: &mut Client, at: &str, user: &str) -> Result<HashMap<String, KeyUse>, StoreError> {
    Ok(client
        .query("SELECT fingerprint, last_used, rhost FROM state_key_use WHERE username = $1", &[&user])
        .map_err(|e| pg_error(at, e))?
        .iter()
        .map(|r| (r.get(0), KeyUse { last_used: Timestamp::from_secs(r.get(1)), rhost: r.get(2) }))
        .collect())
}
