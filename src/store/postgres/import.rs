//! `gatehouse source import`: a host's own SQLite store (and its web service's secrets)
//! copied into the shared source, in one numbered write, so that a site moving from one
//! host to several loses no user, uid, key, grant, password or token, and nodes that
//! already follow the source receive the users as changes.
//!
//! Into an empty source everything is copied. A source that holds anything is refused
//! unless `merge` is given; then what is already there is kept as it is and only what is
//! missing is added, which makes a second run of the same import change nothing (the
//! audit trail included: an event is copied only as often as the source lacks it). Any
//! disagreement (a user with another uid, a uid or key held by someone else, a uid the
//! source retired) refuses the whole import, naming each.

use super::{Changed, PgStore, Write, CHANNEL};
use crate::store::secrets::SecretsExport;
use crate::store::sqlite::StoreExport;
use crate::store::{Actor, StoreError};
use std::collections::{HashMap, HashSet};

/// What an import added (what was already there is not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub users: u64,
    /// Users already in the source with the same uid, kept as they are.
    pub kept: u64,
    pub keys: u64,
    pub grants: u64,
    pub groups: u64,
    pub retired: u64,
    pub audit: u64,
    pub passwords: u64,
    pub invites: u64,
    pub tokens: u64,
}

impl ImportReport {
    /// Each count with its name, in the order the CLI, the log and the audit trail show them.
    pub fn counts(&self) -> [(&'static str, u64); 10] {
        [
            ("users", self.users),
            ("kept", self.kept),
            ("keys", self.keys),
            ("grants", self.grants),
            ("groups", self.groups),
            ("retired", self.retired),
            ("audit", self.audit),
            ("passwords", self.passwords),
            ("invites", self.invites),
            ("tokens", self.tokens),
        ]
    }
}

/// The import's end: done, or refused with the reasons (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    Done(ImportReport),
    Refused(String),
}

/// How many rows go in one statement (arrays bound as parameters, unnested).
const CHUNK: usize = 5000;

impl PgStore {
    /// Copies `store` (and `secrets`, the host's web.db) into the source in one
    /// transaction; see the module notes.
    pub fn import(
        &mut self,
        actor: &Actor,
        store: &StoreExport,
        secrets: Option<&SecretsExport>,
        merge: bool,
    ) -> Result<ImportOutcome, StoreError> {
        let mut refusal = None;
        let result = self.write(|w| {
            let at = w.at.clone();
            match import(w, actor, store, secrets, merge)? {
                Ok(report) => Ok(report),
                Err(reason) => {
                    refusal = Some(reason.clone());
                    // An error rolls the transaction back.
                    Err(StoreError::Unavailable { path: at, reason })
                }
            }
        });
        match (result, refusal) {
            (_, Some(reason)) => Ok(ImportOutcome::Refused(reason)),
            (Ok(report), None) => Ok(ImportOutcome::Done(report)),
            (Err(e), None) => Err(e),
        }
    }
}

