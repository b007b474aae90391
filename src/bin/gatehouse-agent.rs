//! The root daemon that makes the host follow the store; see gatehouse-agent(8).
use gatehouse::config::Config;
use gatehouse::exit;
use gatehouse::log::{Level, Logger};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: gatehouse-agent [--config FILE] [--once]";

fn main() -> ExitCode {
    let mut config_path: Option<PathBuf> = None;
    let mut once = false;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--config") => match args.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => return usage(),
            },
            Some("--once") => once = true,
            Some("--help" | "-h") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some("--version" | "-V") => {
                println!("gatehouse-agent {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse-agent: {e}");
            Logger::stderr_only("gatehouse-agent").log(Level::Error, &[("error", &e.to_string())]);
            return ExitCode::from(exit::CONFIG);
        }
    };
    let mut log = Logger::open("gatehouse-agent", &config);
    let result = if once {
        gatehouse::agent::once(&config, &mut log, &mut std::io::stdout().lock()).map(|failures| {
            if failures == 0 {
                exit::OK
            } else {
                exit::REFUSED
            }
        })
    } else {
        gatehouse::agent::run(&config, &mut log).map(|()| exit::OK)
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("gatehouse-agent: {e}");
            log.log(Level::Error, &[("action", "agent"), ("error", &e.to_string())]);
            ExitCode::from(exit::STORE)
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(exit::USAGE)
}
