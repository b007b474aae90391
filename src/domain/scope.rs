//! Access scopes: what a user's policy allows and what one key may do.
//!
//! The scopes form a small lattice: `shell` allows everything; `git` allows `git-read`;
//! `files` and `git` are unrelated. A key's scope must lie within its owner's policy.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Interactive shell and remote commands (and everything below).
    Shell,
    /// sftp and rsync in the user's data folder only.
    Files,
    /// git read and write.
    Git,
    /// git read only.
    GitRead,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Shell, Scope::Files, Scope::Git, Scope::GitRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Shell => "shell",
            Scope::Files => "files",
            Scope::Git => "git",
            Scope::GitRead => "git-read",
        }
    }

    /// True when everything `other` allows, `self` allows too.
    pub fn includes(self, other: Scope) -> bool {
        matches!(
            (self, other),
            (Scope::Shell, _)
                | (Scope::Files, Scope::Files)
                | (Scope::Git, Scope::Git | Scope::GitRead)
                | (Scope::GitRead, Scope::GitRead)
        )
    }

    /// The widest scope both allow, if any: what a key may still do after its owner's
    /// policy was narrowed below the key's own scope.
    pub fn meet(self, other: Scope) -> Option<Scope> {
        if self.includes(other) {
            Some(other)
        } else if other.includes(self) {
            Some(self)
        } else {
            None
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("`{}` is not a scope (shell, files, git, git-read)", s.escape_debug()))
    }
}

/// Whether a user's account is usable at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    Enabled,
    Disabled,
}

impl UserState {
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Enabled => "enabled",
            UserState::Disabled => "disabled",
        }
    }
}

impl FromStr for UserState {
    type Err = String;
    fn from_str(s: &str) -> Result<UserState, String> {
        match s {
            "enabled" => Ok(UserState::Enabled),
            "disabled" => Ok(UserState::Disabled),
            _ => Err(format!("`{}` is not a user state (enabled, disabled)", s.escape_debug())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattice() {
        assert!(Scope::Shell.includes(Scope::Files));
        assert!(Scope::Git.includes(Scope::GitRead));
        assert!(!Scope::GitRead.includes(Scope::Git));
        assert!(!Scope::Files.includes(Scope::Git));
        assert!(!Scope::Git.includes(Scope::Files));
        assert_eq!(Scope::Git.meet(Scope::Shell), Some(Scope::Git));
        assert_eq!(Scope::Git.meet(Scope::GitRead), Some(Scope::GitRead));
        assert_eq!(Scope::Files.meet(Scope::GitRead), None);
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
            assert_eq!(s.meet(s), Some(s));
        }
        assert!("Shell".parse::<Scope>().is_err());
    }
}
