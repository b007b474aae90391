//! Accounts as systemd user records: JSON drop-ins in `agent.userdb_dir` that nss-systemd
//! serves to every process through glibc (sshd, PAM, `ls`, `id`), so no NSS module of ours
//! runs anywhere and /etc/passwd is never edited. Per user: `NAME.user` (and `UID.user`
//! linking to it), `NAME.user-privileged` (no password, not locked: sshd without PAM
//! refuses accounts whose password is locked), `NAME.group` (the user's own group, gid =
//! uid, and `GID.group`), and `NAME:GROUP.membership` for users.group. Only records that
//! say `"service": "gatehouse"` are ever changed or removed.

use crate::admin::provision::{self, Accounts};
use crate::config::{AccountsMode, Config};
use crate::domain::UserState;
use crate::store::User;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The `service` field of every record the agent writes.
pub const SERVICE: &str = "gatehouse";

/// The folders nss-systemd reads drop-in records from (systemd 252).
pub const NSS_SYSTEMD_DIRS: &[&str] =
    &["/etc/userdb", "/run/userdb", "/run/host/userdb", "/usr/local/lib/userdb", "/usr/lib/userdb"];

/// Whether the agent makes accounts as user records here: `agent.accounts`, and for
/// `auto` whether the system's passwd and group databases ask nss-systemd.
pub fn in_force(config: &Config) -> bool {
    match config.agent.accounts {
        AccountsMode::Userdb => true,
        AccountsMode::Useradd => false,
        AccountsMode::Auto => {
            nss_systemd_serves(&std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default())
                && nss_systemd_installed()
        }
    }
}

/// Whether the `passwd:` and `group:` lines of an nsswitch.conf name `systemd`.
pub fn nss_systemd_serves(nsswitch: &str) -> bool {
    let names = |database: &str| {
        nsswitch.lines().any(|line| {
            let line = line.split('#').next().unwrap_or("");
            line.split_once(':').is_some_and(|(db, services)| {
                db.trim() == database && services.split_whitespace().any(|s| s == "systemd")
            })
        })
    };
    names("passwd") && names("group")
}

fn nss_systemd_installed() -> bool {
    let roots = ["/lib", "/usr/lib", "/lib64", "/usr/lib64"];
    roots.iter().any(|root| {
        Path::new(root).join("libnss_systemd.so.2").exists()
            || std::fs::read_dir(root)
                .is_ok_and(|dirs| dirs.flatten().any(|d| d.path().join("libnss_systemd.so.2").exists()))
    })
}

/// A name usable in a record's file name: what users.name_pattern allows may still hold
/// a `/` or `:` (a custom pattern), which would name another file or another membership.
fn file_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The records of one user, as file name → content (`None`: a link to the named file).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Records {
    files: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { text: String, private: bool },
    Link(String),
}

fn records_of(config: &Config, user: &User, uid: u32) -> Records {
    let name = &user.name;
    let home = config.data_dir_of(name).display().to_string();
    let record = json!({
        "userName": name,
        "uid": uid,
        "gid": uid,
        "homeDirectory": home,
        "shell": provision::login_shell(config, user),
        "disposition": "regular",
        "locked": user.state != UserState::Enabled,
        "service": SERVICE,
    });
    let group = json!({ "groupName": name, "gid": uid, "disposition": "regular", "service": SERVICE });
    let privileged = json!({ "privileged": { "hashedPassword": ["*"] }, "service": SERVICE });
    let membership = json!({ "service": SERVICE });
    let file = |v: serde_json::Value, private: bool| Entry::File { text: format!("{v}\n"), private };
    let mut files = BTreeMap::new();
    files.insert(format!("{name}.user"), file(record, false));
    files.insert(format!("{uid}.user"), Entry::Link(format!("{name}.user")));
    files.insert(format!("{name}.user-privileged"), file(privileged, true));
    files.insert(format!("{name}.group"), file(group, false));
    files.insert(format!("{uid}.group"), Entry::Link(format!("{name}.group")));
    files.insert(format!("{name}:{}.membership", config.users.group), file(membership, false));
    Records { files }
}

