//! gatehoused over real HTTP: the built server on a loopback port, a fresh store made with
//! the real `gatehouse` CLI, and a plain HTTP client (no browser, no cookie jar: cookies and
//! CSRF tokens are carried by hand, so every header the tests rely on is visible here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{blob_of, enc, fresh_key, Req, Resp, Server};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const PASSWORD: &str = "correct horse battery staple";

fn admin(server: &Server) -> String {
    server.token("admin").1
}

/// A server with users alice and bob and an admin token.
fn alice_and_bob(web: &[(&str, &str)]) -> (Server, String) {
    let server = Server::start(&["alice", "bob"], web);
    let token = admin(&server);
    (server, token)
}

fn assert_json_error(r: &Resp, status: u16) -> String {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "JSON error: {r:?}");
    r.error()
}

// ---------------------------------------------------------------------------------------
// JSON API: success paths
// ---------------------------------------------------------------------------------------

#[test]
fn api_admin_manages_users() {
    let (s, t) = alice_and_bob(&[]);

    let r = s.api(&t, "POST", "/users", Some(&json!({"name": "carol", "policy": "git", "port_forwarding": true})));
    assert_eq!(r.status, 201, "{r:?}");
    let carol = r.json();
    assert_eq!(carol["name"], "carol");
    assert_eq!(carol["policy"], "git");
    assert_eq!(carol["state"], "enabled");
    assert_eq!(carol["port_forwarding"], true);
    assert!(carol["created"].is_i64() && carol["created_at"].as_str().unwrap().ends_with('Z'), "{carol}");

    let r = s.api(&t, "POST", "/users", Some(&json!({"name": "dave"})));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["policy"], "shell", "users.default_policy applies");
    assert_eq!(r.json()["port_forwarding"], false);

    let e = assert_json_error(&s.api(&t, "POST", "/users", Some(&json!({"name": "carol"}))), 409);
    assert!(e.contains("carol") && e.contains("exists"), "{e}");
    let e = assert_json_error(&s.api(&t, "POST", "/users", Some(&json!({"name": "Not Valid"}))), 400);
    assert!(e.contains("not a valid user name"), "{e}");
    // No store entry may become root, or any other system account (issue 10).
    for name in ["root", "sshd", "daemon", "gatehouse", "systemd-timesync"] {
        let e = assert_json_error(&s.api(&t, "POST", "/users", Some(&json!({"name": name}))), 400);
        assert!(e.contains("never serves keys"), "{name}: {e}");
    }
    // Made through the API, and recorded so.
    assert_eq!(carol["source"], "api", "{carol}");

    let r = s.api(&t, "GET", "/users", None);
    assert_eq!(r.status, 200, "{r:?}");
    let names: Vec<String> = r.json().as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().into()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);

    let (key, fp) = fresh_key("carol@laptop");
    assert_eq!(s.cli_key_add("carol", &key), fp);
    let r = s.api(&t, "GET", "/users/carol", None);
    assert_eq!(r.status, 200, "{r:?}");
    let shown = r.json();
    assert_eq!(shown["name"], "carol");
    assert_eq!(shown["keys"].as_array().unwrap().len(), 1);
    assert_eq!(shown["keys"][0]["fingerprint"], fp.as_str());
    assert_eq!(shown["keys"][0]["comment"], "carol@laptop");
    assert_eq!(shown["keys"][0]["scope"], "git", "a key takes its owner's policy");

    let r = s.api(&t, "PATCH", "/users/carol", Some(&json!({"state": "disabled", "policy": "git-read"})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["state"], "disabled");
    assert_eq!(r.json()["policy"], "git-read");
    let r = s.api(&t, "PATCH", "/users/carol", Some(&json!({"state": "enabled", "port_forwarding": false})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((r.json()["state"].clone(), r.json()["port_forwarding"].clone()), (json!("enabled"), json!(false)));
    let e = assert_json_error(&s.api(&t, "PATCH", "/users/carol", Some(&json!({}))), 400);
    assert!(e.contains("nothing to change"), "{e}");
    assert_json_error(&s.api(&t, "PATCH", "/users/nobody", Some(&json!({"state": "disabled"}))), 404);

    let r = s.api(&t, "DELETE", "/users/carol", None);
    assert_eq!((r.status, r.body.as_str()), (204, ""), "{r:?}");
    assert_json_error(&s.api(&t, "GET", "/users/carol", None), 404);
    assert_json_error(&s.api(&t, "DELETE", "/users/carol", None), 404);
    assert_json_error(&s.api(&t, "GET", "/users/carol/keys", None), 404);
    // The key went with its owner: another user may register it now.
    let r = s.api(&t, "POST", "/users/dave/keys", Some(&json!({"key": key})));
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn api_admin_manages_keys() {
    let (s, t) = alice_and_bob(&[]);
    assert_eq!(s.fingerprints(&t, "alice"), Vec::<String>::new());

    let (key, fp) = fresh_key("alice@laptop");
    let r = s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": key})));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json(), json!({"fingerprint": fp}));

    let (key2, fp2) = fresh_key("");
    let body = json!({"key": key2, "scope": "files", "expires": "30d", "from": "10.0.0.0/8", "comment": "backup box"});
    let r = s.api(&t, "POST", "/users/alice/keys", Some(&body));
    assert_eq!(r.status, 201, "{r:?}");

    let r = s.api(&t, "GET", "/users/alice/keys", None);
    assert_eq!(r.status, 200, "{r:?}");
    let keys = r.json();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["fingerprint"], fp.as_str());
    assert_eq!(keys[0]["algorithm"], "ssh-ed25519");
    assert_eq!(keys[0]["blob"], blob_of(&key));
    assert_eq!(keys[0]["comment"], "alice@laptop");
    assert_eq!(keys[0]["source"], "api");
    assert_eq!(keys[0]["expires"], Value::Null);
    assert_eq!(keys[1]["fingerprint"], fp2.as_str());
    assert_eq!(keys[1]["scope"], "files");
    assert_eq!(keys[1]["from"], "10.0.0.0/8");
    assert_eq!(keys[1]["comment"], "backup box");
    let expires = keys[1]["expires"].as_i64().unwrap();
    let created = keys[1]["created"].as_i64().unwrap();
    assert!((expires - created - 30 * 86_400).abs() <= 5, "expires in 30 days: {}", keys[1]);
    assert!(keys[1]["expires_at"].as_str().is_some());

    // Same key again, same user: a conflict that changes nothing.
    let e = assert_json_error(&s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": key}))), 409);
    assert!(e.contains("already registered"), "{e}");
    let e = assert_json_error(
        &s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": fresh_key("").0, "expires": "2001-01-01"}))),
        400,
    );
    assert!(e.contains("in the past"), "{e}");
    assert_json_error(&s.api(&t, "POST", "/users/ghost/keys", Some(&json!({"key": fresh_key("").0}))), 404);

    let r = s.api(&t, "DELETE", &format!("/users/alice/keys/{}", enc(&fp)), None);
    assert_eq!((r.status, r.body.as_str()), (204, ""), "{r:?}");
    assert_eq!(s.fingerprints(&t, "alice"), vec![fp2.clone()]);
    assert_json_error(&s.api(&t, "DELETE", &format!("/users/alice/keys/{}", enc(&fp)), None), 404);
    // Bob cannot lose alice's key through his own path.
    assert_json_error(&s.api(&t, "DELETE", &format!("/users/bob/keys/{}", enc(&fp2)), None), 404);
    assert_eq!(s.fingerprints(&t, "alice"), vec![fp2]);

    // The CLI sees what the API did.
    let listed = s.ok(&["key", "list", "alice"]);
    assert!(listed.contains("files") && !listed.contains(&fp), "{listed}");
}

#[test]
fn api_admin_manages_grants() {
    let (s, t) = alice_and_bob(&[]);
    assert_eq!(s.api(&t, "GET", "/grants", None).json(), json!([]));

    let grant = json!({"subject": "bob", "pattern": "alice/thesis.git", "access": "read"});
    let r = s.api(&t, "POST", "/grants", Some(&grant));
    assert_eq!((r.status, r.body.as_str()), (201, ""), "{r:?}");
    let r = s.api(&t, "POST", "/grants", Some(&grant));
    assert_eq!(r.status, 200, "unchanged: {r:?}");
    let r = s.api(
        &t,
        "POST",
        "/grants",
        Some(&json!({"subject": "bob", "pattern": "alice/thesis.git", "access": "write"})),
    );
    assert_eq!(r.status, 201, "access changed: {r:?}");
    let r = s.api(&t, "POST", "/grants", Some(&json!({"subject": "@staff", "pattern": "alice/*", "access": "read"})));
    assert_eq!(r.status, 201, "{r:?}");
    // A pattern without .git gets it.
    let r = s.api(&t, "POST", "/grants", Some(&json!({"subject": "alice", "pattern": "bob/notes", "access": "read"})));
    assert_eq!(r.status, 201, "{r:?}");

    let r = s.api(&t, "GET", "/grants", None);
    assert_eq!(r.status, 200, "{r:?}");
    let listed: BTreeSet<(String, String, String)> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert!(g["created"].is_i64(), "{g}");
            (
                g["subject"].as_str().unwrap().into(),
                g["pattern"].as_str().unwrap().into(),
                g["access"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String)> =
        [("@staff", "alice/*", "read"), ("alice", "bob/notes.git", "read"), ("bob", "alice/thesis.git", "write")]
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
    assert_eq!(listed, want);

    assert_json_error(
        &s.api(&t, "POST", "/grants", Some(&json!({"subject": "nobody", "pattern": "a/b.git", "access": "read"}))),
        404,
    );
    let e = assert_json_error(
        &s.api(&t, "POST", "/grants", Some(&json!({"subject": "bob", "pattern": "../etc", "access": "read"}))),
        400,
    );
    assert!(e.contains("not a repository pattern"), "{e}");
    assert_json_error(
        &s.api(&t, "POST", "/grants", Some(&json!({"subject": "bob", "pattern": "a/b", "access": "admin"}))),
        400,
    );

    let r = s.api(&t, "DELETE", &format!("/grants?subject=bob&pattern={}", enc("alice/thesis.git")), None);
    assert_eq!((r.status, r.body.as_str()), (204, ""), "{r:?}");
    assert_json_error(
        &s.api(&t, "DELETE", &format!("/grants?subject=bob&pattern={}", enc("alice/thesis.git")), None),
        404,
    );
    let r = s.api(&t, "DELETE", &format!("/grants?subject={}&pattern={}", enc("@staff"), enc("alice/*")), None);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(s.api(&t, "GET", "/grants", None).json().as_array().unwrap().len(), 1);

    // A user's grants die with the user.
    assert_eq!(s.api(&t, "DELETE", "/users/alice", None).status, 204);
    assert_eq!(s.api(&t, "GET", "/grants", None).json(), json!([]));
}

#[test]
fn api_audit_with_filters() {
    let (s, t) = alice_and_bob(&[]);
    let (key, fp) = fresh_key("");
    assert_eq!(s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": key}))).status, 201);
    assert_eq!(s.api(&t, "PATCH", "/users/bob", Some(&json!({"policy": "git"}))).status, 200);
    assert_eq!(s.api(&t, "DELETE", &format!("/users/alice/keys/{}", enc(&fp)), None).status, 204);

    let all = s.api(&t, "GET", "/audit", None);
    assert_eq!(all.status, 200, "{all:?}");
    let all = all.json();
    let all = all.as_array().unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.first(), Some(&"store.init"), "oldest first: {actions:?}");
    for want in ["user.add", "key.add", "user.set", "key.remove"] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
    let key_add = all.iter().find(|e| e["action"] == "key.add").unwrap();
    assert_eq!(key_add["subject"], "alice");
    assert!(key_add["actor"].as_str().unwrap().starts_with("api:token1@127.0.0.1"), "{key_add}");
    assert!(key_add["detail"].as_str().unwrap().contains(&fp), "{key_add}");

    let r = s.api(&t, "GET", "/audit?user=alice", None);
    assert_eq!(r.status, 200, "{r:?}");
    let alice: Vec<String> =
        r.json().as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().into()).collect();
    assert!(r.json().as_array().unwrap().iter().all(|e| e["subject"] == "alice"), "{r:?}");
    assert_eq!(alice, ["user.add", "key.add", "key.remove"]);

    let r = s.api(&t, "GET", "/audit?user=alice&limit=1", None);
    let newest = r.json();
    assert_eq!(newest.as_array().unwrap().len(), 1, "{r:?}");
    assert_eq!(newest[0]["action"], "key.remove", "the newest");

    assert_eq!(s.api(&t, "GET", "/audit?since=1h", None).json().as_array().unwrap().len(), all.len());
    assert_eq!(s.api(&t, "GET", "/audit?since=2999-01-01", None).json(), json!([]));
    assert_eq!(s.api(&t, "GET", "/audit?user=nobody", None).json(), json!([]));
    let e = assert_json_error(&s.api(&t, "GET", "/audit?since=yesterday", None), 400);
    assert!(!e.is_empty());
}

// ---------------------------------------------------------------------------------------
// JSON API: who may do what
// ---------------------------------------------------------------------------------------

#[test]
fn api_user_token_reaches_only_its_own_user() {
    let (s, t) = alice_and_bob(&[]);
    let (_, alice) = s.token("user:alice");
    let (bob_key, bob_fp) = fresh_key("bob");
    s.cli_key_add("bob", &bob_key);

    // Her own keys: list, add, show, remove.
    let (key, fp) = fresh_key("alice");
    let r = s.api(&alice, "POST", "/users/alice/keys", Some(&json!({"key": key})));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(s.fingerprints(&alice, "alice"), vec![fp.clone()]);
    let r = s.api(&alice, "GET", "/users/alice", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["keys"][0]["fingerprint"], fp.as_str());
    let r = s.api(&alice, "DELETE", &format!("/users/alice/keys/{}", enc(&fp)), None);
    assert_eq!(r.status, 204, "{r:?}");

    // Bob's account answers exactly as a user that does not exist.
    let missing = s.api(&alice, "GET", "/users/nobody/keys", None);
    assert_json_error(&missing, 404);
    for (method, path, body) in [
        ("GET", "/users/bob/keys".to_string(), None),
        ("GET", "/users/bob".to_string(), None),
        ("POST", "/users/bob/keys".to_string(), Some(json!({"key": fresh_key("").0}))),
        ("DELETE", format!("/users/bob/keys/{}", enc(&bob_fp)), None),
    ] {
        let r = s.api(&alice, method, &path, body.as_ref());
        assert_eq!((r.status, &r.body), (missing.status, &missing.body), "{method} {path}");
    }
    assert_eq!(s.fingerprints(&t, "bob"), vec![bob_fp]);

    // Everything but one user's keys needs an admin token.
    for (method, path, body) in [
        ("GET", "/users", None),
        ("POST", "/users", Some(json!({"name": "mallory"}))),
        ("PATCH", "/users/alice", Some(json!({"policy": "shell"}))),
        ("DELETE", "/users/alice", None),
        ("GET", "/grants", None),
        ("POST", "/grants", Some(json!({"subject": "alice", "pattern": "bob/x.git", "access": "write"}))),
        ("DELETE", "/grants?subject=alice&pattern=bob%2Fx.git", None),
        ("GET", "/audit", None),
        ("GET", "/audit?user=alice", None),
    ] {
        let r = s.api(&alice, method, path, body.as_ref());
        assert_json_error(&r, 403);
    }
    assert_json_error(&s.api(&t, "GET", "/users/mallory", None), 404);
    assert_eq!(s.api(&t, "GET", "/grants", None).json(), json!([]));
}

#[test]
fn api_refuses_missing_wrong_and_revoked_tokens() {
    let (s, t) = alice_and_bob(&[]);
    let (id, revoked) = s.token("admin");
    assert_eq!(s.api(&revoked, "GET", "/users", None).status, 200);
    s.ok(&["token", "revoke", &id.to_string()]);
    let (_, user_token) = s.token("user:alice");
    let (uid, user_revoked) = s.token("user:alice");
    s.ok(&["token", "revoke", &uid.to_string()]);

    for path in ["/users", "/users/alice", "/users/alice/keys", "/grants", "/audit"] {
        let url = format!("/api/v1{path}");
        for req in [
            Req::new("GET", &url),
            Req::new("GET", &url).bearer("gatehouse_not-a-token"),
            Req::new("GET", &url).bearer(""),
            Req::new("GET", &url).header("Authorization", &t),
            Req::new("GET", &url).header("Authorization", &format!("Basic {t}")),
            Req::new("GET", &url).bearer(&revoked),
            Req::new("GET", &url).bearer(&user_revoked),
            // A cookie is no API credential.
            Req::new("GET", &url).cookie("anything"),
        ] {
            let r = s.send(req);
            assert_eq!(assert_json_error(&r, 401), "sign-in required", "{path}");
        }
    }
    // Changes are refused before their bodies are looked at.
    let r = s.api(&revoked, "POST", "/users", Some(&json!({"name": "mallory"})));
    assert_json_error(&r, 401);
    let r = s.api(&user_revoked, "POST", "/users/alice/keys", Some(&json!({"key": fresh_key("").0})));
    assert_json_error(&r, 401);
    assert_json_error(&s.api(&t, "GET", "/users/mallory", None), 404);
    assert_eq!(s.fingerprints(&user_token, "alice"), Vec::<String>::new());
    // The document itself is public.
    assert_eq!(s.get("/api/v1/openapi.json").status, 200);
}

#[test]
fn api_user_token_changes_are_rate_limited() {
    let (s, alice, statuses) = within_one_minute(|| {
        let s = Server::start(&["alice"], &[("changes_per_minute", "3")]);
        let (_, alice) = s.token("user:alice");
        let statuses: Vec<u16> = (0..4)
            .map(|_| s.api(&alice, "POST", "/users/alice/keys", Some(&json!({"key": fresh_key("").0}))).status)
            .collect();
        (s, alice, statuses)
    });
    assert_eq!(statuses, [201, 201, 201, 429]);
    let r = s.api(&alice, "DELETE", "/users/alice/keys/SHA256%3Anone", None);
    if r.status == 429 {
        assert!(r.error().contains("too many"), "removals count too: {r:?}");
    }
    let t = admin(&s);
    // Admin tokens are not limited.
    for _ in 0..5 {
        assert_eq!(s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": fresh_key("").0}))).status, 201);
    }
}

/// Runs `f` until one run falls inside a single clock minute (the rate limits count per
/// fixed minute), at most three times. Each run must start from a fresh server.
fn within_one_minute<T>(mut f: impl FnMut() -> T) -> T {
    let minute = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60;
    for _ in 0..3 {
        let before = minute();
        let value = f();
        if minute() == before {
            return value;
        }
    }
    panic!("three runs straddled a minute boundary")
}

// ---------------------------------------------------------------------------------------
// JSON API: hostile input
// ---------------------------------------------------------------------------------------

#[test]
fn api_refuses_bodies_that_are_not_json() {
    let (s, t) = alice_and_bob(&[]);
    let body = br#"{"name": "carol"}"#.to_vec();
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "text/json"] {
        let r = s.send(Req::new("POST", "/api/v1/users").bearer(&t).body(content_type, body.clone()));
        let e = assert_json_error(&r, 400);
        assert!(e.contains("application/json"), "{content_type}: {e}");
    }
    let r = s.send(Req::new("POST", "/api/v1/users").bearer(&t).raw_body(body.clone()));
    assert!(assert_json_error(&r, 400).contains("application/json"), "no Content-Type");
    let r = s.send(Req::new("POST", "/api/v1/users/alice/keys").bearer(&t).body("text/plain", fresh_key("").0.into()));
    assert!(assert_json_error(&r, 400).contains("application/json"));
    for bad in ["", "{", "[]", "null", r#"{"name": 5}"#, r#"{"name": "x", "name": "y"}"#] {
        let r = s.send(Req::new("POST", "/api/v1/users").bearer(&t).body("application/json", bad.into()));
        assert_json_error(&r, 400);
    }
    let r = s.send(Req::new("POST", "/api/v1/users").bearer(&t).body("application/json; charset=utf-8", body.clone()));
    assert_eq!(r.status, 201, "a charset parameter is fine: {r:?}");
}

#[test]
fn api_refuses_unknown_fields_and_changes_nothing() {
    let (s, t) = alice_and_bob(&[]);
    let (key, _) = fresh_key("");
    let audit_before = s.api(&t, "GET", "/audit", None).json().as_array().unwrap().len();
    for (method, path, body) in [
        ("POST", "/users", json!({"name": "carol", "user_id": 1})),
        ("POST", "/users", json!({"name": "carol", "source": "ldap"})),
        ("PATCH", "/users/alice", json!({"state": "disabled", "user_id": 2})),
        ("PATCH", "/users/alice", json!({"policy": "git", "name": "bob"})),
        ("POST", "/users/alice/keys", json!({"key": key, "user_id": 2})),
        ("POST", "/users/alice/keys", json!({"key": key, "options": "command=\"/bin/sh\""})),
        ("POST", "/users/alice/keys", json!({"key": key, "user": "bob"})),
        ("POST", "/grants", json!({"subject": "bob", "pattern": "alice/x.git", "access": "write", "user_id": 1})),
    ] {
        let e = assert_json_error(&s.api(&t, method, path, Some(&body)), 400);
        assert!(e.contains("unknown field"), "{method} {path}: {e}");
    }
    let r = s.api(&t, "DELETE", "/grants?subject=bob&pattern=alice%2Fx.git&user_id=1", None);
    assert_eq!(r.status, 400, "unknown query parameter: {r:?}");
    let r = s.api(&t, "GET", "/audit?user=alice&user_id=1", None);
    assert_eq!(r.status, 400, "unknown query parameter: {r:?}");

    assert_json_error(&s.api(&t, "GET", "/users/carol", None), 404);
    let alice = s.api(&t, "GET", "/users/alice", None).json();
    assert_eq!((alice["state"].as_str(), alice["policy"].as_str()), (Some("enabled"), Some("shell")));
    assert_eq!(alice["keys"], json!([]));
    assert_eq!(s.fingerprints(&t, "bob"), Vec::<String>::new());
    assert_eq!(s.api(&t, "GET", "/grants", None).json(), json!([]));
    assert_eq!(s.api(&t, "GET", "/audit", None).json().as_array().unwrap().len(), audit_before, "nothing audited");
}

#[test]
fn api_refuses_oversize_bodies_with_413() {
    let (s, t) = alice_and_bob(&[("max_body", "4096")]);
    let big = "x".repeat(5000);
    for (method, path, body) in [
        ("POST", "/users", json!({"name": big})),
        ("POST", "/users/alice/keys", json!({"key": big})),
        ("PATCH", "/users/alice", json!({"policy": big})),
        ("POST", "/grants", json!({"subject": "bob", "pattern": big, "access": "read"})),
    ] {
        let r = s.api(&t, method, path, Some(&body));
        assert_json_error(&r, 413);
    }
    assert_eq!(s.fingerprints(&t, "alice"), Vec::<String>::new());
}

#[test]
fn api_oversize_bodies_are_refused_and_change_nothing() {
    // The status is covered (and currently wrong) in api_refuses_oversize_bodies_with_413.
    let (s, t) = alice_and_bob(&[("max_body", "4096")]);
    let (key, _) = fresh_key(&"c".repeat(200));
    let padded = json!({"key": key, "comment": "x".repeat(5000)});
    let r = s.api(&t, "POST", "/users/alice/keys", Some(&padded));
    assert!(matches!(r.status, 400 | 413), "{r:?}");
    assert_eq!(s.fingerprints(&t, "alice"), Vec::<String>::new());
    // Just under the limit is fine.
    let r = s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": key, "comment": "y".repeat(200)})));
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn api_refuses_hostile_key_texts() {
    let (s, t) = alice_and_bob(&[]);
    let (good, _) = fresh_key("laptop");
    let (other, _) = fresh_key("other");
    let blob = blob_of(&good);
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("options prefix", format!("restrict {good}"), "options"),
        ("command option", format!("command=\"/bin/sh\" {good}"), "options"),
        ("from option", format!("from=\"*\",no-pty {good}"), "options"),
        ("newline inside", format!("{good}\n{other}"), "control character"),
        ("newline then options", format!("{good}\ncommand=\"/bin/sh\" {other}"), "control character"),
        ("carriage return", format!("{good}\r{other}"), "control character"),
        ("NUL", format!("{good}\0"), "control character"),
        ("private key", private.to_string(), "PRIVATE"),
        ("PuTTY private key", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n".to_string(), "PRIVATE"),
        ("DSA", format!("ssh-dss {blob} old"), "DSA"),
        ("certificate", format!("ssh-ed25519-cert-v01@openssh.com {blob} cert"), "certificate"),
        ("two keys on a line", format!("{good} {other}"), "more than one key"),
        ("type mismatch", format!("ssh-rsa {blob}"), "does not match"),
        ("SSH2 format", "---- BEGIN SSH2 PUBLIC KEY ----".to_string(), "RFC 4716"),
        ("empty", String::new(), "no key"),
        ("right-to-left override", format!("{good}\u{202E}fdp.exe"), "text-direction"),
        ("zero-width space", format!("{good}\u{200B}"), "invisible"),
        ("bidi isolate", format!("{good} \u{2066}root\u{2069}"), "invisible"),
    ];
    for (what, text, reason) in &cases {
        let r = s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": text})));
        let e = assert_json_error(&r, 400);
        assert!(!e.contains('\n') && !e.contains('\r'), "{what}: one line: {e:?}");
        assert!(e.contains(reason), "{what}: {e:?} names {reason:?}");
        assert!(!e.contains("b3BlbnNz") && !e.contains(blob), "{what}: the key text is not echoed: {e}");
    }
    // A comment given separately is checked as well.
    let r = s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": good, "comment": "a\ncommand=\"x\""})));
    assert!(!assert_json_error(&r, 400).contains('\n'));
    let r = s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": good, "comment": "laptop\u{202E}gpj.exe"})));
    assert!(assert_json_error(&r, 400).contains("text-direction"));
    let r = s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": good, "from": "\"*\" command=x"})));
    assert_json_error(&r, 400);

    assert_eq!(s.fingerprints(&t, "alice"), Vec::<String>::new(), "nothing stored");
    let audit = s.api(&t, "GET", "/audit?user=alice", None).json();
    assert!(audit.as_array().unwrap().iter().all(|e| e["action"] != "key.add"), "{audit}");
    assert_eq!(s.get("/alice.keys").body, "");
    // And the plain key still goes in afterwards.
    assert_eq!(s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": good}))).status, 201);
}

