//! Session setup for pam_exec; see gatehouse-session(8).
//!
//! `session optional pam_exec.so /usr/bin/gatehouse-session [--config FILE]`: pam_exec
//! passes PAM_USER, PAM_TYPE, PAM_RHOST, PAM_SERVICE and the PAM environment (with sshd's
//! SSH_AUTH_INFO_0) in our environment.
use gatehouse::exit;
use gatehouse::session::password::Secret;
use gatehouse::session::{self, Cache, ModuleOptions, PamContext, Verdict};
use std::process::ExitCode;

struct EnvContext;

impl PamContext for EnvContext {
    fn user(&mut self) -> Option<String> {
        std::env::var("PAM_USER").ok()
    }
    fn service(&self) -> Option<String> {
        std::env::var("PAM_SERVICE").ok()
    }
    fn rhost(&self) -> Option<String> {
        std::env::var("PAM_RHOST").ok().filter(|h| !h.is_empty())
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn tell(&mut self, message: &str) {
        // pam_exec shows our stdout to the user with its `stdout` option.
        println!("{message}");
    }
    fn password(&mut self) -> Option<Secret> {
        // Session setup never needs one.
        None
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut module_args = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => match it.next() {
                Some(p) => module_args.push(format!("config={p}")),
                None => return usage(),
            },
            "--help" | "-h" => {
                println!("usage: gatehouse-session [--config FILE]   (run by pam_exec)");
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let opts = match ModuleOptions::parse(module_args.iter().map(String::as_str)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gatehouse-session: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let stage: session::Stage = match std::env::var("PAM_TYPE").as_deref() {
        Ok("open_session") => session::open_session,
        Ok("close_session") => session::close_session,
        Ok("account") => session::account,
        _ => {
            eprintln!(
                "gatehouse-session: PAM_TYPE must be open_session, close_session or account (run me from pam_exec)"
            );
            return ExitCode::from(exit::USAGE);
        }
    };
    let verdict = Cache::new().run(&mut EnvContext, &opts, "gatehouse-session", stage);
    match verdict {
        Verdict::Success | Verdict::Ignore => ExitCode::SUCCESS,
        Verdict::ServiceError => ExitCode::from(exit::STORE),
        _ => ExitCode::from(exit::REFUSED),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: gatehouse-session [--config FILE]");
    ExitCode::from(exit::USAGE)
}
