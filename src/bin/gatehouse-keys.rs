//! sshd AuthorizedKeysCommand; see gatehouse-keys(8).
use gatehouse::config::Config;
use gatehouse::exit;
use gatehouse::keycmd::{self, Invocation};
use gatehouse::log::{Level, Logger};
use gatehouse::store::sqlite::SqliteStore;
use gatehouse::watchdog::Watchdog;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let (config_path, request) = match keycmd::parse_args(&args) {
        Ok(Invocation::Lookup { config, request }) => (config, request),
        Ok(Invocation::Help) => {
            println!("{}", keycmd::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("gatehouse-keys {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            Logger::stderr_only("gatehouse-keys").log(Level::Error, &[("error", &e), ("usage", keycmd::USAGE)]);
            return ExitCode::from(exit::USAGE);
        }
    };
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            Logger::stderr_only("gatehouse-keys").log(Level::Error, &[("error", &e.0)]);
            return ExitCode::from(exit::CONFIG);
        }
    };
    // Nothing on the login path may wait past store.login_timeout_ms, not even SQLite's
    // own retries: then the answer is no key, and the log says why.
    // Every error line names whose login it refused, whichever step failed.
    let user = request.user.clone().unwrap_or_else(|| "<not utf-8>".to_string());
    let fingerprint = request.fingerprint.clone().unwrap_or_else(|| "-".to_string());
    let watchdog = {
        let log_config = config.log.clone();
        let (user, fingerprint) = (user.clone(), fingerprint.clone());
        let ms = config.store.login_timeout_ms;
        Watchdog::start(Duration::from_millis(u64::from(ms)), move || {
            let error = format!("no answer from the store within store.login_timeout_ms ({ms} ms)");
            Logger::with("gatehouse-keys", &log_config).log(
                Level::Error,
                &[("user", &user), ("fingerprint", &fingerprint), ("verdict", "refuse"), ("error", &error)],
            );
            4
        })
    };
    let mut log = Logger::open("gatehouse-keys", &config);
    let refused = |log: &mut Logger, error: &str| {
        log.log(
            Level::Error,
            &[("user", &user), ("fingerprint", &fingerprint), ("verdict", "refuse"), ("error", error)],
        )
    };
    if let Err(e) = gatehouse::keycmd::lines::LineContext::from_config(&config) {
        log.log(Level::Error, &[("error", &e)]);
        return ExitCode::from(exit::CONFIG);
    }
    let store = match SqliteStore::open_reader(&config.store.path, config.store.login_timeout_ms) {
        Ok(s) => s,
        Err(e) => {
            refused(&mut log, &e.to_string());
            return ExitCode::from(exit::STORE);
        }
    };
    let mut out = std::io::stdout().lock();
    let result =
        keycmd::answer(&config, &store, &request, gatehouse::time::now(), &mut out, &mut log, &|| watchdog.disarm());
    watchdog.disarm();
    // The process ends here: closing a read-only connection would only free memory, which
    // costs a measurable share of a lookup; the kernel drops its locks with the process.
    std::mem::forget(store);
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            refused(&mut log, &e.to_string());
            ExitCode::from(match e {
                keycmd::AnswerError::Config(_) => exit::CONFIG,
                keycmd::AnswerError::Store(_) | keycmd::AnswerError::Output(_) => exit::STORE,
            })
        }
    }
}
