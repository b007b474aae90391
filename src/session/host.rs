//! The system as the session stage sees it: accounts, the data folder, the jail, quotas.
//! Behind a trait so the stages are tested without root; [`SystemHost`] is the real one.

use crate::config::Config;
use crate::session::datadir::{self, Outcome, QuotaError};
use std::path::{Path, PathBuf};

/// What the session stage needs of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub shell: PathBuf,
}

pub trait Host: Send {
    /// The system account `name`, if there is one.
    fn account(&self, name: &str) -> Option<Account>;
    /// Whether `user` (primary group `gid`) is a member of `jail.group`.
    fn jailed(&self, config: &Config, user: &str, gid: u32) -> bool;
    /// Makes the user's data folder if missing.
    fn data_folder(&self, config: &Config, user: &str, account: &Account) -> Result<Outcome, String>;
    /// Lays out the user's jail.
    fn jail(&self, config: &Config, user: &str, account: &Account) -> Result<(), String>;
    /// Sets the quota on the filesystem that holds `folder`; returns its mount point.
    fn quota(&self, quota: &str, user: &str, folder: &Path) -> Result<PathBuf, QuotaError>;
}

/// This machine: NSS for accounts, the real filesystem, setquota(8).
pub struct SystemHost;

impl Host for SystemHost {
    fn account(&self, name: &str) -> Option<Account> {
        nix::unistd::User::from_name(name).ok().flatten().map(|a| Account {
            uid: a.uid.as_raw(),
            gid: a.gid.as_raw(),
            shell: a.shell,
        })
    }

    fn jailed(&self, config: &Config, user: &str, gid: u32) -> bool {
        datadir::is_jailed(config, user, gid)
    }

    fn data_folder(&self, config: &Config, user: &str, account: &Account) -> Result<Outcome, String> {
        datadir::ensure(config, user, account.uid, account.gid)
    }

    fn jail(&self, config: &Config, user: &str, account: &Account) -> Result<(), String> {
        datadir::ensure_jail(config, user, account.uid, account.gid).map(|_| ())
    }

    fn quota(&self, quota: &str, user: &str, folder: &Path) -> Result<PathBuf, QuotaError> {
        datadir::apply_quota(quota, user, folder)
    }
}
