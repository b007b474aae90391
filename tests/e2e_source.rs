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
#[path = "common/slapd.rs"]
mod slapd;

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

fn node(name: &str, pg: &postgres::Postgres, staleness: &str, web: &str) -> Node {
    // The agent makes no accounts here (the test's accounts exist) and ends no sessions;
    // useradd mode keeps it away from the host's /run/userdb.
    let extra =
        format!("\n[agent]\naccounts = \"useradd\"\nend_sessions = false\n{}{web}", pg.source_config(staleness));
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

/// Whether node `n`'s key command, the login path itself, serves `key` for `user`.
fn serves(n: &Node, user: &str, key: &KeyPair) -> bool {
    let blob = key.public.split_whitespace().nth(1).unwrap();
    stdout(&n.gh.keys(&[user])).contains(blob)
}

#[test]
fn two_nodes_follow_postgresql_and_refuse_once_it_is_stale() {
    require_root!();
    let Some(mut pg) = start_postgres() else { return };
    let web_port = free_port();
    let a = node("pga", &pg, "4s", &web_config(web_port));
    let b = node("pgb", &pg, "4s", "");
    let version = gatehouse::store::postgres::current_version();
    assert_eq!(pg.query("SELECT version FROM gatehouse_schema"), format!("{version}\n"), "init made the shared schema");

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
    // Timed on the login path itself (gatehouse-keys on each node, as sshd runs it), then
    // confirmed with real logins: an ssh login alone takes a few hundred ms here.
    // Bounds are from the commit (the command's return or the API's answer): on a loaded
    // machine a debug build's CLI takes over a second to start, connect and write.
    let took = on_all(&[&a, &b], Duration::from_secs(10), |n| serves(n, &user.name, &key));
    eprintln!(
        "key added -> served on both nodes: {took:?} after the commit, {:?} after the command started",
        added.elapsed()
    );
    let took = took.expect("the key was never served on both nodes");
    assert!(took <= Duration::from_secs(1), "key added -> served on both took {took:?} after the commit");
    let login = |n: &Node| n.sshd.ssh(&user.name, &key.private, &["true"]).status.success();
    assert!(on_all(&[&a, &b], Duration::from_secs(10), login).is_some(), "no ssh login on both nodes");
    let mirrored = std::process::Command::new("sqlite3")
        .arg(&b.gh.store)
        .arg(format!("SELECT source FROM users WHERE name = '{}'", user.name))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mirrored.stdout), "postgres\n", "node B's copy is from the source");

    let doctor = stdout(&b.gh.cli(&["doctor"]));
    let answers = format!("answers, schema version {version}");
    assert!(doctor.contains("last mirror of the source") && doctor.contains(&answers), "{doctor}");

    // Removed through node B's CLI: refused on both within a second.
    let removed = Instant::now();
    b.gh.ok(&["key", "remove", &user.name, &fp]);
    let took = on_all(&[&a, &b], Duration::from_secs(10), |n| !serves(n, &user.name, &key));
    eprintln!(
        "key removed -> refused on both nodes: {took:?} after the commit, {:?} after the command started",
        removed.elapsed()
    );
    let took = took.expect("the removed key is still served");
    assert!(took <= Duration::from_secs(1), "key removed -> refused on both took {took:?}");
    assert!(!login(&a) && !login(&b), "the removed key still logs in");
    let audit = pg.query("SELECT action FROM audit ORDER BY id");
    assert!(audit.contains("key.add") && audit.contains("key.remove"), "{audit}");

    // Through the API of the web service on node A (which writes to PostgreSQL too): a
    // second key logs in on both.
    let web = Gatehoused::start(&a.gh, web_port);
    let token = a.gh.ok(&["token", "create", "--scope", "admin", "--label", "e2e"]).trim().to_string();
    let second = keygen(&a.gh.dir.path, "ed25519");
    let added = Instant::now();
    let response = ureq::post(format!("{}/api/v1/users/{}/keys", web.url, user.name))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(serde_json::json!({ "key": second.public }).to_string())
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let took = on_all(&[&a, &b], Duration::from_secs(10), |n| serves(n, &user.name, &second));
    eprintln!(
        "key added through the API -> served on both nodes: {took:?} after the answer, {:?} after the request",
        added.elapsed()
    );
    assert!(took.expect("the API's key was never served on both nodes") <= Duration::from_secs(1));
    let login2 = |n: &Node| n.sshd.ssh(&user.name, &second.private, &["true"]).status.success();
    assert!(login2(&a) && login2(&b), "the API's key logs in on both nodes");
    let audit = pg.query("SELECT actor FROM audit WHERE action = 'key.add' ORDER BY id DESC LIMIT 1");
    assert!(audit.starts_with("api:"), "{audit}");
    drop(web);

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
    // gatehouse-keys refuses, or, when the limit passed during the login, gatehouse-shell.
    let log = a.gh.log.drain().join("\n");
    assert!(log.contains("reason=source-stale") && !log.contains("directory-stale"), "{log}");

    // Back: the nodes catch up and serve again.
    pg.run();
    let back = Instant::now();
    let took = on_all(&[&a, &b], Duration::from_secs(20), login).map(|_| back.elapsed());
    eprintln!("source back -> login on both nodes: {took:?}");
    assert!(took.is_some(), "nodes did not recover when the source came back");
}

