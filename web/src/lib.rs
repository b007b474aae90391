//! gatehoused: the key store's writer for the web. Users sign in and manage their keys in
//! server-rendered pages that work without JavaScript; the platform's own web app manages
//! users and keys through a JSON API with bearer tokens.
//!
//! HTTP stack: axum on tokio (hyper underneath). Chosen because it is maintained by the
//! tokio project, small in what it adds over hyper, and fast enough that the service is
//! never the bottleneck; HTML comes from maud, which escapes every interpolation. The
//! accept loop is our own (`server`), on hyper directly, for the connection limits that
//! `axum::serve` does not have.
#![forbid(unsafe_code)]

// Dependencies point one way only (web/tests/layering.rs checks it):
// server → routes → handlers → extract → state → error → layout, limits.
pub mod error;
pub mod extract;
pub mod handlers;
pub mod layout;
pub mod limits;
pub mod routes;
pub mod server;
pub mod state;

use gatehouse::config::{Config, Listen};
use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "usage: gatehoused [--config FILE]";

/// Exit codes, as documented in gatehoused(8).
pub use gatehouse::exit;

fn parse_args(args: &[OsString]) -> Result<Option<PathBuf>, String> {
    match args {
        [] => Ok(None),
        [flag, path] if flag == "--config" => Ok(Some(PathBuf::from(path))),
        [one] if one.to_str().is_some_and(|a| a.starts_with("--config=")) => {
            Ok(one.to_str().map(|a| PathBuf::from(&a["--config=".len()..])))
        }
        _ => Err(USAGE.to_string()),
    }
}

/// The whole program: arguments, configuration, stores, listener, serve until SIGTERM.
pub fn run_from_args(args: Vec<OsString>) -> u8 {
    if args.len() == 1 && (args[0] == "--help" || args[0] == "-h") {
        println!("{USAGE}");
        return exit::OK;
    }
    if args.len() == 1 && (args[0] == "--version" || args[0] == "-V") {
        println!("gatehoused {}", env!("CARGO_PKG_VERSION"));
        return exit::OK;
    }
    let config_path = match parse_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gatehoused: {e}");
            return exit::USAGE;
        }
    };
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehoused: {e}");
            return exit::CONFIG;
        }
    };
    let app = match state::App::open(config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gatehoused: {e}");
            return exit::STORE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gatehoused: cannot start the runtime: {e}");
            return exit::START;
        }
    };
    runtime.block_on(serve(app))
}

async fn serve(app: state::App) -> u8 {
    let listen = app.config.web.listen.clone();
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let listener = match &listen {
        Listen::Tcp(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                eprintln!("gatehoused: listening on http://{addr}");
                server::Listener::Tcp(l)
            }
            Err(e) => {
                eprintln!("gatehoused: cannot listen on {addr}: {e}");
                return exit::START;
            }
        },
        Listen::Unix(path) => {
            // A socket left by a previous run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
            match tokio::net::UnixListener::bind(path) {
                Ok(l) => {
                    eprintln!("gatehoused: listening on {}", path.display());
                    server::Listener::Unix(l)
                }
                Err(e) => {
                    eprintln!("gatehoused: cannot listen on {}: {e}", path.display());
                    return exit::START;
                }
            }
        }
    };
    server::run(std::sync::Arc::new(app), listener, shutdown).await;
    exit::OK
}
