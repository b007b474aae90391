//! `gatehouse provision` and the agent's account pass: system accounts follow the store.
//! Accounts are created for enabled users and locked for disabled ones, and for members of
//! `users.group` the store no longer knows, only within the configured UID range; anything
//! outside it, and reserved names, are never touched. Running it twice changes nothing
//! the second time.

use crate::config::Config;
use crate::domain::{Scope, UserState};
use crate::store::User;
use std::collections::{HashMap, HashSet};
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `uid`: the store's (`None` for stores from before uids were allocated: useradd picks).
    Create {
        user: String,
        shell: String,
        uid: Option<u32>,
    },
    Lock(String),
    Unlock(String),
    Skip {
        user: String,
        reason: String,
    },
}

impl Step {
    /// The user the step is for, and what it does, as reports and logs say it.
    pub fn describe(&self) -> (&str, String) {
        match self {
            Step::Create { user, shell, uid: Some(uid) } => (user, format!("create (uid {uid}, shell {shell})")),
            Step::Create { user, shell, uid: None } => (user, format!("create (shell {shell})")),
            Step::Lock(user) => (user, "lock".to_string()),
            Step::Unlock(user) => (user, "unlock".to_string()),
            Step::Skip { user, reason } => (user, format!("skip: {reason}")),
        }
    }
}

/// An account as provisioning sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// The host's accounts, read once per pass: one enumeration of the password, shadow and
/// group databases instead of a lookup (a linear scan of /etc/passwd) per store user.
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    by_name: HashMap<String, Account>,
    /// The first name of each uid.
    by_uid: HashMap<u32, String>,
    /// Groups: name by gid, and the gids of names.
    group_names: HashMap<u32, String>,
    group_gids: HashMap<String, u32>,
    /// Accounts whose password field starts with `!` (`usermod -L`; a bare `*`, as
    /// accounts for key-only logins have, is not a lock).
    locked: HashSet<String>,
    /// Members of `users.group`.
    pub members: Vec<String>,
    /// Whether names missing from the enumeration are looked up one by one (a directory
    /// through NSS may not enumerate); off in unit tests.
    ask_nss: bool,
}

/// The services of `database` in an nsswitch.conf, without `systemd` and actions
/// (`[NOTFOUND=return]`): what to enumerate. nss-systemd serves the agent's own user
/// records, which it reads from their folder instead: enumerated through NSS, 100,000 of
/// them take seconds for passwd, and for group far longer (every group's members are a
/// scan of every membership file).
pub fn enumerated_services(nsswitch: &str, database: &str) -> String {
    let services: Vec<&str> = nsswitch
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|l| l.split_once(':').filter(|(db, _)| db.trim() == database).map(|(_, s)| s))
        .map(|s| s.split_whitespace().filter(|w| *w != "systemd" && !w.starts_with('[')).collect())
        .unwrap_or_default();
    if services.is_empty() {
        "files".to_string()
    } else {
        services.join(" ")
    }
}

/// `getent -s SERVICES DATABASE [KEY]`'s output. Status 2 is "no such key" (a group that
/// does not exist: no members); any other failure fails the whole read, so that a
/// database that could not be read is never taken for one without the account.
fn getent(args: &[&str]) -> Result<String, String> {
    let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    let services = enumerated_services(&nsswitch, args[0]);
    let out = Command::new("/usr/bin/getent")
        .args(["-s", &services])
        .args(args)
        .output()
        .map_err(|e| format!("getent {}: {e}", args[0]))?;
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Some(2) if args.len() > 1 => Ok(String::new()),
        _ => Err(format!("getent {} failed ({})", args.join(" "), out.status)),
    }
}

impl Accounts {
    /// This host's accounts.
    pub fn read(config: &Config) -> Result<Accounts, String> {
        let mut accounts =
            Accounts::parse(&getent(&["passwd"])?, &getent(&["shadow"])?, &getent(&["group"])?, &config.users.group);
        accounts.ask_nss = true;
        Ok(accounts)
    }

