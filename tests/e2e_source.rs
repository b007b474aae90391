//! End-to-end: several login nodes on one shared PostgreSQL (`[source]`). A real
//! PostgreSQL server (tests/common/postgres.rs) on loopback; two nodes, each with its own
//! local store, its own gatehouse-agent mirroring the source, and its own sshd; real `ssh`
//! logins. A key added through one node's CLI (which writes to PostgreSQL) logs in on both
//! within a second; removed, it is refused on both; with PostgreSQL stopped the nodes go
//! on serving their copy until `source.staleness_max`, then refuse users from the source.
//! Needs root (sshd, system users, the postgres account) and Debian's postgresql package.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use common::*;
use std::time::{Duration, Instant};

/// Skips (or, under CI, fails) when PostgreSQL is not installed.
fn start_postgres() -> Option<postgres::Postgres> {
    let pg = postgres::Postgres::start();
    if pg.is_none() {
        assert!(std::env::var_os("CI").is_none(), "postgresql is not installed; .ci/run installs it");
        eprintln!("SKIPPED: postgresql is not installed (apt-get install postgresql)");
    }
    pg
}

/// One login node: its own config, local store, agent and sshd.
struct Node {
    sshd: Sshd,
    _agent: AgentProcess,
    gh: Gatehouse,
}

fn node(name: &str, pg: &postgres::Postgres, staleness: &str) -> Node {
    // The agent makes no accounts here (the test's accounts exist) and ends no sessions;
    // useradd mode keeps it away from the host's /run/userdb.
    let extra = format!("\n[agent]\naccounts = \"useradd\"\nend_sessions = false\n{}", pg.source_config(staleness));
    let gh = Gatehouse::new(name, &extra);
    gh.init(None);
    let sshd = Sshd::start(&gh, "");
    let agent = AgentProcess::start(&gh.config);
    Node { sshd, _agent: agent, gh }
}

/// How long until `ok` holds on every node, polled; `None` after `limit`.
fn on_all(nodes: &[&Node], limit: Duration, ok: impl Fn(&Node) -> bool) -> Option<Duration> {
    let start = Instant::now();
    let mut pending: Vec<&&Node> = nodes.iter().collect();
    while start.elapsed() < limit {
        pending.retain(|n| !ok(n));
        if pending.is_empty() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn two_nodes_follow_postgresql_and_refuse_once_it_is_stale() {
    require_root!();
    let Some(mut pg) = start_postgres() else { return };
    let a = node("pga", &pg, "4s");
    let b = node("pgb", &pg, "4s");
    assert_eq!(pg.query("SELECT version FROM gatehouse_schema"), "1\n", "init made the shared schema");

    // A user who may log in on both nodes (each sshd matches its own managed group).
    let user = SystemUser::new("ghu", &a.gh.dir.path, &[&a.sshd.managed.name, &b.sshd.managed.name]);
    let key = keygen(&a.gh.dir.path, "ed25519");
    a.gh.ok(&["user", "add", &user.name]);
    assert!(pg.query(&format!("SELECT name FROM users WHERE name = '{}'", user.name)).contains(&user.name));
    assert!(a.gh.ok(&["user", "list"]).contains(&user.name), "the CLI reads PostgreSQL too");

    // Added through node A's CLI: logs in on A and B within a second.
    let added = Instant::now();
    let out = a.gh.cli_stdin(&["key", "add", &user.name, "-"], key.public.as_bytes());
    assert!(out.status.success(), "key add: {}", stderr(&out));
    let fp = key.fingerprint.clone();
    let login = |n: &Node| n.sshd.ssh(&user.name, &key.private, &["true"]).status.success();
    let took = on_all(&[&a, &b], Duration::from_secs(10), login).map(|_| added.elapsed());
    eprintln!("key added -> login on both nodes: {took:?}");
    let took = took.expect("the key never worked on both nodes");
    assert!(took <= Duration::from_millis(1500), "key added -> login on both took {took:?}");
    let mirrored = std::process::Command::new("sqlite3")
        .arg(&b.gh.store)
        .arg(format!("SELECT source FROM users WHERE name = '{}'", user.name))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mirrored.stdout), "postgres\n", "node B's copy is from the source");

    let doctor = stdout(&b.gh.cli(&["doctor"]));
    assert!(doctor.contains("last mirror of the source") && doctor.contains("answers, schema version 1"), "{doctor}");

    // Removed through node B's CLI: refused on both within a second.
    let removed = Instant::now();
    b.gh.ok(&["key", "remove", &user.name, &fp]);
    let took = on_all(&[&a, &b], Duration::from_secs(10), |n| !login(n)).map(|_| removed.elapsed());
    eprintln!("key removed -> refused on both nodes: {took:?}");
    let took = took.expect("the removed key still logs in");
    assert!(took <= Duration::from_millis(1500), "key removed -> refused on both took {took:?}");
    let audit = pg.query("SELECT action FROM audit ORDER BY id");
    assert!(audit.contains("key.add") && audit.contains("key.remove"), "{audit}");

    // PostgreSQL stopped: both nodes go on serving what they had, then refuse past
    // staleness_max (4 s here).
    assert!(a.gh.cli_stdin(&["key", "add", &user.name, "-"], key.public.as_bytes()).status.success());
    assert!(on_all(&[&a, &b], Duration::from_secs(10), login).is_some(), "the key came back");
    pg.stop();
    let stopped = Instant::now();
    assert!(login(&a) && login(&b), "nodes serve their copy while the source is down");
    assert!(!a.gh.cli(&["user", "add", "nobody-else"]).status.success(), "writers need the source");
    let took = on_all(&[&a, &b], Duration::from_secs(20), |n| !login(n)).map(|_| stopped.elapsed());
    eprintln!("source stopped -> refused on both nodes: {took:?}");
    let took = took.expect("nodes kept serving a stale copy");
    assert!(took >= Duration::from_secs(2), "refused too early ({took:?}): staleness_max is 4s");
    let doctor = stdout(&b.gh.cli(&["doctor"]));
    assert!(doctor.contains("the copy of the source is stale") && doctor.contains("source: "), "{doctor}");
    let log = a.gh.log.drain().join("\n");
    assert!(log.contains("reason=source-stale"), "{log}");

    // Back: the nodes catch up and serve again.
    pg.run();
    let back = Instant::now();
    let took = on_all(&[&a, &b], Duration::from_secs(20), login).map(|_| back.elapsed());
    eprintln!("source back -> login on both nodes: {took:?}");
    assert!(took.is_some(), "nodes did not recover when the source came back");
}