#[test]
fn api_same_key_on_two_accounts_concurrently() {
    let (s, t) = alice_and_bob(&[]);
    for round in 0..20 {
        let (key, fp) = fresh_key(&format!("round{round}"));
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<(String, Resp)> = std::thread::scope(|scope| {
            let handles: Vec<_> = ["alice", "bob"]
                .into_iter()
                .map(|user| {
                    let (s, t, key, barrier) = (&s, &t, &key, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        (user.to_string(), s.api(t, "POST", &format!("/users/{user}/keys"), Some(&json!({"key": key}))))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut statuses: Vec<u16> = results.iter().map(|(_, r)| r.status).collect();
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}: {results:?}");
        let (winner, _) = results.iter().find(|(_, r)| r.status == 201).unwrap();
        let (loser, refused) = results.iter().find(|(_, r)| r.status == 409).unwrap();
        let e = refused.error();
        assert!(!e.contains(winner.as_str()) && !e.contains(loser.as_str()), "round {round}: names a user: {e}");
        assert!(!refused.body.contains("alice") && !refused.body.contains("bob"), "{refused:?}");
        assert!(s.fingerprints(&t, winner).contains(&fp));
        assert!(!s.fingerprints(&t, loser).contains(&fp));
    }
    let total = s.fingerprints(&t, "alice").len() + s.fingerprints(&t, "bob").len();
    assert_eq!(total, 20);
}

#[test]
fn api_odd_fingerprints_are_404_or_400_never_500() {
    let (s, t) = alice_and_bob(&[]);
    let (key, fp) = fresh_key("");
    assert_eq!(s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": key}))).status, 201);
    let b64 = fp.strip_prefix("SHA256:").unwrap();
    let odd = [
        "%22".to_string(),
        "%27".to_string(),
        "SHA256%3A%22%3B%20DROP%20TABLE%20keys%3B--".to_string(),
        "%27%20OR%20%271%27%3D%271".to_string(),
        "..".to_string(),
        "%2E%2E".to_string(),
        "..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        "SHA256%3A..%2F..%2Fbob".to_string(),
        format!("SHA256%3A{}%22", enc(b64)),
        format!("sha256%3A{}", enc(b64)),
        "%00".to_string(),
        "SHA256%3A%00".to_string(),
        "%C0%AE%C0%AE%2F".to_string(),
        "%FF%FE".to_string(),
        format!("SHA256%3A{}", "A".repeat(4000)),
        "%252E%252E%252F".to_string(),
    ];
    for f in &odd {
        for (token, user) in [(t.as_str(), "alice"), (t.as_str(), "%22"), (t.as_str(), "..")] {
            let r = s.api(token, "DELETE", &format!("/users/{user}/keys/{f}"), None);
            assert!(matches!(r.status, 400 | 404), "DELETE /users/{user}/keys/{f}: {r:?}");
        }
    }
    for user in ["%22", "..", "%2E%2E%2Fbob", "alice%2F..%2Fbob", "%00", "%27", "alice%20", "ALICE"] {
        for path in [format!("/users/{user}"), format!("/users/{user}/keys")] {
            let r = s.api(&t, "GET", &path, None);
            assert!(matches!(r.status, 400 | 404), "GET {path}: {r:?}");
        }
    }
    let (_, alice) = s.token("user:alice");
    for path in ["/users/alice%2F..%2Fbob/keys", "/users/alice/../bob/keys", "/users/alice/keys/..%2F..%2Fbob"] {
        let r = s.api(&alice, "GET", path, None);
        assert!(matches!(r.status, 400 | 404 | 405), "GET {path}: {r:?}");
    }
    assert_eq!(s.fingerprints(&t, "alice"), vec![fp.clone()], "nothing removed");
    // The right fingerprint, percent-encoded, still works.
    assert_eq!(s.api(&t, "DELETE", &format!("/users/alice/keys/{}", enc(&fp)), None).status, 204);
}

#[test]
fn api_query_string_errors_are_json() {
    let (s, t) = alice_and_bob(&[]);
    for path in ["/grants", "/grants?subject=bob", "/grants?subject=bob&pattern=a%2Fb.git&x=1"] {
        assert_json_error(&s.api(&t, "DELETE", path, None), 400);
    }
    for path in ["/audit?limit=abc", "/audit?limit=-1", "/audit?colour=red"] {
        assert_json_error(&s.api(&t, "GET", path, None), 400);
    }
}

// ---------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------

fn assert_security_headers(r: &Resp, what: &str, no_store: bool) {
    let csp = r.header("content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP: {r:?}"));
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: {csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    // Invitation links carry their secret in the path: no policy that sends a path to
    // another site.
    let referrer = r.header("referrer-policy").unwrap_or_else(|| panic!("{what}: no Referrer-Policy"));
    assert!(
        ["no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"].contains(&referrer),
        "{what}: {referrer}"
    );
    if no_store {
        assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    }
}

#[test]
fn security_headers_on_pages_and_api() {
    let (s, t) = alice_and_bob(&[]);
    let cookie = s.set_password("alice", PASSWORD);
    let cases: Vec<(&str, Resp)> = vec![
        ("sign-in page", s.get("/signin")),
        ("keys page", s.send(Req::new("GET", "/keys").cookie(&cookie))),
        ("redirect to sign-in", s.get("/keys")),
        ("home", s.get("/")),
        ("wrong password", s.sign_in("alice", "wrong password!")),
        ("public keys", s.get("/alice.keys")),
        ("missing page", s.get("/nobody.keys")),
        ("bad invitation", s.get("/invite/nope")),
        ("API list", s.api(&t, "GET", "/users", None)),
        ("API 401", s.get("/api/v1/users")),
        ("API 404", s.api(&t, "GET", "/users/nobody", None)),
        ("API unknown path", s.api(&t, "GET", "/nothing/here", None)),
        ("API 405", s.api(&t, "PUT", "/users", Some(&json!({})))),
        ("API 400", s.api(&t, "POST", "/users", Some(&json!({"nope": 1})))),
        ("API 204", s.api(&t, "DELETE", "/users/bob", None)),
        ("OpenAPI", s.get("/api/v1/openapi.json")),
    ];
    for (what, r) in &cases {
        assert_security_headers(r, what, true);
    }
    let page = &cases[0].1;
    assert!(page.header("content-type").unwrap().starts_with("text/html"), "{page:?}");
    assert!(!page.body.contains("<script") && !page.body.contains(" style="), "no inline script or style");
    // The stylesheet may be cached, but is otherwise held to the same rules.
    let css = s.get("/static/style.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css"));
    assert_security_headers(&css, "stylesheet", false);
}

// ---------------------------------------------------------------------------------------
// The OpenAPI document
// ---------------------------------------------------------------------------------------

const METHODS: [&str; 6] = ["get", "put", "post", "delete", "options", "patch"];

fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("only local $refs: {r}"));
        v = doc.pointer(pointer).unwrap_or_else(|| panic!("unresolved $ref {r}"));
    }
    v
}

/// Checks `value` against the JSON Schema subset the document uses: $ref, oneOf, type
/// (one or several), enum, properties, required, additionalProperties: false,
/// minProperties and items.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let n = alternatives.iter().filter(|alt| validate(doc, alt, value, at).is_ok()).count();
        if n != 1 {
            return Err(format!("{at}: {value} matches {n} of oneOf, not one"));
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: bad type {t}")),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {value} is not of type {t}"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            return Err(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                return Err(format!("{at}: required {name} missing from {value}"));
            }
        }
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
            if (object.len() as u64) < min {
                return Err(format!("{at}: fewer than {min} properties"));
            }
        }
        for (name, v) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(s) => validate(doc, s, v, &format!("{at}.{name}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: undocumented property {name:?}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            validate(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn walk_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(o) => {
            if o.contains_key("$ref") {
                resolve(doc, v);
            }
            o.values().for_each(|x| walk_refs(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| walk_refs(doc, x)),
        _ => {}
    }
}

/// The documented operations: (path, method, operation, parameters incl. the path's).
fn operations(doc: &Value) -> Vec<(String, String, Value, Vec<Value>)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let shared: Vec<Value> = item.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(METHODS.contains(&method.as_str()), "{path}: unexpected key {method}");
            let mut params: Vec<Value> = shared.iter().map(|p| resolve(doc, p).clone()).collect();
            for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
                params.push(resolve(doc, p).clone());
            }
            out.push((path.clone(), method.clone(), op.clone(), params));
        }
    }
    out
}

