//! Request bodies and query strings of gatehoused, read as axum reads them (`Json`, `Form`,
//! `Query`), then put through the checks their handlers run before the store is touched.
//!
//! The first byte picks the request (see `TAGS`); the rest is the body, so seeds read as
//! `k{"key": "ssh-ed25519 AAAA…"}` or `Kcsrf=…&key=…`.
#![no_main]

use axum::Json;
use gatehouse::admin::{Admin, AdminError, KeyOptions};
use gatehouse::config::Config;
use gatehouse::domain::Scope;
use gatehouse::log::Logger;
use gatehouse::store::sqlite::SqliteStore;
use gatehouse::store::{Actor, NewKey};
use gatehouse::time::Timestamp;
use gatehoused::handlers::{api, pages};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::cell::RefCell;
use std::sync::LazyLock;

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

/// API: u users, c user change, k key, g grant, r grant (query), a audit (query).
/// Pages: s sign-in, o sign-out, i invitation, K key, R key removal, n notice (query),
/// q removal (query). t: a token scope as `gatehouse token create --scope` takes it.
const TAGS: &[u8] = b"uckgrasoiKRnqt";

/// The defaults, and a site with a maximum key lifetime and a dotted name rule.
static CONFIGS: LazyLock<[Config; 2]> = LazyLock::new(|| {
    let site = "[keys]\nmax_lifetime = \"90d\"\nmin_rsa_bits = 2048\n\
                [users]\nname_pattern = \"^[a-z][a-z0-9._-]{0,31}$\"\n";
    [Config::default(), Config::parse("fuzz.toml", site).expect("the fuzz target's own config")]
});

