//! Ending running sessions: every process of a revoked user's uid, or the connections that
//! logged in with a removed key.
//!
//! Which processes: a revoked user's are all processes whose real or effective uid is the
//! account's (sshd's per-connection process runs as the user after authentication, so its
//! connection ends with it), found in /proc and sent SIGKILL, repeated until none is left
//! (a process forked between the scan and the kill is found by the next scan). A key's
//! sessions are the processes that carry `GATEHOUSE_KEY=<fingerprint>` in their initial
//! environment (gatehouse-shell sets it for everything it starts), with the sshd process
//! of their connection above them. A process that wiped its environment before the key
//! was removed is not found; the user's other connections stay.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::forced::SESSION_KEY_VAR;

/// One process, as far as ending sessions needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    /// Real and effective uid.
    pub uids: (u32, u32),
    pub comm: String,
    /// Dead, and only waiting for its parent to collect it: nothing left to kill.
    pub zombie: bool,
}

impl Process {
    fn runs_as(&self, uid: u32) -> bool {
        !self.zombie && (self.uids.0 == uid || self.uids.1 == uid)
    }
}

/// Parses /proc/PID/status (the lines it needs).
pub fn parse_status(pid: i32, text: &str) -> Option<Process> {
    let mut ppid = None;
    let mut uids = None;
    let mut comm = String::new();
    let mut zombie = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Name:") {
            comm = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("State:") {
            zombie = matches!(v.trim_start().chars().next(), Some('Z' | 'X'));
        } else if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Uid:") {
            let mut f = v.split_whitespace().map(str::parse::<u32>);
            if let (Some(Ok(real)), Some(Ok(effective))) = (f.next(), f.next()) {
                uids = Some((real, effective));
            }
        }
    }
    Some(Process { pid, ppid: ppid?, uids: uids?, comm, zombie })
}

/// Every process on the host now (those that vanish while we read are left out).
pub fn processes() -> Vec<Process> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let text = std::fs::read_to_string(e.path().join("status")).ok()?;
        parse_status(pid, &text)
    })
    .collect()
}