    /// From `getent passwd`, `getent shadow` and `getent group` output; `managed` is
    /// users.group.
    pub fn parse(passwd: &str, shadow: &str, groups: &str, managed: &str) -> Accounts {
        let mut by_name = HashMap::new();
        let mut by_uid = HashMap::new();
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let (Some(name), Some(Ok(uid)), Some(Ok(gid))) =
                (f.first(), f.get(2).map(|u| u.parse()), f.get(3).map(|g| g.parse()))
            {
                by_name.entry((*name).to_string()).or_insert(Account { uid, gid });
                by_uid.entry(uid).or_insert_with(|| (*name).to_string());
            }
        }
        let (mut group_names, mut group_gids) = (HashMap::new(), HashMap::new());
        let mut members = Vec::new();
        for line in groups.lines() {
            let f: Vec<&str> = line.split(':').collect();
            let (Some(name), Some(Ok(gid))) = (f.first(), f.get(2).map(|g| g.parse::<u32>())) else { continue };
            group_names.entry(gid).or_insert_with(|| (*name).to_string());
            group_gids.entry((*name).to_string()).or_insert(gid);
            if *name == managed && members.is_empty() {
                members = f
                    .get(3)
                    .map_or(Vec::new(), |m| m.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect());
            }
        }
        let locked = shadow
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(_, rest)| rest.starts_with('!'))
            .map(|(name, _)| name.to_string())
            .collect();
        Accounts { by_name, by_uid, group_names, group_gids, locked, members, ask_nss: false }
    }

    /// Accounts of the agent's own user records (name, uid; each with a group of its own,
    /// gid = uid, and a member of users.group), which the enumeration leaves out.
    pub fn add_records(&mut self, records: impl IntoIterator<Item = (String, u32)>) {
        // A record rewritten in this pass (a name added again, with a new uid) replaces
        // what was read before it.
        for (name, uid) in records {
            let known = self.by_name.insert(name.clone(), Account { uid, gid: uid }).is_some();
            self.by_uid.insert(uid, name.clone());
            self.group_names.insert(uid, name.clone());
            self.group_gids.insert(name.clone(), uid);
            if !known {
                self.members.push(name);
            }
        }
    }

    /// An account or a group from a source the enumeration left out (another program's
    /// systemd user records).
    pub fn add_account(&mut self, name: &str, uid: u32, gid: u32) {
        self.by_name.entry(name.to_string()).or_insert(Account { uid, gid });
        self.by_uid.entry(uid).or_insert_with(|| name.to_string());
    }

    pub fn add_group(&mut self, name: &str, gid: u32) {
        self.group_names.entry(gid).or_insert_with(|| name.to_string());
        self.group_gids.entry(name.to_string()).or_insert(gid);
    }

    /// The name of the account with `uid`, if the enumeration had one.
    pub fn name_of_uid(&self, uid: u32) -> Option<&str> {
        self.by_uid.get(&uid).map(String::as_str)
    }

    /// The group with `gid`, and the gid of the group `name`, if the enumeration had them.
    pub fn group_name(&self, gid: u32) -> Option<&str> {
        self.group_names.get(&gid).map(String::as_str)
    }

    pub fn group_gid(&self, name: &str) -> Option<u32> {
        self.group_gids.get(name).copied()
    }

    /// The account `name`, if there is one.
    pub fn get(&self, name: &str) -> Result<Option<Account>, String> {
        if let Some(a) = self.by_name.get(name) {
            return Ok(Some(*a));
        }
        if !self.ask_nss {
            return Ok(None);
        }
        // The entry must be the one asked for: NSS modules may fold case or aliases.
        nix::unistd::User::from_name(name)
            .map(|u| u.filter(|u| u.name == name).map(|u| Account { uid: u.uid.as_raw(), gid: u.gid.as_raw() }))
            .map_err(|e| format!("passwd lookup: {e}"))
    }

    fn is_locked(&self, name: &str) -> bool {
        self.locked.contains(name)
    }

    /// The account `name` if Gatehouse may act on it: not a reserved name, and its uid
    /// managed ([`crate::config::UsersConfig::manages_uid`]).
    pub fn managed(&self, config: &Config, name: &str) -> Option<Account> {
        if crate::names::is_reserved(name) {
            return None;
        }
        self.get(name).ok().flatten().filter(|a| config.users.manages_uid(a.uid))
    }
}

/// Accounts in the UID range whose sessions must not run: their user is disabled in the
/// store, or (a member of `users.group`) no longer in it. (name, uid) pairs.
pub fn revoked(config: &Config, users: &[User], accounts: &Accounts) -> Vec<(String, u32)> {
    let known: HashMap<&str, UserState> = users.iter().map(|u| (u.name.as_str(), u.state)).collect();
    let mut names: Vec<&str> =
        users.iter().filter(|u| u.state != UserState::Enabled).map(|u| u.name.as_str()).collect();
    names.extend(accounts.members.iter().map(String::as_str).filter(|m| !known.contains_key(m)));
    names.sort_unstable();
    names.dedup();
    names.into_iter().filter_map(|n| accounts.managed(config, n).map(|a| (n.to_string(), a.uid))).collect()
}

