//! Git repositories: the paths clients ask for, the grants that open them to others, and
//! the decision who may read or write which.

use crate::store::Grant;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Access {
    type Err = String;
    fn from_str(s: &str) -> Result<Access, String> {
        match s {
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            _ => Err(format!("`{}` is not an access level (read, write)", s.escape_debug())),
        }
    }
}

/// A repository as `owner/name.git`, both parts checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPath {
    pub owner: String,
    pub name: String,
}

impl RepoPath {
    /// `owner/name.git`
    pub fn relative(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

fn repo_name_ok(name: &str) -> bool {
    let stem = name.strip_suffix(".git").unwrap_or("");
    !stem.is_empty()
        && name.len() <= 128
        && !stem.starts_with(['.', '-'])
        && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Parses the path a git client sent: `owner/name.git`, `/owner/name.git`, with or without
/// the `.git` suffix. Refuses `~user`, `..`, a leading `-`, more or fewer components, and
/// any character outside a conservative set.
pub fn parse_repo_path(text: &str, valid_owner: impl Fn(&str) -> bool) -> Result<RepoPath, String> {
    let bad = || format!("`{}` is not a repository path (expected OWNER/NAME.git)", text.escape_debug());
    if text.starts_with(['~', '-']) || text.len() > 256 {
        return Err(bad());
    }
    let trimmed = text.strip_prefix('/').unwrap_or(text);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let mut parts = trimmed.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let name = if name.ends_with(".git") { name.to_string() } else { format!("{name}.git") };
    // A custom user-name pattern might admit dots, or nothing at all; a path component may
    // never be one, nor start as `~` or an option does (after a leading `/` too).
    let owner_ok = !owner.is_empty() && owner != "." && owner != ".." && !owner.starts_with(['~', '-']);
    if !owner_ok || !valid_owner(owner) || !repo_name_ok(&name) {
        return Err(bad());
    }
    Ok(RepoPath { owner: owner.to_string(), name })
}

/// Checks a grant pattern and returns it in the form it is matched in: `OWNER/NAME.git`,
/// where either part may use `*` (any run of characters other than `/`). A name given
/// without `.git` gets it, as clients may omit it but repositories never do.
pub fn valid_pattern(pattern: &str) -> Result<String, String> {
    let bad = || format!("`{}` is not a repository pattern (OWNER/NAME.git, * allowed)", pattern.escape_debug());
    let (owner, given) = pattern.split_once('/').ok_or_else(bad)?;
    // Checked with the suffix it gets, so that what is stored passes this check again.
    let name = if given.ends_with(".git") || given.ends_with('*') { given.to_string() } else { format!("{given}.git") };
    let part_ok = |p: &str| {
        !p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b))
    };
    if !part_ok(owner) || given.is_empty() || !part_ok(&name) || owner == "." || owner == ".." {
        return Err(bad());
    }
    Ok(format!("{owner}/{name}"))
}

/// Glob match of one part, where `*` matches any run of characters. Only the last `*` is
/// ever gone back to, so this takes at most pattern × text steps, however many stars.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // After the last `*` seen: where the pattern goes on, and how much of the text it took.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((after, taken)) => {
                    star = Some((after, taken + 1));
                    (p, t) = (after, taken + 1);
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether `pattern` covers `repo`: owner and name part by part, so no `*` crosses the `/`.
pub fn pattern_matches(pattern: &str, repo: &RepoPath) -> bool {
    pattern.split_once('/').is_some_and(|(owner, name)| {
        glob(owner.as_bytes(), repo.owner.as_bytes()) && glob(name.as_bytes(), repo.name.as_bytes())
    })
}

/// The access `user` has to `repo`: full for the owner, else the widest matching grant.
pub fn access(user: &str, repo: &RepoPath, grants: &[Grant]) -> Option<Access> {
    if repo.owner == user {
        return Some(Access::Write);
    }
    grants.iter().filter(|g| pattern_matches(&g.pattern, repo)).map(|g| g.access).max()
}

/// The bare repositories under `root`: `OWNER/NAME.git` folders holding a `HEAD` file, the
/// paths [`parse_repo_path`] accepts. Symbolic links are never followed, at either level:
/// a link in an owner's folder is no repository of theirs. Sorted; an unreadable folder
/// lists nothing.
pub fn list_repositories(root: &std::path::Path, valid_owner: impl Fn(&str) -> bool) -> Vec<RepoPath> {
    let real_dirs = |dir: &std::path::Path| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flatten()
            // The entry's own type: a symbolic link is a link here, not what it points to.
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    };
    let mut found = Vec::new();
    for owner in real_dirs(root) {
        for name in real_dirs(&root.join(&owner)) {
            let Ok(repo) = parse_repo_path(&format!("{owner}/{name}"), &valid_owner) else { continue };
            let dir = root.join(&owner).join(&name);
            let head = std::fs::symlink_metadata(dir.join("HEAD")).is_ok_and(|m| m.is_file());
            if repo.owner == owner && repo.name == name && head {
                found.push(repo);
            }
        }
    }
    found.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
    found
}