fn user(name: &str) -> gatehouse::store::User {
    gatehouse::store::User {
        name: name.into(),
        state: gatehouse::domain::UserState::Enabled,
        policy: gatehouse::domain::Scope::Shell,
        port_forwarding: false,
        created: gatehouse::time::Timestamp::from_secs(1),
        source: "cli".into(),
        uid: None,
    }
}

fn no_host_uid(_: u32) -> bool {
    false
}

fn no_account(_: &str) -> Option<u32> {
    None
}

/// The PostgreSQL store's own rules, and the mirror's batches, without sshd: uids given
/// and retired, a fingerprint registered once, every write numbered with no gaps even with
/// two writers at once, and a local store that follows (changes, then everything when the
/// source goes back).
#[test]
fn the_postgresql_store_numbers_its_changes_and_a_local_store_follows() {
    use gatehouse::store::postgres::PgStore;
    use gatehouse::store::sqlite::SqliteStore;
    use gatehouse::store::{Actor, AdminStore, LoginStore, NewKey, StoreError};
    require_root!();
    let Some(pg) = start_postgres() else { return };
    let text = format!("[users]\nuid_min = 40000\nuid_max = 40999\n{}", pg.source_config("1h"));
    let config = gatehouse::config::Config::parse("t.toml", &text).unwrap();
    let shared = config.shared.clone().unwrap();
    let range = config.users.uid_range();
    let open = || PgStore::open_unchecked(&shared, range).unwrap().with_host(no_host_uid, no_account);
    let mut store = open();
    let version = gatehouse::store::postgres::current_version();
    assert_eq!(store.migrate().unwrap(), version);
    assert_eq!(store.migrate().unwrap(), version, "a second migration changes nothing");
    let mut store = PgStore::open(&shared, range).unwrap().with_host(no_host_uid, no_account);
    let actor = Actor { name: "cli:test".into(), now: gatehouse::time::Timestamp::from_secs(10) };

    assert_eq!(store.add_user(&actor, &user("alice")).unwrap(), 40000);
    assert!(matches!(store.add_user(&actor, &user("alice")), Err(StoreError::UserExists(_))));
    assert_eq!(store.add_user(&actor, &user("bob")).unwrap(), 40001);
    let dir = TestDir::new("pgunit");
    let pair = keygen(&dir.path, "ed25519");
    let key = gatehouse::keys::parse_public_key(&pair.public, &config).unwrap();
    let new = NewKey { key, scope: None, from: None, expires: None, source: "cli".into() };
    store.add_key(&actor, "alice", &new, 10).unwrap();
    match store.add_key(&actor, "bob", &new, 10) {
        Err(StoreError::KeyTaken { owner, .. }) => assert_eq!(owner, "alice"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.login_view("alice", None).unwrap().unwrap().keys.len(), 1);

    // A local store follows: everything first, then the changes.
    let local_path = dir.join("store.db");
    let mut local = SqliteStore::create(&local_path, 1000, range).unwrap();
    local.migrate().unwrap();
    let mut client = gatehouse::store::postgres::connect(&shared).unwrap();
    let batch = gatehouse::store::mirror::read_batch(&mut client, &shared.url, None).unwrap().unwrap();
    assert!(batch.full);
    local.apply_mirror(&batch, actor.now).unwrap();
    let seen = local.login_view("alice", None).unwrap().unwrap();
    assert_eq!((seen.user.source.as_str(), seen.user.uid, seen.keys.len()), ("postgres", Some(40000), 1));
    assert_eq!(seen.synced, Some(actor.now), "the success is recorded with the batch");
    let top = batch.seq;
    assert!(gatehouse::store::mirror::read_batch(&mut client, &shared.url, Some(top)).unwrap().is_none());

    store.remove_user(&actor, "alice").unwrap();
    assert_eq!(store.add_user(&actor, &user("alice")).unwrap(), 40002, "the old uid is retired");
    let batch = gatehouse::store::mirror::read_batch(&mut client, &shared.url, Some(top)).unwrap().unwrap();
    assert!(!batch.full);
    assert_eq!(batch.users.len(), 1, "{:?}", batch.users);
    local.apply_mirror(&batch, actor.now).unwrap();
    let seen = local.login_view("alice", None).unwrap().unwrap();
    assert_eq!((seen.user.uid, seen.keys.len()), (Some(40002), 0));
    assert_eq!(local.mirrored_seq().unwrap(), Some(batch.seq));

    // Two writers at once: every write gets its own number, none is skipped.
    let before: i64 = pg.query("SELECT seq FROM change_seq").trim().parse().unwrap();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut s = PgStore::open(&shared, range).unwrap().with_host(no_host_uid, no_account);
                let actor = Actor { name: format!("cli:w{w}"), now: gatehouse::time::Timestamp::from_secs(20) };
                for i in 0..20 {
                    s.add_user(&actor, &user(&format!("w{w}u{i}"))).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let after: i64 = pg.query("SELECT seq FROM change_seq").trim().parse().unwrap();
    assert_eq!(after - before, 40);
    let numbers = pg.query(&format!("SELECT count(DISTINCT seq) FROM changes WHERE seq > {before}"));
    assert_eq!(numbers.trim(), "40");
    let uids = pg.query("SELECT count(DISTINCT uid) = count(*) FROM users");
    assert_eq!(uids.trim(), "t", "no uid given twice");

    // The source went back (restored from an older backup): the node copies it all.
    let batch = gatehouse::store::mirror::read_batch(&mut client, &shared.url, Some(after + 1000)).unwrap().unwrap();
    assert!(batch.full);
    local.apply_mirror(&batch, actor.now).unwrap();
    assert_eq!(local.users().unwrap().len(), 42);
}

/// TLS with the site's CA: the server's certificate is checked against `source.ca_file`
/// and its address; another CA's is refused, and so is a password file others may read.
#[test]
fn the_source_is_reached_over_tls_with_the_sites_ca_only() {
    use gatehouse::store::postgres::PgStore;
    require_root!();
    if postgres::bin_dir().is_none() {
        start_postgres();
        return;
    }
    let certs = TestDir::new("pgcerts");
    slapd::make_certificates(&certs.path);
    let pg = postgres::Postgres::start_tls(&certs.path).unwrap();
    let config = |ca: &str| {
        let text = format!("{}ca_file = \"{}\"\n", pg.source_config("1h"), certs.join(ca).display());
        gatehouse::config::Config::parse("t.toml", &text).unwrap()
    };
    let good = config("ca.pem");
    let shared = good.shared.clone().unwrap();
    assert_eq!(shared.tls, gatehouse::config::SourceTls::Verified);
    let mut store = PgStore::open_unchecked(&shared, good.users.uid_range()).unwrap();
    assert_eq!(store.migrate().unwrap(), gatehouse::store::postgres::current_version());
    let ssl = pg.query("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'gatehouse' AND s.ssl");
    assert_eq!(ssl.trim(), "1", "the connection uses TLS");
    drop(store);
    let wrong = config("wrong-ca.pem");
    let err =
        PgStore::open_unchecked(wrong.shared.as_ref().unwrap(), wrong.users.uid_range()).err().unwrap().to_string();
    assert!(err.contains("certificate") || err.contains("Certificate") || err.contains("UnknownIssuer"), "{err}");
    // A password file others may read is refused before anything is sent.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pg.password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = PgStore::open_unchecked(&shared, good.users.uid_range()).err().unwrap().to_string();
    assert!(err.contains("readable by its owner alone"), "{err}");
}

/// An HTTP client that returns every status and follows no redirect (a 303 after sign-in
/// carries the cookie), a connection per request.
fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Status, the `gh_session` cookie it sets (if any), and the body.
fn send(req: ureq::http::Request<Vec<u8>>) -> (u16, Option<String>, String) {
    let mut r = http().run(req).unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("gh_session="))
        .map(|c| c.split(';').next().unwrap()["gh_session=".len()..].to_string());
    (r.status().as_u16(), cookie, r.body_mut().read_to_string().unwrap_or_default())
}

fn request(method: &str, url: &str) -> ureq::http::request::Builder {
    ureq::http::Request::builder().method(method).uri(url)
}

fn page(web: &Gatehoused, cookie: &str) -> (u16, String) {
    let (status, _, body) = send(
        request("GET", &format!("{}/keys", web.url))
            .header("Cookie", format!("gh_session={cookie}"))
            .body(vec![])
            .unwrap(),
    );
    (status, body)
}

fn api_status(web: &Gatehoused, token: &str) -> u16 {
    let req = request("GET", &format!("{}/api/v1/users", web.url)).header("Authorization", format!("Bearer {token}"));
    send(req.body(vec![]).unwrap()).0
}

/// The move from one host to several, then two gatehoused side by side. A host with its
/// own store (users with uids, a key, a grant, a retired uid, a web password and an API
/// token) gets `[source]`: its agent refuses to replace that store with the source's
/// empty copy, naming `gatehouse source import`; the import copies it all, is refused a
/// second time and changes nothing with --merge; the agent then mirrors, the uids kept.
/// A second gatehoused on another port over the same PostgreSQL shares everything with
/// the host's: a sign-in, the imported token, a token made through either, sign-out and
/// revocation; a key added through the second one's API is served on the node.
#[test]
fn a_host_moves_to_postgresql_and_two_gatehoused_share_the_web() {
    use gatehouse::store::secrets::Secrets;
    require_root!();
    let Some(pg) = start_postgres() else { return };
    let (port1, port2) = (free_port(), free_port());
    let h = Gatehouse::new("pgmv", &web_config(port1));
    h.init(None);
    let (alice, bob) = ("ghmva", "ghmvb");
    let key = keygen(&h.dir.path, "ed25519");
    h.ok(&["user", "add", alice]);
    h.ok(&["user", "add", bob]);
    assert!(h.cli_stdin(&["key", "add", alice, "-"], key.public.as_bytes()).status.success());
    h.ok(&["grant", "add", alice, "alice/*.git", "write"]);
    h.ok(&["user", "remove", bob]);
    let token = h.ok(&["token", "create", "--scope", "admin", "--label", "host"]).trim().to_string();
    let config = gatehouse::config::Config::load(Some(&h.config)).unwrap();
    let password = "a long enough password";
    Secrets::open(&config.web.secrets, 1000, false)
        .unwrap()
        .set_password(alice, password, gatehouse::time::now())
        .unwrap();
    let uid = h.store_uid(alice);
    assert!(serves_user(&h, alice, &key), "the host serves its own key");

    // [source] added: the schema is made, the host's store is still its own.
    let userdb = h.dir.join("userdb");
    std::fs::create_dir(&userdb).unwrap();
    let mut text = std::fs::read_to_string(&h.config).unwrap();
    text.push_str(&format!(
        "\n[agent]\naccounts = \"userdb\"\nuserdb_dir = \"{}\"\nend_sessions = false\n{}",
        userdb.display(),
        pg.source_config("1h")
    ));
    std::fs::write(&h.config, text).unwrap();
    h.init(None);
    let mut agent = AgentProcess::start(&h.config);
    let refused = wait_until(Duration::from_millis(100), Duration::from_secs(20), || {
        h.log.drain().iter().any(|l| l.contains("action=source.sync") && l.contains("gatehouse source import"))
    });
    assert!(refused.is_some(), "the agent did not refuse to replace the host's own store");
    assert_eq!(h.store_uid(alice), uid, "the host's store was left alone");
    assert!(serves_user(&h, alice, &key), "and still serves");

    // The import: everything, once; a second run is refused, with --merge it adds nothing.
    let out = h.ok(&["source", "import"]);
    assert!(out.contains("1 users") && out.contains("1 keys") && out.contains("1 tokens"), "{out}");
    assert_eq!(pg.query(&format!("SELECT uid FROM users WHERE name = '{alice}'")).trim(), uid);
    assert_eq!(pg.query("SELECT name FROM retired_uids").trim(), bob);
    assert_eq!(pg.query("SELECT count(*) FROM grants").trim(), "1");
    let audit = pg.query("SELECT count(*) FROM audit WHERE action <> 'source.import'");
    assert!(audit.trim().parse::<u32>().unwrap() >= 6, "the host's audit trail came along: {audit}");
    let again = h.cli(&["source", "import"]);
    assert_eq!(again.status.code(), Some(i32::from(gatehouse::exit::REFUSED)), "{}", stderr(&again));
    assert!(stderr(&again).contains("--merge"), "{}", stderr(&again));
    let out = h.ok(&["source", "import", "--merge"]);
    assert!(out.contains("0 users, 1 kept, 0 keys") && out.contains("0 audit"), "{out}");
    assert_eq!(pg.query("SELECT count(*) FROM audit WHERE action <> 'source.import'"), audit, "nothing twice");

    // The agent now mirrors the source: same uid, the key still served.
    let mirrored = wait_until(Duration::from_millis(100), Duration::from_secs(20), || {
        let out = std::process::Command::new("sqlite3")
            .arg(&h.store)
            .arg(format!("SELECT source FROM users WHERE name = '{alice}'"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout) == "postgres\n"
    });
    assert!(mirrored.is_some(), "the agent never mirrored the source after the import");
    assert_eq!(h.store_uid(alice), uid);
    assert!(serves_user(&h, alice, &key));

    // Two gatehoused over the one PostgreSQL.
    let w2 = Gatehouse::new("pgw2", &format!("{}{}", web_config(port2), pg.source_config("1h")));
    w2.init(None);
    let web1 = Gatehoused::start(&h, port1);
    let web2 = Gatehoused::start(&w2, port2);
    assert_eq!(api_status(&web2, &token), 200, "the host's token, imported, works on the other instance");

    // Signed in on one, the cookie works on the other; signed out on one, on neither.
    let form = format!("user={alice}&password={}", password.replace(' ', "+"));
    let (status, cookie, body) = send(
        request("POST", &format!("{}/signin", web1.url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.into_bytes())
            .unwrap(),
    );
    assert_eq!(status, 303, "sign-in with the imported password: {body}");
    let cookie = cookie.expect("a session cookie");
    let stored = pg.query(&format!("SELECT count(*) FROM web_sessions WHERE id_hash = '{cookie}'"));
    assert_eq!((pg.query("SELECT count(*) FROM web_sessions").trim(), stored.trim()), ("1", "0"), "digests only");
    let (status, body) = page(&web2, &cookie);
    assert!(status == 200 && body.contains(&key.fingerprint), "the other instance knows the session: {status}");
    let csrf = {
        let marker = "name=\"csrf\" value=\"";
        let rest = &body[body.find(marker).unwrap() + marker.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    let (status, _, _) = send(
        request("POST", &format!("{}/signout", web1.url))
            .header("Cookie", format!("gh_session={cookie}"))
            .header("Origin", &web1.url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}").into_bytes())
            .unwrap(),
    );
    assert_eq!(status, 303);
    assert_eq!(page(&web2, &cookie).0, 303, "signed out on one instance, the session ended on the other");
    assert_eq!(page(&web1, &cookie).0, 303);

    // A token made through either works on both; revoked through one, it works on neither.
    let made = w2.cli(&["token", "create", "--scope", "admin", "--label", "w2"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let token2 = stdout(&made).trim().to_string();
    assert_eq!((api_status(&web1, &token2), api_status(&web2, &token2)), (200, 200));
    let id = stderr(&made).split_whitespace().nth(1).unwrap().to_string();
    h.ok(&["token", "revoke", &id]);
    assert_eq!((api_status(&web1, &token2), api_status(&web2, &token2)), (401, 401), "revoked on both");
    assert_eq!(api_status(&web1, &token), 200, "the other token lives on");

    // A key added through the second instance's API is served on the node.
    let second = keygen(&h.dir.path, "ed25519");
    let body = serde_json::json!({ "key": second.public }).to_string();
    let (status, _, answer) = send(
        request("POST", &format!("{}/api/v1/users/{alice}/keys", web2.url))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .body(body.into_bytes())
            .unwrap(),
    );
    assert!((200..300).contains(&status), "{status}: {answer}");
    let served = wait_until(Duration::from_millis(20), Duration::from_secs(10), || serves_user(&h, alice, &second));
    assert!(served.is_some(), "the key added through the second instance never reached the node");
    agent.kill();
}

fn serves_user(gh: &Gatehouse, user: &str, key: &KeyPair) -> bool {
    let blob = key.public.split_whitespace().nth(1).unwrap();
    stdout(&gh.keys(&[user])).contains(blob)
}