/// What provisioning would do, given the store's users and the host's accounts.
pub fn plan(config: &Config, users: &[User], accounts: &Accounts) -> Vec<Step> {
    let (min, max) = (config.users.uid_min, config.users.uid_max);
    let mut steps = Vec::new();
    for u in users {
        if crate::names::is_reserved(&u.name) {
            steps.push(Step::Skip { user: u.name.clone(), reason: "reserved name".into() });
            continue;
        }
        if !config.valid_user_name(&u.name) {
            steps.push(Step::Skip { user: u.name.clone(), reason: "not a valid user name".into() });
            continue;
        }
        match accounts.get(&u.name) {
            Ok(None) if u.state == UserState::Enabled => {
                steps.push(Step::Create { user: u.name.clone(), shell: login_shell(config, u), uid: u.uid });
            }
            Ok(None) => {}
            Ok(Some(account)) => {
                let uid = account.uid;
                if let Some(given) = u.uid.filter(|given| *given != uid) {
                    // A former user's account under a name added again: unlocking it
                    // would hand the new user the old one's files.
                    steps.push(Step::Skip {
                        user: u.name.clone(),
                        reason: format!(
                            "the account has uid {uid}, the store gave {given}: a former user's; \
                             remove it (userdel) and its files are kept, owned by {uid}"
                        ),
                    });
                    continue;
                }
                if !(min..=max).contains(&uid) {
                    steps.push(Step::Skip {
                        user: u.name.clone(),
                        reason: format!("uid {uid} outside users.uid_min..users.uid_max ({min}..{max}): not ours"),
                    });
                    continue;
                }
                let is_locked = accounts.is_locked(&u.name);
                match u.state {
                    UserState::Disabled if !is_locked => steps.push(Step::Lock(u.name.clone())),
                    UserState::Enabled if is_locked => steps.push(Step::Unlock(u.name.clone())),
                    _ => {}
                }
            }
            Err(reason) => steps.push(Step::Skip { user: u.name.clone(), reason }),
        }
    }
    // Members of the managed group the store no longer knows: removed users keep their
    // account (and their files) but can no longer log in.
    let known: HashSet<&str> = users.iter().map(|u| u.name.as_str()).collect();
    for member in accounts.members.iter().filter(|m| !known.contains(m.as_str())) {
        if accounts.managed(config, member).is_some() && !accounts.is_locked(member) {
            steps.push(Step::Lock(member.clone()));
        }
    }
    steps
}

