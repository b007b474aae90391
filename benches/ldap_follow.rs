//! `gatehouse-ldap follow`'s benchmark, on the test harness (tests/common: the same slapd,
//! PostgreSQL, store and sshd helpers as the end-to-end tests). Root;
//! `cargo bench --bench ldap_follow` after `cargo build --workspace --release --bins`
//! (gatehouse-ldap comes from the ldap package).
//!
//! From an LDAP modify that removes a key (the moment `ldapmodify` is started) to the
//! moment `gatehouse-keys`, the login path itself, stops serving it, polled every 5 ms;
//! p50/p99 over BENCH_LDAP_FOLLOW_CHANGES (50) changes, target p99 ≤ 2 s, in two set-ups:
//!
//! 1. one host: slapd with syncprov, `gatehouse-ldap follow` writing the local store;
//! 2. a login node: `gatehouse-ldap follow` writing PostgreSQL (`[source]`), the node's
//!    gatehouse-agent mirroring it into the node's store (skipped without PostgreSQL).
//!
//! Before each change the key is added back and waited for (not timed). Prints a
//! markdown table; exit status 1 when a target is missed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/postgres.rs"]
mod postgres;
#[path = "../tests/common/slapd.rs"]
mod slapd;
#[path = "support/measure.rs"]
mod support;
use support::{env_or, ms, percentile};

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TARGET: Duration = Duration::from_secs(2);

fn ldap_section(s: &slapd::Slapd) -> String {
    format!(
        "\n[ldap]\nurl = \"{}\"\nstarttls = false\nbase_dn = \"{}\"\nbind_dn = \"{}\"\nbind_password_file = \"{}\"\n\
         timeout = \"5s\"\nfollow = \"content-sync\"\npoll_interval = \"1h\"\n",
        s.url,
        slapd::BASE_DN,
        slapd::SERVICE_DN,
        s.password_file.display()
    )
}

/// `gatehouse-ldap follow` for `config`, killed on drop.
struct Follow(Child);

impl Follow {
    fn start(config: &Path) -> Follow {
        let program = Path::new(env!("CARGO_BIN_EXE_gatehouse")).with_file_name("gatehouse-ldap");
        assert!(program.is_file(), "{} is missing: cargo build --workspace --release --bins", program.display());
        Follow(
            Command::new(program)
                .arg("--config")
                .arg(config)
                .arg("follow")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serves(gh: &Gatehouse, user: &str, key: &KeyPair) -> bool {
    let blob = key.public.split_whitespace().nth(1).unwrap();
    stdout(&gh.keys(&[user])).contains(blob)
}

/// `changes` rounds of: the key added back in the directory and waited for, then removed
/// and timed until `gh` no longer serves it.
fn measure(s: &slapd::Slapd, gh: &Gatehouse, user: &str, changes: usize) -> Vec<Duration> {
    let key = keygen(&gh.dir.path, "ed25519");
    let dn = slapd::user_dn(user, "people");
    let mut times = Vec::with_capacity(changes);
    for i in 0..changes {
        s.modify(&format!("dn: {dn}\nchangetype: modify\nadd: sshPublicKey\nsshPublicKey: {}\n\n", key.public));
        let back = wait_until(Duration::from_millis(5), Duration::from_secs(30), || serves(gh, user, &key));
        assert!(back.is_some(), "round {i}: the key added back was never served");
        let start = Instant::now();
        s.modify(&format!("dn: {dn}\nchangetype: modify\ndelete: sshPublicKey\nsshPublicKey: {}\n\n", key.public));
        let gone = wait_until(Duration::from_millis(5), Duration::from_secs(30), || !serves(gh, user, &key));
        assert!(gone.is_some(), "round {i}: the removed key is still served after 30 s");
        times.push(start.elapsed());
    }
    times.sort();
    times
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "run as root (the service password file must be root's)");
    let changes = env_or("BENCH_LDAP_FOLLOW_CHANGES", 50).max(1);
    let mut rows = Vec::new();
    let mut missed = false;
    let mut row = |what: &str, times: &[Duration]| {
        let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
        let verdict = if p99 <= TARGET { "met" } else { "MISSED" };
        missed |= p99 > TARGET;
        let line = format!(
            "| {what} | {} / {} (max {}) | p99 ≤ 2 s | {verdict} |",
            ms(p50),
            ms(p99),
            ms(times[times.len() - 1])
        );
        eprintln!("{line}");
        rows.push(line);
    };

    // 1. One host.
    let s = slapd::Slapd::start_syncprov();
    let user = "ghbench";
    let first = keygen(&s.dir.path, "ed25519");
    s.add(&slapd::user_ldif(user, "people", 20990, &[&first.public], ""));
    let gh = Gatehouse::new("bfollow", &ldap_section(&s));
    gh.init(None);
    let follow = Follow::start(&gh.config);
    assert!(wait_until(Duration::from_millis(10), Duration::from_secs(30), || serves(&gh, user, &first)).is_some());
    row(
        &format!("ldapmodify → refused by gatehouse-keys, one host ({changes} changes)"),
        &measure(&s, &gh, user, changes),
    );
    drop(follow);

    // 2. Through PostgreSQL to a login node.
    match postgres::Postgres::start() {
        None => eprintln!("SKIPPED: PostgreSQL is not installed (apt-get install postgresql)"),
        Some(pg) => {
            let s = slapd::Slapd::start_syncprov();
            s.add(&slapd::user_ldif(user, "people", 20990, &[&first.public], ""));
            let extra = format!(
                "\n[agent]\naccounts = \"useradd\"\nend_sessions = false\n{}{}",
                pg.source_config("1h"),
                ldap_section(&s)
            );
            let node = Gatehouse::new("bfnode", &extra);
            node.init(None);
            let _agent = AgentProcess::start(&node.config);
            let follow = Follow::start(&node.config);
            let ok = wait_until(Duration::from_millis(10), Duration::from_secs(30), || serves(&node, user, &first));
            assert!(ok.is_some(), "the directory user never reached the node");
            row(
                &format!("ldapmodify → PostgreSQL → refused by gatehouse-keys on a node ({changes} changes)"),
                &measure(&s, &node, user, changes),
            );
            drop(follow);
        }
    }

    println!("| what | p50 / p99 | target | verdict |");
    println!("| --- | --- | --- | --- |");
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\nslapd with syncprov and PostgreSQL on 127.0.0.1, {} cores; timed from the start of ldapmodify (a process of \
         its own, included) to the first gatehouse-keys run that no longer prints the key, polled every 5 ms.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if missed {
        std::process::exit(1);
    }
}
