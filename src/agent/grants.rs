//! Grants become file access: every grant that covers an existing repository under
//! `git.root` is turned into POSIX ACL entries (setfacl), so the grantee's git, run as the
//! grantee by gatehouse-shell, can read (or write) the owner's files.
//!
//! For a grant of `SUBJECT` (`u:bob`, or `g:lab` for `@lab`) on `OWNER/NAME.git`:
//!
//! - read: `u:bob:rX` and the default `d:u:bob:rX` on the repository's whole tree;
//! - write: `rwX` likewise, `core.sharedRepository=group` in the repository's config (git
//!   then keeps the group class, and so the ACL mask, writable on what it makes), and a
//!   named entry for the owner, `u:OWNER:rwX` with its default, so what the grantee pushes
//!   stays writable by the owner;
//! - the owner's folder (`git.root/OWNER`): `u:bob:x`, traverse, not list.
//!
//! What the agent added is recorded in `agent-acl.json` beside the store (root's, 0600),
//! so a revoked grant takes away exactly those entries and never one an admin set by hand:
//! an entry the subject already has when the agent comes to add it is the admin's and is
//! left alone (and not recorded). [`plan`] is the pure part: desired entries against
//! recorded ones; [`sync`] runs setfacl (always `-P`: symbolic links are never followed,
//! neither as the argument nor in the walk).

use super::Run;
use crate::admin::provision::Accounts;
use crate::domain::repo::{self, Access, RepoPath};
use crate::store::Grant;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What an entry is put on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A repository and everything in it, with the default entry (`setfacl -R`).
    Tree,
    /// One folder between `git.root` and a repository: search (`x`) only.
    Traverse,
    /// `core.sharedRepository=group` in the repository's config (no ACL entry).
    Shared,
}

/// One thing the agent adds for grants, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: Kind,
    /// `u:NAME` or `g:NAME`; empty for [`Kind::Shared`].
    pub qualifier: String,
    /// `rX`, `rwX` or `x`; `group` for [`Kind::Shared`].
    pub perms: String,
    /// The grant's subject (`bob`, `@lab`) this entry is for, for the log.
    pub subject: String,
}

impl Entry {
    fn key(&self) -> (PathBuf, Kind, String) {
        (self.path.clone(), self.kind, self.qualifier.clone())
    }

    /// `u:bob:rX,d:u:bob:rX` for a tree, `u:bob:x` for a folder.
    fn spec(&self) -> String {
        match self.kind {
            Kind::Tree => format!("{0}:{1},d:{0}:{1}", self.qualifier, self.perms),
            Kind::Traverse | Kind::Shared => format!("{}:{}", self.qualifier, self.perms),
        }
    }

    fn describe(&self) -> String {
        match self.kind {
            Kind::Shared => format!("core.sharedRepository=group in {}", self.path.display()),
            _ => format!("acl {} on {}", self.spec(), self.path.display()),
        }
    }
}

/// One step of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Add `entry`; `ours`: the recorded entry it replaces (other permissions) is the agent's.
    Add {
        entry: Entry,
        ours: bool,
    },
    Remove(Entry),
}

/// The ACL qualifier of a grant subject: `u:bob`, `g:lab` for `@lab`.
pub fn qualifier(subject: &str) -> String {
    match subject.strip_prefix('@') {
        Some(group) => format!("g:{group}"),
        None => format!("u:{subject}"),
    }
}

