//! `gatehouse-ldap sync`: the directory's users, keys and groups into the store. Every key
//! goes through the same validation as an upload; a bad value is reported and skipped, the
//! user's other keys kept.

use crate::client::{Directory, DirectoryError};
use gatehouse::config::{Config, LdapConfig};
use gatehouse::domain::UserState;
use gatehouse::keys::parse_public_key;
use gatehouse::store::{Actor, AdminStore, DirectorySnapshot, DirectoryUser, SyncAttempt, SyncReport};
use gatehouse::time::Timestamp;
use ldap3::SearchEntry;
use std::collections::HashMap;
use std::time::Duration;

/// UIDs a directory may never give a managed account (names: `gatehouse::names`).
const FIRST_USER_UID: i64 = 1000;

fn first<'a>(entry: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    // Attribute names are case-insensitive in LDAP.
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).and_then(|(_, v)| v.first()).map(String::as_str)
}

fn all<'a>(entry: &'a SearchEntry, attr: &str) -> &'a [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).map(|(_, v)| v.as_slice()).unwrap_or(&[])
}

/// Every value of `attr` as text or as the reason it is not usable. The LDAP library moves
/// an attribute with any non-UTF-8 value to the binary map, all values together.
fn all_values(entry: &SearchEntry, attr: &str) -> Vec<Result<String, String>> {
    let text = all(entry, attr).iter().map(|v| Ok(v.clone()));
    let binary = entry
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|v| String::from_utf8(v.clone()).map_err(|_| "not UTF-8 text".to_string()));
    text.chain(binary).collect()
}

/// How long incremental syncs may go on before a full one: deletions in the directory
/// show only in a full read.
pub const FULL_SYNC_EVERY: Duration = Duration::from_secs(3600);

/// The attributes `entry_enabled` reads.
pub const STATE_ATTRIBUTES: [&str; 5] =
    ["nsAccountLock", "pwdAccountLockedTime", "shadowExpire", "userAccountControl", "accountExpires"];

/// Active Directory's `accountExpires`: 100-ns intervals since 1601-01-01 UTC; 0 and the
/// largest 64-bit value mean never. The Unix time it names, or `None` for never (or a value
/// that is not a number).
pub fn ad_expiry(value: &str) -> Option<Timestamp> {
    const FROM_1601: i64 = 11_644_473_600;
    match value.parse::<i64>().ok()? {
        0 | i64::MAX => None,
        ticks => Some(Timestamp::from_secs(ticks.div_euclid(10_000_000) - FROM_1601)),
    }
}

/// Whether the entry's account is usable at `now`, by the attributes OpenLDAP, 389/FreeIPA,
/// the shadow schema and Active Directory use to lock or expire one.
pub fn entry_enabled(entry: &SearchEntry, now: Timestamp) -> bool {
    let today_days = now.days_since_epoch();
    let locked = first(entry, "nsAccountLock").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let pwd_locked = first(entry, "pwdAccountLockedTime").is_some();
    let expired =
        first(entry, "shadowExpire").and_then(|v| v.parse::<i64>().ok()).is_some_and(|d| d >= 0 && d <= today_days);
    let ad_disabled =
        first(entry, "userAccountControl").and_then(|v| v.parse::<i64>().ok()).is_some_and(|f| f & 2 != 0);
    let ad_expired = first(entry, "accountExpires").and_then(ad_expiry).is_some_and(|t| t <= now);
    !(locked || pwd_locked || expired || ad_disabled || ad_expired)
}

/// The attributes a sync asks for.
pub fn user_attributes(cfg: &LdapConfig) -> Vec<String> {
    let mut attrs: Vec<String> =
        ["uidNumber", "modifyTimestamp"].into_iter().chain(STATE_ATTRIBUTES).map(str::to_string).collect();
    attrs.push(cfg.user_attribute.clone());
    attrs.push(cfg.key_attribute.clone());
    attrs
}