fn import(
    w: &mut Write<'_>,
    actor: &Actor,
    store: &StoreExport,
    secrets: Option<&SecretsExport>,
    merge: bool,
) -> Result<Result<ImportReport, String>, StoreError> {
    let at = w.at.clone();
    let db = |e| super::pg_error(&at, e);
    let tx = &mut w.tx;

    // What the source holds.
    let mut users: HashMap<String, (i64, Option<i64>)> = HashMap::new();
    for r in tx.query("SELECT name, id, uid FROM users", &[]).map_err(db)? {
        users.insert(r.get(0), (r.get(1), r.get(2)));
    }
    let by_uid: HashMap<i64, String> =
        users.iter().filter_map(|(name, (_, uid))| uid.map(|u| (u, name.clone()))).collect();
    let retired: HashMap<i64, String> =
        tx.query("SELECT uid, name FROM retired_uids", &[]).map_err(db)?.iter().map(|r| (r.get(0), r.get(1))).collect();
    let held: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM grants) + (SELECT count(*) FROM retired_uids) \
             + (SELECT count(*) FROM web_tokens) + (SELECT count(*) FROM web_passwords)",
            &[],
        )
        .map_err(db)?
        .get(0);
    if held > 0 && !merge {
        return Ok(Err(format!(
            "the source {at} is not empty ({} user(s), {held} row(s) of users, grants, retired uids, passwords and \
             tokens): give --merge to add this host's users beside what it holds (what is there already is kept)",
            users.len()
        )));
    }

    // Every disagreement, before anything is written.
    let mut conflicts = Vec::new();
    for e in &store.users {
        let (name, uid) = (&e.user.name, e.user.uid.map(i64::from));
        let Some(uid) = uid else {
            conflicts.push(format!("user {name} has no uid yet on this host: run `gatehouse init` here first"));
            continue;
        };
        match users.get(name) {
            Some((_, Some(theirs))) if *theirs != uid => {
                conflicts.push(format!("user {name} has uid {uid} here and {theirs} in the source"))
            }
            Some(_) => {}
            None => {
                if let Some(other) = by_uid.get(&uid) {
                    conflicts.push(format!("uid {uid} is {name}'s here and {other}'s in the source"));
                } else if let Some(was) = retired.get(&uid) {
                    conflicts.push(format!("uid {uid} is {name}'s here but the source retired it (it was {was}'s)"));
                }
            }
        }
    }
    for (uid, name, _) in &store.retired {
        if let Some(holder) = by_uid.get(&i64::from(*uid)) {
            conflicts.push(format!("uid {uid}, retired here (it was {name}'s), is {holder}'s in the source"));
        }
    }
    let fingerprints: Vec<&str> =
        store.users.iter().flat_map(|e| e.keys.iter().map(|k| k.fingerprint.as_str())).collect();
    let mut owners: HashMap<String, String> = HashMap::new();
    for chunk in fingerprints.chunks(CHUNK) {
        for r in tx
            .query(
                "SELECT k.fingerprint, u.name FROM keys k JOIN users u ON u.id = k.user_id WHERE k.fingerprint = ANY($1)",
                &[&chunk],
            )
            .map_err(db)?
        {
            owners.insert(r.get(0), r.get(1));
        }
    }
    for e in &store.users {
        for k in &e.keys {
            if let Some(owner) = owners.get(&k.fingerprint).filter(|o| **o != e.user.name) {
                conflicts.push(format!("key {} is {}'s here and {owner}'s in the source", k.fingerprint, e.user.name));
            }
        }
    }
    if !conflicts.is_empty() {
        let n = conflicts.len();
        conflicts.truncate(20);
        let more = if n > conflicts.len() { format!("\n  and {} more", n - conflicts.len()) } else { String::new() };
        return Ok(Err(format!(
            "nothing imported: this host's store and the source disagree ({n}):\n  {}{more}",
            conflicts.join("\n  ")
        )));
    }

    let mut report = ImportReport::default();
    let mut touched: HashSet<String> = HashSet::new();

    // Users the source lacks, with their uids.
    let new: Vec<_> = store.users.iter().filter(|e| !users.contains_key(&e.user.name)).collect();
    report.kept = (store.users.len() - new.len()) as u64;
    for chunk in new.chunks(CHUNK) {
        let names: Vec<&str> = chunk.iter().map(|e| e.user.name.as_str()).collect();
        let states: Vec<&str> = chunk.iter().map(|e| e.user.state.as_str()).collect();
        let policies: Vec<&str> = chunk.iter().map(|e| e.user.policy.as_str()).collect();
        let forwarding: Vec<bool> = chunk.iter().map(|e| e.user.port_forwarding).collect();
        let created: Vec<i64> = chunk.iter().map(|e| e.user.created.as_secs()).collect();
        let sources: Vec<&str> = chunk.iter().map(|e| e.user.source.as_str()).collect();
        let uid_numbers: Vec<Option<i64>> = chunk.iter().map(|e| e.uid_number).collect();
        let dns: Vec<Option<&str>> = chunk.iter().map(|e| e.directory_dn.as_deref()).collect();
        let uids: Vec<Option<i64>> = chunk.iter().map(|e| e.user.uid.map(i64::from)).collect();
        for r in tx
            .query(
                "INSERT INTO users (name, state, policy, port_forwarding, created, source, uid_number, directory_dn, uid) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::bigint[], $6::text[], \
                 $7::bigint[], $8::text[], $9::bigint[]) RETURNING name, id, uid",
                &[&names, &states, &policies, &forwarding, &created, &sources, &uid_numbers, &dns, &uids],
            )
            .map_err(db)?
        {
            users.insert(r.get(0), (r.get(1), r.get(2)));
        }
        report.users += chunk.len() as u64;
        touched.extend(names.iter().map(|n| n.to_string()));
    }

    // Keys: those already there (the same user's) are kept.
    let keys: Vec<(i64, &crate::store::Key)> = store
        .users
        .iter()
        .flat_map(|e| {
            let id = users.get(&e.user.name).map_or(0, |(id, _)| *id);
            e.keys.iter().map(move |k| (id, k))
        })
        .collect();
    for chunk in keys.chunks(CHUNK) {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let algorithms: Vec<&str> = chunk.iter().map(|(_, k)| k.algorithm.as_str()).collect();
        let blobs: Vec<&str> = chunk.iter().map(|(_, k)| k.blob.as_str()).collect();
        let fps: Vec<&str> = chunk.iter().map(|(_, k)| k.fingerprint.as_str()).collect();
        let bits: Vec<i32> = chunk.iter().map(|(_, k)| i32::try_from(k.bits).unwrap_or(i32::MAX)).collect();
        let comments: Vec<&str> = chunk.iter().map(|(_, k)| k.comment.as_str()).collect();
        let scopes: Vec<&str> = chunk.iter().map(|(_, k)| k.scope.as_str()).collect();
        let froms: Vec<Option<&str>> = chunk.iter().map(|(_, k)| k.from.as_deref()).collect();
        let expires: Vec<Option<i64>> = chunk.iter().map(|(_, k)| k.expires.map(|t| t.as_secs())).collect();
        let created: Vec<i64> = chunk.iter().map(|(_, k)| k.created.as_secs()).collect();
        let sources: Vec<&str> = chunk.iter().map(|(_, k)| k.source.as_str()).collect();
        let added = tx
            .query(
                "INSERT INTO keys (user_id, algorithm, blob, fingerprint, bits, comment, scope, from_patterns, expires, \
                 created, source) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], \
                 $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[]) \
                 ON CONFLICT (fingerprint) DO NOTHING RETURNING user_id",
                &[&ids, &algorithms, &blobs, &fps, &bits, &comments, &scopes, &froms, &expires, &created, &sources],
            )
            .map_err(db)?;
        report.keys += added.len() as u64;
        let changed: HashSet<i64> = added.iter().map(|r| r.get(0)).collect();
        touched.extend(users.iter().filter(|(_, (id, _))| changed.contains(id)).map(|(n, _)| n.clone()));
    }

    // Grants, group members and retired uids already there are kept.
    let subjects: Vec<&str> = store.grants.iter().map(|g| g.subject.as_str()).collect();
    let patterns: Vec<&str> = store.grants.iter().map(|g| g.pattern.as_str()).collect();
    let access: Vec<&str> = store.grants.iter().map(|g| g.access.as_str()).collect();
    let created: Vec<i64> = store.grants.iter().map(|g| g.created.as_secs()).collect();
    report.grants = tx
        .execute(
            "INSERT INTO grants (subject, pattern, access, created) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) ON CONFLICT DO NOTHING",
            &[&subjects, &patterns, &access, &created],
        )
        .map_err(db)?;
    let groups: Vec<&str> = store.groups.iter().map(|g| g.0.as_str()).collect();
    let members: Vec<&str> = store.groups.iter().map(|g| g.1.as_str()).collect();
    let sources: Vec<&str> = store.groups.iter().map(|g| g.2.as_str()).collect();
    report.groups = tx
        .execute(
            "INSERT INTO group_members (grp, member, source) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            &[&groups, &members, &sources],
        )
        .map_err(db)?;
    let uids: Vec<i64> = store.retired.iter().map(|r| i64::from(r.0)).collect();
    let names: Vec<&str> = store.retired.iter().map(|r| r.1.as_str()).collect();
    let when: Vec<i64> = store.retired.iter().map(|r| r.2.as_secs()).collect();
    report.retired = tx
        .execute(
            "INSERT INTO retired_uids (uid, name, retired) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
            &[&uids, &names, &when],
        )
        .map_err(db)?;

    // The audit trail: each event as often as this host has it and the source does not.
    tx.batch_execute(
        "CREATE TEMP TABLE import_audit (ord bigint, time bigint, actor text, action text, subject text, \
         detail text) ON COMMIT DROP",
    )
    .map_err(db)?;
    for (n, chunk) in store.audit.chunks(CHUNK).enumerate() {
        let ord: Vec<i64> = (0..chunk.len()).map(|i| (n * CHUNK + i) as i64).collect();
        let time: Vec<i64> = chunk.iter().map(|e| e.time.as_secs()).collect();
        let actor: Vec<&str> = chunk.iter().map(|e| e.actor.as_str()).collect();
        let action: Vec<&str> = chunk.iter().map(|e| e.action.as_str()).collect();
        let subject: Vec<&str> = chunk.iter().map(|e| e.subject.as_str()).collect();
        let detail: Vec<&str> = chunk.iter().map(|e| e.detail.as_str()).collect();
        tx.execute(
            "INSERT INTO import_audit SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], \
             $5::text[], $6::text[])",
            &[&ord, &time, &actor, &action, &subject, &detail],
        )
        .map_err(db)?;
    }
    report.audit = tx
        .execute(
            "INSERT INTO audit (time, actor, action, subject, detail) \
             SELECT time, actor, action, subject, detail FROM ( \
               SELECT i.*, row_number() OVER (PARTITION BY time, actor, action, subject, detail ORDER BY ord) AS n \
               FROM import_audit i) i \
             WHERE n > (SELECT count(*) FROM audit a WHERE a.subject = i.subject AND a.time = i.time \
               AND a.actor = i.actor AND a.action = i.action AND a.detail = i.detail) \
             ORDER BY ord",
            &[],
        )
        .map_err(db)?;

    // The web service's secrets, as stored (hashes and digests).
    if let Some(s) = secrets {
        for (user, hash, updated) in &s.passwords {
            report.passwords += tx
                .execute(
                    "INSERT INTO web_passwords (name, hash, updated) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[user, hash, &updated.as_secs()],
                )
                .map_err(db)?;
        }
        for (digest, user, created, expires) in &s.invites {
            report.invites += tx
                .execute(
                    "INSERT INTO web_invites (token_hash, name, created, expires) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                    &[digest, user, &created.as_secs(), &expires.as_secs()],
                )
                .map_err(db)?;
        }
        for (t, digest) in &s.tokens {
            let there: bool = tx
                .query_one("SELECT EXISTS (SELECT 1 FROM web_tokens WHERE token_hash = $1)", &[digest])
                .map_err(db)?
                .get(0);
            if there {
                continue;
            }
            // The same id where it is free (the audit trail names tokens by id), else a new one.
            let id_free: bool = tx
                .query_one("SELECT NOT EXISTS (SELECT 1 FROM web_tokens WHERE id = $1)", &[&t.id])
                .map_err(db)?
                .get(0);
            let (last_used, revoked) = (t.last_used.map(|x| x.as_secs()), t.revoked.map(|x| x.as_secs()));
            tx.execute(
                "INSERT INTO web_tokens (id, token_hash, scope, label, created, last_used, revoked) \
                 VALUES (coalesce($1, nextval(pg_get_serial_sequence('web_tokens', 'id'))), $2, $3, $4, $5, $6, $7)",
                &[&id_free.then_some(t.id), digest, &t.scope, &t.label, &t.created.as_secs(), &last_used, &revoked],
            )
            .map_err(db)?;
            report.tokens += 1;
        }
        tx.batch_execute(
            "SELECT setval(pg_get_serial_sequence('web_tokens', 'id'), greatest((SELECT max(id) FROM web_tokens), 1))",
        )
        .map_err(db)?;
    }

    // Numbered like any write, so that nodes following the source receive it.
    let touched: Vec<String> = touched.into_iter().collect();
    for chunk in touched.chunks(CHUNK) {
        w.tx.execute("INSERT INTO changes (seq, kind, name) SELECT $1, 'user', unnest($2::text[])", &[&w.seq, &chunk])
            .map_err(db)?;
    }
    if report.grants > 0 {
        w.changed(Changed::Grants)?;
    }
    if report.groups > 0 {
        w.changed(Changed::Groups)?;
    }
    if !touched.is_empty() && !w.announced {
        w.tx.batch_execute(&format!("NOTIFY {CHANNEL}")).map_err(db)?;
        w.announced = true;
    }
    let mut detail = String::new();
    for (key, value) in report.counts() {
        crate::log::push_pair(&mut detail, key, &value.to_string());
    }
    w.audit(actor, "source.import", &at, &detail)?;
    Ok(Ok(report))
}
