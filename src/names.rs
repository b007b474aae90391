//! Which accounts Gatehouse may serve: the one rule every writer (CLI, import, web, API,
//! directory sync) applies before a name can carry keys, and the uid floor the login path
//! applies whatever the store says.
//!
//! sshd asks the key command about every account, root included, so a store entry named
//! `root` with a key would be a root login. Names of system accounts are therefore refused
//! when they are written, and a uid below `users.uid_min` is refused when it logs in.

use crate::config::Config;
use std::fmt;

/// Names no store entry may take, whether or not such an account exists on this host yet:
/// the base system's accounts, common service accounts, and Gatehouse's own.
const RESERVED: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "sshd",
    "messagebus",
    "polkitd",
    "postgres",
    "openldap",
    "admin",
    "operator",
    "halt",
    "shutdown",
    "toor",
    "gatehouse",
    "gatehouse-keys",
    "gatehouse-web",
    "gatehouse-ldap",
];

/// Whether `name` is one of the reserved names, or a systemd or Debian service account
/// (`systemd-*`, `_*`).
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name) || name.starts_with("systemd-") || name.starts_with('_')
}

/// Why a name may not be given keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRefusal {
    /// Fails `users.name_pattern`.
    Invalid { name: String, pattern: String },
    /// One of the reserved names.
    Reserved(String),
    /// A system account of that name exists with a uid Gatehouse does not manage.
    SystemAccount { name: String, uid: u32, min: u32, max: u32 },
    /// The account database could not be asked; refused rather than guessed.
    Lookup { name: String, error: String },
}

impl fmt::Display for NameRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameRefusal::Invalid { name, pattern } => {
                write!(f, "`{}` is not a valid user name (users.name_pattern is {pattern})", name.escape_debug())
            }
            NameRefusal::Reserved(name) => {
                write!(f, "`{name}` is a reserved system name; Gatehouse never serves keys for it")
            }
            NameRefusal::SystemAccount { name, uid, min, max } => write!(
                f,
                "`{name}` is a system account (uid {uid}) outside users.uid_min..users.uid_max ({min}..{max}); \
                 Gatehouse never serves keys for it"
            ),
            NameRefusal::Lookup { name, error } => {
                write!(f, "cannot tell whether `{name}` is a system account ({error}); refused")
            }
        }
    }
}

impl std::error::Error for NameRefusal {}

/// The uid of the system account `name`, through NSS; `Ok(None)` when there is none.
pub fn system_uid(name: &str) -> Result<Option<u32>, String> {
    nix::unistd::User::from_name(name).map(|a| a.map(|a| a.uid.as_raw())).map_err(|e| e.to_string())
}

/// The rule for a name that is to carry keys: valid, not reserved, and not the name of a
/// system account outside `users.uid_min..=users.uid_max`. `lookup` answers the uid of an
/// existing account (see [`system_uid`]); an account that does not exist yet is fine.
pub fn check_with(
    config: &Config,
    name: &str,
    lookup: impl Fn(&str) -> Result<Option<u32>, String>,
) -> Result<(), NameRefusal> {
    if !config.valid_user_name(name) {
        return Err(NameRefusal::Invalid { name: name.to_string(), pattern: config.users.name_pattern_text.clone() });
    }
    if is_reserved(name) {
        return Err(NameRefusal::Reserved(name.to_string()));
    }
    let (min, max) = (config.users.uid_min, config.users.uid_max);
    match lookup(name) {
        Ok(Some(uid)) if uid == 0 || !(min..=max).contains(&uid) => {
            Err(NameRefusal::SystemAccount { name: name.to_string(), uid, min, max })
        }
        Ok(_) => Ok(()),
        Err(error) => Err(NameRefusal::Lookup { name: name.to_string(), error }),
    }
}

/// [`check_with`] against this host's account database.
pub fn check(config: &Config, name: &str) -> Result<(), NameRefusal> {
    check_with(config, name, system_uid)
}

/// The login path's floor, whatever the store says: never uid 0, never below
/// `users.uid_min`.
pub fn uid_served(config: &Config, uid: u32) -> bool {
    uid != 0 && uid >= config.users.uid_min
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse("g.toml", "[users]\nuid_min = 2000\nuid_max = 2999\n").unwrap()
    }

    fn accounts(name: &str) -> Result<Option<u32>, String> {
        match name {
            "alice" => Ok(Some(2001)),
            "carol" => Ok(Some(1500)),
            "dave" => Ok(Some(3000)),
            "broken" => Err("LDAP server down".into()),
            _ => Ok(None),
        }
    }

    #[test]
    fn reserved_and_system_names_are_refused() {
        let c = config();
        assert_eq!(check_with(&c, "alice", accounts), Ok(()));
        assert_eq!(check_with(&c, "newbie", accounts), Ok(()));
        for reserved in ["root", "sshd", "nobody", "gatehouse", "gatehouse-keys", "systemd-network", "_apt", "toor"] {
            assert_eq!(check_with(&c, reserved, accounts), Err(NameRefusal::Reserved(reserved.into())), "{reserved}");
        }
        assert!(matches!(check_with(&c, "carol", accounts), Err(NameRefusal::SystemAccount { uid: 1500, .. })));
        assert!(matches!(check_with(&c, "dave", accounts), Err(NameRefusal::SystemAccount { uid: 3000, .. })));
        assert!(matches!(check_with(&c, "broken", accounts), Err(NameRefusal::Lookup { .. })));
        assert!(matches!(check_with(&c, "Root", accounts), Err(NameRefusal::Invalid { .. })));
        // A uid 0 account under any name is refused, whatever the range says.
        let zero = |_: &str| Ok(Some(0));
        assert!(matches!(check_with(&c, "admin2", zero), Err(NameRefusal::SystemAccount { uid: 0, .. })));
        for refusal in [check_with(&c, "root", accounts), check_with(&c, "carol", accounts)] {
            let text = refusal.unwrap_err().to_string();
            assert!(!text.contains('\n') && text.contains("never serves"), "{text}");
        }
    }

    #[test]
    fn uid_floor() {
        let c = config();
        assert!(!uid_served(&c, 0));
        assert!(!uid_served(&c, 1999));
        assert!(uid_served(&c, 2000));
        // Above uid_max is still served: directory accounts may live there.
        assert!(uid_served(&c, 100_000));
    }
}