const OPENAPI_FILE: &str = include_str!("../openapi.json");

#[test]
fn openapi_document_is_served_and_well_formed() {
    let s = Server::start(&[], &[]);
    let r = s.get("/api/v1/openapi.json");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(r.body, OPENAPI_FILE, "the served document is web/openapi.json");
    let doc: Value = serde_json::from_str(&r.body).expect("the document is JSON");

    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "OpenAPI 3.1");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    assert_eq!(doc["security"], json!([{"bearerAuth": []}]));
    walk_refs(&doc, &doc);

    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], json!(["error"]));
    assert_eq!(error["additionalProperties"], false);
    validate(&doc, error, &json!({"error": "not found"}), "Error").unwrap();
    assert!(validate(&doc, error, &json!({"error": "x", "detail": 1}), "Error").is_err());
    assert!(validate(&doc, error, &json!({"message": "x"}), "Error").is_err());

    let mut ids = BTreeSet::new();
    for (path, method, op, params) in operations(&doc) {
        let what = format!("{} {path}", method.to_uppercase());
        assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()), "{what}: operationId unique");
        // Path parameters declared exactly as the template names them.
        let in_template: BTreeSet<String> =
            path.split('/').filter_map(|p| p.strip_prefix('{')?.strip_suffix('}')).map(str::to_string).collect();
        let declared: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{what}: path parameters are required");
                p["name"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(in_template, declared, "{what}: path parameters");
        for p in &params {
            assert!(matches!(p["in"].as_str(), Some("path" | "query")), "{what}: {p}");
            let example = p.get("example").unwrap_or_else(|| panic!("{what}: an example for {}", p["name"]));
            validate(&doc, &p["schema"], example, &what).unwrap();
        }
        // Who may call: everything but the document needs a token.
        if path == "/openapi.json" {
            assert_eq!(op["security"], json!([]), "{what}");
        } else {
            assert_ne!(op.get("security"), Some(&json!([])), "{what}: needs the bearer token");
            assert!(op["responses"].get("401").is_some(), "{what}: documents 401");
        }
        // Request bodies: JSON objects that refuse unknown fields; the example fits.
        if let Some(body) = op.get("requestBody") {
            let media = &body["content"]["application/json"];
            let schema = resolve(&doc, &media["schema"]);
            assert_eq!(schema["type"], "object", "{what}");
            assert_eq!(schema["additionalProperties"], false, "{what}: additionalProperties: false");
            let example = media.get("example").unwrap_or_else(|| panic!("{what}: a request example"));
            validate(&doc, schema, example, &what).unwrap();
            assert!(validate(&doc, schema, &json!({"user_id": 1}), &what).is_err(), "{what}");
            assert!(op["responses"].get("400").is_some(), "{what}: documents 400");
        }
        // Responses: a success, and every error in the {"error": ...} shape.
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.keys().any(|c| c.starts_with('2')), "{what}: a success response");
        for (code, response) in responses {
            assert!(code.len() == 3 && code.parse::<u16>().is_ok(), "{what}: status {code}");
            let response = resolve(&doc, response);
            assert!(response["description"].is_string(), "{what} {code}: a description");
            if !code.starts_with('2') {
                let schema = &response["content"]["application/json"]["schema"];
                assert_eq!(resolve(&doc, schema), error, "{what} {code}: the error schema");
            }
        }
    }
}