/// `Admin::new_key` is the check the handlers run on a key; it reads nothing from the store,
/// but an `Admin` holds one, so each fuzzing process opens a scratch store and removes its
/// folder at once.
struct Scratch {
    store: SqliteStore,
    log: Logger,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new({
        let dir = std::env::temp_dir().join(format!("gatehouse-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        let store = SqliteStore::create(&dir.join("store.db"), 1000, gatehouse::config::UsersConfig::default().uid_range()).expect("a scratch store");
        let _ = std::fs::remove_dir_all(&dir);
        // No socket and no standard-error fallback: a fuzz run logs nothing.
        let log = gatehouse::config::LogConfig { socket: "/nonexistent".into(), ..Default::default() };
        Scratch { store, log: Logger::for_session("gatehouse-fuzz", &log) }
    });
}

fn new_key(config: &Config, text: &str, options: &KeyOptions, source: &str) -> Result<NewKey, AdminError> {
    SCRATCH.with_borrow_mut(|s| {
        let actor = Actor { name: "fuzz".to_string(), now: NOW };
        let admin = Admin { config, store: &mut s.store, actor, log: &mut s.log, columns: false };
        admin.new_key(text, options, source)
    })
}

fn check_key(config: &Config, text: &str, options: &KeyOptions, source: &str) {
    match new_key(config, text, options, source) {
        Ok(new) => {
            assert!(gatehouse::keys::is_fingerprint(&new.key.fingerprint));
            assert!(new.expires.is_none_or(|t| t > NOW), "{new:?}");
            if let (Some(life), Some(t)) = (config.keys.max_lifetime, new.expires) {
                assert!(t <= NOW.saturating_add(life), "{new:?}");
            }
            assert!(new.from.as_deref().is_none_or(|f| gatehouse::keycmd::lines::valid_from_patterns(f).is_ok()));
            assert!(!new.key.comment.chars().any(|c| c.is_control() || gatehouse::keys::is_invisible(c)));
        }
        // Shown in a page or a JSON error, and logged.
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
}

/// A JSON body as axum's `Json` takes it, and its fields for the checks. serde's derive
/// also takes a struct as an array of its fields in order (`["carol", "git"]`), so those
/// are named here as the struct declares them.
fn json<T: DeserializeOwned>(body: &[u8], fields: &[&str]) -> Option<Value> {
    let _: Json<T> = Json::from_bytes(body).ok()?;
    match serde_json::from_slice(body).expect("what axum accepted is JSON") {
        Value::Array(values) => Some(Value::Object(fields.iter().map(|f| f.to_string()).zip(values).collect())),
        object => Some(object),
    }
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_string)
}

/// A form body or query string as axum's `Form` and `Query` take it, and its fields.
fn form<T: DeserializeOwned>(body: &[u8]) -> Option<Vec<(String, String)>> {
    serde_urlencoded::from_bytes::<T>(body).ok()?;
    Some(serde_urlencoded::from_bytes(body).expect("what axum accepted is a form"))
}

fn field(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn user_name(config: &Config, name: &str) {
    match gatehouse::names::check_with(config, name, |_| Ok(None)) {
        Ok(()) => assert!(config.valid_user_name(name) && !gatehouse::names::is_reserved(name)),
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
}

fn request(config: &Config, tag: u8, body: &[u8]) {
    match tag {
        b'u' => {
            if let Some(v) = json::<api::NewUser>(body, &["name", "policy", "port_forwarding"]) {
                user_name(config, &text(&v, "name").expect("name is required"));
            }
        }
        b'c' => {
            let _ = json::<api::UserChange>(body, &[]);
        }
        b'k' => {
            if let Some(v) = json::<api::NewKeyBody>(body, &["key", "scope", "expires", "from", "comment"]) {
                let options = KeyOptions {
                    scope: serde_json::from_value(v["scope"].clone()).expect("a scope axum accepted"),
                    expires: text(&v, "expires"),
                    from: text(&v, "from"),
                    comment: text(&v, "comment"),
                };
                check_key(config, &text(&v, "key").expect("key is required"), &options, "api");
            }
        }
        b'g' => {
            if let Some(v) = json::<api::GrantBody>(body, &["subject", "pattern", "access"]) {
                let subject = text(&v, "subject").expect("subject is required");
                user_name(config, subject.strip_prefix('@').unwrap_or(&subject));
                if let Ok(pattern) =
                    gatehouse::domain::repo::valid_pattern(&text(&v, "pattern").expect("pattern is required"))
                {
                    assert_eq!(gatehouse::domain::repo::valid_pattern(&pattern).as_ref(), Ok(&pattern));
                }
            }
        }
        b'r' => {
            let _ = form::<api::GrantRef>(body);
        }
        b'a' => {
            if let Some(since) = form::<api::AuditParams>(body).and_then(|p| field(&p, "since")) {
                if let Err(e) = gatehouse::time::parse_since(&since, NOW) {
                    assert!(!e.contains('\n'), "{e}");
                }
            }
        }
        b's' => {
            if let Some(user) = form::<pages::SigninForm>(body).and_then(|p| field(&p, "user")) {
                let _ = config.valid_user_name(&user);
            }
        }
        b'o' => {
            if let Some(p) = form::<pages::CsrfForm>(body) {
                let _ = gatehouse::store::secrets::same(&field(&p, "csrf").unwrap_or_default(), "expected-token");
            }
        }
        b'i' => {
            if let Some(key) = form::<pages::InviteForm>(body).and_then(|p| field(&p, "key")) {
                if !key.trim().is_empty() {
                    check_key(config, key.trim(), &KeyOptions::default(), "web");
                }
            }
        }
        b'K' => {
            if let Some(p) = form::<pages::AddKeyForm>(body) {
                let scope = match field(&p, "scope").filter(|s| !s.is_empty()).map(|s| s.parse::<Scope>()) {
                    Some(Err(e)) => {
                        assert!(!e.contains('\n'), "{e}");
                        return;
                    }
                    parsed => parsed.and_then(Result::ok),
                };
                let options = KeyOptions {
                    scope,
                    expires: field(&p, "expires").filter(|e| !e.is_empty()),
                    ..KeyOptions::default()
                };
                check_key(config, field(&p, "key").expect("key is required").trim(), &options, "web");
            }
        }
        b'R' => {
            let _ = form::<pages::RemoveForm>(body);
        }
        b'n' => {
            let _ = form::<pages::Notice>(body);
        }
        b'q' => {
            let _ = form::<pages::RemoveQuery>(body);
        }
        b't' => {
            if let Ok(text) = std::str::from_utf8(body) {
                match gatehouse::store::secrets::TokenScope::parse(text) {
                    Ok(scope) => {
                        assert_eq!(gatehouse::store::secrets::TokenScope::parse(&scope.as_string()), Ok(scope))
                    }
                    Err(e) => assert!(!e.contains('\n'), "{e}"),
                }
            }
        }
        _ => unreachable!("a tag from TAGS"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    let tag = if TAGS.contains(&tag) { tag } else { TAGS[usize::from(tag) % TAGS.len()] };
    for config in CONFIGS.iter() {
        request(config, tag, body);
    }
});
