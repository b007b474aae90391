//! The forced command; see gatehouse-shell(8).
use gatehouse::config::Config;
use gatehouse::log::{Level, Logger};
use gatehouse::shell::{self, exit, Action, Session};
use gatehouse::store::sqlite::SqliteStore;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let parsed = match shell::parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            Logger::stderr_only("gatehouse-shell").log(Level::Error, &[("error", &e), ("usage", shell::USAGE)]);
            return ExitCode::from(exit::USAGE);
        }
    };
    let config = match Config::load(parsed.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse-shell: service misconfigured, please tell the administrators");
            Logger::stderr_only("gatehouse-shell").log(Level::Error, &[("error", &e.0)]);
            return ExitCode::from(exit::CONFIG);
        }
    };
    let mut log = Logger::open("gatehouse-shell", &config);
    let account = match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(account)) => account,
        _ => {
            eprintln!("gatehouse-shell: your account is not known to this system");
            log.log(Level::Error, &[("uid", &nix::unistd::getuid().to_string()), ("error", "no passwd entry")]);
            return ExitCode::from(exit::REFUSED);
        }
    };
    // A command that is not UTF-8 is refused rather than altered: what is checked is what runs.
    let command = match std::env::var_os("SSH_ORIGINAL_COMMAND").map(|c| c.into_string()) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => {
            eprintln!("gatehouse-shell: the command is not valid UTF-8");
            log.log(Level::Notice, &[("user", &account.name), ("verdict", "refuse"), ("reason", "command-not-utf-8")]);
            return ExitCode::from(exit::REFUSED);
        }
    };
    let session = Session {
        user: &account.name,
        fingerprint: &parsed.fingerprint,
        command: command.as_deref(),
        now: gatehouse::time::now(),
    };
    let store = match SqliteStore::open_reader(&config.store_path, config.busy_timeout_ms) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gatehouse-shell: service unavailable, please try again later");
            log.log(
                Level::Error,
                &[("user", session.user), ("fingerprint", session.fingerprint), ("error", &e.to_string())],
            );
            return ExitCode::from(exit::STORE);
        }
    };
    let action = match shell::decide(&config, &store, &session) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gatehouse-shell: service unavailable, please try again later");
            log.log(Level::Error, &[("user", session.user), ("fingerprint", session.fingerprint), ("error", &e)]);
            return ExitCode::from(exit::STORE);
        }
    };
    drop(store);
    let verb = if session.command.is_some() { "command" } else { "interactive" };
    match action {
        Action::Refuse { message, reason, code } => {
            eprintln!("{message}");
            log.log(
                Level::Notice,
                &[
                    ("user", session.user),
                    ("fingerprint", session.fingerprint),
                    ("verb", verb),
                    ("verdict", "refuse"),
                    ("reason", reason),
                ],
            );
            ExitCode::from(code)
        }
        Action::Shell { command } => {
            log.log(
                Level::Info,
                &[
                    ("user", session.user),
                    ("fingerprint", session.fingerprint),
                    ("verb", verb),
                    ("verdict", "accept"),
                    ("command", command.as_deref().unwrap_or("-")),
                ],
            );
            let shell = account.shell;
            let mut cmd = Command::new(&shell);
            cmd.env_remove("SSH_ORIGINAL_COMMAND");
            match &command {
                Some(c) => {
                    cmd.arg("-c").arg(c);
                }
                None => {
                    // A leading dash in argv[0] makes it a login shell, as sshd would start it.
                    let name = shell.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    cmd.arg0(format!("-{name}"));
                }
            }
            let err = cmd.exec();
            eprintln!("gatehouse-shell: cannot start your shell {}", shell.display());
            log.log(
                Level::Error,
                &[("user", session.user), ("shell", &shell.display().to_string()), ("error", &err.to_string())],
            );
            ExitCode::from(exit::EXEC)
        }
    }
}