/// The entries the grants ask for on the repositories that exist. `subject_ok` says
/// whether a subject (`bob`, `@lab`, or a repository's owner) may get entries: not a
/// reserved name, and known to the system.
pub fn desired(grants: &[Grant], repos: &[RepoPath], root: &Path, subject_ok: impl Fn(&str) -> bool) -> Vec<Entry> {
    let mut by_subject: BTreeMap<&str, Vec<Grant>> = BTreeMap::new();
    for g in grants {
        by_subject.entry(g.subject.as_str()).or_default().push(g.clone());
    }
    let mut want: BTreeMap<(PathBuf, Kind, String), Entry> = BTreeMap::new();
    let mut put = |e: Entry| {
        want.entry(e.key()).or_insert(e);
    };
    for (subject, theirs) in &by_subject {
        if !subject_ok(subject) {
            continue;
        }
        let q = qualifier(subject);
        for r in repos {
            if r.owner == *subject {
                continue;
            }
            // The same pattern logic as gatehouse-shell's decision: the widest grant wins.
            let Some(access) = repo::access(subject, r, theirs) else { continue };
            let dir = root.join(&r.owner).join(&r.name);
            let entry = |path: &Path, kind, qualifier: &str, perms: &str| Entry {
                path: path.to_path_buf(),
                kind,
                qualifier: qualifier.to_string(),
                perms: perms.to_string(),
                subject: subject.to_string(),
            };
            let perms = if access == Access::Write { "rwX" } else { "rX" };
            put(entry(&dir, Kind::Tree, &q, perms));
            put(entry(&root.join(&r.owner), Kind::Traverse, &q, "x"));
            if access == Access::Write && subject_ok(&r.owner) {
                put(entry(&dir, Kind::Shared, "", "group"));
                put(entry(&dir, Kind::Tree, &format!("u:{}", r.owner), "rwX"));
            }
        }
    }
    want.into_values().collect()
}

/// What to do to go from `recorded` to `desired`: removals first, then additions (a
/// changed permission is an addition over the agent's own entry).
pub fn plan(desired: &[Entry], recorded: &[Entry]) -> Vec<Action> {
    let want: BTreeMap<_, _> = desired.iter().map(|e| (e.key(), e)).collect();
    let have: BTreeMap<_, _> = recorded.iter().map(|e| (e.key(), e)).collect();
    let mut actions: Vec<Action> =
        have.iter().filter(|(k, _)| !want.contains_key(*k)).map(|(_, e)| Action::Remove((*e).clone())).collect();
    for (k, e) in &want {
        match have.get(k) {
            Some(old) if old.perms == e.perms => {}
            Some(_) => actions.push(Action::Add { entry: (*e).clone(), ours: true }),
            None => actions.push(Action::Add { entry: (*e).clone(), ours: false }),
        }
    }
    actions
}

/// The record of what the agent added: `agent-acl.json` beside the store.
pub fn record_path(config: &crate::config::Config) -> PathBuf {
    config.store.path.parent().unwrap_or(Path::new("/")).join("agent-acl.json")
}

fn load(path: &Path) -> Result<Vec<Entry>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Written whole to a new file, then renamed over the old: a crash leaves one or the other.
fn save(path: &Path, entries: &[Entry]) -> Result<(), String> {
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let text = serde_json::to_vec_pretty(entries).map_err(|e| e.to_string())?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

/// Why one step failed; `unsupported`: the file system takes no ACLs.
struct Failure {
    text: String,
    unsupported: bool,
}

fn run_tool(cmd: &mut Command) -> Result<String, Failure> {
    let shown = format!("{cmd:?}");
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(Failure { unsupported: err.contains("Operation not supported"), text: format!("{shown}: {err}") })
        }
        Err(e) => Err(Failure { text: format!("{shown}: {e}"), unsupported: false }),
    }
}

fn setfacl(args: &[&str], path: &Path) -> Result<String, Failure> {
    run_tool(Command::new("setfacl").args(args).arg("--").arg(path))
}

/// Whether `path`'s own ACL (access or default) names `qualifier` (`u:bob`).
fn has_entry(path: &Path, qualifier: &str) -> Result<bool, Failure> {
    let text = run_tool(Command::new("getfacl").args(["-P", "-c", "-p", "--"]).arg(path))?;
    let (tag, name) = qualifier.split_once(':').unwrap_or(("", ""));
    let tag = if tag == "g" { "group" } else { "user" };
    let prefix = format!("{tag}:{name}:");
    Ok(text.lines().any(|l| l.strip_prefix("default:").unwrap_or(l).starts_with(&prefix)))
}

/// The last write grant on a repository is gone: what grantees pushed (object folders and
/// files they made) becomes the owner's again, or the owner, whose named ACL entry goes
/// with the grant, could not write into those folders (a push whose object lands in one
/// fails). `-P -h`: no link is followed, neither in the walk nor as a target.
fn give_back(dir: &Path) -> Result<(), Failure> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Failure { text: e.to_string(), unsupported: false })?;
    run_tool(Command::new("chown").args(["-R", "-P", "-h", &meta.uid().to_string(), "--"]).arg(dir)).map(|_| ())
}

