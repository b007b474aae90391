//! Log lines reach a real systemd-journald as structured fields (log.target "journal",
//! and "auto" where no syslog socket answers). Needs root: journald runs in a mount
//! namespace of its own (unshare(1)) with empty tmpfs over /run/systemd and /run/log, so
//! the host's journal, if any, is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// Runs `commands` (shell) next to a private journald, then returns what the journal
/// holds from `gatehouse`, one JSON object per entry.
fn with_private_journald(gh: &Gatehouse, commands: &str) -> Vec<Value> {
    let script = gh.dir.join("journal.sh");
    std::fs::write(
        &script,
        format!(
            "set -eu\n\
             mount -t tmpfs -o mode=0755 tmpfs /run/systemd\n\
             mount -t tmpfs -o mode=0755 tmpfs /run/log\n\
             if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi\n\
             {JOURNALD} >{dir}/journald.out 2>&1 &\n\
             journald=$!\n\
             trap 'kill $journald' EXIT\n\
             for _ in $(seq 1 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done\n\
             [ -S /run/systemd/journal/socket ] || {{ cat {dir}/journald.out >&2; exit 1; }}\n\
             ( {commands} ) >{dir}/commands.out 2>&1 || {{ cat {dir}/commands.out >&2; exit 1; }}\n\
             journalctl --sync\n\
             journalctl --no-pager -o json SYSLOG_IDENTIFIER=gatehouse\n",
            dir = gh.dir.path.display()
        ),
    )
    .unwrap();
    // The mount points, where the host has none: made for the run, removed after it.
    let made: Vec<&str> = ["/run/systemd", "/run/log"].into_iter().filter(|d| !Path::new(d).exists()).collect();
    for dir in &made {
        std::fs::create_dir(dir).unwrap();
    }
    let out =
        Command::new("unshare").args(["--mount", "--propagation", "private", "bash"]).arg(&script).output().unwrap();
    for dir in &made {
        let _ = std::fs::remove_dir(dir);
    }
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn field<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    entry[name].as_str()
}

#[test]
fn log_lines_reach_journald_as_fields_and_a_newline_forges_none() {
    require_root!();
    if !Path::new(JOURNALD).exists() {
        assert!(std::env::var_os("CI").is_none(), "{JOURNALD} is missing (Debian's systemd package has it)");
        eprintln!("SKIPPED: {JOURNALD} is missing");
        return;
    }
    let gh = Gatehouse::new("journal", "");
    gh.init(None);
    // No syslog socket answers: `auto` falls to the journal, as `journal` goes there.
    let config = std::fs::read_to_string(&gh.config).unwrap();
    let no_syslog = gh.dir.join("no-syslog.sock");
    let auto = config.replace(
        &format!("[log]\nsocket = \"{}\"", gh.log.path.display()),
        &format!("[log]\ntarget = \"auto\"\nsocket = \"{}\"", no_syslog.display()),
    );
    assert_ne!(auto, config, "the harness's [log] section changed shape");
    std::fs::write(&gh.config, &auto).unwrap();
    let journal = gh.dir.join("journal.toml");
    std::fs::write(&journal, auto.replace("target = \"auto\"", "target = \"journal\"")).unwrap();

    let cli = |config: &Path, args: &str| format!("{} --config {} {args}", gh.cli_bin.display(), config.display());
    let entries = with_private_journald(
        &gh,
        &[
            cli(&gh.config, "user add alice"),
            cli(&journal, "user add bob"),
            // Refused (not a user name); the error names it, newline and all.
            format!("{} || true", cli(&journal, "user show \"$(printf 'x\\nPRIORITY=0')\"")),
            format!("{} > {}/doctor.out || true", cli(&gh.config, "doctor"), gh.dir.path.display()),
        ]
        .join("\n"),
    );

    let added = |user: &str| {
        entries
            .iter()
            .find(|e| field(e, "GATEHOUSE_ACTION") == Some("user.add") && field(e, "GATEHOUSE_USER") == Some(user))
            .unwrap_or_else(|| panic!("no user.add of {user} in the journal: {entries:?}"))
    };
    for user in ["alice", "bob"] {
        let e = added(user);
        assert_eq!(field(e, "SYSLOG_FACILITY"), Some("10"), "authpriv: {e}");
        assert_eq!(field(e, "GATEHOUSE_ACTOR"), Some("cli:root"), "{e}");
        assert!(field(e, "MESSAGE").unwrap().contains(&format!("action=user.add user={user}")), "{e}");
    }
    let refused = entries
        .iter()
        .find(|e| field(e, "GATEHOUSE_VERDICT") == Some("error"))
        .unwrap_or_else(|| panic!("the refusal is not in the journal: {entries:?}"));
    // The value keeps its newline inside the field; the entry's priority is the real one.
    assert!(field(refused, "GATEHOUSE_ERROR").unwrap().contains("x\nPRIORITY=0"), "{refused}");
    assert_eq!(field(refused, "PRIORITY"), Some("5"), "{refused}");
    assert!(!field(refused, "MESSAGE").unwrap().contains('\n'), "{refused}");
    let doctor = std::fs::read_to_string(gh.dir.join("doctor.out")).unwrap();
    assert!(doctor.contains("log lines go to the journal at /run/systemd/journal/socket"), "{doctor}");
}