/// The operations `routes.rs` registers under `/api/v1`, read from its API route table:
/// (path, method).
fn route_table() -> BTreeSet<(String, String)> {
    let source = include_str!("../src/routes.rs");
    let start = source.find("pub fn api_routes()").expect("api_routes() in routes.rs");
    let table = &source[start..start + source[start..].find(".fallback(").expect("a fallback")];
    let mut found = BTreeSet::new();
    for chunk in table.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).unwrap().to_string();
        let code = &chunk[path.len() + 2..];
        for method in ["get", "post", "put", "patch", "delete", "options"] {
            let called = |prefix: &str| code.contains(&format!("{prefix}{method}("));
            if called("(") || called(".") || called("::") || called(" ") {
                found.insert((path.clone(), method.to_string()));
            }
        }
    }
    assert!(found.len() >= 5, "the route table was read: {found:?}");
    found
}

#[test]
fn openapi_document_matches_the_route_table() {
    let doc: Value = serde_json::from_str(OPENAPI_FILE).unwrap();
    let documented: BTreeSet<(String, String)> =
        operations(&doc).into_iter().map(|(path, method, _, _)| (path, method)).collect();
    assert_eq!(route_table(), documented, "routes in web/src/routes.rs vs paths in web/openapi.json");
}

/// Makes sure the objects the document's examples name exist: users alice and bob, an
/// extra key of alice's (its fingerprint is returned), and the example grant.
fn ensure_examples(s: &Server, t: &str, doc: &Value, spare_key: &str) -> String {
    for name in ["alice", "bob"] {
        let r = s.api(t, "POST", "/users", Some(&json!({"name": name})));
        assert!(matches!(r.status, 201 | 409), "{r:?}");
    }
    let r = s.api(t, "POST", "/users/alice/keys", Some(&json!({"key": spare_key})));
    assert!(matches!(r.status, 201 | 409), "{r:?}");
    let grant = &doc["paths"]["/grants"]["post"]["requestBody"]["content"]["application/json"]["example"];
    let r = s.api(t, "POST", "/grants", Some(grant));
    assert!(matches!(r.status, 200 | 201), "{r:?}");
    fresh_fingerprint(spare_key)
}

