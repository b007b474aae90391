//! gatehouse-agent's benchmark, on the test harness (tests/common: the same private sshd,
//! users and store as the end-to-end tests). Root; `cargo bench --bench agent` after
//! `cargo build --workspace --release --bins` (gatehoused comes from the web package).
//!
//! 1. signup: the API call that adds a user, the one that adds their key, then `ssh … true`
//!    tried every 20 ms until it works: p50/p99 over BENCH_AGENT_USERS (50) users (target:
//!    p99 ≤ 1 s);
//! 2. revocation: a running session, `gatehouse user disable`, the session's end (p50/p99
//!    over BENCH_AGENT_SESSIONS, 20), and the same for `gatehouse key remove`;
//! 3. a full pass over BENCH_AGENT_BIG (100,000) users who already have accounts and
//!    folders (target ≤ 10 s), in a private mount namespace whose /etc/passwd, shadow and
//!    group hold those accounts (the host's files are not touched);
//! 4. idle: CPU seconds over BENCH_AGENT_IDLE (60) seconds of an agent with nothing to do,
//!    scaled to an hour, and its resident memory.
//!
//! Prints a markdown table; exit status 1 when a target is missed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/measure.rs"]
mod support;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{env_or, ms, percentile};

/// The table's rows; each also goes to standard error as it is measured.
struct Rows(Vec<(String, String, String)>);

impl Rows {
    fn push(&mut self, row: (String, String, String)) {
        eprintln!("{}: {} ({})", row.0, row.1, row.2);
        self.0.push(row);
    }
}

