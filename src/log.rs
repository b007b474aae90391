//! Operator-facing log lines: syslog (authpriv) as `key=value` pairs.
//!
//! sshd discards the key command's stderr, so syslog is where decisions must show. Values
//! come from untrusted input (user names, commands), so each is escaped: nothing can forge
//! a second pair or a second line.

use crate::config::Config;
use std::fmt::Write as _;

/// Longest wait for the syslog socket per line.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Notice,
    Warning,
    Error,
}

/// Where a program's log lines go: syslog (if its socket answers) and optionally stderr.
pub struct Logger {
    program: &'static str,
    syslog: Option<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>,
    stderr: bool,
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

impl Logger {
    /// Opens the log for `program` as configured. A missing syslog socket is not an error:
    /// logging must never stop a login.
    pub fn open(program: &'static str, config: &Config) -> Logger {
        Logger::open_at(program, &config.log.socket, config.log.stderr)
    }

    pub fn open_at(program: &'static str, socket: &std::path::Path, stderr: bool) -> Logger {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_AUTHPRIV,
            hostname: None,
            process: program.to_string(),
            pid: std::process::id(),
        };
        let syslog = syslog::unix_custom(formatter, socket).ok().map(|mut logger| {
            // A stalled syslog daemon must not stall a login: a line it cannot take within
            // the timeout is dropped.
            let _ = match &mut logger.backend {
                syslog::LoggerBackend::Unix(socket) => socket.set_write_timeout(Some(SEND_TIMEOUT)),
                syslog::LoggerBackend::UnixStream(stream) => stream.get_ref().set_write_timeout(Some(SEND_TIMEOUT)),
                _ => Ok(()),
            };
            logger
        });
        Logger { program, syslog, stderr }
    }

    /// A logger that only writes to stderr, for errors before the config is known.
    pub fn stderr_only(program: &'static str) -> Logger {
        Logger::open_at(program, std::path::Path::new(crate::config::DEFAULT_LOG_SOCKET), true)
    }

    pub fn log(&mut self, level: Level, pairs: &[(&str, &str)]) {
        let line = format_pairs(pairs);
        if let Some(sys) = self.syslog.as_mut() {
            let _ = match level {
                Level::Info => sys.info(&line),
                Level::Notice => sys.notice(&line),
                Level::Warning => sys.warning(&line),
                Level::Error => sys.err(&line),
            };
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
}