/// Turns directory entries into store users; what cannot be used goes into `report`.
pub fn map_entries(
    config: &Config,
    cfg: &LdapConfig,
    entries: &[SearchEntry],
    now: Timestamp,
    report: &mut SyncReport,
) -> (Vec<DirectoryUser>, Option<String>) {
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    let mut high_water: Option<String> = None;
    for (i, e) in entries.iter().enumerate() {
        if let Some(name) = first(e, &cfg.user_attribute) {
            by_name.entry(name.to_string()).or_default().push(i);
        }
        if let Some(ts) = first(e, "modifyTimestamp") {
            // Generalized time sorts as text when both are in the same (UTC) form.
            if high_water.as_deref().is_none_or(|hw| ts > hw) {
                high_water = Some(ts.to_string());
            }
        }
    }
    // An unreadable list refuses every key, as it does for uploads.
    let banned = config.keys.banned.as_ref().map(|p| std::fs::read_to_string(p).unwrap_or_else(|_| String::from("*")));
    let mut users = Vec::new();
    for e in entries {
        // The report is printed a line per conflict: no DN or name may start another one.
        let dn = gatehouse::keys::shown(&e.dn);
        let Some(name) = first(e, &cfg.user_attribute) else {
            report.conflicts.push(format!("{dn}: no {} attribute; skipped", cfg.user_attribute));
            continue;
        };
        if all(e, &cfg.user_attribute).len() > 1 {
            report.conflicts.push(format!("{dn}: several {} values; skipped", cfg.user_attribute));
            continue;
        }
        if by_name.get(name).is_some_and(|v| v.len() > 1) {
            let (shown, count) = (gatehouse::keys::shown(name), by_name[name].len());
            report.conflicts.push(format!("{shown}: in {count} entries at once ({dn}); skipped"));
            continue;
        }
        // The rule every writer applies: no reserved name, no system account's name.
        if let Err(refusal) = gatehouse::names::check(config, name) {
            report.conflicts.push(format!("{dn}: not a name Gatehouse may manage: {refusal}; skipped"));
            continue;
        }
        let uid_number = match first(e, "uidNumber").map(str::parse::<i64>) {
            Some(Ok(n)) if n < FIRST_USER_UID => {
                report.conflicts.push(format!("{name}: uidNumber {n} is a system UID; skipped"));
                continue;
            }
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                report.conflicts.push(format!("{name}: uidNumber is not a number; skipped"));
                continue;
            }
            None => None,
        };
        let mut keys = Vec::new();
        for (n, value) in all_values(e, &cfg.key_attribute).into_iter().enumerate() {
            let value = match value {
                Ok(v) => v,
                Err(why) => {
                    report.conflicts.push(format!("{name}: {} value {}: {why}; skipped", cfg.key_attribute, n + 1));
                    continue;
                }
            };
            // Directory values often end with a newline; nothing else is forgiven.
            let text = value.strip_suffix('\n').unwrap_or(&value);
            match parse_public_key(text, config) {
                Ok(k) if banned.as_deref().is_some_and(|list| gatehouse::keys::is_banned(list, &k.fingerprint)) => {
                    report.conflicts.push(format!("{name}: key {} is on the banned list; skipped", k.fingerprint))
                }
                Ok(k) if keys.iter().any(|x: &gatehouse::keys::ValidKey| x.fingerprint == k.fingerprint) => {}
                Ok(k) if keys.len() >= config.keys.max_per_user as usize => report.conflicts.push(format!(
                    "{name}: key {} is over keys.max_per_user ({}); skipped",
                    k.fingerprint, config.keys.max_per_user
                )),
                Ok(k) => keys.push(k),
                Err(why) => {
                    report.conflicts.push(format!("{name}: {} value {}: {why}; skipped", cfg.key_attribute, n + 1))
                }
            }
        }
        users.push(DirectoryUser {
            name: name.to_string(),
            dn: e.dn.clone(),
            uid_number,
            enabled: entry_enabled(e, now),
            keys,
        });
    }
    (users, high_water)
}

