//! `gatehouse-ldap` (also run as `gatehouse ldap …`); see gatehouse(8).
use gatehouse::config::Config;
use gatehouse::exit;
use gatehouse::log::{Level, Logger};
use gatehouse::store::sqlite::SqliteStore;
use gatehouse::store::AdminStore;
use std::io::Read;
use std::process::ExitCode;

const USAGE: &str =
    "usage: gatehouse-ldap [--config FILE] sync [--full [--allow-mass-disable]] | follow | status [--json] | check-password [--] USER";

fn main() -> ExitCode {
    // What the directory sends is not trusted: a panic in the LDAP library on a malformed
    // answer is caught and reported as one line, without the panic's own message.
    gatehouse_ldap::client::quiet_caught_panics();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config_path = None;
    if args.first().map(String::as_str) == Some("--config") && args.len() >= 2 {
        config_path = Some(std::path::PathBuf::from(args[1].clone()));
        args.drain(..2);
    }
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse-ldap: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let Some(ldap) = config.ldap.clone() else {
        eprintln!("gatehouse-ldap: no [ldap] section in the configuration");
        return ExitCode::from(exit::CONFIG);
    };
    let mut log = Logger::open("gatehouse-ldap", &config);
    let now = gatehouse::time::now();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["sync", rest @ ..] if rest.iter().all(|a| ["--full", "--allow-mass-disable"].contains(a)) => {
            let mut store = match gatehouse_ldap::open_store(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("gatehouse-ldap: {e}");
                    return ExitCode::from(exit::STORE);
                }
            };
            let full = rest.contains(&"--full");
            let allow_mass_disable = rest.contains(&"--allow-mass-disable");
            if allow_mass_disable && !full {
                eprintln!("gatehouse-ldap: --allow-mass-disable goes with --full\n{USAGE}");
                return ExitCode::from(exit::USAGE);
            }
            match gatehouse_ldap::sync::sync(&config, store.as_mut(), full, allow_mass_disable, now) {
                Ok(o) => {
                    let r = &o.report;
                    println!(
                        "{} sync: {} entries; users added {}, disabled {}, enabled {}; keys added {}, removed {}; {} skipped",
                        if o.full { "full" } else { "incremental" },
                        o.entries,
                        r.users_added,
                        r.users_disabled,
                        r.users_enabled,
                        r.keys_added,
                        r.keys_removed,
                        r.conflicts.len()
                    );
                    for c in &r.conflicts {
                        println!("skipped: {c}");
                        log.log(Level::Warning, &[("action", "ldap.sync"), ("skipped", c)]);
                    }
                    log.log(
                        Level::Info,
                        &[("action", "ldap.sync"), ("entries", &o.entries.to_string()), ("verdict", "ok")],
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let text = e.to_string();
                    eprintln!("gatehouse-ldap: sync failed: {text}");
                    log.log(Level::Error, &[("action", "ldap.sync"), ("verdict", "failed"), ("error", &text)]);
                    ExitCode::from(if e.is_store() { exit::STORE } else { exit::REFUSED })
                }
            }
        }
        ["follow"] => match gatehouse_ldap::follow::run(&config, &|| gatehouse_ldap::open_store(&config), &mut log) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gatehouse-ldap: follow: {}", gatehouse::keys::shown(&e.to_string()));
                ExitCode::from(if e.is_store() { exit::STORE } else { exit::REFUSED })
            }
        },
        ["status", rest @ ..] if rest.iter().all(|a| *a == "--json") => {
            let store = match SqliteStore::open_reader(&config.store.path, config.store.busy_timeout_ms) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("gatehouse-ldap: {e}");
                    return ExitCode::from(exit::STORE);
                }
            };
            let state = match store.sync_state("ldap") {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("gatehouse-ldap: {e}");
                    return ExitCode::from(exit::STORE);
                }
            };
            let last_success = state.as_ref().and_then(|s| s.last_success);
            // Shown as it is (negative when the clock went back); a future success is fresh.
            let lag = last_success.map(|t| now.secs_since(t));
            let stale = last_success.is_none_or(|t| now.saturating_duration_since(t) > ldap.staleness_max);
            let staleness_max = ldap.staleness_max.as_secs();
            if !rest.is_empty() {
                let json = serde_json::json!({ "state": state, "lag_seconds": lag, "stale": stale, "staleness_max": staleness_max });
                println!("{json}");
            } else {
                match &state {
                    None => println!("never synced"),
                    Some(s) => {
                        let last = s.last_success.map_or_else(|| "never".into(), |t| t.to_string());
                        println!("last successful sync: {last} (lag {} s)", lag.map_or("-".into(), |l| l.to_string()));
                        println!("last attempt: {}", s.last_attempt);
                        if let Some(e) = &s.last_error {
                            println!("last error: {e}");
                        }
                        println!("directory users: {}, keys: {}", s.users, s.keys);
                    }
                }
                if stale {
                    println!(
                        "STALE: directory users are refused until a sync succeeds (ldap.staleness_max {staleness_max} s)"
                    );
                }
            }
            if stale {
                ExitCode::from(exit::REFUSED)
            } else {
                ExitCode::SUCCESS
            }
        }
        ["check-password", user] | ["check-password", "--", user] => {
            let mut password = String::new();
            if std::io::stdin().take(4096).read_to_string(&mut password).is_err() {
                return ExitCode::from(exit::USAGE);
            }
            let password = password.strip_suffix('\n').unwrap_or(&password);
            match gatehouse_ldap::password::check(&ldap, user, password) {
                Ok(Ok(())) => {
                    println!("password accepted");
                    ExitCode::SUCCESS
                }
                Ok(Err(why)) => {
                    println!("password refused: {why:?}");
                    ExitCode::from(exit::REFUSED)
                }
                Err(e) => {
                    eprintln!("gatehouse-ldap: {e}");
                    ExitCode::from(exit::STORE)
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(exit::USAGE)
        }
    }
}
