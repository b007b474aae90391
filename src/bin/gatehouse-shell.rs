//! The forced command; see gatehouse-shell(8).
use gatehouse::config::Config;
use gatehouse::forced::confine;
use gatehouse::forced::{self, exit, Action, ExecPlan, Invocation, Session};
use gatehouse::log::{Level, Logger};
use gatehouse::store::sqlite::SqliteStore;
use gatehouse::watchdog::Watchdog;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::Duration;

/// Set for the shell started in login-shell mode; see there.
const LOOP_MARK: &str = "GATEHOUSE_SHELL_PID";

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    // A leading dash in argv[0]: started as a login shell (su -, a password login).
    let as_login = argv.next().is_some_and(|a| a.as_encoded_bytes().starts_with(b"-"));
    let args: Vec<_> = argv.collect();
    let invocation = match forced::parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            Logger::stderr_only("gatehouse-shell").log(Level::Error, &[("error", &e), ("usage", forced::USAGE)]);
            return ExitCode::from(exit::USAGE);
        }
    };
    let login_mode = matches!(invocation, Invocation::LoginShell { .. });
    let (config_path, fingerprint) = match &invocation {
        Invocation::Forced(a) => (a.config.as_deref(), a.fingerprint.as_str()),
        // Not a key line: no key to name.
        Invocation::LoginShell { config, .. } => (config.as_deref(), forced::NO_KEY),
    };
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse-shell: service misconfigured, please tell the administrators");
            Logger::stderr_only("gatehouse-shell").log(Level::Error, &[("error", &e.0)]);
            return ExitCode::from(exit::CONFIG);
        }
    };
    let mut log = Logger::for_session("gatehouse-shell", &config.log);
    if login_mode && std::env::var(LOOP_MARK).is_ok_and(|pid| pid == std::process::id().to_string()) {
        eprintln!("gatehouse-shell: service misconfigured, please tell the administrators");
        log.log(Level::Error, &[("error", "shell.login_shell starts gatehouse-shell again; it must be a real shell")]);
        return ExitCode::from(exit::CONFIG);
    }
    let account = match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(account)) => account,
        _ => {
            eprintln!("gatehouse-shell: your account is not known to this system");
            log.log(Level::Error, &[("uid", &nix::unistd::getuid().to_string()), ("error", "no passwd entry")]);
            return ExitCode::from(exit::REFUSED);
        }
    };
    // A command that is not UTF-8 is refused rather than altered: what is checked is what runs.
    let original = match &invocation {
        Invocation::Forced(_) => std::env::var_os("SSH_ORIGINAL_COMMAND").map(|c| c.into_string()),
        Invocation::LoginShell { command, .. } => command.clone().map(Ok),
    };
    let command = match original {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => {
            eprintln!("gatehouse-shell: the command is not valid UTF-8");
            let reason = forced::Reason::CommandNotUtf8.as_str();
            log.log(Level::Notice, &[("user", &account.name), ("verdict", "refuse"), ("reason", reason)]);
            return ExitCode::from(exit::REFUSED);
        }
    };
    let groups = || -> Vec<String> {
        nix::unistd::getgroups()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|gid| nix::unistd::Group::from_gid(gid).ok().flatten())
            .map(|g| g.name)
            .collect()
    };
    let env: Vec<(String, String)> =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    let session = Session {
        user: &account.name,
        uid: account.uid.as_raw(),
        fingerprint,
        command: command.as_deref(),
        groups: &groups,
        env: &env,
        now: gatehouse::time::now(),
        account_shell: &account.shell,
        login_mode,
    };
    let watchdog = {
        let log_config = config.log.clone();
        let (user, fingerprint) = (session.user.to_string(), session.fingerprint.to_string());
        let ms = config.store.login_timeout_ms;
        Watchdog::start(Duration::from_millis(u64::from(ms)), move || {
            eprintln!("gatehouse-shell: service unavailable, please try again later");
            let error = format!("no answer from the store within store.login_timeout_ms ({ms} ms)");
            Logger::for_session("gatehouse-shell", &log_config).log(
                Level::Error,
                &[("user", &user), ("fingerprint", &fingerprint), ("verdict", "refuse"), ("error", &error)],
            );
            exit::STORE
        })
    };
    let store = match SqliteStore::open_reader(&config.store.path, config.store.login_timeout_ms) {
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
    let decided = match &invocation {
        Invocation::Forced(_) => forced::decide(&config, &store, &session),
        Invocation::LoginShell { .. } => forced::decide_login_shell(&config, &store, &session),
    };
    let action = match decided {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gatehouse-shell: service unavailable, please try again later");
            let error = e.to_string();
            log.log(Level::Error, &[("user", session.user), ("fingerprint", session.fingerprint), ("error", &error)]);
            return ExitCode::from(exit::STORE);
        }
    };
    watchdog.disarm();
    // Not closed: what follows is an exec or an exit, which closes the store's files (all
    // opened close-on-exec) and so drops its read lock; SQLite's close would free its
    // schema and cache for nobody, a twentieth of this program's work.
    std::mem::forget(store);
    // What was asked for, for the log: the command's first word (escaped by the logger).
    let verb = match session.command {
        Some(c) => c.split(' ').next().unwrap_or("").chars().take(64).collect::<String>(),
        None => "interactive".to_string(),
    };
    let verb = verb.as_str();
    // One line to the client, one to the log, one exit code: every refusal.
    let refuse = |log: &mut Logger, message: &str, reason: &str, code: u8| {
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
    };
    match action {
        Action::Exec(plan) => run(plan, &session, &mut log),
        Action::Refuse { message, reason, code } => refuse(&mut log, &message, reason.as_str(), code),
        Action::Shell { shell, command } => {
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
            let mut cmd = Command::new(&shell);
            if login_mode {
                // exec keeps the process ID: seeing it again means the shell led back here.
                cmd.env(LOOP_MARK, std::process::id().to_string());
                // Inherited (`su` from a key's session): not this session's key, and the
                // agent would take it for a removed key of this user.
                cmd.env_remove(gatehouse::forced::SESSION_KEY_VAR);
            } else {
                cmd.env(gatehouse::forced::SESSION_KEY_VAR, session.fingerprint);
            }
            // SHELL is the one the session runs (sshd set the account's), for the programs
            // that start a shell of their own.
            cmd.env_remove("SSH_ORIGINAL_COMMAND").env("SHELL", &shell);
            match &command {
                Some(c) => {
                    cmd.arg("-c").arg(c);
                }
                None if login_mode && !as_login => {}
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
            ExitCode::from(exit::START)
        }
    }
}

