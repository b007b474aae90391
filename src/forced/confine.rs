//! Confinement without root: Landlock, applied to gatehouse-shell itself just before it
//! execs git, sftp-server or rsync for a key without shell scope. The child inherits it:
//! it may read and run the system's programs and libraries, and touch nothing else but the
//! one folder it serves (read-write or read-only).

use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetError, RulesetStatus, ABI,
};
use std::path::PathBuf;

/// The newest Landlock ABI this code was written for; older kernels get what they offer.
const ABI_WANTED: ABI = ABI::V5;

/// System folders the served programs need to run: programs, libraries, configuration.
pub const SYSTEM_READ: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/proc/self"];
/// Device files they write to.
pub const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/urandom", "/dev/tty"];

/// What a child may touch besides the system paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    pub read_write: Vec<PathBuf>,
    pub read_only: Vec<PathBuf>,
}

/// How much the kernel enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    Fully,
    Partially,
    /// The kernel has no Landlock: the argument allow-lists are the only wall.
    Not,
}

impl Enforced {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforced::Fully => "full",
            Enforced::Partially => "partial",
            Enforced::Not => "none",
        }
    }
}

/// Restricts this process (and what it execs) to `c`.
pub fn apply(c: &Confinement) -> Result<Enforced, String> {
    let run = || -> Result<RulesetStatus, RulesetError> {
        let read = AccessFs::from_read(ABI_WANTED);
        let all = AccessFs::from_all(ABI_WANTED);
        let status = Ruleset::default()
            .handle_access(all)?
            .create()?
            .add_rules(path_beneath_rules(SYSTEM_READ, read))?
            .add_rules(path_beneath_rules(DEVICES, AccessFs::from_read(ABI_WANTED) | AccessFs::WriteFile))?
            .add_rules(path_beneath_rules(&c.read_only, read))?
            .add_rules(path_beneath_rules(&c.read_write, all))?
            .restrict_self()?;
        Ok(status.ruleset)
    };
    match run() {
        Ok(RulesetStatus::FullyEnforced) => Ok(Enforced::Fully),
        Ok(RulesetStatus::PartiallyEnforced) => Ok(Enforced::Partially),
        Ok(RulesetStatus::NotEnforced) => Ok(Enforced::Not),
        Err(e) => Err(format!("landlock: {e}")),
    }
}

/// Whether the running kernel enforces Landlock, for `gatehouse doctor`: a ruleset that
/// must be fully supported is created and dropped, restricting nothing.
pub fn kernel_has_landlock() -> bool {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create())
        .is_ok()
}