/// How long a push's quarantine may sit unchanged before it counts as left by a push that
/// was killed: far longer than receiving a pack and running hooks takes.
pub const STALE_QUARANTINE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The newest modification time of `dir` and what is in it, down to `depth` levels.
fn newest_change(dir: &std::path::Path, depth: u32) -> Option<std::time::SystemTime> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let mut newest = meta.modified().ok()?;
    if depth > 0 && meta.is_dir() {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            if let Some(t) = newest_change(&entry.path(), depth - 1) {
                newest = newest.max(t);
            }
        }
    }
    Some(newest)
}

/// Removes the quarantine folders (`tmp_objdir-incoming-*` under `objects`) that pushes
/// killed with SIGKILL leave behind: git removes its own on every other exit. Only those
/// unchanged for [`STALE_QUARANTINE`] go, so a push still running keeps its own. Returns
/// how many were removed, and the first error (a folder of another pusher that this user
/// may not remove, say).
pub fn sweep_quarantine(objects: &std::path::Path, now: std::time::SystemTime) -> (usize, Option<String>) {
    let Ok(entries) = std::fs::read_dir(objects) else {
        return (0, None);
    };
    let (mut removed, mut error) = (0, None);
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("tmp_objdir-incoming-") {
            continue;
        }
        let path = entry.path();
        let stale =
            newest_change(&path, 3).is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= STALE_QUARANTINE));
        if !stale {
            continue;
        }
        // remove_dir_all never follows a symbolic link out of the folder.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(e) => {
                error.get_or_insert_with(|| format!("{}: {e}", path.display()));
            }
        }
    }
    (removed, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_ok(o: &str) -> bool {
        crate::config::Config::default().valid_user_name(o)
    }

    fn repo(o: &str, n: &str) -> RepoPath {
        RepoPath { owner: o.into(), name: n.into() }
    }

    #[test]
    fn repository_paths() {
        assert_eq!(parse_repo_path("alice/thesis.git", owner_ok), Ok(repo("alice", "thesis.git")));
        assert_eq!(parse_repo_path("/alice/thesis.git", owner_ok), Ok(repo("alice", "thesis.git")));
        assert_eq!(parse_repo_path("alice/thesis", owner_ok), Ok(repo("alice", "thesis.git")));
        assert_eq!(parse_repo_path("alice/thesis.git/", owner_ok), Ok(repo("alice", "thesis.git")));
        for bad in [
            "",
            "alice",
            "alice/",
            "/",
            "~alice/x.git",
            "alice/../bob/x.git",
            "../x.git",
            "alice/..",
            "-alice/x.git",
            "alice/-x.git",
            "alice/.x.git",
            "alice/x y.git",
            "alice/x;rm.git",
            "Alice/x.git",
            "alice/b/x.git",
            "alice//x.git",
            "alice/x.git\n",
            "alice/.git",
            "alice/x'.git",
            "//x.git",
        ] {
            assert!(parse_repo_path(bad, owner_ok).is_err(), "{bad:?}");
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/ssh_command.rs): with an owner rule that admits
    /// anything, `//x.git` gave the owner "" (a repository directly in git.root), and a
    /// leading `/` let `~` and `-` through.
    #[test]
    fn path_rules_hold_whatever_the_owner_rule() {
        for bad in ["//x.git", "/~bob/x.git", "/-x/y.git", "/./x.git", "/../x.git", "/x.git"] {
            assert!(parse_repo_path(bad, |_| true).is_err(), "{bad:?}");
        }
        assert_eq!(parse_repo_path("/a.b/x.git", |_| true), Ok(repo("a.b", "x.git")));
    }

    /// Found by fuzzing: each `*` tried every split of the rest, so a pattern of many stars
    /// against a name that almost matches took exponential time, at every git login.
    #[test]
    fn many_stars_match_in_linear_time() {
        let pattern = format!("a*a*a*a*a*a*a*a*a*a*/{}b.git", "*a".repeat(30));
        let repo = repo(&"a".repeat(60), &format!("{}.git", "a".repeat(120)));
        let start = std::time::Instant::now();
        assert!(!pattern_matches(&pattern, &repo));
        assert!(pattern_matches(&pattern.replace("b.git", ".git"), &repo));
        assert!(start.elapsed() < std::time::Duration::from_secs(1), "{:?}", start.elapsed());
    }

    #[test]
    fn grants_and_patterns() {
        let g = |s: &str, p: &str, a| Grant {
            subject: s.into(),
            pattern: p.into(),
            access: a,
            created: crate::time::Timestamp::EPOCH,
        };
        let grants = vec![g("bob", "alice/*.git", Access::Read), g("@lab", "alice/shared.git", Access::Write)];
        assert_eq!(access("alice", &repo("alice", "x.git"), &[]), Some(Access::Write));
        assert_eq!(access("bob", &repo("alice", "x.git"), &grants), Some(Access::Read));
        assert_eq!(access("bob", &repo("alice", "shared.git"), &grants), Some(Access::Write));
        assert_eq!(access("bob", &repo("carol", "x.git"), &grants), None);
        assert!(pattern_matches("*/*.git", &repo("carol", "x.git")));
        assert!(!pattern_matches("a*/x.git", &repo("bob", "x.git")));
        assert_eq!(valid_pattern("alice/*.git"), Ok("alice/*.git".into()));
        assert_eq!(valid_pattern("alice/thesis"), Ok("alice/thesis.git".into()));
        assert_eq!(valid_pattern("alice/*"), Ok("alice/*".into()));
        assert!(valid_pattern("../x.git").is_err());
        for bad in ["alice", "alice/x/y.git", "al ice/x.git", "/x.git", "alice/", "a/b\"c"] {
            assert!(valid_pattern(bad).is_err(), "{bad}");
        }
        // Found by fuzzing: a name of 125 characters passed, and then failed as stored
        // (129 with `.git`), a pattern no repository name (128 at most) could match.
        let longest = format!("alice/{}", "n".repeat(124));
        assert_eq!(valid_pattern(&longest), Ok(format!("{longest}.git")));
        assert_eq!(valid_pattern(&format!("{longest}.git")), Ok(format!("{longest}.git")));
        assert!(valid_pattern(&format!("{longest}n")).is_err());
    }

    #[test]
    fn repositories_are_listed_without_following_links() {
        let root = std::env::temp_dir().join(format!("gh-repos-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["alice/a.git", "alice/notbare.git", "alice/plain", "bob/b.git", "-x/c.git", "carol"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for head in ["alice/a.git/HEAD", "bob/b.git/HEAD", "-x/c.git/HEAD", "alice/plain/HEAD"] {
            std::fs::write(root.join(head), "ref: refs/heads/main\n").unwrap();
        }
        std::os::unix::fs::symlink(root.join("bob/b.git"), root.join("alice/link.git")).unwrap();
        std::os::unix::fs::symlink(root.join("bob"), root.join("dave")).unwrap();
        let found = list_repositories(&root, owner_ok);
        assert_eq!(found, vec![repo("alice", "a.git"), repo("bob", "b.git")]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn only_stale_quarantines_are_swept() {
        let objects = std::env::temp_dir().join(format!("gh-quarantine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&objects);
        for dir in ["tmp_objdir-incoming-old/pack", "tmp_objdir-incoming-new/pack", "pack", "tmp_other"] {
            std::fs::create_dir_all(objects.join(dir)).unwrap();
        }
        std::fs::write(objects.join("tmp_objdir-incoming-old/pack/tmp_pack_x"), b"half a pack").unwrap();
        let later = std::time::SystemTime::now() + STALE_QUARANTINE + std::time::Duration::from_secs(5);
        // Seen from now, nothing is stale; seen from an hour later, both incoming folders are.
        assert_eq!(sweep_quarantine(&objects, std::time::SystemTime::now()), (0, None));
        std::fs::write(objects.join("tmp_objdir-incoming-new/pack/fresh"), b"").unwrap();
        let (removed, error) = sweep_quarantine(&objects, later);
        assert_eq!((removed, error), (2, None));
        assert!(objects.join("pack").is_dir() && objects.join("tmp_other").is_dir(), "only quarantines go");
        assert!(!objects.join("tmp_objdir-incoming-old").exists());
        let _ = std::fs::remove_dir_all(&objects);
    }
}
