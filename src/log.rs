//! Operator-facing log lines: syslog (authpriv) as `key=value` pairs.
//!
//! sshd discards the key command's stderr, so syslog is where decisions must show. Values
//! come from untrusted input (user names, commands), so each is escaped: nothing can forge
//! a second pair or a second line.

use crate::config::{Config, LogConfig, LogTarget};
use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Longest wait for the syslog socket per line.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Notice,
    Warning,
    Error,
}

/// Where a program's log lines go: syslog, the journal's native socket, or only standard
/// error (when neither answers: a line is never dropped without a trace); and
/// standard error as well where configured.
pub struct Logger {
    program: &'static str,
    sink: Sink,
    stderr: bool,
}

enum Sink {
    Syslog(syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>),
    Journal(UnixDatagram),
    Nothing,
}

/// Longest value logged; the rest is cut and marked with `...`.
const MAX_VALUE: usize = 512;

fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:/@+-,=*".contains(c)
}

/// Appends ` key=value` with `value` quoted and escaped when it holds anything but
/// plain characters.
pub fn push_pair(line: &mut String, key: &str, value: &str) {
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str(key);
    line.push('=');
    if !value.is_empty() && value.len() <= MAX_VALUE && value.chars().all(safe_char) {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars().take(MAX_VALUE) {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            c if c.is_control() || !c.is_ascii() => {
                let _ = write!(line, "\\x{{{:x}}}", c as u32);
            }
            c => line.push(c),
        }
    }
    if value.chars().count() > MAX_VALUE {
        line.push_str("...");
    }
    line.push('"');
}

/// Builds a `key=value` line from pairs.
pub fn format_pairs(pairs: &[(&str, &str)]) -> String {
    let mut line = String::new();
    for (k, v) in pairs {
        push_pair(&mut line, k, v);
    }
    line
}

/// `GATEHOUSE_<KEY>` for the journal: field names are upper case letters, digits and `_`,
/// at most 64 bytes; any other character of a key becomes `_`.
fn journal_field(key: &str) -> String {
    let mut name = String::from("GATEHOUSE_");
    name.extend(key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }));
    name.truncate(64);
    name
}

/// Appends one field in the journal's native format: `NAME=value\n`, or, for a value
/// holding a newline, `NAME\n`, its length as 64-bit little endian, the bytes and `\n`.
fn push_journal_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// One journal entry: the line as `MESSAGE` (as syslog has it), syslog's priority,
/// facility and identifier, and each pair as a field of its own, its value as given (cut
/// at the same length as in the line).
pub fn journal_entry(program: &str, level: Level, pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    push_journal_field(&mut out, "MESSAGE", format_pairs(pairs).as_bytes());
    push_journal_field(&mut out, "PRIORITY", level.syslog_priority().as_bytes());
    // authpriv: the same facility as the syslog lines.
    push_journal_field(&mut out, "SYSLOG_FACILITY", b"10");
    push_journal_field(&mut out, "SYSLOG_IDENTIFIER", program.as_bytes());
    for (key, value) in pairs {
        let cut = value.char_indices().nth(MAX_VALUE).map_or(value.len(), |(i, _)| i);
        push_journal_field(&mut out, &journal_field(key), &value.as_bytes()[..cut]);
    }
    out
}

impl Level {
    fn syslog_priority(self) -> &'static str {
        match self {
            Level::Info => "6",
            Level::Notice => "5",
            Level::Warning => "4",
            Level::Error => "3",
        }
    }
}

fn open_syslog(program: &'static str, socket: &Path) -> Option<Sink> {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_AUTHPRIV,
        hostname: None,
        process: program.to_string(),
        pid: std::process::id(),
    };
    syslog::unix_custom(formatter, socket).ok().map(|mut logger| {
        // A stalled syslog daemon must not stall a login: a line it cannot take within
        // the timeout is dropped.
        let _ = match &mut logger.backend {
            syslog::LoggerBackend::Unix(socket) => socket.set_write_timeout(Some(SEND_TIMEOUT)),
            syslog::LoggerBackend::UnixStream(stream) => stream.get_ref().set_write_timeout(Some(SEND_TIMEOUT)),
            _ => Ok(()),
        };
        Sink::Syslog(logger)
    })
}

fn open_journal(socket: &Path) -> Option<Sink> {
    let journal = UnixDatagram::unbound().ok()?;
    journal.connect(socket).ok()?;
    // As for syslog: a journal that cannot take a line within the timeout loses it.
    journal.set_write_timeout(Some(SEND_TIMEOUT)).ok()?;
    Some(Sink::Journal(journal))
}

impl Logger {
    /// Opens the log for `program` as configured. A missing socket is not an error:
    /// logging must never stop a login.
    pub fn open(program: &'static str, config: &Config) -> Logger {
        Logger::with(program, &config.log)
    }

    pub fn with(program: &'static str, log: &LogConfig) -> Logger {
        Logger::build(program, log, true)
    }

    /// For a program whose standard error is the SSH client's (gatehouse-shell): lines go
    /// there only where `log.stderr` says so, never as the fallback, or every user would
    /// read them in their sessions, git clones and rsync runs.
    pub fn for_session(program: &'static str, log: &LogConfig) -> Logger {
        Logger::build(program, log, false)
    }