fn api(url: &str, token: &str, path: &str, body: &str) {
    let response = ureq::post(format!("{url}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ, 100 on Linux
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
}

fn main() -> std::process::ExitCode {
    if !is_root() {
        eprintln!("benches/agent.rs: needs root (creates users, starts sshd and the agent)");
        return std::process::ExitCode::from(2);
    }
    // BENCH_AGENT_ACCOUNTS=userdb: accounts as systemd user records, in a mount namespace
    // of the bench's own (the host's /run/userdb is not touched).
    let userdb = std::env::var("BENCH_AGENT_ACCOUNTS").is_ok_and(|v| v == "userdb");
    if userdb {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Some(status) = in_userdb_namespace(&args) {
            return std::process::ExitCode::from(status.code().unwrap_or(1) as u8);
        }
    }
    let users = env_or("BENCH_AGENT_USERS", 50);
    let sessions = env_or("BENCH_AGENT_SESSIONS", 20);
    let big = env_or("BENCH_AGENT_BIG", 100_000);
    let idle = env_or("BENCH_AGENT_IDLE", 60);
    let mut rows = Rows(Vec::new());
    let mut missed = false;

    let port = free_port();
    let gh = Gatehouse::new("agentbench", &web_config(port));
    gh.init(None);
    let sshd = Sshd::start(&gh, "");
    gh.own_accounts(44000, 44999, &sshd.managed.name);
    if userdb {
        gh.use_userdb();
    }
    let web = Gatehoused::start(&gh, port);
    let token = gh.ok(&["token", "create", "--scope", "admin", "--label", "bench"]).trim().to_string();
    let agent = AgentProcess::start(&gh.config);
    let keys = gh.dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let mut made = MadeAccounts(Vec::new());

    // 1. signup -> first login.
    let mut took = Vec::new();
    for i in 0..users {
        let name = unique("ghs");
        made.0.push(name.clone());
        let key = keygen(&keys, "ed25519");
        let start = Instant::now();
        api(&web.url, &token, "/api/v1/users", &format!("{{\"name\": \"{name}\"}}"));
        api(
            &web.url,
            &token,
            &format!("/api/v1/users/{name}/keys"),
            &serde_json::json!({ "key": key.public }).to_string(),
        );
        let ok = sshd.wait_for_login(&name, &key.private, Duration::from_secs(30));
        assert!(ok.is_some(), "user {i} ({name}) could not log in within 30 s");
        took.push(start.elapsed());
    }
    took.sort();
    let p99 = percentile(&took, 0.99);
    missed |= p99 > Duration::from_secs(1);
    rows.push((
        format!("API user + key → first `ssh true`, {users} users: p50 / p99"),
        format!("{} / {}", ms(percentile(&took, 0.5)), ms(p99)),
        format!("p99 ≤ 1000 ms {}", if p99 <= Duration::from_secs(1) { "PASS" } else { "FAIL" }),
    ));

    // 2. revocation -> session ended.
    let mut disable = Vec::new();
    let mut remove = Vec::new();
    for _ in 0..sessions {
        let name = unique("ghr");
        made.0.push(name.clone());
        let (a, b) = (keygen(&keys, "ed25519"), keygen(&keys, "ed25519"));
        gh.ok(&["user", "add", &name]);
        gh.cli_stdin(&["key", "add", &name, "-"], a.public.as_bytes());
        gh.cli_stdin(&["key", "add", &name, "-"], b.public.as_bytes());
        sshd.wait_for_login(&name, &a.private, Duration::from_secs(30)).expect("login");
        let mut s = sshd.hold_session(&name, &a.private);
        let start = Instant::now();
        gh.ok(&["key", "remove", &name, &a.fingerprint]);
        wait_until(Duration::from_millis(2), Duration::from_secs(30), || s.try_wait().unwrap().is_some()).expect("key");
        remove.push(start.elapsed());
        let mut s = sshd.hold_session(&name, &b.private);
        let start = Instant::now();
        gh.ok(&["user", "disable", &name]);
        wait_until(Duration::from_millis(2), Duration::from_secs(30), || s.try_wait().unwrap().is_some())
            .expect("user");
        disable.push(start.elapsed());
    }
    for (what, mut v) in [("`user disable`", disable), ("`key remove`", remove)] {
        v.sort();
        rows.push((
            format!("{what} (CLI, includes its ~10 ms run) → session ended, {sessions} sessions: p50 / p99"),
            format!("{} / {}", ms(percentile(&v, 0.5)), ms(percentile(&v, 0.99))),
            "≤ 1000 ms info".to_string(),
        ));
    }

    // 4. idle cost (before the big store, with this instance's users in place).
    let pid = agent.0.id();
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(idle as u64));
    let cpu = cpu_seconds(pid) - cpu0;
    rows.push((
        format!("idle agent: CPU over {idle} s, per hour"),
        format!("{:.2} s ({:.1} s/h)", cpu, cpu * 3600.0 / idle as f64),
        "info".into(),
    ));
    rows.push(("idle agent: resident memory".into(), format!("{} KiB", rss_kib(pid)), "info".into()));
    drop(agent);
    drop(web);
    drop(sshd);

    // 3. a full pass over a big store whose users already have accounts and folders.
    let bigdir = TestDir::new("agentbig");
    let (pass1, pass2) = big_pass(&bigdir, big);
    missed |= pass2 > Duration::from_secs(10);
    rows.push((format!("full pass, {big} users, folders made (first pass)"), ms(pass1), "info".into()));
    rows.push((
        format!("full pass, {big} users, host already follows"),
        ms(pass2),
        format!("≤ 10000 ms {}", if pass2 <= Duration::from_secs(10) { "PASS" } else { "FAIL" }),
    ));

    let mut out = std::io::stdout().lock();
    writeln!(out, "| measure | value | target |\n| --- | --- | --- |").unwrap();
    for (m, v, t) in &rows.0 {
        writeln!(out, "| {m} | {v} | {t} |").unwrap();
    }
    // Returned, not exit(): the accounts, folders and processes made here go on drop.
    drop(made);
    std::process::ExitCode::from(u8::from(missed))
}

/// Two `gatehouse-agent --once` passes over `n` users whose accounts exist (in private
/// copies of /etc/passwd, shadow and group bind-mounted in a mount namespace of their own)
/// : the first makes their folders, the second finds nothing to do.
fn big_pass(dir: &TestDir, n: usize) -> (Duration, Duration) {
    let store = dir.join("store.db");
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    let config = dir.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[users]\ndata_dir = \"{}/%u\"\nuid_min = 100000\nuid_max = {}\ngroup = \"ghbig\"\n\
             [log]\nstderr = false\n[agent]\naccounts = \"useradd\"\n",
            store.display(),
            data.display(),
            100_000 + n + 10
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_gatehouse")).arg("--config").arg(&config).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    cli(&["init"]);
    // The users, straight into the store in one transaction (the CLI would take an hour).
    let mut sql = String::from(".dbconfig no_ckpt_on_close on\nBEGIN;\n");
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let mut shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    let mut group = std::fs::read_to_string("/etc/group").unwrap();
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("big{i}");
        let uid = 100_000 + i;
        sql.push_str(&format!(
            "INSERT INTO users (name, state, policy, created, source, uid) \
             VALUES ('{name}', 'enabled', 'shell', 0, 'cli', {uid});\n"
        ));
        passwd.push_str(&format!("{name}:x:{uid}:{uid}::{}/{name}:/bin/sh\n", data.display()));
        shadow.push_str(&format!("{name}:*:19000::::::\n"));
        group.push_str(&format!("{name}:x:{uid}:\n"));
        members.push(name);
    }
    group.push_str(&format!("ghbig:x:99999:{}\n", members.join(",")));
    sql.push_str("COMMIT;\n");
    let out = Command::new("sqlite3").arg(&store).stdin(Stdio::piped()).spawn().and_then(|mut c| {
        c.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
        c.wait_with_output()
    });
    assert!(out.unwrap().status.success());
    for (name, text) in [("passwd", &passwd), ("shadow", &shadow), ("group", &group)] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let script = format!(
        "set -e; for f in passwd shadow group; do mount --bind {d}/$f /etc/$f; done; \
         a=$(date +%s%N); {agent} --config {c} --once >/dev/null; b=$(date +%s%N); \
         {agent} --config {c} --once >/dev/null; e=$(date +%s%N); echo $((b - a)) $((e - b))",
        d = dir.path.display(),
        agent = env!("CARGO_BIN_EXE_gatehouse-agent"),
        c = config.display()
    );
    let out = Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut f = text.split_whitespace().map(|v| Duration::from_nanos(v.parse().unwrap()));
    (f.next().unwrap(), f.next().unwrap())
}
