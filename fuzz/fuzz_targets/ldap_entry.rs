//! Directory entries as a sync reads them: whatever the directory's administrators (or
//! anyone who may edit their own entry's attributes) put there becomes store users and keys.
//!
//! The input is LDIF-like text, so that seeds can be read and written by hand: entries
//! separated by a blank line, `dn: …` and `attribute: value` lines; `attribute:: bytes`
//! is a value the LDAP library would hand over as binary (raw bytes, not base64).
#![no_main]

use gatehouse::config::{Config, LdapConfig};
use gatehouse::store::SyncReport;
use gatehouse::time::Timestamp;
use gatehouse_ldap::sync::{ad_expiry, dn_key, entry_enabled, map_entries, map_groups};
use ldap3::SearchEntry;
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

/// OpenLDAP with the openssh-lpk schema, and Active Directory, as README.md sets them up.
static CONFIGS: LazyLock<[Config; 2]> = LazyLock::new(|| {
    let parse = |text: &str| Config::parse("fuzz.toml", text).expect("the fuzz target's own config");
    [
        parse("[ldap]\nurl = \"ldap://127.0.0.1\"\nbase_dn = \"dc=example,dc=org\"\n"),
        parse(
            "[keys]\nmax_per_user = 3\n[ldap]\nurl = \"ldaps://dc1.ad.example.org\"\n\
             base_dn = \"DC=ad,DC=example,DC=org\"\nuser_attribute = \"sAMAccountName\"\n\
             group_member_attribute = \"member\"\n",
        ),
    ]
});

fn entries(data: &[u8]) -> Vec<SearchEntry> {
    let mut out = Vec::new();
    for block in data.split(|&b| b == b'\n').collect::<Vec<_>>().split(|line| line.is_empty()) {
        let mut entry = SearchEntry { dn: String::new(), attrs: HashMap::new(), bin_attrs: HashMap::new() };
        for line in block {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            let rest = &line[colon + 1..];
            if let Some(binary) = rest.strip_prefix(b":") {
                let value = binary.strip_prefix(b" ").unwrap_or(binary).to_vec();
                entry.bin_attrs.entry(name).or_default().push(value);
                continue;
            }
            let value = String::from_utf8_lossy(rest.strip_prefix(b" ").unwrap_or(rest)).into_owned();
            if name == "dn" {
                entry.dn = value;
            } else {
                entry.attrs.entry(name).or_default().push(value);
            }
        }
        out.push(entry);
    }
    out
}

fn first<'a>(entry: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).and_then(|(_, v)| v.first()).map(String::as_str)
}

fn check_users(config: &Config, cfg: &LdapConfig, entries: &[SearchEntry]) {
    let mut report = SyncReport::default();
    let (users, high_water) = map_entries(config, cfg, entries, NOW, &mut report);
    // Printed one per line by `gatehouse-ldap sync`, which the journal keeps.
    for conflict in &report.conflicts {
        assert!(!conflict.chars().any(char::is_control), "{conflict:?}");
    }
    let mut names = HashSet::new();
    for user in &users {
        assert!(names.insert(user.name.as_str()), "{} twice", user.name);
        assert!(config.valid_user_name(&user.name) && !gatehouse::names::is_reserved(&user.name), "{user:?}");
        assert!(user.uid_number.is_none_or(|n| n >= 1000), "{user:?}");
        assert!(user.keys.len() <= config.keys.max_per_user as usize);
        let fingerprints: HashSet<&str> = user.keys.iter().map(|k| k.fingerprint.as_str()).collect();
        assert_eq!(fingerprints.len(), user.keys.len(), "{user:?}");
        assert!(entries.iter().any(|e| e.dn == user.dn && first(e, &cfg.user_attribute) == Some(user.name.as_str())));
    }
    let newest = entries.iter().filter_map(|e| first(e, "modifyTimestamp")).max();
    assert_eq!(high_water.as_deref(), newest);

    let known: HashMap<String, String> = users.iter().map(|u| (dn_key(&u.dn), u.name.clone())).collect();
    for (group, members) in map_groups(cfg, entries, config, &known) {
        assert!(config.valid_user_name(&group));
        assert!(members.iter().all(|m| config.valid_user_name(m)), "{group}: {members:?}");
    }
}

fn check_entry(entry: &SearchEntry) {
    // Time only ever disables an account: enabled later means enabled earlier too.
    let times = [i64::MIN, -1, 0, NOW.as_secs(), i64::MAX].map(Timestamp::from_secs);
    let enabled: Vec<bool> = times.iter().map(|&t| entry_enabled(entry, t)).collect();
    assert!(enabled.windows(2).all(|w| w[0] || !w[1]), "{enabled:?} {entry:?}");
    for values in entry.attrs.values() {
        for value in values {
            let _ = ad_expiry(value);
        }
    }
    let key = dn_key(&entry.dn);
    assert_eq!(dn_key(&key), key, "{:?}", entry.dn);
}

fuzz_target!(|data: &[u8]| {
    let entries = entries(data);
    for entry in &entries {
        check_entry(entry);
    }
    for config in CONFIGS.iter() {
        let cfg = config.ldap.as_ref().expect("an [ldap] section");
        check_users(config, cfg, &entries);
    }
});
