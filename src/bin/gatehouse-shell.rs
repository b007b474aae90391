//! The forced command; see gatehouse-shell(8).
use gatehouse::config::Config;
use gatehouse::confine;
use gatehouse::log::{Level, Logger};
use gatehouse::shell::{self, exit, Action, ExecPlan, Session};
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
        fingerprint: &parsed.fingerprint,
        command: command.as_deref(),
        groups: &groups,
        env: &env,
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
        Action::Refuse { message, reason, code } => refuse(&mut log, &message, reason, code),
        Action::Shell { command } => {
            let shell = account.shell;
            if shell.file_name().is_some_and(|n| n == "gatehouse-shell") {
                // Set as the login shell to keep shells away from keys without shell scope;
                // a shell key needs a real one.
                let message =
                    format!("Shell access needs a real login shell for {}; ask an administrator.", session.user);
                return refuse(&mut log, &message, "login-shell-is-gatehouse-shell", exit::REFUSED);
            }
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
            emit(log, Level::Error, &[base("refuse"), vec![("reason", "init-failed".to_string())]].concat());
            return ExitCode::from(exit::EXEC);
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
                    &[base("refuse"), vec![("reason", "confinement-failed".to_string()), ("error", e)]].concat(),
                );
                return ExitCode::from(exit::EXEC);
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
    ExitCode::from(exit::EXEC)
}