/// `git config` as the repository's owner: the config stays theirs, and no link in it
/// leads root anywhere.
fn owner_git(config: &crate::config::Config, dir: &Path, args: &[&str]) -> Result<String, Failure> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Failure { text: e.to_string(), unsupported: false })?;
    run_tool(
        Command::new("setpriv")
            .args(["--reuid", &meta.uid().to_string(), "--regid", &meta.gid().to_string(), "--clear-groups"])
            .arg(&config.git.program)
            .arg("config")
            .arg("--file")
            .arg(dir.join("config"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
    )
}

enum Done {
    /// Applied: record it (added) or drop it (removed).
    Applied,
    /// Already the subject's, by someone else's hand: left alone, not recorded.
    Foreign,
    /// The path is gone (or is a link now): nothing to remove.
    Gone,
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Whether what `entry` would add is there already, put by someone else: an entry for the
/// same subject (any permissions), a `core.sharedRepository` of any value.
fn foreign(config: &crate::config::Config, entry: &Entry) -> Result<bool, Failure> {
    if !is_real_dir(&entry.path) {
        return Ok(false);
    }
    match entry.kind {
        Kind::Shared => Ok(owner_git(config, &entry.path, &["--get", "core.sharedRepository"]).is_ok()),
        Kind::Tree | Kind::Traverse => has_entry(&entry.path, &entry.qualifier),
    }
}

fn add(config: &crate::config::Config, entry: &Entry) -> Result<Done, Failure> {
    if !is_real_dir(&entry.path) {
        return Ok(Done::Gone);
    }
    match entry.kind {
        Kind::Shared => {
            owner_git(config, &entry.path, &["core.sharedRepository", "group"])?;
        }
        Kind::Tree | Kind::Traverse => {
            let spec = entry.spec();
            let args: &[&str] =
                if entry.kind == Kind::Tree { &["-P", "-R", "-m", &spec] } else { &["-P", "-m", &spec] };
            setfacl(args, &entry.path)?;
        }
    }
    Ok(Done::Applied)
}

fn remove(config: &crate::config::Config, entry: &Entry) -> Result<Done, Failure> {
    if !is_real_dir(&entry.path) {
        return Ok(Done::Gone);
    }
    match entry.kind {
        Kind::Shared => {
            // Only while it still holds what the agent put there.
            if owner_git(config, &entry.path, &["--get", "core.sharedRepository"]).is_ok_and(|v| v.trim() == "group") {
                owner_git(config, &entry.path, &["--unset", "core.sharedRepository"])?;
            }
            give_back(&entry.path)?;
        }
        Kind::Tree => {
            let q = &entry.qualifier;
            setfacl(&["-P", "-R", "-x", &format!("{q},d:{q}")], &entry.path)?;
        }
        Kind::Traverse => {
            setfacl(&["-P", "-x", &entry.qualifier], &entry.path)?;
        }
    }
    Ok(Done::Applied)
}

/// Whether a grant subject may get entries: no reserved name, a valid name, an account (the
/// pass's snapshot) or a group (NSS), and for a user, enabled in the store (a disabled or
/// removed user's entries go).
fn subject_ok(config: &crate::config::Config, accounts: &Accounts, enabled: &HashSet<&str>, subject: &str) -> bool {
    match subject.strip_prefix('@') {
        Some(group) => {
            !group.is_empty()
                && !crate::names::is_reserved(group)
                && matches!(nix::unistd::Group::from_name(group), Ok(Some(g)) if g.gid.as_raw() != 0)
        }
        None => {
            config.valid_user_name(subject)
                && enabled.contains(subject)
                && !crate::names::is_reserved(subject)
                && matches!(accounts.get(subject), Ok(Some(a)) if a.uid != 0)
        }
    }
}

/// One pass over the grants: adds what is missing, removes what is stale, records it.
/// `enabled`: the store's enabled users.
pub(super) fn sync(run: &mut Run<'_>, grants: &[Grant], accounts: &Accounts, enabled: &HashSet<&str>) {
    let config = run.config;
    let root = &config.git.root;
    let record = record_path(config);
    let mut recorded = match load(&record) {
        Ok(r) => r,
        // Without the record nothing can be told apart: change nothing.
        Err(e) => return run.failed("-", "acl", &format!("cannot read the record: {e}")),
    };
    let repos = if is_real_dir(root) { repo::list_repositories(root, |o| config.valid_user_name(o)) } else { vec![] };
    let want = desired(grants, &repos, root, |s| subject_ok(config, accounts, enabled, s));
    let actions = plan(&want, &recorded);
    if actions.is_empty() {
        return;
    }
    let mut changed = false;
    for action in actions {
        let (entry, adding, ours) = match &action {
            Action::Add { entry, ours } => (entry, true, *ours),
            Action::Remove(entry) => (entry, false, true),
        };
        let done = if !adding {
            remove(config, entry)
        } else if ours {
            add(config, entry)
        } else {
            match foreign(config, entry) {
                Ok(true) => Ok(Done::Foreign),
                Ok(false) => {
                    // Claimed before it is applied (with no permissions, so the next pass
                    // applies it again): a setfacl -R that fails half-way leaves entries
                    // the agent must still know as its own.
                    recorded.retain(|e| e.key() != entry.key());
                    recorded.push(Entry { perms: String::new(), ..entry.clone() });
                    changed = true;
                    add(config, entry)
                }
                Err(f) => Err(f),
            }
        };
        let path = entry.path.display().to_string();
        match done {
            Ok(Done::Applied) => {
                recorded.retain(|e| e.key() != entry.key());
                let verb = if adding {
                    recorded.push(entry.clone());
                    "added"
                } else {
                    "removed"
                };
                changed = true;
                let what = format!("{} {verb}", entry.describe());
                run.changed(
                    &entry.subject,
                    "acl",
                    what,
                    &[("path", &path), ("entry", &entry.spec()), ("change", verb)],
                );
            }
            Ok(Done::Foreign) => {}
            Ok(Done::Gone) => {
                // Nothing there to remove, or to add to: no record of it either.
                if !adding || !ours {
                    recorded.retain(|e| e.key() != entry.key());
                    changed = true;
                }
            }
            Err(f) if f.unsupported && !adding => {
                // No ACL could have been added there: nothing of the agent's to remove.
                recorded.retain(|e| e.key() != entry.key());
                changed = true;
                run.failed(&entry.subject, "acl", &format!("{path}: the file system takes no ACLs: {}", f.text));
            }
            Err(f) if f.unsupported => {
                // Once a pass: every other entry on that file system fails the same way.
                run.failed(&entry.subject, "acl", &format!("{path}: the file system takes no ACLs: {}", f.text));
                break;
            }
            Err(f) => run.failed(&entry.subject, "acl", &f.text),
        }
    }
    if changed {
        recorded.sort();
        if let Err(e) = save(&record, &recorded) {
            run.failed("-", "acl", &format!("cannot write the record: {e}"));
        }
    }
}

/// Whether `dir`'s file system takes ACLs: a probe file made in it gets an entry for root,
/// and goes. For `gatehouse doctor`.
pub fn probe(dir: &Path) -> Result<(), String> {
    let file = dir.join(format!(".gatehouse-acl-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(|e| format!("cannot make a probe file in {}: {e}", dir.display()))?;
    let result = setfacl(&["-P", "-m", "u:0:r"], &file).map(|_| ()).map_err(|f| {
        if f.unsupported {
            format!("{} takes no POSIX ACLs (setfacl: Operation not supported)", dir.display())
        } else {
            f.text
        }
    });
    let _ = std::fs::remove_file(&file);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use std::collections::BTreeSet;

    fn grant(subject: &str, pattern: &str, access: Access) -> Grant {
        Grant { subject: subject.into(), pattern: pattern.into(), access, created: Timestamp::EPOCH }
    }

    fn repo(owner: &str, name: &str) -> RepoPath {
        RepoPath { owner: owner.into(), name: name.into() }
    }

    fn specs(entries: &[Entry]) -> BTreeSet<String> {
        entries.iter().map(|e| format!("{} {:?} {}", e.path.display(), e.kind, e.spec())).collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn read_write_and_group_grants_become_entries() {
        let root = Path::new("/data");
        let repos = [repo("alice", "shared.git"), repo("alice", "thesis.git"), repo("carol", "x.git")];
        let grants = [
            grant("bob", "alice/*.git", Access::Read),
            grant("bob", "alice/shared.git", Access::Write),
            grant("@lab", "carol/*", Access::Read),
            // Subjects that get nothing: reserved, unknown, the owner itself.
            grant("root", "alice/*.git", Access::Write),
            grant("ghost", "alice/*.git", Access::Read),
            grant("alice", "alice/*.git", Access::Read),
        ];
        let ok = |s: &str| !["root", "ghost"].contains(&s);
        let want = desired(&grants, &repos, root, ok);
        assert_eq!(
            specs(&want),
            set(&[
                "/data/alice Traverse u:bob:x",
                "/data/alice/shared.git Shared :group",
                "/data/alice/shared.git Tree u:alice:rwX,d:u:alice:rwX",
                "/data/alice/shared.git Tree u:bob:rwX,d:u:bob:rwX",
                "/data/alice/thesis.git Tree u:bob:rX,d:u:bob:rX",
                "/data/carol Traverse g:lab:x",
                "/data/carol/x.git Tree g:lab:rX,d:g:lab:rX",
            ])
        );
    }

    #[test]
    fn plans_add_the_missing_and_remove_the_stale() {
        let root = Path::new("/data");
        let repos = [repo("alice", "shared.git")];
        let read = desired(&[grant("bob", "alice/shared.git", Access::Read)], &repos, root, |_| true);
        let write = desired(&[grant("bob", "alice/shared.git", Access::Write)], &repos, root, |_| true);

        // Nothing recorded: everything is added, as new.
        let first = plan(&read, &[]);
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|a| matches!(a, Action::Add { ours: false, .. })));
        // Recorded as wanted: nothing to do.
        assert!(plan(&read, &read).is_empty());
        // Read to write: bob's tree entry is changed over the agent's own, the rest is new.
        let up = plan(&write, &read);
        let ours: Vec<_> = up.iter().filter(|a| matches!(a, Action::Add { ours: true, .. })).collect();
        assert_eq!(ours.len(), 1, "{up:?}");
        assert_eq!(up.len(), 3, "{up:?}");
        // Write to read: the owner's entry and the shared setting go, bob's is changed.
        let down = plan(&read, &write);
        let removed: BTreeSet<_> = down
            .iter()
            .filter_map(|a| match a {
                Action::Remove(e) => Some(e.spec()),
                _ => None,
            })
            .collect();
        assert_eq!(removed, set(&["u:alice:rwX,d:u:alice:rwX", ":group"]));
        assert!(matches!(down.last(), Some(Action::Add { ours: true, .. })), "removals come first: {down:?}");
        // Revoked: exactly what was recorded goes.
        let gone = plan(&[], &write);
        assert_eq!(gone.len(), write.len());
        assert!(gone.iter().all(|a| matches!(a, Action::Remove(_))));
    }

    #[test]
    fn repositories_made_later_and_shared_folders() {
        let root = Path::new("/data");
        let grants = [grant("bob", "alice/*", Access::Read), grant("carol", "alice/a.git", Access::Read)];
        let before = desired(&grants, &[repo("alice", "a.git")], root, |_| true);
        let after = desired(&grants, &[repo("alice", "a.git"), repo("alice", "b.git")], root, |_| true);
        let actions = plan(&after, &before);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(matches!(&actions[0], Action::Add { entry, .. } if entry.path == Path::new("/data/alice/b.git")));
        // One traverse entry per subject and folder, however many repositories.
        assert_eq!(after.iter().filter(|e| e.kind == Kind::Traverse).count(), 2);
        // A repository removed: its entries are stale (the executor finds the path gone).
        assert_eq!(plan(&before, &after).len(), 1);
    }

    #[test]
    fn the_record_round_trips() {
        let dir = std::env::temp_dir().join(format!("gh-acl-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent-acl.json");
        assert_eq!(load(&path), Ok(vec![]));
        let entries = desired(&[grant("@lab", "a/*", Access::Write)], &[repo("a", "x.git")], &dir, |_| true);
        save(&path, &entries).unwrap();
        assert_eq!(load(&path).unwrap(), entries);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        std::fs::write(&path, "not json").unwrap();
        assert!(load(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn qualifiers() {
        assert_eq!(qualifier("bob"), "u:bob");
        assert_eq!(qualifier("@lab"), "g:lab");
    }
}