/// The login shell an account of `user` gets.
pub fn login_shell(config: &Config, user: &User) -> String {
    if user.policy == Scope::Shell && config.shell.login_shell.is_none() {
        crate::config::DEFAULT_LOGIN_SHELL.to_string()
    } else if user.policy == Scope::Shell {
        // gatehouse-shell starts shell.login_shell for them: no shell, and no startup
        // file, runs before gatehouse-shell for any of their keys.
        config.shell.path.clone()
    } else {
        config.users.shell.display().to_string()
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Carries out one step.
pub fn apply(config: &Config, step: &Step) -> Result<(), String> {
    let (min, max) = (config.users.uid_min, config.users.uid_max);
    match step {
        Step::Create { user, shell, uid } => {
            let home = config.data_dir_of(user);
            let mut cmd = Command::new("/usr/sbin/useradd");
            cmd.args(["-K", &format!("UID_MIN={min}"), "-K", &format!("UID_MAX={max}"), "-M", "-U", "-p", "*"])
                .arg("-d")
                .arg(&home)
                .args(["-s", shell]);
            if let Some(uid) = uid {
                // The store's uid. The user's own group takes the same number when it is
                // free (useradd's own preference), another one when a group holds it.
                cmd.args(["-u", &uid.to_string()]);
            }
            if nix::unistd::Group::from_name(&config.users.group).ok().flatten().is_some() {
                cmd.args(["-G", &config.users.group]);
            } else {
                return Err(format!("group {} does not exist (the package creates it)", config.users.group));
            }
            run(cmd.arg(user))
        }
        Step::Lock(user) => run(Command::new("/usr/sbin/usermod").args(["-L", "-e", "1", user])),
        Step::Unlock(user) => run(Command::new("/usr/sbin/usermod").args(["-U", "-e", "", user])),
        Step::Skip { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          alice:x:20001:20001::/data/alice:/usr/bin/gatehouse-shell\n\
                          bob:x:20002:20002::/data/bob:/usr/bin/gatehouse-shell\n\
                          gone:x:20003:20003::/data/gone:/usr/bin/gatehouse-shell\n\
                          legacy:x:1000:1000::/home/legacy:/bin/bash\n\
                          sshd:x:105:65534::/run/sshd:/usr/sbin/nologin\n\
                          broken:x:notanumber:1::/:/bin/sh\n";
    const SHADOW: &str = "root:$y$hash:19000::::::\nalice:*:19000::::::\nbob:!*:19000::::::\ngone:*:19000::::::\n";
    const GROUP: &str = "users:x:100:\ngatehouse-users:x:990:alice,bob,gone,legacy,sshd\n";

    fn user(name: &str, state: UserState) -> User {
        User {
            name: name.into(),
            state,
            policy: Scope::Shell,
            port_forwarding: false,
            created: crate::time::Timestamp::EPOCH,
            source: "cli".into(),
            uid: None,
        }
    }

    fn config() -> Config {
        Config::parse("g.toml", "[users]\nuid_min = 20000\nuid_max = 29999\n").unwrap()
    }

    #[test]
    fn enumeration_leaves_nss_systemd_out() {
        let conf = "passwd: files systemd\ngroup: files [SUCCESS=merge] sss systemd # x\nshadow: files\n";
        assert_eq!(enumerated_services(conf, "passwd"), "files");
        assert_eq!(enumerated_services(conf, "group"), "files sss");
        assert_eq!(enumerated_services(conf, "shadow"), "files");
        assert_eq!(enumerated_services("passwd: systemd\n", "passwd"), "files");
        assert_eq!(enumerated_services("", "group"), "files");
    }

    #[test]
    fn accounts_from_getent_output() {
        let a = Accounts::parse(PASSWD, SHADOW, GROUP, "gatehouse-users");
        assert_eq!(a.get("alice").unwrap(), Some(Account { uid: 20001, gid: 20001 }));
        assert_eq!(a.get("broken").unwrap(), None, "a line with a bad uid is no account");
        assert_eq!(a.get("nobody-here").unwrap(), None);
        assert!(a.is_locked("bob") && !a.is_locked("alice") && !a.is_locked("root"));
        assert_eq!(a.members, ["alice", "bob", "gone", "legacy", "sshd"]);
        assert!(Accounts::parse("", "", "", "g").members.is_empty());
        assert!(Accounts::parse("", "", "g:x:1:\n", "g").members.is_empty());
    }

    #[test]
    fn plan_creates_locks_unlocks_within_the_range_only() {
        let a = Accounts::parse(PASSWD, SHADOW, GROUP, "gatehouse-users");
        let users = vec![
            user("alice", UserState::Disabled),
            user("bob", UserState::Enabled),
            user("carol", UserState::Enabled),
            user("dave", UserState::Disabled),
            user("root", UserState::Enabled),
            user("legacy", UserState::Disabled),
            user("-rf", UserState::Enabled),
        ];
        let mut readded = user("gone", UserState::Enabled);
        readded.uid = Some(20099);
        let skipped = plan(&config(), &[readded], &a);
        assert!(
            matches!(&skipped[0], Step::Skip { user, reason } if user == "gone" && reason.contains("a former user's")),
            "{skipped:?}"
        );
        let steps = plan(&config(), &users, &a);
        assert!(steps.contains(&Step::Lock("alice".into())));
        assert!(steps.contains(&Step::Unlock("bob".into())));
        assert!(steps.iter().any(|s| matches!(s, Step::Create { user, .. } if user == "carol")));
        assert!(
            !steps.iter().any(|s| matches!(s, Step::Create { user, .. } if user == "dave")),
            "disabled: no account"
        );
        assert!(steps.contains(&Step::Skip { user: "root".into(), reason: "reserved name".into() }));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Skip { user, reason } if user == "legacy" && reason.contains("outside"))));
        assert!(steps.iter().any(|s| matches!(s, Step::Skip { user, .. } if user == "-rf")));
        // A member the store no longer knows, in the range: locked. Outside it (legacy is
        // known anyway; sshd is reserved and outside): never.
        assert!(steps.contains(&Step::Lock("gone".into())));
        assert!(!steps.iter().any(|s| *s == Step::Lock("sshd".into()) || *s == Step::Lock("legacy".into())));
    }

    #[test]
    fn revoked_accounts_are_disabled_or_removed_users_in_the_range() {
        let a = Accounts::parse(PASSWD, SHADOW, GROUP, "gatehouse-users");
        let users = vec![
            user("alice", UserState::Disabled),
            user("bob", UserState::Enabled),
            user("root", UserState::Disabled),
            user("legacy", UserState::Disabled),
        ];
        let mut r = revoked(&config(), &users, &a);
        r.sort();
        assert_eq!(r, vec![("alice".to_string(), 20001), ("gone".to_string(), 20003)]);
    }
}