/// The records a folder holds: ours, and other programs'.
#[derive(Debug, Default)]
pub struct Existing {
    /// Users (name → uid), from `NAME.user` files that carry our service.
    pub users: BTreeMap<String, u32>,
    /// Every file that belongs to them.
    files: Vec<String>,
    /// Other programs' users (name, uid, gid) and groups (name, gid).
    foreign_users: Vec<(String, u32, u32)>,
    foreign_groups: Vec<(String, u32)>,
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn id_of(v: &serde_json::Value, key: &str) -> Option<u32> {
    v[key].as_u64().and_then(|n| u32::try_from(n).ok())
}

/// The records in `dir` now, in one read of the folder: each `NAME.user` file is parsed
/// once, and of the `NAME.group` files only those not of our users.
pub fn existing(dir: &Path) -> Result<Existing, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::default()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut found = Existing::default();
    let mut names = Vec::new();
    let mut group_files = Vec::new();
    for entry in entries.flatten() {
        let Ok(file) = entry.file_name().into_string() else { continue };
        names.push(file.clone());
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        let numeric = |stem: &str| stem.bytes().all(|b| b.is_ascii_digit());
        if let Some(name) = file.strip_suffix(".group").filter(|n| regular && !numeric(n)) {
            group_files.push(name.to_string());
        }
        let Some(name) = file.strip_suffix(".user").filter(|n| regular && !numeric(n)) else { continue };
        let Some(v) = read_json(&entry.path()) else { continue };
        let Some(uid) = id_of(&v, "uid") else { continue };
        if v["service"] == SERVICE && v["userName"] == name {
            found.users.insert(name.to_string(), uid);
        } else if let Some(user) = v["userName"].as_str() {
            found.foreign_users.push((user.to_string(), uid, id_of(&v, "gid").unwrap_or(uid)));
        }
    }
    for name in group_files.iter().filter(|n| !found.users.contains_key(*n)) {
        let Some(v) = read_json(&dir.join(format!("{name}.group"))) else { continue };
        if let (Some(group), Some(gid)) = (v["groupName"].as_str(), id_of(&v, "gid")) {
            found.foreign_groups.push((group.to_string(), gid));
        }
    }
    // Each of our users' files: the ones their records are made of.
    let uids: HashSet<u32> = found.users.values().copied().collect();
    for file in names {
        let owner =
            file.split_once(':').map(|(u, _)| u).or_else(|| file.rsplit_once('.').map(|(stem, _)| stem)).unwrap_or("");
        let by_number = owner.parse::<u32>().is_ok_and(|n| uids.contains(&n));
        if by_number || found.users.contains_key(owner) {
            found.files.push(file);
        }
    }
    Ok(found)
}

/// Other programs' user and group records in the folders nss-systemd reads, added to
/// `accounts`: the enumeration leaves nss-systemd out, and a uid, gid or name they hold
/// must not be given to a record of ours. `own` is what [`existing`] read of
/// agent.userdb_dir; any record in another folder is another program's.
pub fn add_foreign_records(config: &Config, own: &Existing, accounts: &mut Accounts) {
    let add = |found: &Existing, accounts: &mut Accounts| {
        for (name, uid, gid) in &found.foreign_users {
            accounts.add_account(name, *uid, *gid);
        }
        for (name, gid) in &found.foreign_groups {
            accounts.add_group(name, *gid);
        }
    };
    add(own, accounts);
    for dir in NSS_SYSTEMD_DIRS.iter().map(Path::new).filter(|d| *d != config.agent.userdb_dir) {
        let Ok(other) = existing(dir) else { continue };
        for (name, uid) in &other.users {
            accounts.add_account(name, *uid, *uid);
        }
        add(&other, accounts);
    }
}

/// What a pass does to the records.
pub struct Outcome {
    /// Users whose record was written or changed: `(user, what)`.
    pub written: Vec<(String, String)>,
    /// Users whose records were removed.
    pub removed: Vec<String>,
    /// Users refused a record: `(user, why)`.
    pub refused: Vec<(String, String)>,
    /// Names that had a record of ours before the pass: members of users.group.
    pub before: Vec<String>,
    /// The records of ours after the pass (name, uid).
    pub now: Vec<(String, u32)>,
}

