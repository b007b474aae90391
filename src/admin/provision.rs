//! `gatehouse provision`: system accounts follow the store. Accounts are created for
//! enabled users and locked for disabled ones, only within the configured UID range;
//! anything outside it, and reserved names, are never touched. Running it twice changes
//! nothing the second time.

use crate::config::Config;
use crate::domain::{Scope, UserState};
use crate::store::User;
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create { user: String, shell: String },
    Lock(String),
    Unlock(String),
    Skip { user: String, reason: String },
}

/// Whether `usermod -L` locked the account: its password field starts with `!` (a bare
/// `*`, as accounts for key-only logins have, is not a lock).
fn locked(user: &str) -> bool {
    Command::new("/usr/bin/getent")
        .args(["shadow", user])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split(':').nth(1).is_some_and(|p| p.starts_with('!')))
        .unwrap_or(false)
}

/// What provisioning would do, given the store's users.
pub fn plan(config: &Config, users: &[User]) -> Vec<Step> {
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
        match nix::unistd::User::from_name(&u.name) {
            Ok(None) if u.state == UserState::Enabled => {
                let shell = if u.policy == Scope::Shell && config.shell.login_shell.is_none() {
                    crate::config::DEFAULT_LOGIN_SHELL.to_string()
                } else if u.policy == Scope::Shell {
                    // gatehouse-shell starts shell.login_shell for them: no shell, and no
                    // startup file, runs before gatehouse-shell for any of their keys.
                    config.shell.path.clone()
                } else {
                    config.users.shell.display().to_string()
                };
                steps.push(Step::Create { user: u.name.clone(), shell });
            }
            Ok(None) => {}
            Ok(Some(account)) => {
                let uid = account.uid.as_raw();
                if !(min..=max).contains(&uid) {
                    steps.push(Step::Skip {
                        user: u.name.clone(),
                        reason: format!("uid {uid} outside users.uid_min..users.uid_max ({min}..{max}): not ours"),
                    });
                    continue;
                }
                let is_locked = locked(&u.name);
                match u.state {
                    UserState::Disabled if !is_locked => steps.push(Step::Lock(u.name.clone())),
                    UserState::Enabled if is_locked => steps.push(Step::Unlock(u.name.clone())),
                    _ => {}
                }
            }
            Err(e) => steps.push(Step::Skip { user: u.name.clone(), reason: format!("passwd lookup: {e}") }),
        }
    }
    steps
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
        Step::Create { user, shell } => {
            let home = config.data_dir_of(user);
            let mut cmd = Command::new("/usr/sbin/useradd");
            cmd.args(["-K", &format!("UID_MIN={min}"), "-K", &format!("UID_MAX={max}"), "-M", "-U", "-p", "*"])
                .arg("-d")
                .arg(&home)
                .args(["-s", shell]);
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
