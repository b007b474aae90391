//! Password checks for the root side. Only the directory can check a directory password,
//! and its client (ldap3, on tokio) must not be loaded into every sshd process with the PAM
//! module: the check runs `gatehouse-ldap check-password` as a child instead, which costs a
//! fork and an exec per password login and nothing for key logins.

use crate::config::{Config, LdapConfig};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A password, wiped from memory when dropped.
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(zeroize::Zeroizing::new(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a password check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Accepted,
    /// Refused, with the reason as logged (`wrongpassword`, `locked`, …).
    Refused(String),
}

/// Checks passwords. `Err` means the check could not be made (the directory is down):
/// the caller refuses, and logs it apart from a wrong password.
pub trait PasswordCheck: Send {
    fn check(&self, user: &str, password: &Secret) -> Result<Checked, String>;
}

/// Longest a directory check may take beyond `ldap.timeout` (two connections: the search
/// as the service account, then the bind as the user).
const SLACK: Duration = Duration::from_secs(1);

/// `gatehouse-ldap [--config FILE] check-password USER`, the password on its standard input.
pub struct DirectoryProgram {
    pub program: PathBuf,
    pub config: Option<PathBuf>,
    pub timeout: Duration,
}

impl DirectoryProgram {
    pub fn new(config: &Config, ldap: &LdapConfig) -> DirectoryProgram {
        DirectoryProgram {
            program: ldap.program.clone(),
            config: config.source.clone(),
            timeout: ldap.timeout.saturating_mul(2) + SLACK,
        }
    }
}

/// What `check-password` printed on standard output for a refusal, `password refused:
/// WrongPassword`, as the reason logged (`wrongpassword`).
fn refusal_reason(stdout: &str) -> String {
    let reason = stdout.lines().next().and_then(|l| l.strip_prefix("password refused: ")).unwrap_or("refused");
    reason.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase()
}

impl PasswordCheck for DirectoryProgram {
    fn check(&self, user: &str, password: &Secret) -> Result<Checked, String> {
        // Run as sshd runs its key command: a program only root can have put there.
        crate::trust::check_owned_path(&self.program, &[])
            .map_err(|e| format!("ldap.program {}: not trusted: {e}", self.program.display()))?;
        let mut cmd = Command::new(&self.program);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd
            .args(["check-password", "--", user])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", self.program.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A child that exits early closes the pipe: its status says why.
            let _ = stdin.write_all(password.expose().as_bytes());
        }
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the directory did not answer within {} ms", self.timeout.as_millis()));
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.by_ref().take(4096).read_to_string(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.by_ref().take(4096).read_to_string(&mut err);
        }
        match status.code() {
            Some(0) => Ok(Checked::Accepted),
            Some(1) => Ok(Checked::Refused(refusal_reason(&out))),
            _ => {
                let said = err.lines().last().unwrap_or("").trim().trim_start_matches("gatehouse-ldap: ");
                Err(format!("{} check-password exited with {status}: {said}", display(&self.program)))
            }
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_read_as_logged() {
        assert_eq!(refusal_reason("password refused: WrongPassword\n"), "wrongpassword");
        assert_eq!(refusal_reason("password refused: Locked"), "locked");
        assert_eq!(refusal_reason("password refused: a b=c\nmore"), "abc");
        assert_eq!(refusal_reason(""), "refused");
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "Secret(..)");
    }
}