/// Confines this process as planned, then becomes the served program.
fn run(plan: ExecPlan, session: &Session<'_>, log: &mut Logger) -> ExitCode {
    let base = |verdict: &'static str| {
        vec![
            ("user", session.user.to_string()),
            ("fingerprint", session.fingerprint.to_string()),
            ("verb", plan.verb.to_string()),
            ("target", plan.target.clone()),
            ("verdict", verdict.to_string()),
        ]
    };
    let emit = |log: &mut Logger, level: Level, pairs: &[(&str, String)]| {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        log.log(level, &borrowed);
    };
    let mut pairs = base("accept");
    if let Some(objects) = &plan.sweep_quarantine {
        let (removed, error) = gatehouse::domain::repo::sweep_quarantine(objects, std::time::SystemTime::now());
        if removed > 0 {
            pairs.push(("stale_quarantines_removed", removed.to_string()));
        }
        if let Some(e) = error {
            emit(log, Level::Warning, &[base("sweep"), vec![("error", e)]].concat());
        }
    }
    // The repository must exist before the confinement names it.
    if let Some(dir) = &plan.init_bare {
        let created = Command::new(&plan.program)
            .args(["init", "--quiet", "--bare"])
            .arg(dir)
            .env_clear()
            .envs(plan.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&plan.cwd)
            .stdout(std::process::Stdio::null())
            .status();
        if !matches!(created, Ok(s) if s.success()) {
            eprintln!("gatehouse-shell: cannot create the repository");
            emit(
                log,
                Level::Error,
                &[base("refuse"), vec![("reason", forced::Reason::InitFailed.as_str().to_string())]].concat(),
            );
            return ExitCode::from(exit::START);
        }
        pairs.push(("created", "yes".to_string()));
    }
    let mut level = Level::Info;
    if let Some(confinement) = &plan.confine {
        match confine::apply(confinement) {
            Ok(enforced) => {
                if enforced != confine::Enforced::Fully {
                    // The kernel lacks (part of) Landlock: the allow-lists remain the wall.
                    level = Level::Warning;
                }
                pairs.push(("landlock", enforced.as_str().to_string()));
            }
            Err(e) => {
                eprintln!("gatehouse-shell: cannot confine the session, refusing it");
                emit(
                    log,
                    Level::Error,
                    &[
                        base("refuse"),
                        vec![("reason", forced::Reason::ConfinementFailed.as_str().to_string()), ("error", e)],
                    ]
                    .concat(),
                );
                return ExitCode::from(exit::START);
            }
        }
    }
    emit(log, level, &pairs);
    let err = Command::new(&plan.program)
        .args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd)
        .exec();
    eprintln!("gatehouse-shell: cannot start {}", plan.verb);
    emit(log, Level::Error, &[base("refuse"), vec![("error", err.to_string())]].concat());
    ExitCode::from(exit::START)
}
