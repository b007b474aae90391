//! The admin CLI; see gatehouse(8).
use clap::{Args, CommandFactory, Parser, Subcommand};
use gatehouse::admin::{self, doctor, exit, Admin, AdminError, KeyOptions};
use gatehouse::config::Config;
use gatehouse::domain::{PolicyChange, Scope, UserState};
use gatehouse::log::{Level, Logger};
use gatehouse::store::sqlite::SqliteStore;
use gatehouse::store::AuditQuery;
use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "Gatehouse admin: users, keys, imports, audit, checks")]
struct Cli {
    /// Configuration file [default: /etc/gatehouse/gatehouse.toml]
    #[arg(long, global = true, value_name = "FILE", env = "GATEHOUSE_CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the key store, or upgrade an existing one
    Init {
        /// Owner of the store folder and files
        #[arg(long, value_name = "USER")]
        owner: Option<String>,
        /// Group of the store folder and files (the key-command user's group)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Manage users
    #[command(subcommand)]
    User(UserCommand),
    /// Manage keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Import keys from existing files
    #[command(subcommand)]
    Import(ImportCommand),
    /// Manage repository grants
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Manage API tokens for the web service
    #[command(subcommand)]
    Token(TokenCommand),
    /// The shared PostgreSQL of several login nodes ([source])
    #[command(subcommand)]
    Source(SourceCommand),
    /// Directory sync and status (runs gatehouse-ldap, installed beside gatehouse)
    Ldap {
        /// sync [--full] | status [--json] | check-password USER
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<std::ffi::OsString>,
    },
    /// What this node syncs from (the shared PostgreSQL, the directory): fresh or stale
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Make the host follow the store: sessions, accounts, data folders (root; the daemon
    /// is gatehouse-agent)
    Agent {
        /// One pass, its changes printed, then exit
        #[arg(long)]
        once: bool,
    },
    /// Create, lock and unlock system accounts to match the store (root)
    Provision {
        /// Print what would change, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the audit trail
    Audit {
        /// Only events about this user
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only events since T (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, or an age like 7d)
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// At most N events, the newest
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check the installation the way sshd will see it
    Doctor {
        /// sshd binary
        #[arg(long, value_name = "PATH", default_value = "/usr/sbin/sshd")]
        sshd: PathBuf,
        /// sshd configuration file to check [default: sshd's own]
        #[arg(long, value_name = "FILE")]
        sshd_config: Option<PathBuf>,
        /// Evaluate sshd's Match blocks for this user [default: the first store user with an account]
        #[arg(long, value_name = "USER")]
        user: Option<String>,
    },
    /// Print the shell completion script for bash, zsh or fish
    Completions {
        /// The shell
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// The last sync of each source, its age against staleness_max, the change applied,
    /// the login records waiting to be sent (exit status 1 when one is stale or failing)
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user
    Add {
        /// The user's name
        name: String,
        /// Access policy: shell, files, git or git-read [default: users.default_policy]
        #[arg(long, value_name = "SCOPE")]
        policy: Option<Scope>,
        /// Allow local port forwarding (to forwarding.permit_open) for shell keys
        #[arg(long)]
        port_forwarding: bool,
        /// Add the user disabled
        #[arg(long)]
        disabled: bool,
    },
    /// List users
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show a user and their keys
    Show {
        /// The user's name
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: no key works until enabled again
    Disable {
        /// The user's name
        name: String,
    },
    /// Enable a user
    Enable {
        /// The user's name
        name: String,
    },
    /// Change a user's policy
    Set {
        /// The user's name
        name: String,
        /// The new policy: shell, files, git or git-read
        #[arg(long, value_name = "SCOPE")]
        policy: Option<Scope>,
        /// Allow local port forwarding (yes or no)
        #[arg(long, value_name = "yes|no", value_parser = parse_yes_no)]
        port_forwarding: Option<bool>,
    },
    /// Remove a user and all their keys
    Remove {
        /// The user's name
        name: String,
    },
    /// Lock a user out of logins for a while (see also `unlock`)
    Lock {
        /// The user's name
        name: String,
        /// How long [default: lockout.duration]
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// Lift a lockout and forget the failed attempts behind it
    Unlock {
        /// The user's name
        name: String,
    },
    /// Print a one-time link with which the user sets a web password and adds a key
    Invite {
        /// The user's name
        name: String,
        /// How long the link works [default: web.invite_lifetime]
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
}

#[derive(Subcommand)]
enum SourceCommand {
    /// Copy this host's own store and web secrets into the source, in one transaction
    Import {
        /// Import into a source that already holds users, keeping what is there
        #[arg(long)]
        merge: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token; it is printed once
    Create {
        /// admin, or user:NAME for one user's keys
        #[arg(long, value_name = "SCOPE")]
        scope: String,
        /// What the token is for
        #[arg(long, value_name = "TEXT", default_value = "")]
        label: String,
    },
    /// List tokens (never the tokens themselves)
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token
    Revoke {
        /// The token's number, as `token list` shows it
        id: i64,
    },
}

#[derive(Args, Clone)]
struct KeyArgs {
    /// shell, files, git or git-read [default: the user's policy]
    #[arg(long, value_name = "SCOPE")]
    scope: Option<Scope>,
    /// Expiry: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) or a lifetime like 90d
    #[arg(long, value_name = "DATE")]
    expires: Option<String>,
    /// Source addresses allowed, as in authorized_keys from= (e.g. 10.0.0.0/8,*.lab.example)
    #[arg(long, value_name = "PATTERNS")]
    from: Option<String>,
}

impl KeyArgs {
    fn options(&self, comment: Option<String>) -> KeyOptions {
        KeyOptions { scope: self.scope, expires: self.expires.clone(), from: self.from.clone(), comment }
    }
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Add a key; prints its fingerprint
    Add {
        /// The user's name
        user: String,
        /// `-` to read the key from standard input
        #[arg(value_name = "-", conflicts_with = "file", required_unless_present = "file")]
        stdin: Option<String>,
        /// Read the key from FILE
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArgs,
        /// Replace the key's comment
        #[arg(long, value_name = "C")]
        comment: Option<String>,
    },
    /// List a user's keys
    List {
        /// The user's name
        user: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a key, named by its fingerprint, a unique prefix of it, or its comment
    Remove {
        /// The key's owner
        user: String,
        /// SHA256:… (or a prefix: SHA256: and 6 characters at least), or the key's comment
        key: String,
        /// Remove every key KEY names (else several are removed only after a yes on a terminal)
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum GrantCommand {
    /// Let USER (or @GROUP, a system group) read or write repositories matching PATTERN
    Add {
        /// A user name, or @GROUP
        subject: String,
        /// OWNER/NAME.git; `*` matches any run of characters within a part
        pattern: String,
        /// read or write
        access: gatehouse::domain::repo::Access,
    },
    /// List grants
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a grant
    Remove {
        /// A user name, or @GROUP
        subject: String,
        /// The pattern, as `grant list` shows it
        pattern: String,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Import an existing authorized_keys file for USER
    #[command(name = "authorized-keys")]
    AuthorizedKeys {
        /// The user's name
        user: String,
        /// The authorized_keys file (its options and comments are read too)
        file: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Bulk import of USER<TAB>KEY lines (FILE or - for standard input)
    Tsv {
        /// The file of USER<TAB>KEY lines, or - for standard input
        file: PathBuf,
        /// Create users that do not exist yet
        #[arg(long)]
        create_users: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
}

fn parse_yes_no(text: &str) -> Result<bool, String> {
    match text {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err("expected yes or no".to_string()),
    }
}

/// A key file holds one key; a trailing newline is the file's, not the key's.
fn read_key_text(stdin: bool, file: Option<&PathBuf>) -> Result<String, AdminError> {
    let mut bytes = Vec::new();
    let shown = match file {
        Some(path) => {
            std::fs::File::open(path)
                .and_then(|f| f.take(64 * 1024).read_to_end(&mut bytes))
                .map_err(|e| AdminError::Refused(format!("{}: {e}", path.display())))?;
            path.display().to_string()
        }
        None if stdin => {
            std::io::stdin()
                .take(64 * 1024)
                .read_to_end(&mut bytes)
                .map_err(|e| AdminError::Refused(format!("standard input: {e}")))?;
            "standard input".to_string()
        }
        None => return Err(AdminError::Refused("give --file PATH or - for standard input".into())),
    };
    let text = String::from_utf8(bytes).map_err(|_| AdminError::Refused(format!("{shown}: not valid UTF-8")))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let keys = text.lines().filter(|l| !l.trim().is_empty()).count();
    if keys > 1 && !text.contains("PRIVATE KEY") && !text.contains("BEGIN SSH2") {
        return Err(AdminError::Refused(format!(
            "{shown} holds {keys} lines; add one key at a time, or use `gatehouse import authorized-keys`"
        )));
    }
    Ok(text.to_string())
}

fn run(cli: Cli, config: &Config, log: &mut Logger) -> Result<u8, AdminError> {
    let now = gatehouse::time::now();
    let actor = admin::cli_actor(now);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let store_path = &config.store.path;
    match cli.command {
        Command::Init { owner, group } => {
            let action = admin::init::init(config, owner.as_deref(), group.as_deref(), &actor, &mut out)?;
            if let Some(action) = action {
                log.log(
                    Level::Info,
                    &[("actor", &actor.name), ("action", action), ("store", &store_path.display().to_string())],
                );
            }
            return Ok(exit::OK);
        }
        Command::Agent { once } => {
            let result = if once {
                gatehouse::agent::once(config, log, &mut out)
                    .map(|failed| if failed == 0 { exit::OK } else { exit::REFUSED })
            } else {
                gatehouse::agent::run(config, log).map(|()| exit::OK)
            };
            return Ok(result?);
        }
        Command::Sync(SyncCommand::Status { json }) => {
            let sources = admin::sync_status::status(config, now);
            let healthy = admin::sync_status::print(&sources, json, &mut out).map_err(admin::io)?;
            return Ok(if healthy { exit::OK } else { exit::REFUSED });
        }
        Command::Source(SourceCommand::Import { merge }) => {
            admin::source::import(config, merge, &actor, log, &mut out)?;
            return Ok(exit::OK);
        }
        Command::Doctor { sshd, sshd_config, user } => {
            let options =
                doctor::DoctorOptions { sshd: &sshd, sshd_config: sshd_config.as_deref(), user: user.as_deref() };
            let findings = doctor::diagnose(config, &options);
            let healthy = doctor::print(&findings, &mut out).map_err(admin::io)?;
            return Ok(if healthy { exit::OK } else { exit::REFUSED });
        }
        _ => {}
    }
    // Commands that change nothing in the store open it read-only: a writer touches the
    // WAL on close, which is what the provisioning path unit watches.
    let reads_only = matches!(
        &cli.command,
        Command::User(UserCommand::List { .. } | UserCommand::Show { .. })
            | Command::Key(KeyCommand::List { .. })
            | Command::Grant(GrantCommand::List { .. })
            | Command::Token(TokenCommand::List { .. })
            | Command::Audit { .. }
            | Command::Provision { .. }
    );
    // With [source], every change goes to the shared PostgreSQL (the local store is the
    // agent's mirror, never written here); `provision` follows the local store, as the
    // agent does.
    let mut store: Box<dyn gatehouse::store::AdminStore> = match &config.shared {
        Some(shared) if !matches!(cli.command, Command::Provision { .. }) => {
            Box::new(gatehouse::store::postgres::PgStore::open(shared, config.users.uid_range())?)
        }
        _ if reads_only => Box::new(SqliteStore::open_reader(store_path, config.store.busy_timeout_ms)?),
        _ => Box::new(SqliteStore::open_writer(store_path, config.store.busy_timeout_ms, config.users.uid_range())?),
    };
    let columns = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut admin = Admin { config, store: store.as_mut(), actor, log, columns };
    let say = |out: &mut dyn Write, text: String| writeln!(out, "{text}").map_err(admin::io);
    match cli.command {
        Command::Init { .. }
        | Command::Doctor { .. }
        | Command::Ldap { .. }
        | Command::Agent { .. }
        | Command::Completions { .. }
        | Command::Sync(_)
        | Command::Source(_) => {}
        Command::User(cmd) => match cmd {
            UserCommand::Add { name, policy, port_forwarding, disabled } => {
                admin.user_add(&name, policy, port_forwarding, disabled, "cli")?;
                say(&mut out, format!("added user {name}"))?;
            }
            UserCommand::List { json } => admin.user_list(&mut out, json)?,
            UserCommand::Show { name, json } => admin.user_show(&mut out, &name, json)?,
            UserCommand::Disable { name } => {
                let changed = admin.user_set_state(&name, UserState::Disabled)?;
                say(&mut out, format!("user {name} {}", if changed { "disabled" } else { "was already disabled" }))?;
            }
            UserCommand::Enable { name } => {
                let changed = admin.user_set_state(&name, UserState::Enabled)?;
                say(&mut out, format!("user {name} {}", if changed { "enabled" } else { "was already enabled" }))?;
            }
            UserCommand::Set { name, policy, port_forwarding } => {
                admin.user_set(&name, PolicyChange { policy, port_forwarding })?;
                say(&mut out, format!("updated user {name}"))?;
            }
            UserCommand::Remove { name } => {
                let keys = admin.user_remove(&name)?;
                say(&mut out, format!("removed user {name} and {keys} key(s)"))?;
            }
            UserCommand::Lock { name, duration } => {
                let until = admin.user_lock(&name, duration.as_deref())?;
                say(&mut out, format!("user {name} locked until {until}"))?;
            }
            UserCommand::Unlock { name } => {
                let was = admin.user_unlock(&name)?;
                say(&mut out, format!("user {name} {}", if was { "unlocked" } else { "was not locked" }))?;
            }
            UserCommand::Invite { name, expires } => {
                let link = admin.user_invite(&name, expires.as_deref())?;
                say(&mut out, link)?;
            }
        },
        Command::Key(cmd) => match cmd {
            KeyCommand::Add { user, stdin, file, key, comment } => {
                if let Some(s) = &stdin {
                    if s != "-" {
                        eprintln!("gatehouse: unexpected argument `{}`; use --file PATH or -", s.escape_debug());
                        return Ok(exit::USAGE);
                    }
                }
                let text = read_key_text(stdin.is_some(), file.as_ref())?;
                let fingerprint = admin.key_add(&user, &text, &key.options(comment))?;
                say(&mut out, fingerprint)?;
            }
            KeyCommand::List { user, json } => admin.key_list(&mut out, &user, json)?,
            KeyCommand::Remove { user, key, all } => {
                let keys = admin.keys_named(&user, &key)?;
                if keys.len() > 1 && !all && !confirm_removal(&user, &key, &keys)? {
                    return Ok(exit::REFUSED);
                }
                if keys.is_empty() {
                    return Err(AdminError::Refused(format!(
                        "{user} has no key {key}: name it by fingerprint (SHA256:…, or a prefix with {} characters \
                         after the colon at least) or by its whole comment (gatehouse key list {user})",
                        admin::MIN_FINGERPRINT_PREFIX
                    )));
                }
                for k in keys {
                    admin.key_remove(&user, &k.fingerprint)?;
                    say(&mut out, format!("removed {} from {user}", k.fingerprint))?;
                }
            }
        },
        Command::Import(cmd) => match cmd {
            ImportCommand::AuthorizedKeys { user, file, key } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| AdminError::Refused(format!("{}: {e}", file.display())))?;
                let shown = file.display().to_string();
                let summary = admin.import_authorized_keys(&mut out, &user, &shown, &text, &key.options(None))?;
                return Ok(if summary.skipped == 0 { exit::OK } else { exit::REFUSED });
            }
            ImportCommand::Tsv { file, create_users, key } => {
                let shown = file.display().to_string();
                let stderr = std::io::stderr();
                let mut errors = stderr.lock();
                let summary = if shown == "-" {
                    let stdin = std::io::stdin();
                    let mut input = stdin.lock();
                    admin.import_tsv(&mut out, &mut errors, "-", &mut input, create_users, &key.options(None))?
                } else {
                    let f = std::fs::File::open(&file).map_err(|e| AdminError::Refused(format!("{shown}: {e}")))?;
                    let mut input = BufReader::with_capacity(1 << 20, f);
                    admin.import_tsv(&mut out, &mut errors, &shown, &mut input, create_users, &key.options(None))?
                };
                return Ok(if summary.skipped == 0 { exit::OK } else { exit::REFUSED });
            }
        },
        Command::Provision { dry_run } => {
            let failed = admin.provision(&mut out, dry_run)?;
            return Ok(if failed == 0 { exit::OK } else { exit::REFUSED });
        }
        Command::Token(cmd) => match cmd {
            TokenCommand::Create { scope, label } => {
                let (id, token) = admin.token_create(&scope, &label)?;
                say(&mut out, token)?;
                eprintln!("token {id} created; it is not shown again");
            }
            TokenCommand::List { json } => admin.token_list(&mut out, json)?,
            TokenCommand::Revoke { id } => {
                admin.token_revoke(id)?;
                say(&mut out, format!("revoked token {id}"))?;
            }
        },
        Command::Grant(cmd) => match cmd {
            GrantCommand::Add { subject, pattern, access } => {
                let changed = admin.grant_add(&subject, &pattern, access)?;
                say(
                    &mut out,
                    format!("{subject} may {access} {pattern}{}", if changed { "" } else { " (unchanged)" }),
                )?;
            }
            GrantCommand::List { json } => admin.grant_list(&mut out, json)?,
            GrantCommand::Remove { subject, pattern } => {
                admin.grant_remove(&subject, &pattern)?;
                say(&mut out, format!("removed the grant for {subject} on {pattern}"))?;
            }
        },
        Command::Audit { user, since, limit, json } => {
            let since = since
                .map(|s| {
                    gatehouse::time::parse_since(&s, now).map_err(|e| AdminError::Refused(format!("--since: {e}")))
                })
                .transpose()?;
            admin.audit(&mut out, &AuditQuery { subject: user, since, limit }, json)?;
        }
    }
    Ok(exit::OK)
}

/// `gatehouse ldap …` is `gatehouse-ldap …`: the LDAP client lives in its own program so
/// that nothing on the login path links it.
fn run_ldap(config: Option<&std::path::Path>, args: &[std::ffi::OsString]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let program = std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("gatehouse-ldap"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("gatehouse-ldap"));
    let mut cmd = std::process::Command::new(&program);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let err = cmd.args(args).exec();
    eprintln!("gatehouse: cannot run {}: {err}", program.display());
    ExitCode::from(exit::CONFIG)
}

/// Several keys named by one `key remove`: listed, and removed only after a yes typed on
/// a terminal. Without a terminal the removal is refused (`--all` says yes in scripts).
fn confirm_removal(user: &str, selector: &str, keys: &[gatehouse::domain::Key]) -> Result<bool, AdminError> {
    use std::io::{BufRead, IsTerminal};
    let mut listed = format!("{selector} names {} keys of {user}:\n", keys.len());
    for k in keys {
        listed.push_str(&format!("  {} {}\n", k.fingerprint, gatehouse::keys::shown(&k.comment)));
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(AdminError::Refused(format!(
            "{listed}nothing removed: name one key by its fingerprint, or add --all to remove them all"
        )));
    }
    eprint!("{listed}Remove all {}? [y/N] ", keys.len());
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(admin::io)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        return Ok(true);
    }
    eprintln!("gatehouse: nothing removed");
    Ok(false)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    // Needs neither the configuration nor the store: the packages run it at build time.
    if let Command::Completions { shell } = cli.command {
        // Into a buffer first: clap_complete panics on a failed write (a closed pipe).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "gatehouse", &mut script);
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gatehouse: writing output: {e}");
                ExitCode::from(exit::REFUSED)
            }
        };
    }
    if let Command::Ldap { args } = &cli.command {
        return run_ldap(cli.config.as_deref(), args);
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let mut log = Logger::open("gatehouse", &config);
    match run(cli, &config, &mut log) {
        Ok(code) => ExitCode::from(code),
        // `gatehouse user list | head`: the reader has what it wanted.
        Err(AdminError::OutputClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            let actor = admin::cli_actor(gatehouse::time::Timestamp::EPOCH).name;
            log.log(Level::Notice, &[("actor", &actor), ("verdict", "error"), ("error", &e.to_string())]);
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command, argument and flag says what it is in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands() {
                let here = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(here.clone());
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "gatehouse", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