    fn build(program: &'static str, log: &LogConfig, stderr_fallback: bool) -> Logger {
        let sink = match log.target {
            LogTarget::Auto => open_syslog(program, &log.socket).or_else(|| open_journal(&log.journal_socket)),
            LogTarget::Syslog => open_syslog(program, &log.socket),
            LogTarget::Journal => open_journal(&log.journal_socket),
            LogTarget::Stderr => None,
        };
        let sink = sink.unwrap_or(Sink::Nothing);
        // Nowhere else to go: standard error, so no line vanishes.
        let stderr = log.stderr || (stderr_fallback && matches!(sink, Sink::Nothing));
        Logger { program, sink, stderr }
    }

    /// A logger for the syslog socket `socket` alone.
    pub fn open_at(program: &'static str, socket: &Path, stderr: bool) -> Logger {
        let log = LogConfig { target: LogTarget::Syslog, socket: socket.to_path_buf(), stderr, ..LogConfig::default() };
        Logger::with(program, &log)
    }

    /// A logger that also writes to stderr, for errors before the config is known.
    pub fn stderr_only(program: &'static str) -> Logger {
        Logger::with(program, &LogConfig { stderr: true, ..LogConfig::default() })
    }

    /// Where the lines go, for `gatehouse doctor`: `syslog`, `journal` or `stderr`.
    pub fn destination(&self) -> &'static str {
        match self.sink {
            Sink::Syslog(_) => "syslog",
            Sink::Journal(_) => "journal",
            Sink::Nothing => "stderr",
        }
    }

    pub fn log(&mut self, level: Level, pairs: &[(&str, &str)]) {
        let line = format_pairs(pairs);
        match &mut self.sink {
            Sink::Syslog(sys) => {
                let _ = match level {
                    Level::Info => sys.info(&line),
                    Level::Notice => sys.notice(&line),
                    Level::Warning => sys.warning(&line),
                    Level::Error => sys.err(&line),
                };
            }
            Sink::Journal(journal) => {
                let _ = journal.send(&journal_entry(self.program, level, pairs));
            }
            Sink::Nothing => {}
        }
        if self.stderr {
            eprintln!("{}: {line}", self.program);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_untrusted_values() {
        assert_eq!(format_pairs(&[("user", "alice"), ("fp", "SHA256:ab+/c")]), "user=alice fp=SHA256:ab+/c");
        assert_eq!(format_pairs(&[("user", "a b")]), "user=\"a b\"");
        assert_eq!(format_pairs(&[("user", "x\ny=1")]), "user=\"x\\x{a}y=1\"");
        assert_eq!(format_pairs(&[("cmd", "a\"b\\")]), "cmd=\"a\\\"b\\\\\"");
        assert_eq!(format_pairs(&[("user", "")]), "user=\"\"");
        assert_eq!(format_pairs(&[("u", "é")]), "u=\"\\x{e9}\"");
        let long = "a ".repeat(1000);
        assert!(format_pairs(&[("x", &long)]).ends_with("...\""));
        let plain = "a".repeat(1000);
        assert_eq!(format_pairs(&[("x", &plain)]).len(), "x=\"\"...".len() + 512);
    }

    #[test]
    fn journal_entries_carry_each_pair_as_a_field() {
        let entry = journal_entry("gatehouse-keys", Level::Notice, &[("user", "alice"), ("verdict", "accept")]);
        let text = String::from_utf8(entry).unwrap();
        for line in [
            "MESSAGE=user=alice verdict=accept",
            "PRIORITY=5",
            "SYSLOG_FACILITY=10",
            "SYSLOG_IDENTIFIER=gatehouse-keys",
            "GATEHOUSE_USER=alice",
            "GATEHOUSE_VERDICT=accept",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from {text:?}");
        }
    }

    #[test]
    fn a_newline_in_a_value_cannot_forge_a_journal_field() {
        let entry = journal_entry("gatehouse-shell", Level::Error, &[("command", "ls\nPRIORITY=0"), ("odd-key", "x")]);
        // The value goes length-prefixed: the bytes after its newline are not a field.
        let mut want = b"GATEHOUSE_COMMAND\n".to_vec();
        want.extend_from_slice(&13u64.to_le_bytes());
        want.extend_from_slice(b"ls\nPRIORITY=0\n");
        assert!(entry.windows(want.len()).any(|w| w == want.as_slice()));
        let text = String::from_utf8_lossy(&entry);
        assert_eq!(text.matches("\nPRIORITY=").count(), 2, "one real PRIORITY, one inside the value: {text:?}");
        assert!(text.contains("\nGATEHOUSE_ODD_KEY=x\n"));
        // MESSAGE has the escaped line, on one line.
        assert!(text.starts_with("MESSAGE=command=\"ls\\x{a}PRIORITY=0\" odd-key=x\n"), "{text:?}");
    }

    #[test]
    fn lines_reach_a_journal_socket_and_nothing_vanishes_without_one() {
        let dir = std::env::temp_dir().join(format!("gatehouse-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("journal.sock");
        let journal = UnixDatagram::bind(&socket).unwrap();
        let log = LogConfig {
            target: LogTarget::Auto,
            socket: dir.join("no-syslog-here"),
            journal_socket: socket.clone(),
            stderr: false,
        };
        let mut logger = Logger::with("gatehouse", &log);
        assert_eq!(logger.destination(), "journal");
        logger.log(Level::Warning, &[("user", "bob")]);
        let mut buf = [0u8; 4096];
        let n = journal.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("GATEHOUSE_USER=bob\n"));
        drop(journal);
        std::fs::remove_file(&socket).unwrap();
        // Neither socket: standard error, always; but not into an SSH session.
        let logger = Logger::with("gatehouse", &log);
        assert_eq!(logger.destination(), "stderr");
        assert!(logger.stderr);
        assert!(!Logger::for_session("gatehouse-shell", &log).stderr);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