/// A query parameter's example as text.
fn plain(example: &Value) -> String {
    match example {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fresh_fingerprint(key: &str) -> String {
    use base64ct::Encoding as _;
    use sha2::Digest as _;
    let blob = base64ct::Base64::decode_vec(blob_of(key)).unwrap();
    format!("SHA256:{}", base64ct::Base64Unpadded::encode_string(&sha2::Sha256::digest(&blob)))
}

#[test]
fn openapi_document_is_true_to_the_running_server() {
    let s = Server::start(&[], &[]);
    let t = admin(&s);
    let doc: Value = s.get("/api/v1/openapi.json").json();
    let (spare, _) = fresh_key("spare");
    let operations = operations(&doc);
    let mut checked = 0;

    for path in doc["paths"].as_object().unwrap().keys() {
        for method in METHODS {
            let spare_fp = ensure_examples(&s, &t, &doc, &spare);
            let documented = operations.iter().find(|(p, m, _, _)| p == path && m == method);
            // The template filled with real objects; query parameters from their examples.
            let mut url = path.replace("{name}", "alice").replace("{fingerprint}", &enc(&spare_fp));
            let mut body = None;
            if let Some((_, _, op, params)) = documented {
                let query: Vec<String> = params
                    .iter()
                    .filter(|p| p["in"] == "query")
                    .map(|p| format!("{}={}", p["name"].as_str().unwrap(), enc(&plain(&p["example"]))))
                    .collect();
                if !query.is_empty() {
                    url = format!("{url}?{}", query.join("&"));
                }
                body = op.get("requestBody").map(|b| b["content"]["application/json"]["example"].clone());
            } else if matches!(method, "put" | "post" | "patch") {
                body = Some(json!({}));
            }
            let r = s.api(&t, &method.to_uppercase(), &url, body.as_ref());
            let what = format!("{} /api/v1{url}", method.to_uppercase());
            match documented {
                Some((_, _, op, _)) => {
                    checked += 1;
                    assert!(!matches!(r.status, 404 | 405), "{what} is documented but not served: {r:?}");
                    assert!((200..300).contains(&r.status), "{what}: the documented example succeeds: {r:?}");
                    let response = resolve(&doc, &op["responses"][r.status.to_string()]);
                    assert!(response.is_object(), "{what}: status {} is documented", r.status);
                    match response.get("content").and_then(|c| c.get("application/json")) {
                        Some(media) => validate(&doc, &media["schema"], &r.json(), &what).unwrap(),
                        None => assert_eq!(r.body, "", "{what}: no body documented"),
                    }
                }
                None => {
                    assert_eq!(r.status, 405, "{what} is served but not documented: {r:?}");
                    // The router's own list of what the path serves is the documented one.
                    let allow: BTreeSet<String> = r
                        .header("allow")
                        .unwrap_or_else(|| panic!("{what}: 405 without Allow"))
                        .split(',')
                        .map(|m| m.trim().to_ascii_lowercase())
                        .filter(|m| m != "head")
                        .collect();
                    let served: BTreeSet<String> =
                        operations.iter().filter(|(p, ..)| p == path).map(|(_, m, ..)| m.clone()).collect();
                    assert_eq!(allow, served, "{what}: Allow header vs the document");
                }
            }
        }
    }
    assert_eq!(checked, operations.len());

    // The documented fingerprint example is a real fingerprint written as the document
    // says (percent-encoded), and the documented key example has it.
    let example_key =
        &doc["paths"]["/users/{name}/keys"]["post"]["requestBody"]["content"]["application/json"]["example"]["key"];
    let example_fp = &doc["components"]["parameters"]["fingerprint"]["example"];
    assert_eq!(json!(fresh_fingerprint(example_key.as_str().unwrap())), *example_fp);

    // Errors the server gives are the documented error shape.
    let error = &doc["components"]["schemas"]["Error"];
    for r in [
        s.get("/api/v1/users"),
        s.api(&t, "GET", "/users/nobody", None),
        s.api(&t, "POST", "/users", Some(&json!({"name": "alice"}))),
        s.api(&t, "POST", "/users", Some(&json!({"bogus": true}))),
    ] {
        validate(&doc, error, &r.json(), "error").unwrap();
    }

    // Paths and methods nobody documented are not served.
    for (method, path) in [
        ("PUT", "/users"),
        ("DELETE", "/users"),
        ("PATCH", "/users"),
        ("POST", "/users/alice"),
        ("PUT", "/users/alice"),
        ("PUT", "/users/alice/keys"),
        ("DELETE", "/users/alice/keys"),
        ("GET", "/users/alice/keys/x"),
        ("PATCH", "/grants"),
        ("POST", "/audit"),
        ("POST", "/openapi.json"),
        ("GET", "/tokens"),
        ("POST", "/tokens"),
        ("GET", "/keys"),
        ("GET", "/sessions"),
        ("GET", "/me"),
        ("GET", "/users/alice/password"),
        ("GET", "/users/alice/sessions"),
        ("GET", "/users/alice/keys/x/y"),
        ("GET", "/grants/bob"),
        ("GET", "/audit/alice"),
        ("GET", ""),
        ("GET", "/"),
    ] {
        let body = matches!(method, "PUT" | "POST" | "PATCH").then(|| json!({}));
        let r = s.api(&t, method, path, body.as_ref());
        assert!(matches!(r.status, 404 | 405), "{method} /api/v1{path}: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The browser side
// ---------------------------------------------------------------------------------------

#[test]
fn signin_page_and_invitation_flow() {
    let (s, t) = alice_and_bob(&[]);
    let r = s.get("/signin");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains(r#"<form method="post" action="/signin">"#), "{}", r.body);
    assert!(r.body.contains(r#"name="password" type="password""#));
    let r = s.get("/");
    assert_eq!((r.status, r.header("location")), (303, Some("/keys")));
    let r = s.get("/keys");
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "not signed in");

    let invite = s.invite("alice");
    let r = s.get(&invite);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Welcome, alice"), "{}", r.body);

    // Mismatched passwords: refused, and the invitation still works.
    let r = s
        .send(Req::new("POST", &invite).form(&[("password", PASSWORD), ("password2", "correct horse battery stable")]));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("differ"), "{}", r.body);
    assert!(r.set_cookie().is_none());
    let r = s.send(Req::new("POST", &invite).form(&[("password", "short"), ("password2", "short")]));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("12 to 1024"), "{}", r.body);
    assert_eq!(s.sign_in("alice", "short").status, 401, "no password was set");
    let r = s.get(&invite);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Welcome, alice"));

    // Accepted: a session cookie that scripts cannot read and other sites cannot send.
    let r = s.send(Req::new("POST", &invite).form(&[("password", PASSWORD), ("password2", PASSWORD), ("key", "")]));
    assert_eq!(r.status, 303, "{r:?}");
    assert!(r.header("location").unwrap().starts_with("/keys"), "{r:?}");
    let set_cookie = r.set_cookie().expect("a session cookie");
    let attributes: Vec<String> = set_cookie.split(';').skip(1).map(|a| a.trim().to_ascii_lowercase()).collect();
    assert!(attributes.contains(&"httponly".to_string()), "{set_cookie}");
    assert!(attributes.contains(&"samesite=strict".to_string()), "{set_cookie}");
    assert!(attributes.contains(&"path=/".to_string()), "{set_cookie}");
    assert!(!attributes.contains(&"secure".to_string()), "cookie_secure = false: {set_cookie}");
    let cookie = r.session_cookie().unwrap();
    assert!(cookie.len() >= 32, "a long random id: {cookie}");
    let r = s.send(Req::new("GET", r.header("location").unwrap()).cookie(&cookie));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Signed in as <strong>alice</strong>"), "{}", r.body);
    assert!(r.body.contains("Password saved"), "{}", r.body);

    // Used up.
    let r = s.get(&invite);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(!r.body.contains("Welcome, alice"));
    let r = s.send(
        Req::new("POST", &invite).form(&[("password", "another password 1"), ("password2", "another password 1")]),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.set_cookie().is_none(), "{r:?}");
    assert_eq!(s.sign_in("alice", "another password 1").status, 401);
    assert_eq!(s.sign_in("alice", PASSWORD).status, 303);
    assert_eq!(s.get("/invite/not-a-real-invitation").status, 400);

    // An invitation can carry the first key.
    let (key, fp) = fresh_key("bob@desk");
    let invite = s.invite("bob");
    let r = s.send(Req::new("POST", &invite).form(&[
        ("password", PASSWORD),
        ("password2", PASSWORD),
        ("key", &format!("{key}\r\n")),
    ]));
    assert_eq!((r.status, r.header("location")), (303, Some("/keys?notice=added")), "{r:?}");
    assert_eq!(s.fingerprints(&t, "bob"), vec![fp]);
    // A refused key still sets the password, and says so.
    let invite = s.invite("alice");
    let r = s.send(Req::new("POST", &invite).form(&[
        ("password", PASSWORD),
        ("password2", PASSWORD),
        ("key", "ssh-dss AAAA"),
    ]));
    assert_eq!((r.status, r.header("location")), (303, Some("/keys?notice=key-refused")), "{r:?}");
}

#[test]
fn cookie_is_secure_by_default() {
    // An empty value leaves the key out of the config: the default applies.
    let s = Server::start(&["alice"], &[("cookie_secure", "")]);
    let invite = s.invite("alice");
    let r = s.send(Req::new("POST", &invite).form(&[("password", PASSWORD), ("password2", PASSWORD)]));
    assert_eq!(r.status, 303, "{r:?}");
    let set_cookie = r.set_cookie().unwrap();
    assert!(set_cookie.split(';').any(|a| a.trim().eq_ignore_ascii_case("secure")), "{set_cookie}");
}

#[test]
fn signin_makes_a_new_session_each_time_and_signout_ends_it() {
    let (s, _) = alice_and_bob(&[]);
    let from_invite = s.set_password("alice", PASSWORD);

    let r = s.sign_in("alice", PASSWORD);
    assert_eq!((r.status, r.header("location")), (303, Some("/keys")), "{r:?}");
    let first = r.session_cookie().unwrap();
    assert_ne!(first, from_invite);

    // A session id planted before sign-in is not the one after, and dies.
    let r = s.send(Req::new("POST", "/signin").cookie(&first).form(&[("user", "alice"), ("password", PASSWORD)]));
    assert_eq!(r.status, 303, "{r:?}");
    let second = r.session_cookie().unwrap();
    assert_ne!(second, first);
    let r = s.send(Req::new("GET", "/keys").cookie(&first));
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "the planted session ended");
    let planted = "attacker-chosen-session-id-0123456789abcdef";
    let r = s.send(Req::new("POST", "/signin").cookie(planted).form(&[("user", "alice"), ("password", PASSWORD)]));
    let third = r.session_cookie().unwrap();
    assert!(third != planted && third != second, "{third}");
    for cookie in [&from_invite, &second, &third] {
        assert_eq!(s.send(Req::new("GET", "/keys").cookie(cookie)).status, 200, "sessions side by side");
    }
    assert_eq!(s.send(Req::new("GET", "/keys").cookie(planted)).header("location"), Some("/signin"));

    // No redirect parameter: wherever asked to go, sign-in goes to /keys.
    let r = s.send(Req::new("POST", "/signin?next=https%3A%2F%2Fevil.example").form(&[
        ("user", "alice"),
        ("password", PASSWORD),
        ("next", "https://evil.example"),
        ("redirect", "//evil.example"),
        ("return_to", "https://evil.example/"),
    ]));
    assert_eq!((r.status, r.header("location")), (303, Some("/keys")), "{r:?}");
    let page = s.get("/signin?next=https%3A%2F%2Fevil.example");
    assert!(!page.body.contains("evil.example"), "{}", page.body);

    // Wrong password, unknown user: 401, the same page, no cookie.
    let wrong = s.sign_in("alice", "not the password");
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(wrong.set_cookie().is_none());
    assert!(wrong.body.contains("Wrong user name or password."));
    let unknown = s.sign_in("nobody", PASSWORD);
    assert_eq!((unknown.status, &unknown.body), (401, &wrong.body));
    let no_password = s.sign_in("bob", "");
    assert_eq!((no_password.status, &no_password.body), (401, &wrong.body));

    // Sign-out ends the session on the server, not just in the browser.
    let keys = s.send(Req::new("GET", "/keys").cookie(&third));
    let csrf = keys.csrf();
    let r = s.send(Req::new("POST", "/signout").cookie(&third).form(&[("csrf", "wrong")]));
    assert_eq!(r.status, 403, "sign-out needs the CSRF token: {r:?}");
    assert_eq!(s.send(Req::new("GET", "/keys").cookie(&third)).status, 200);
    let r = s.send(Req::new("POST", "/signout").cookie(&third).form(&[("csrf", &csrf)]));
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "{r:?}");
    let cleared = r.set_cookie().unwrap_or_default();
    assert!(cleared.starts_with("gh_session=;") || cleared.contains("Max-Age=0"), "{cleared}");
    let r = s.send(Req::new("GET", "/keys").cookie(&third));
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "old cookie no longer works");
    assert_eq!(s.send(Req::new("GET", "/keys").cookie(&second)).status, 200, "other sessions remain");
}

#[test]
fn signin_is_rate_limited() {
    let (s, statuses) = within_one_minute(|| {
        let s = Server::start(&["alice"], &[("signin_per_minute", "3")]);
        s.set_password("alice", PASSWORD);
        let statuses: Vec<u16> = (0..4).map(|_| s.sign_in("alice", "wrong password").status).collect();
        (s, statuses)
    });
    assert_eq!(statuses, [401, 401, 401, 429]);
    let r = s.sign_in("alice", PASSWORD);
    if r.status == 429 {
        assert!(r.set_cookie().is_none(), "the right password does not get past the limit: {r:?}");
        assert!(r.body.contains("too many requests"), "{}", r.body);
    }
}

#[test]
fn signin_is_rate_limited_per_account_and_per_client_behind_a_trusted_proxy() {
    let attempt = |s: &Server, user: &str, client: &str| {
        s.send(
            Req::new("POST", "/signin")
                .header("X-Forwarded-For", &format!("203.0.113.99, {client}"))
                .form(&[("user", user), ("password", "wrong password")]),
        )
        .status
    };
    let statuses = within_one_minute(|| {
        let s = Server::start(&["alice", "bob"], &[("signin_per_minute", "3"), ("trusted_proxies", "[\"127.0.0.1\"]")]);
        s.set_password("alice", PASSWORD);
        // One account from four addresses: the account's allowance ends it.
        let mut statuses: Vec<u16> = (1..=4).map(|i| attempt(&s, "alice", &format!("10.0.0.{i}"))).collect();
        statuses.push(attempt(&s, "bob", "10.0.0.5"));
        // One address (the proxy's last entry, not the client-written first) for four names.
        statuses.extend(["carol", "dave", "erin", "frank"].iter().map(|u| attempt(&s, u, "10.0.1.1")));
        statuses.push(attempt(&s, "grace", "10.0.1.2"));
        statuses
    });
    assert_eq!(statuses, [401, 401, 401, 429, 401, 401, 401, 401, 429, 401]);

    // Without trusted proxies the header means nothing: every attempt is 127.0.0.1's.
    let statuses = within_one_minute(|| {
        let s = Server::start(&["alice"], &[("signin_per_minute", "3")]);
        ["carol", "dave", "erin", "frank"]
            .iter()
            .enumerate()
            .map(|(i, u)| attempt(&s, u, &format!("10.0.2.{i}")))
            .collect::<Vec<u16>>()
    });
    assert_eq!(statuses, [401, 401, 401, 429]);
}

#[test]
fn keys_page_lists_keys_and_escapes_what_users_wrote() {
    let (s, t) = alice_and_bob(&[]);
    let cookie = s.set_password("alice", PASSWORD);
    let r = s.send(Req::new("GET", "/keys").cookie(&cookie));
    assert!(r.body.contains("No keys yet."), "{}", r.body);

    let (plain, plain_fp) = fresh_key("alice@laptop");
    s.cli_key_add("alice", &plain);
    let (evil, evil_fp) = fresh_key("<script>alert(1)</script>");
    assert_eq!(s.cli_key_add("alice", &evil), evil_fp);
    let (quote, _) = fresh_key("\"><img src=x onerror=alert(2)>");
    s.cli_key_add("alice", &quote);

    let r = s.send(Req::new("GET", "/keys").cookie(&cookie));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(&plain_fp) && r.body.contains(&evil_fp), "{}", r.body);
    assert!(r.body.contains("alice@laptop"));
    assert!(r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", r.body);
    assert!(!r.body.contains("<script"), "no raw <script>: {}", r.body);
    assert!(!r.body.contains("<img"), "{}", r.body);
    // Bob's keys are not on alice's page.
    let (bobs, bobs_fp) = fresh_key("bob@desk");
    s.cli_key_add("bob", &bobs);
    assert!(!s.send(Req::new("GET", "/keys").cookie(&cookie)).body.contains(&bobs_fp));

    // The removal page escapes too, and removal works.
    let r = s.send(Req::new("GET", &format!("/keys/remove?fp={}", enc(&evil_fp))).cookie(&cookie));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("&lt;script&gt;") && !r.body.contains("<script"), "{}", r.body);
    let csrf = r.csrf();
    let r = s.send(Req::new("POST", "/keys/remove").cookie(&cookie).form(&[("csrf", &csrf), ("fp", &evil_fp)]));
    assert_eq!((r.status, r.header("location")), (303, Some("/keys?notice=removed")), "{r:?}");
    assert!(!s.fingerprints(&t, "alice").contains(&evil_fp));

    // Another user's key, or odd text, is not found from alice's session.
    for fp in [bobs_fp.as_str(), "\"../", "SHA256:'\"<>", "../../etc/passwd"] {
        let r = s.send(Req::new("GET", &format!("/keys/remove?fp={}", enc(fp))).cookie(&cookie));
        assert_eq!(r.status, 404, "{fp}: {r:?}");
        let r = s.send(Req::new("POST", "/keys/remove").cookie(&cookie).form(&[("csrf", &csrf), ("fp", fp)]));
        assert_eq!(r.status, 404, "{fp}: {r:?}");
    }
    assert_eq!(s.fingerprints(&t, "bob"), vec![bobs_fp]);
}

#[test]
fn keys_form_refuses_cross_site_requests() {
    let (s, t) = alice_and_bob(&[]);
    let cookie = s.set_password("alice", PASSWORD);
    let csrf = s.send(Req::new("GET", "/keys").cookie(&cookie)).csrf();
    let (key, fp) = fresh_key("from the form");
    let post = || Req::new("POST", "/keys").cookie(&cookie);

    // Without the CSRF token (the status of a missing field: forms_without_a_csrf_field_are_403).
    let r = s.send(post().form(&[("key", &key)]));
    assert!((400..500).contains(&r.status) && r.status != 404, "{r:?}");
    for (what, req) in [
        ("empty token", post().form(&[("csrf", ""), ("key", &key)])),
        ("wrong token", post().form(&[("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), ("key", &key)])),
        ("another session's token", {
            let other = s.sign_in("alice", PASSWORD).session_cookie().unwrap();
            let other_csrf = s.send(Req::new("GET", "/keys").cookie(&other)).csrf();
            assert_ne!(other_csrf, csrf);
            post().form(&[("csrf", &other_csrf), ("key", &key)])
        }),
        ("foreign Origin", post().header("Origin", "https://evil.example").form(&[("csrf", &csrf), ("key", &key)])),
        ("Origin null", post().header("Origin", "null").form(&[("csrf", &csrf), ("key", &key)])),
        (
            "look-alike Origin",
            post().header("Origin", &format!("{}.evil.example", s.base)).form(&[("csrf", &csrf), ("key", &key)]),
        ),
        (
            "Sec-Fetch-Site cross-site",
            post().header("Sec-Fetch-Site", "cross-site").form(&[("csrf", &csrf), ("key", &key)]),
        ),
        (
            "Sec-Fetch-Site same-site",
            post().header("Sec-Fetch-Site", "same-site").form(&[("csrf", &csrf), ("key", &key)]),
        ),
        (
            "right Origin, cross-site fetch",
            post()
                .header("Origin", &s.base)
                .header("Sec-Fetch-Site", "cross-site")
                .form(&[("csrf", &csrf), ("key", &key)]),
        ),
    ] {
        let r = s.send(req);
        assert_eq!(r.status, 403, "{what}: {r:?}");
        assert!(r.header("location").is_none(), "{what}");
    }
    assert_eq!(s.fingerprints(&t, "alice"), Vec::<String>::new(), "nothing stored");
    // A cross-site sign-in form (login CSRF) is refused too.
    let r = s.send(
        Req::new("POST", "/signin")
            .header("Origin", "https://evil.example")
            .form(&[("user", "alice"), ("password", PASSWORD)]),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.set_cookie().is_none());
    let r = s.send(
        Req::new("POST", "/signout").cookie(&cookie).header("Sec-Fetch-Site", "cross-site").form(&[("csrf", &csrf)]),
    );
    assert_eq!(r.status, 403, "{r:?}");

    // Everything right, as a browser sends it.
    let r = s.send(post().header("Origin", &s.base).header("Sec-Fetch-Site", "same-origin").form(&[
        ("csrf", &csrf),
        ("key", &key),
        ("scope", "git"),
        ("expires", ""),
    ]));
    assert_eq!((r.status, r.header("location")), (303, Some("/keys?notice=added")), "{r:?}");
    let keys = s.api(&t, "GET", "/users/alice/keys", None).json();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!((keys[0]["fingerprint"].as_str(), keys[0]["source"].as_str()), (Some(fp.as_str()), Some("web")));
    assert_eq!(keys[0]["scope"], "git");
    let page = s.send(Req::new("GET", "/keys?notice=added").cookie(&cookie));
    assert!(page.body.contains(&fp) && page.body.contains("Key added."), "{}", page.body);

    // A key the store refuses comes back on the page with the reason, as 400/409.
    let r = s.send(post().form(&[("csrf", &csrf), ("key", &key)]));
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("Key not added: this key is already registered"), "{}", r.body);
    let r = s.send(post().form(&[("csrf", &csrf), ("key", &format!("restrict {key}"))]));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("options are not accepted"), "{}", r.body);
    // Clients that send neither Origin nor Sec-Fetch-Site (not browsers) need only the token.
    let (key2, fp2) = fresh_key("");
    let r = s.send(post().form(&[("csrf", &csrf), ("key", &key2)]));
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(s.fingerprints(&t, "alice"), vec![fp, fp2]);
}

#[test]
fn forms_without_a_csrf_field_are_403() {
    let (s, t) = alice_and_bob(&[]);
    let cookie = s.set_password("alice", PASSWORD);
    let (key, fp) = fresh_key("");
    let r = s.send(Req::new("POST", "/keys").cookie(&cookie).form(&[("key", &key)]));
    assert_eq!(r.status, 403, "POST /keys: {r:?}");
    assert_eq!(s.fingerprints(&t, "alice"), Vec::<String>::new());
    s.cli_key_add("alice", &key);
    let r = s.send(Req::new("POST", "/keys/remove").cookie(&cookie).form(&[("fp", &fp)]));
    assert_eq!(r.status, 403, "POST /keys/remove: {r:?}");
    let r = s.send(Req::new("POST", "/signout").cookie(&cookie).form(&[]));
    assert_eq!(r.status, 403, "POST /signout: {r:?}");
}

#[test]
fn page_forms_refuse_oversize_bodies_with_413() {
    let s = Server::start(&["alice"], &[("max_body", "4096")]);
    let r = s.send(Req::new("POST", "/signin").form(&[("user", "alice"), ("password", &"x".repeat(5000))]));
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.set_cookie().is_none());
}

#[test]
fn public_keys_file() {
    let (s, t) = alice_and_bob(&[]);
    let (k1, _) = fresh_key("laptop");
    let (k2, _) = fresh_key("<desk>");
    s.cli_key_add("alice", &k1);
    assert_eq!(s.api(&t, "POST", "/users/alice/keys", Some(&json!({"key": k2, "scope": "git"}))).status, 201);

    let r = s.get("/alice.keys");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        r.body,
        format!("ssh-ed25519 {}\nssh-ed25519 {}\n", blob_of(&k1), blob_of(&k2)),
        "keys without comments"
    );
    assert_eq!(s.get("/bob.keys").body, "", "a user without keys");
    assert_eq!(s.get("/bob.keys").status, 200);
    for path in [
        "/nobody.keys",
        "/alice.key",
        "/alice",
        "/Alice.keys",
        "/.keys",
        "/alice.keys.keys",
        "/..%2Falice.keys",
        "/%22.keys",
    ] {
        assert_eq!(s.get(path).status, 404, "{path}");
    }
    s.ok(&["user", "disable", "alice"]);
    assert_eq!(s.get("/alice.keys").status, 404, "a disabled user's keys are not served");
    s.ok(&["user", "enable", "alice"]);
    assert_eq!(s.get("/alice.keys").status, 200);
}

#[test]
fn public_keys_file_can_be_turned_off() {
    let s = Server::start(&["alice"], &[("public_keys", "false")]);
    let (key, _) = fresh_key("");
    s.cli_key_add("alice", &key);
    let r = s.get("/alice.keys");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!r.body.contains(blob_of(&key)));
}

