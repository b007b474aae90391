//! The key-management web service; see gatehoused(8).
use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(gatehoused::run_from_args(std::env::args_os().skip(1).collect()))
}