/// Makes the folder hold a record for every store user that should have one, and no
/// other record of ours. `accounts` is the host's view before the pass, `found` what
/// [`existing`] read from the folder.
pub fn sync(config: &Config, users: &[User], accounts: &Accounts, found: &Existing) -> Result<Outcome, String> {
    let dir = &config.agent.userdb_dir;
    make_dir(dir)?;
    let (existing, files) = (&found.users, &found.files);
    let mut out = Outcome {
        written: Vec::new(),
        removed: Vec::new(),
        refused: Vec::new(),
        before: existing.keys().cloned().collect(),
        now: Vec::new(),
    };
    let mut wanted: BTreeMap<String, (u32, Records)> = BTreeMap::new();
    for u in users {
        if crate::names::is_reserved(&u.name) || !config.valid_user_name(&u.name) {
            continue;
        }
        let ours_now = existing.contains_key(&u.name);
        if !ours_now && accounts.get(&u.name).ok().flatten().is_some() {
            // An account from elsewhere (/etc/passwd, made by useradd before): it stays
            // as it is, and provisioning locks and unlocks it.
            continue;
        }
        let Some(uid) = u.uid else {
            out.refused.push((u.name.clone(), "no uid in the store yet (run `gatehouse init`)".into()));
            continue;
        };
        if !file_safe(&u.name) {
            out.refused.push((u.name.clone(), "the name cannot be a user record's file name".into()));
            continue;
        }
        if !config.users.manages_uid(uid) {
            out.refused.push((u.name.clone(), format!("uid {uid} outside users.uid_min..users.uid_max")));
            continue;
        }
        let is_ours = |other: &str| other == u.name && ours_now;
        if let Some(other) = accounts.name_of_uid(uid).filter(|o| !is_ours(o)) {
            out.refused.push((u.name.clone(), format!("uid {uid} is held by the account {other}")));
            continue;
        }
        if let Some(other) = accounts.group_name(uid).filter(|o| !is_ours(o)) {
            out.refused.push((u.name.clone(), format!("gid {uid} is held by the group {other}")));
            continue;
        }
        if let Some(gid) = accounts.group_gid(&u.name).filter(|g| *g != uid || !ours_now) {
            out.refused.push((u.name.clone(), format!("a group {} exists already (gid {gid})", u.name)));
            continue;
        }
        wanted.insert(u.name.clone(), (uid, records_of(config, u, uid)));
    }
    // Records of users no longer wanted go first: a re-added name's old uid link with them.
    for (name, uid) in existing {
        let keep = wanted.get(name).is_some_and(|(_, r)| r.files.contains_key(&format!("{uid}.user")));
        if keep {
            continue;
        }
        for file in files.iter().filter(|f| belongs_to(f, name, *uid)) {
            remove(dir, file)?;
        }
        if !wanted.contains_key(name) {
            out.removed.push(name.clone());
        }
    }
    for (name, (uid, records)) in &wanted {
        let mut changed = false;
        for (file, entry) in &records.files {
            changed |= put(dir, file, entry)?;
        }
        // Memberships of ours no longer wanted (users.group renamed).
        for stale in files.iter().filter(|f| f.starts_with(&format!("{name}:")) && !records.files.contains_key(*f)) {
            remove(dir, stale)?;
        }
        if changed {
            let what = match existing.get(name) {
                None => "user record made",
                Some(_) => "user record updated",
            };
            out.written.push((name.clone(), what.to_string()));
        }
        out.now.push((name.clone(), *uid));
    }
    Ok(out)
}

fn belongs_to(file: &str, name: &str, uid: u32) -> bool {
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    stem == name || stem == uid.to_string() || file.starts_with(&format!("{name}:"))
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

use std::os::unix::fs::DirBuilderExt;

fn remove(dir: &Path, file: &str) -> Result<(), String> {
    match std::fs::remove_file(dir.join(file)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.join(file).display())),
    }
}