#[test]
fn a_disabled_users_session_stops_working() {
    let (s, t) = alice_and_bob(&[]);
    let cookie = s.set_password("alice", PASSWORD);
    assert_eq!(s.send(Req::new("GET", "/keys").cookie(&cookie)).status, 200);

    s.ok(&["user", "disable", "alice"]);
    let r = s.send(Req::new("GET", "/keys").cookie(&cookie));
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "{r:?}");
    let (key, _) = fresh_key("");
    let r = s.send(Req::new("POST", "/keys").cookie(&cookie).form(&[("csrf", "x"), ("key", &key)]));
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(s.sign_in("alice", PASSWORD).status, 401, "a disabled user cannot sign in");

    s.ok(&["user", "enable", "alice"]);
    let r = s.send(Req::new("GET", "/keys").cookie(&cookie));
    assert_eq!(r.header("location"), Some("/signin"), "the old session stays ended after enabling");
    let cookie = s.sign_in("alice", PASSWORD).session_cookie().unwrap();
    assert_eq!(s.send(Req::new("GET", "/keys").cookie(&cookie)).status, 200);

    // Disabling through the API ends sessions as well.
    assert_eq!(s.api(&t, "PATCH", "/users/alice", Some(&json!({"state": "disabled"}))).status, 200);
    assert_eq!(s.send(Req::new("GET", "/keys").cookie(&cookie)).header("location"), Some("/signin"));
    assert_eq!(s.fingerprints(&t, "alice"), Vec::<String>::new());
}