/// A DN in one spelling: lower case, no blanks around `,` and `=`. Directories return a
/// member DN as they spell the entry's own DN, up to case and such blanks.
pub fn dn_key(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| match rdn.split_once('=') {
            Some((attr, value)) => format!("{}={}", attr.trim(), value.trim()),
            None => rdn.trim().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

/// Group name → member user names. `known`: DN (as `dn_key` spells it) → user name, of the
/// directory's users.
pub fn map_groups(
    cfg: &LdapConfig,
    entries: &[SearchEntry],
    config: &Config,
    known: &HashMap<String, String>,
) -> Vec<(String, Vec<String>)> {
    entries
        .iter()
        .filter_map(|e| {
            let name = first(e, "cn")?;
            config.valid_user_name(name).then(|| {
                let members = all(e, &cfg.group_member_attribute)
                    .iter()
                    .map(|m| match known.get(&dn_key(m)) {
                        // A member given as the DN of a user entry: that user, whatever the
                        // DN's first component says (Active Directory: CN=Alice Smith,…).
                        Some(user) if m.contains('=') => user.clone(),
                        // Else a name, or a DN whose first component's value is the name
                        // (uid=alice,ou=…).
                        _ => m
                            .split(',')
                            .next()
                            .and_then(|rdn| rdn.split_once('='))
                            .map(|(_, v)| v)
                            .unwrap_or(m)
                            .to_string(),
                    })
                    .filter(|m| config.valid_user_name(m))
                    .collect();
                (name.to_string(), members)
            })
        })
        .collect()
}

/// What a sync did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub full: bool,
    pub entries: usize,
    pub report: SyncReport,
}

/// So many users gone, or fewer, never stop a full sync: small directories change by a few.
const GONE_FLOOR: usize = 10;

/// Whether a full sync that would disable `gone` of the `enabled` directory users must stop:
/// a directory that answers with part of itself (a size limit, a base DN or filter gone
/// wrong, an empty replica) would otherwise lock out everyone it left out.
pub fn too_many_gone(gone: usize, enabled: usize, max_percent: u32) -> bool {
    gone > GONE_FLOOR && gone * 100 > enabled * max_percent as usize
}

/// Why a sync did not apply: the directory, or the store (a lock held too long, say), each
/// named as what it is.
#[derive(Debug)]
pub enum SyncError {
    NotConfigured,
    Directory(DirectoryError),
    Store(gatehouse::store::StoreError),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::NotConfigured => f.write_str("no [ldap] section in the configuration"),
            SyncError::Directory(e) => e.fmt(f),
            SyncError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SyncError {}

impl From<DirectoryError> for SyncError {
    fn from(e: DirectoryError) -> SyncError {
        SyncError::Directory(e)
    }
}

impl From<gatehouse::store::StoreError> for SyncError {
    fn from(e: gatehouse::store::StoreError) -> SyncError {
        SyncError::Store(e)
    }
}

impl SyncError {
    /// The store, not the directory, failed: the exit status of a store failure.
    pub fn is_store(&self) -> bool {
        matches!(self, SyncError::Store(_))
    }
}

/// Reads the directory (all of it, or what changed since the last sync) and applies it.
/// A failure is recorded, so `status` and the login path's staleness check see it.
/// `allow_mass_disable` lifts `ldap.max_disable_percent` for this run.
pub fn sync(
    config: &Config,
    store: &mut dyn AdminStore,
    force_full: bool,
    allow_mass_disable: bool,
    now: Timestamp,
) -> Result<Outcome, SyncError> {
    let Some(cfg) = &config.ldap else {
        return Err(SyncError::NotConfigured);
    };
    let previous = store.sync_state("ldap")?;
    let high_water = previous.as_ref().and_then(|s| s.high_water.clone());
    // Deletions show only in a full read: the first run, and then at least hourly.
    let full = force_full
        || high_water.is_none()
        || previous
            .as_ref()
            .is_none_or(|s| s.last_full.is_none_or(|t| now.saturating_duration_since(t) >= FULL_SYNC_EVERY));
    let result = (|| -> Result<Outcome, SyncError> {
        let mut dir = Directory::connect(cfg)?;
        let filter = match (&high_water, full) {
            (Some(hw), false) => {
                format!("(&{}(modifyTimestamp>={}))", cfg.user_filter, ldap3::ldap_escape(hw.as_str()))
            }
            _ => cfg.user_filter.clone(),
        };
        let attrs = user_attributes(cfg);
        let attr_refs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let entries = dir.search(&filter, &attr_refs)?;
        let groups = dir.search(&cfg.group_filter, &["cn", &cfg.group_member_attribute])?;
        dir.unbind();
        let mut report = SyncReport::default();
        let (users, new_high_water) = map_entries(config, cfg, &entries, now, &mut report);
        let listed: std::collections::HashSet<&str> = users.iter().map(|u| u.name.as_str()).collect();
        // Names skipped above (duplicates, reserved, local) get no directory groups either.
        let skipped: std::collections::HashSet<&str> =
            entries.iter().filter_map(|e| first(e, &cfg.user_attribute)).filter(|n| !listed.contains(n)).collect();
        // User DNs: the store's (an incremental sync reads few users), then this read's.
        let mut known: HashMap<String, String> =
            store.directory_dns()?.into_iter().map(|(name, dn)| (dn_key(&dn), name)).collect();
        known.extend(users.iter().map(|u| (dn_key(&u.dn), u.name.clone())));
        let mut groups = map_groups(cfg, &groups, config, &known);
        for (_, members) in &mut groups {
            members.retain(|m| !skipped.contains(m.as_str()));
        }
        if full && !allow_mass_disable {
            let in_store = store.users()?;
            let enabled: Vec<&str> = in_store
                .iter()
                .filter(|u| u.source == "ldap" && u.state == UserState::Enabled)
                .map(|u| u.name.as_str())
                .collect();
            let gone = enabled.iter().filter(|n| !listed.contains(*n)).count();
            if too_many_gone(gone, enabled.len(), cfg.max_disable_percent) {
                return Err(SyncError::Directory(DirectoryError::Refused(format!(
                    "the directory answered {} user entries, and this full sync would disable {gone} of the {} \
                     enabled directory users, more than ldap.max_disable_percent ({}%); nothing changed. \
                     Check the directory (size limit, base DN, filter); if it is right, run \
                     `gatehouse-ldap sync --full --allow-mass-disable`",
                    entries.len(),
                    enabled.len(),
                    cfg.max_disable_percent
                ))));
            }
        }
        let snapshot = DirectorySnapshot { users, groups, high_water: new_high_water.or(high_water.clone()), full };
        let actor = Actor { name: "ldap-sync".to_string(), now };
        let applied = store.apply_directory(&actor, &snapshot, config.users.default_policy)?;
        report.users_added += applied.users_added;
        report.users_disabled += applied.users_disabled;
        report.users_enabled += applied.users_enabled;
        report.keys_added += applied.keys_added;
        report.keys_removed += applied.keys_removed;
        report.conflicts.extend(applied.conflicts);
        let high_water = snapshot.high_water.as_deref();
        store.record_sync(&SyncAttempt { source: "ldap", at: now, error: None, high_water, full })?;
        Ok(Outcome { full, entries: entries.len(), report })
    })();
    match result {
        Ok(o) => Ok(o),
        Err(e) => {
            let error = e.to_string();
            let _ = store.record_sync(&SyncAttempt {
                source: "ldap",
                at: now,
                error: Some(&error),
                high_water: None,
                full,
            });
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ad_expiry, dn_key, map_entries, too_many_gone};
    use gatehouse::store::SyncReport;
    use gatehouse::time::Timestamp;

    /// Found by fuzzing (fuzz/fuzz_targets/ldap_entry.rs): a DN or a name with a control
    /// character went into the report as it was, and `gatehouse-ldap sync` prints a line
    /// per conflict.
    #[test]
    fn reported_conflicts_are_one_line_each() {
        let config = gatehouse::config::Config::parse(
            "t.toml",
            "[ldap]\nurl = \"ldap://127.0.0.1\"\nbase_dn = \"dc=example,dc=org\"\n",
        )
        .unwrap();
        let cfg = config.ldap.clone().unwrap();
        let entry = |dn: &str, uid: &[&str]| ldap3::SearchEntry {
            dn: dn.to_string(),
            attrs: [("uid".to_string(), uid.iter().map(|u| u.to_string()).collect())].into_iter().collect(),
            bin_attrs: Default::default(),
        };
        let entries = [
            entry("uid=a\nskipped: forged,dc=org", &[]),
            entry("uid=b\r,dc=org", &["b", "c"]),
            entry("uid=x,ou=1", &["x\ny"]),
            entry("uid=x,ou=2", &["x\ny"]),
            entry("uid=Smith\\, John\u{1b}[2J,dc=org", &["Bad"]),
        ];
        let mut report = SyncReport::default();
        let (users, _) = map_entries(&config, &cfg, &entries, Timestamp::EPOCH, &mut report);
        assert!(users.is_empty());
        assert_eq!(report.conflicts.len(), 5, "{:?}", report.conflicts);
        for c in &report.conflicts {
            assert!(!c.chars().any(char::is_control), "{c:?}");
        }
        assert!(report.conflicts[4].starts_with("uid=Smith\\, John[2J,dc=org: "), "{:?}", report.conflicts[4]);
    }

    #[test]
    fn dns_compare_in_one_spelling() {
        assert_eq!(dn_key("CN=Alice Smith, OU=Staff,DC=example, DC=org"), "cn=alice smith,ou=staff,dc=example,dc=org");
        assert_eq!(dn_key("uid=alice,ou=people"), dn_key("UID = alice , OU=People"));
        assert_ne!(dn_key("cn=Alice Smith,ou=a"), dn_key("cn=AliceSmith,ou=a"));
        assert_eq!(dn_key("alice"), "alice");
    }

    #[test]
    fn active_directory_expiry() {
        assert_eq!(ad_expiry("0"), None);
        assert_eq!(ad_expiry("9223372036854775807"), None);
        assert_eq!(ad_expiry("116444736000000000"), Some(Timestamp::EPOCH));
        assert_eq!(ad_expiry("157469184000000000").map(|t| t.to_string()).as_deref(), Some("2100-01-01T00:00:00Z"));
        assert_eq!(ad_expiry("never"), None);
        assert_eq!(ad_expiry("-1"), Some(Timestamp::from_secs(-11_644_473_601)));
    }

    #[test]
    fn a_full_sync_stops_before_disabling_too_many() {
        // A few users gone never stop it, however small the directory.
        assert!(!too_many_gone(10, 10, 10));
        assert!(!too_many_gone(3, 5, 0));
        // Past the floor, the share decides.
        assert!(!too_many_gone(100, 1000, 10));
        assert!(too_many_gone(101, 1000, 10));
        assert!(too_many_gone(11, 11, 99));
        assert!(!too_many_gone(11, 11, 100));
        // An empty answer from a directory of any size beyond the floor.
        assert!(too_many_gone(100_000, 100_000, 10));
        assert!(too_many_gone(11, 1000, 0));
    }
}