/// The key fingerprint in a process's initial environment (/proc/PID/environ text).
pub fn session_key(environ: &[u8]) -> Option<String> {
    let prefix = format!("{SESSION_KEY_VAR}=");
    environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

fn read_session_key(pid: i32) -> Option<String> {
    session_key(&std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ")).ok()?)
}

/// SIGKILL; whether the process is gone (ESRCH: it was already).
fn kill(pid: i32) -> Result<(), nix::errno::Errno> {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Kills every process of `uid` (never root's), again while new ones appear (a fork
/// between a scan and the kills); how many were killed, or why not (without CAP_KILL).
pub fn end_user(uid: u32) -> Result<usize, String> {
    if uid == 0 {
        return Ok(0);
    }
    let mut killed = 0;
    for _ in 0..20 {
        let mine: Vec<i32> = processes().into_iter().filter(|p| p.runs_as(uid)).map(|p| p.pid).collect();
        if mine.is_empty() {
            return Ok(killed);
        }
        for &pid in &mine {
            kill(pid).map_err(|e| format!("kill {pid}: {e}"))?;
        }
        killed += mine.len();
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("processes of uid {uid} still running after 20 rounds of kills"))
}

/// The sessions to end for keys that are no longer valid: for each process of one of
/// `uids` carrying a key `alive` refuses, that process and the sshd process of its
/// connection (its nearest ancestor named sshd*, of the same uid). (user's uid, fingerprint)
/// -> pids.
pub fn stale_key_sessions(
    all: &[Process],
    uids: &HashMap<u32, String>,
    key_of: &dyn Fn(i32) -> Option<String>,
    alive: &dyn Fn(&str, &str) -> bool,
) -> HashMap<(String, String), Vec<i32>> {
    let by_pid: HashMap<i32, &Process> = all.iter().map(|p| (p.pid, p)).collect();
    let mut found: HashMap<(String, String), Vec<i32>> = HashMap::new();
    for p in all {
        let Some(user) = uids.get(&p.uids.0).filter(|_| p.uids.0 != 0 && !p.zombie) else { continue };
        let Some(fingerprint) = key_of(p.pid) else { continue };
        if alive(user, &fingerprint) {
            continue;
        }
        let pids = found.entry((user.clone(), fingerprint)).or_default();
        pids.push(p.pid);
        let mut up = by_pid.get(&p.ppid);
        for _ in 0..8 {
            let Some(parent) = up else { break };
            if !parent.runs_as(p.uids.0) {
                break;
            }
            if parent.comm.starts_with("sshd") {
                pids.push(parent.pid);
                break;
            }
            up = by_pid.get(&parent.ppid);
        }
    }
    for pids in found.values_mut() {
        pids.sort_unstable();
        pids.dedup();
    }
    found
}

/// A removed key's sessions, ended (the pids), or why not.
pub struct EndedKey {
    pub user: String,
    pub fingerprint: String,
    pub ended: Result<Vec<i32>, String>,
}

/// [`stale_key_sessions`] on this host's processes, killed.
pub fn end_stale_keys(uids: &HashMap<u32, String>, alive: &dyn Fn(&str, &str) -> bool) -> Vec<EndedKey> {
    let mut found: Vec<_> = stale_key_sessions(&processes(), uids, &read_session_key, alive).into_iter().collect();
    found.sort();
    found
        .into_iter()
        .map(|((user, fingerprint), pids)| {
            let ended = pids.iter().try_for_each(|&pid| kill(pid).map_err(|e| format!("kill {pid}: {e}")));
            EndedKey { user, fingerprint, ended: ended.map(|()| pids) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, uid: u32, comm: &str) -> Process {
        Process { pid, ppid, uids: (uid, uid), comm: comm.into(), zombie: false }
    }

    #[test]
    fn status_lines() {
        let text = "Name:\tsshd\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\nPPid:\t7\n\
                    Uid:\t20001\t20001\t20001\t20001\nGid:\t20001\t20001\t20001\t20001\n";
        assert_eq!(parse_status(42, text), Some(p(42, 7, 20001, "sshd")));
        assert_eq!(parse_status(1, "Name:\tx\n"), None, "a status without uids is no process of ours");
        let dead = parse_status(9, "Name:\tsleep\nState:\tZ (zombie)\nPPid:\t1\nUid:\t5\t5\t5\t5\n").unwrap();
        assert!(dead.zombie && !dead.runs_as(5), "a zombie is not killed again and again");
        assert_eq!(parse_status(1, "Name:\tx\nPPid:\t0\nUid:\tx y\n"), None);
    }

    #[test]
    fn key_from_environment() {
        assert_eq!(session_key(b"PATH=/bin\0GATEHOUSE_KEY=SHA256:abc\0HOME=/\0"), Some("SHA256:abc".into()));
        assert_eq!(session_key(b"XGATEHOUSE_KEY=SHA256:abc\0"), None);
        assert_eq!(session_key(b""), None);
    }

    #[test]
    fn a_removed_key_ends_its_process_and_its_connection_only() {
        // sshd (root) -> sshd (root monitor) -> sshd (alice's connection) -> git (key A)
        //                                       sshd (alice, another connection) -> sh (key B)
        // bob's process carries key A too (a copied environment) but bob is not alice.
        let all = vec![
            p(1, 0, 0, "sshd"),
            p(10, 1, 0, "sshd"),
            p(11, 10, 20001, "sshd"),
            p(12, 11, 20001, "git-upload-pack"),
            p(20, 1, 0, "sshd"),
            p(21, 20, 20001, "sshd"),
            p(22, 21, 20001, "sh"),
            p(30, 1, 20002, "sleep"),
        ];
        let uids = HashMap::from([(20001, "alice".to_string()), (20002, "bob".to_string())]);
        let key_of = |pid: i32| match pid {
            12 | 30 => Some("SHA256:A".to_string()),
            22 => Some("SHA256:B".to_string()),
            _ => None,
        };
        let alive = |user: &str, fp: &str| !(user == "alice" && fp == "SHA256:A");
        let found = stale_key_sessions(&all, &uids, &key_of, &alive);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[&("alice".to_string(), "SHA256:A".to_string())], vec![11, 12]);
    }

    #[test]
    fn root_processes_are_never_chosen() {
        let all = vec![p(5, 1, 0, "bash")];
        let uids = HashMap::from([(0, "root".to_string())]);
        let found = stale_key_sessions(&all, &uids, &|_| Some("SHA256:A".into()), &|_, _| false);
        assert!(found.is_empty());
        assert_eq!(end_user(0), Ok(0));
    }
}