#[test]
fn a_removed_users_password_does_not_pass_to_a_new_user_of_that_name() {
    let (s, t) = alice_and_bob(&[]);
    s.set_password("alice", PASSWORD);
    assert_eq!(s.api(&t, "DELETE", "/users/alice", None).status, 204);
    assert_eq!(s.api(&t, "POST", "/users", Some(&json!({"name": "alice"}))).status, 201);
    let r = s.sign_in("alice", PASSWORD);
    assert_eq!(r.status, 401, "{r:?}");
}

#[test]
fn a_removed_users_invitation_does_not_pass_to_a_new_user_of_that_name() {
    let (s, _) = alice_and_bob(&[]);
    let invite = s.invite("alice");
    s.ok(&["user", "remove", "alice"]);
    s.ok(&["user", "add", "alice"]);
    let r = s.get(&invite);
    assert_eq!(r.status, 400, "{r:?}");
}

#[test]
fn a_removed_users_token_does_not_pass_to_a_new_user_of_that_name() {
    let (s, t) = alice_and_bob(&[]);
    let (_, old) = s.token("user:alice");
    assert_eq!(s.api(&t, "DELETE", "/users/alice", None).status, 204);
    assert_eq!(s.api(&t, "POST", "/users", Some(&json!({"name": "alice"}))).status, 201);
    let r = s.api(&old, "GET", "/users/alice/keys", None);
    assert_eq!(r.status, 401, "{r:?}");
}