/// Writes `entry` as `file` unless it is there already; whether it wrote. A new file is
/// made under a hidden name (nss-systemd skips those) and renamed into place, so a
/// lookup never reads half a record.
fn put(dir: &Path, file: &str, entry: &Entry) -> Result<bool, String> {
    let path = dir.join(file);
    let shown = |e: std::io::Error| format!("{}: {e}", path.display());
    let same = match (entry, std::fs::symlink_metadata(&path)) {
        (Entry::Link(to), Ok(m)) if m.file_type().is_symlink() => {
            std::fs::read_link(&path).is_ok_and(|t| t == Path::new(to))
        }
        (Entry::File { text, private }, Ok(m)) if m.file_type().is_file() => {
            let mode_ok = (m.permissions().mode() & 0o777) == if *private { 0o600 } else { 0o644 };
            mode_ok && std::fs::read_to_string(&path).is_ok_and(|t| &t == text)
        }
        _ => false,
    };
    if same {
        return Ok(false);
    }
    let temp: PathBuf = dir.join(format!(".{file}.gatehouse-new"));
    let _ = std::fs::remove_file(&temp);
    match entry {
        Entry::Link(to) => std::os::unix::fs::symlink(to, &temp).map_err(shown)?,
        Entry::File { text, private } => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if *private { 0o600 } else { 0o644 })
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&temp)
                .map_err(shown)?;
            f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(shown)?;
            // The umask may have narrowed the mode asked for.
            f.set_permissions(std::fs::Permissions::from_mode(if *private { 0o600 } else { 0o644 })).map_err(shown)?;
        }
    }
    std::fs::rename(&temp, &path).map_err(shown)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;

    fn config(dir: &Path) -> Config {
        let text = format!(
            "[users]\nuid_min = 20000\nuid_max = 29999\n[agent]\naccounts = \"userdb\"\nuserdb_dir = \"{}\"\n",
            dir.display()
        );
        Config::parse("g.toml", &text).unwrap()
    }

    fn user(name: &str, uid: Option<u32>, state: UserState) -> User {
        User {
            name: name.into(),
            state,
            policy: Scope::Git,
            port_forwarding: false,
            created: crate::time::Timestamp::EPOCH,
            source: "cli".into(),
            uid,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gatehouse-userdb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn nsswitch_lines_are_read_as_glibc_reads_them() {
        assert!(nss_systemd_serves("passwd: files systemd\ngroup:  files [SUCCESS=merge] systemd\n"));
        assert!(!nss_systemd_serves("passwd: files systemd\ngroup: files\n"), "both databases");
        assert!(!nss_systemd_serves("# passwd: files systemd\ngroup: files systemd\n"));
        assert!(!nss_systemd_serves("passwd: files # systemd\ngroup: files systemd\n"));
        assert!(!nss_systemd_serves("passwd: files systemd-extra\ngroup: files systemd\n"));
    }

    #[test]
    fn records_follow_the_store_and_touch_only_our_files() {
        let dir = temp_dir("follow");
        let c = config(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Someone else's record: never touched.
        std::fs::write(dir.join("other.user"), r#"{"userName":"other","uid":20500}"#).unwrap();
        let accounts = Accounts::default();
        let users = vec![user("alice", Some(20001), UserState::Enabled), user("bob", Some(20002), UserState::Disabled)];
        let out = sync(&c, &users, &accounts, &existing(&dir).unwrap()).unwrap();
        assert_eq!(out.written.len(), 2);
        assert!(out.refused.is_empty(), "{:?}", out.refused);
        let files = listing(&dir);
        for f in ["alice.user", "20001.user", "alice.user-privileged", "alice.group", "20001.group"] {
            assert!(files.contains(&f.to_string()), "{f} in {files:?}");
        }
        assert!(files.contains(&"alice:gatehouse-users.membership".to_string()));
        let bob: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("bob.user")).unwrap()).unwrap();
        assert_eq!(bob["locked"], true);
        assert_eq!(bob["homeDirectory"], "/data/bob");
        let mode = std::fs::metadata(dir.join("alice.user-privileged")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The foreign record is read as another program's account, and ours as ours.
        let found = existing(&dir).unwrap();
        assert_eq!(found.foreign_users, [("other".to_string(), 20500, 20500)]);
        assert_eq!(found.users.len(), 2);
        assert!(found.foreign_groups.is_empty(), "our own groups are not foreign: {:?}", found.foreign_groups);
        // Nothing changed: nothing written.
        assert!(sync(&c, &users, &accounts, &existing(&dir).unwrap()).unwrap().written.is_empty());
        // bob removed, alice re-added under a new uid: bob's files go, alice's old uid link too.
        let users = vec![user("alice", Some(20003), UserState::Enabled)];
        let out = sync(&c, &users, &accounts, &existing(&dir).unwrap()).unwrap();
        assert_eq!(out.removed, ["bob"]);
        let files = listing(&dir);
        assert!(!files.iter().any(|f| f.starts_with("bob") || f.starts_with("20001") || f.starts_with("20002")));
        assert!(files.contains(&"20003.user".to_string()) && files.contains(&"other.user".to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn collisions_and_unsafe_names_are_refused() {
        let dir = temp_dir("refuse");
        let c = config(&dir);
        let accounts = Accounts::parse(
            "legacy:x:20010:20010::/data/legacy:/bin/sh\nholder:x:20011:20011::/:/bin/sh\n",
            "",
            "lab:x:20012:\ncarol:x:777:\n",
            "gatehouse-users",
        );
        let users = vec![
            user("legacy", Some(20010), UserState::Enabled),
            user("dave", Some(20011), UserState::Enabled),
            user("erin", Some(20012), UserState::Enabled),
            user("carol", Some(20013), UserState::Enabled),
            user("frank", Some(5), UserState::Enabled),
            user("gina", None, UserState::Enabled),
        ];
        let out = sync(&c, &users, &accounts, &existing(&dir).unwrap()).unwrap();
        let why = |n: &str| out.refused.iter().find(|(u, _)| u == n).map(|(_, w)| w.clone()).unwrap_or_default();
        assert!(out.written.is_empty(), "{:?}", out.written);
        assert!(why("dave").contains("held by the account holder"), "{}", why("dave"));
        assert!(why("erin").contains("held by the group lab"), "{}", why("erin"));
        assert!(why("carol").contains("a group carol exists"), "{}", why("carol"));
        assert!(why("frank").contains("outside"), "{}", why("frank"));
        assert!(why("gina").contains("no uid"), "{}", why("gina"));
        assert!(why("legacy").is_empty(), "an account from /etc/passwd is left to provisioning");
        assert!(!file_safe("../x") && !file_safe("a:b") && !file_safe(".hidden") && !file_safe("-x"));
        assert!(file_safe("alice.smith_2"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
