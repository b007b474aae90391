//! Ending running sessions: every process of a revoked user's uid, or the connections that
//! logged in with a removed key.
//!
//! Which processes: a revoked user's are all processes whose real uid is the account's
//! (sshd's per-connection process runs as the user after authentication, so its
//! connection ends with it). They are found in /proc and ended by `kill(-1, SIGKILL)` from
//! a process running as that uid (setpriv(1) and kill(1)): the kernel signals every
//! process of the uid under one lock that fork also takes, so a fork storm cannot outrun
//! it, and a pid reused by another uid's process between the scan and the kill is out of
//! reach. Kills are repeated, after a new scan, until none is left. A key's
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
    /// Whether the process is the user's: its real uid. A root daemon that acts as the
    /// user for a while (effective uid only) is not, and is never killed for them.
    fn runs_as(&self, uid: u32) -> bool {
        !self.zombie && self.uids.0 == uid
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

/// The key a process of a key's session carries, if it is a fingerprint (the user may
/// have set anything); at most the first 64 KiB of its environment are read.
fn read_session_key(pid: i32) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(Path::new("/proc").join(pid.to_string()).join("environ")).ok()?;
    let mut environ = Vec::new();
    file.take(64 * 1024).read_to_end(&mut environ).ok()?;
    session_key(&environ).filter(|k| crate::keys::is_fingerprint(k))
}

/// SIGKILL to `targets` (pids, or `-1`: every process the uid may signal) from a
/// process running as `uid` alone, so that nothing of another uid can be hit, whatever
/// became of a pid since it was read. kill(1)'s status is not asked: it fails when a
/// target is already gone, and the next scan says what is left.
fn kill_as(uid: u32, targets: &[String]) -> Result<(), String> {
    let kill = ["/usr/bin/kill", "/bin/kill"].into_iter().find(|k| Path::new(k).exists()).ok_or("no kill(1)")?;
    let out = std::process::Command::new("/usr/bin/setpriv")
        .args(["--reuid", &uid.to_string(), "--regid", "65534", "--clear-groups", "--"])
        .args([kill, "-KILL"])
        .args(targets)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("setpriv: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // setpriv's own failures (no CAP_SETUID) say so; kill(1)'s "No such process" is fine.
    match stderr.lines().find(|l| l.starts_with("setpriv")) {
        Some(line) => Err(line.to_string()),
        None => Ok(()),
    }
}

/// Kills every process of each of `uids` (never root's), again while new ones appear (a
/// fork between a scan and the kills), with one scan of /proc per round for all of them:
/// for each uid, how many were killed, or why not (no CAP_SETUID, or still running after 20
/// rounds).
pub fn end_users(uids: &[u32]) -> HashMap<u32, Result<usize, String>> {
    let mut left: Vec<u32> = uids.iter().copied().filter(|&u| u != 0).collect();
    let mut done: HashMap<u32, Result<usize, String>> = HashMap::new();
    let mut killed: HashMap<u32, usize> = HashMap::new();
    for _ in 0..20 {
        if left.is_empty() {
            break;
        }
        let all = processes();
        left.retain(|&uid| {
            let mine: Vec<i32> = all.iter().filter(|p| p.runs_as(uid)).map(|p| p.pid).collect();
            if mine.is_empty() {
                done.insert(uid, Ok(killed.get(&uid).copied().unwrap_or(0)));
                return false;
            }
            if let Err(e) = kill_as(uid, &["-1".to_string()]) {
                done.insert(uid, Err(format!("kill as uid {uid}: {e}")));
                return false;
            }
            *killed.entry(uid).or_default() += mine.len();
            true
        });
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for uid in left {
        done.insert(uid, Err(format!("processes of uid {uid} still running after 20 rounds of kills")));
    }
    done
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
        // Only a process of a connection: below an sshd process of the same user. An
        // environment inherited elsewhere (`su` to another user, an `at` job, a daemon
        // left behind by the session) is not a session of that key.
        let mut connection = None;
        let mut up = by_pid.get(&p.ppid);
        for _ in 0..16 {
            let Some(parent) = up else { break };
            if !parent.runs_as(p.uids.0) {
                break;
            }
            if parent.comm.starts_with("sshd") {
                connection = Some(parent.pid);
                break;
            }
            up = by_pid.get(&parent.ppid);
        }
        let Some(sshd) = connection else { continue };
        found.entry((user.clone(), fingerprint)).or_default().extend([p.pid, sshd]);
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
            let uid = uids.iter().find(|(_, name)| **name == user).map(|(uid, _)| *uid);
            let targets: Vec<String> = pids.iter().map(i32::to_string).collect();
            let ended = match uid {
                Some(uid) => {
                    kill_as(uid, &targets).map_err(|e| format!("kill {} as uid {uid}: {e}", targets.join(" ")))
                }
                None => Err("no uid".to_string()),
            };
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
        // bob's process carries key A too (`su bob` from alice's session), and so does a
        // daemon alice left behind (reparented to init): neither is a connection of key A.
        let all = vec![
            p(40, 1, 20001, "daemon"),
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
            12 | 30 | 40 => Some("SHA256:A".to_string()),
            22 => Some("SHA256:B".to_string()),
            _ => None,
        };
        let alive = |_: &str, fp: &str| fp != "SHA256:A";
        let found = stale_key_sessions(&all, &uids, &key_of, &alive);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[&("alice".to_string(), "SHA256:A".to_string())], vec![11, 12]);
    }

    #[test]
    fn a_root_daemon_acting_as_the_user_is_not_theirs() {
        let acting = Process { pid: 7, ppid: 1, uids: (0, 20001), comm: "smbd".into(), zombie: false };
        assert!(!acting.runs_as(20001) && acting.runs_as(0));
        let setuid = Process { pid: 8, ppid: 1, uids: (20001, 0), comm: "passwd".into(), zombie: false };
        assert!(setuid.runs_as(20001), "a setuid program the user started is the user's");
    }

    #[test]
    fn root_processes_are_never_chosen() {
        let all = vec![p(5, 1, 0, "bash")];
        let uids = HashMap::from([(0, "root".to_string())]);
        let found = stale_key_sessions(&all, &uids, &|_| Some("SHA256:A".into()), &|_, _| false);
        assert!(found.is_empty());
        assert!(end_users(&[0]).is_empty(), "uid 0 is never even looked at");
    }
}