#[test]
fn sessions_end_after_session_max() {
    let s = Server::start(&["alice"], &[("session_max", "\"2s\"")]);
    let cookie = s.set_password("alice", PASSWORD);
    assert_eq!(s.send(Req::new("GET", "/keys").cookie(&cookie)).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let r = s.send(Req::new("GET", "/keys").cookie(&cookie));
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Sign-in by a trusted reverse proxy
// ---------------------------------------------------------------------------------------

const PROXY_SECRET: &str = "proxy-secret-0123456789abcdef";

/// A root-owned (or our own) 0600 file holding the proxy secret, and its folder.
fn proxy_secret_file() -> (common::TestDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::TestDir::new("proxy");
    let path = dir.join("proxy.secret");
    std::fs::write(&path, format!("{PROXY_SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shown = format!("\"{}\"", path.display());
    (dir, shown)
}

/// A request as the proxy passes it on: the user it authenticated, and the shared secret.
fn proxied(method: &str, path: &str, user: &str, secret: &str) -> Req {
    Req::new(method, path).header("X-Remote-User", user).header("X-Gatehouse-Proxy-Secret", secret)
}

fn via_proxy(path: &str, user: &str, secret: &str) -> Req {
    proxied("GET", path, user, secret)
}

/// `[web]` settings for a proxy that signs users in with X-Remote-User from the addresses
/// in `trusted` (a TOML array).
fn proxy_settings<'a>(secret_file: &'a str, trusted: &'a str) -> [(&'static str, &'a str); 3] {
    [("proxy_user_header", "\"X-Remote-User\""), ("proxy_secret_file", secret_file), ("trusted_proxies", trusted)]
}

#[test]
fn proxy_sign_in_needs_the_secret_and_a_trusted_address() {
    // Without proxy configuration the headers mean nothing.
    let (s, _) = alice_and_bob(&[]);
    let r = s.send(via_proxy("/keys", "alice", PROXY_SECRET));
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "{r:?}");
    drop(s);

    let (_secret_dir, secret_file) = proxy_secret_file();
    let (s, t) = alice_and_bob(&proxy_settings(&secret_file, r#"["127.0.0.1"]"#));
    let r = s.send(via_proxy("/keys", "alice", PROXY_SECRET));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Signed in as <strong>alice</strong>"), "{}", r.body);
    let csrf = r.csrf();
    for (what, req) in [
        ("wrong secret", via_proxy("/keys", "alice", "proxy-secret-0123456789abcdeX")),
        ("empty secret", via_proxy("/keys", "alice", "")),
        ("no secret", Req::new("GET", "/keys").header("X-Remote-User", "alice")),
        ("secret with a prefix", via_proxy("/keys", "alice", &format!("x{PROXY_SECRET}"))),
        ("bad user name", via_proxy("/keys", "alice\"><script>", PROXY_SECRET)),
    ] {
        let r = s.send(req);
        assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "{what}: {r:?}");
    }
    // A proxy form post: the CSRF token is bound to the user and the secret.
    let (key, fp) = fresh_key("via proxy");
    let post =
        |csrf: &str, user: &str| proxied("POST", "/keys", user, PROXY_SECRET).form(&[("csrf", csrf), ("key", &key)]);
    let bobs_csrf = s.send(via_proxy("/keys", "bob", PROXY_SECRET)).csrf();
    assert_ne!(bobs_csrf, csrf);
    assert_eq!(s.send(post(&bobs_csrf, "alice")).status, 403, "another user's token");
    assert_eq!(s.send(post(&csrf, "alice")).status, 303);
    assert_eq!(s.fingerprints(&t, "alice"), vec![fp]);
    drop(s);

    // From an address that is not the proxy's, the headers are ignored.
    let (s, _) = alice_and_bob(&proxy_settings(&secret_file, r#"["192.0.2.1"]"#));
    let r = s.send(via_proxy("/keys", "alice", PROXY_SECRET));
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "{r:?}");
}

#[test]
fn proxy_sign_in_of_a_disabled_user_changes_nothing() {
    let (_secret_dir, secret_file) = proxy_secret_file();
    let (s, t) = alice_and_bob(&proxy_settings(&secret_file, r#"["127.0.0.1"]"#));
    let csrf = s.send(via_proxy("/keys", "alice", PROXY_SECRET)).csrf();
    s.ok(&["user", "disable", "alice"]);
    let (key, _) = fresh_key("");
    let r = s.send(proxied("POST", "/keys", "alice", PROXY_SECRET).form(&[("csrf", &csrf), ("key", &key)]));
    assert_ne!(r.status, 303, "{r:?}");
    assert_eq!(s.fingerprints(&t, "alice"), Vec::<String>::new());
    let r = s.send(via_proxy("/keys", "alice", PROXY_SECRET));
    assert_ne!(r.status, 200, "{r:?}");
    // A user the store does not know gets no page either.
    let r = s.send(via_proxy("/keys", "nobody", PROXY_SECRET));
    assert_ne!(r.status, 200, "{r:?}");
}

#[test]
fn removing_a_user_through_the_api_ends_their_sessions() {
    let (s, t) = alice_and_bob(&[]);
    let cookie = s.set_password("bob", PASSWORD);
    assert_eq!(s.api(&t, "DELETE", "/users/bob", None).status, 204);
    assert_eq!(s.api(&t, "POST", "/users", Some(&json!({"name": "bob"}))).status, 201);
    let r = s.send(Req::new("GET", "/keys").cookie(&cookie));
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "{r:?}");
}

#[test]
fn a_removed_users_session_does_not_pass_to_a_new_user_of_that_name() {
    let (s, _) = alice_and_bob(&[]);
    let cookie = s.set_password("alice", PASSWORD);
    s.ok(&["user", "remove", "alice"]);
    s.ok(&["user", "add", "alice"]);
    let r = s.send(Req::new("GET", "/keys").cookie(&cookie));
    assert_eq!((r.status, r.header("location")), (303, Some("/signin")), "{r:?}");
}

#[test]
fn a_damaged_store_is_reported_as_damaged_not_busy() {
    let (s, t) = alice_and_bob(&[]);
    // Every page after the first (the schema, which the service has read) turned to noise
    // under the running service: the users' pages, which it has not read yet, are damaged.
    let store = s.dir.join("store.db");
    let mut bytes = std::fs::read(&store).unwrap();
    assert!(bytes.len() > 4096, "the store was checkpointed into its file");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[1];
    }
    std::fs::write(&store, &bytes).unwrap();
    let r = s.api(&t, "GET", "/users", None);
    let e = assert_json_error(&r, 503);
    assert!(e.contains("damaged") && !e.contains("busy"), "{e}");
}

#[test]
fn healthz_answers_and_readyz_follows_the_stores_write_lock() {
    let (s, _) = alice_and_bob(&[]);
    let r = s.get("/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = s.get("/readyz");
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
    // Another program holds the store's write lock: not ready (after the busy timeout),
    // and ready again once it lets go.
    let mut holder = std::process::Command::new("sqlite3")
        .arg(s.dir.join("store.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let stdin = holder.stdin.as_mut().unwrap();
    stdin.write_all(b"BEGIN IMMEDIATE;\nSELECT 1;\n").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = s.get("/readyz");
    assert_eq!((r.status, r.body.as_str()), (503, "not ready\n"), "ready while another writer holds the store");
    let r = s.get("/healthz");
    assert_eq!(r.status, 200, "the process still answers");
    stdin.write_all(b"ROLLBACK;\n.quit\n").unwrap();
    holder.wait().unwrap();
    let r = s.get("/readyz");
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
}
