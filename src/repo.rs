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
    // A custom user-name pattern might admit dots; a path component may never be one.
    if owner == "." || owner == ".." || !valid_owner(owner) || !repo_name_ok(&name) {
        return Err(bad());
    }
    Ok(RepoPath { owner: owner.to_string(), name })
}

/// Checks a grant pattern and returns it in the form it is matched in: `OWNER/NAME.git`,
/// where either part may use `*` (any run of characters other than `/`). A name given
/// without `.git` gets it, as clients may omit it but repositories never do.
pub fn valid_pattern(pattern: &str) -> Result<String, String> {
    let bad = || format!("`{}` is not a repository pattern (OWNER/NAME.git, * allowed)", pattern.escape_debug());
    let (owner, name) = pattern.split_once('/').ok_or_else(bad)?;
    let part_ok = |p: &str| {
        !p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b))
    };
    if !part_ok(owner) || !part_ok(name) || name.contains('/') || owner == "." || owner == ".." {
        return Err(bad());
    }
    if name.ends_with(".git") || name.ends_with('*') {
        Ok(pattern.to_string())
    } else {
        Ok(format!("{pattern}.git"))
    }
}

/// Glob match where `*` matches any run of characters (patterns never hold `/` in a part).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| !text[..i].contains(&b'/') && glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// Whether `pattern` covers `repo`.
pub fn pattern_matches(pattern: &str, repo: &RepoPath) -> bool {
    glob(pattern.as_bytes(), repo.relative().as_bytes())
}

/// The access `user` has to `repo`: full for the owner, else the widest matching grant.
pub fn access(user: &str, repo: &RepoPath, grants: &[Grant]) -> Option<Access> {
    if repo.owner == user {
        return Some(Access::Write);
    }
    grants.iter().filter(|g| pattern_matches(&g.pattern, repo)).map(|g| g.access).max()
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

    #[test]
    fn grants_and_patterns() {
        let g = |s: &str, p: &str, a| Grant { subject: s.into(), pattern: p.into(), access: a, created: 0 };
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
    }
}
