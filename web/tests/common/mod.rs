//! Test harness for gatehoused: a private folder, a fresh store made with the real
//! `gatehouse` CLI, the real `gatehoused` on a free loopback port, and a small HTTP client
//! that hands back every status as a response. Each piece removes what it made when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64ct::Encoding as _;
use serde_json::Value;
use sha2::Digest as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "../../../tests/common/dirs.rs"]
mod dirs;
#[allow(unused_imports)]
pub use dirs::{is_root, unique, TestDir};

/// The admin CLI, built beside gatehoused in the same target folder.
pub fn cli_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_gatehoused")).with_file_name("gatehouse");
    assert!(
        path.is_file(),
        "{} is missing: the web tests drive the real `gatehouse` CLI; run cargo build --workspace first",
        path.display()
    );
    path
}

/// An HTTP response, read in full.
pub struct Resp {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `error` text of an API error body.
    pub fn error(&self) -> String {
        let v = self.json();
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "error body has one field: {}", self.body);
        v["error"].as_str().unwrap_or_else(|| panic!("no error text: {}", self.body)).to_string()
    }

    /// The value of the `gh_session` cookie this response sets, if any.
    pub fn session_cookie(&self) -> Option<String> {
        self.set_cookie().map(|c| c.split(';').next().unwrap()["gh_session=".len()..].to_string())
    }

    /// The whole `Set-Cookie` header for `gh_session`, if any.
    pub fn set_cookie(&self) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("gh_session="))
            .map(str::to_string)
    }

    /// The CSRF token in the page's forms.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).unwrap_or_else(|| panic!("no CSRF field in the page: {}", self.body));
        let rest = &self.body[start + marker.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.status, self.body)
    }
}

/// Percent-encodes everything but the unreserved characters (RFC 3986), for path
/// segments, query strings and form bodies alike.
pub fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An `application/x-www-form-urlencoded` body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// A request to send: method, path (with query), headers and an optional body.
pub struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Req {
    pub fn new(method: &str, path: &str) -> Req {
        Req { method: method.to_string(), path: path.to_string(), headers: Vec::new(), body: None }
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn bearer(self, token: &str) -> Req {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn cookie(self, session: &str) -> Req {
        self.header("Cookie", &format!("gh_session={session}"))
    }

    pub fn json(self, value: &Value) -> Req {
        self.body("application/json", serde_json::to_vec(value).unwrap())
    }

    pub fn form(self, pairs: &[(&str, &str)]) -> Req {
        self.body("application/x-www-form-urlencoded", form(pairs).into_bytes())
    }

    /// A body sent without any Content-Type header.
    pub fn raw_body(mut self, body: Vec<u8>) -> Req {
        self.body = Some(body);
        self
    }

    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Req {
        self.headers.push(("Content-Type".to_string(), content_type.to_string()));
        self.body = Some(body);
        self
    }
}

/// A running gatehoused with its own store; killed and cleaned up on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub base: String,
    pub config: PathBuf,
    agent: ureq::Agent,
    log: PathBuf,
    // Dropped last: the server is gone by then.
    pub dir: TestDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (bounded) until `port` accepts connections; the server's stderr on failure.
fn wait_listening(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("exited with {status}: {text}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("not listening on port {port} after 20 s"))
}

/// An agent that returns every status as a response and follows no redirect. Each request
/// gets its own connection: a server may close a kept-alive one after refusing a body it
/// did not read, and a POST on such a connection fails instead of being retried.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Server {
    /// A store with users `users` and a server whose `[web]` section has `web` on top of the
    /// test defaults (plain-HTTP cookies, a generous sign-in allowance).
    pub fn start(users: &[&str], web: &[(&str, &str)]) -> Server {
        let dir = TestDir::new("web");
        let config = dir.join("gatehouse.toml");
        let log = dir.join("gatehoused.log");
        let mut settings: Vec<(String, String)> =
            vec![("cookie_secure".into(), "false".into()), ("signin_per_minute".into(), "1000".into())];
        for (k, v) in web {
            settings.retain(|(key, _)| key != k);
            // An empty value leaves the key out: its default applies.
            if !v.is_empty() {
                settings.push((k.to_string(), v.to_string()));
            }
        }
        for attempt in 0.. {
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let mut text = format!(
                "[store]\npath = \"{}\"\n\n[log]\nsocket = \"{}\"\n\n[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n",
                dir.join("store.db").display(),
                dir.join("no-syslog.sock").display(),
            );
            for (k, v) in &settings {
                text.push_str(&format!("{k} = {v}\n"));
            }
            std::fs::write(&config, text).unwrap();
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
            if attempt == 0 {
                let out = run_cli(&config, &["init"], None);
                assert!(out.status.success(), "gatehouse init: {}", String::from_utf8_lossy(&out.stderr));
                for user in users {
                    let out = run_cli(&config, &["user", "add", user], None);
                    assert!(out.status.success(), "gatehouse user add: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
            let mut child = Command::new(env!("CARGO_BIN_EXE_gatehoused"))
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            match wait_listening(&mut child, port, &log) {
                Ok(()) => return Server { child, port, base, config, agent: agent(), log, dir },
                // Another process took the port between our probe and the bind.
                Err(text) if text.contains("cannot listen") && attempt < 5 => {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(text) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let hint = if text.contains("schema version") {
                        "\n(the gatehouse CLI and gatehoused were built from different sources: run cargo build --workspace first)"
                    } else {
                        ""
                    };
                    panic!("gatehoused did not start: {text}{hint}");
                }
            }
        }
        unreachable!()
    }

    /// Runs the admin CLI against this server's store.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_cli(&self.config, args, None)
    }

    /// Runs the CLI; its stdout, trimmed. Panics with its stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "gatehouse {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Adds a key to `user` through the CLI (text on standard input); its fingerprint.
    pub fn cli_key_add(&self, user: &str, key: &str) -> String {
        let out = run_cli(&self.config, &["key", "add", user, "-"], Some(key.as_bytes()));
        assert!(out.status.success(), "gatehouse key add: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A new API token; returns (id, token).
    pub fn token(&self, scope: &str) -> (i64, String) {
        let out = self.cli(&["token", "create", "--scope", scope]);
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let stderr = String::from_utf8(out.stderr).unwrap();
        // "token N created; …" (the CLI's log lines may come first, where no syslog answers).
        let id = stderr
            .lines()
            .find(|l| l.starts_with("token "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no token id in {stderr:?}"));
        (id, token)
    }

    /// The path part of an invitation link printed by `gatehouse user invite`.
    pub fn invite(&self, user: &str) -> String {
        let link = self.ok(&["user", "invite", user]);
        let path = link.strip_prefix(&self.base).unwrap_or_else(|| panic!("link {link:?} is not under {}", self.base));
        assert!(path.starts_with("/invite/"), "{link}");
        path.to_string()
    }

    /// Gives `user` a web password through an invitation; returns the session it starts.
    pub fn set_password(&self, user: &str, password: &str) -> String {
        let path = self.invite(user);
        let r = self.send(Req::new("POST", &path).form(&[("password", password), ("password2", password)]));
        assert_eq!(r.status, 303, "invite accepted: {r:?}");
        r.session_cookie().expect("a session cookie after the invitation")
    }

    /// Signs in with the form; the response (303 with a cookie on success).
    pub fn sign_in(&self, user: &str, password: &str) -> Resp {
        self.send(Req::new("POST", "/signin").form(&[("user", user), ("password", password)]))
    }

    pub fn send(&self, req: Req) -> Resp {
        let mut builder =
            ureq::http::Request::builder().method(req.method.as_str()).uri(format!("{}{}", self.base, req.path));
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let result = match req.body {
            Some(body) => self.agent.run(builder.body(body).unwrap()),
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let mut response =
            result.unwrap_or_else(|e| panic!("{} {}: {e} (server log: {})", req.method, req.path, self.server_log()));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Resp { status, headers, body }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.send(Req::new("GET", path))
    }

    /// An API call with a bearer token, and a JSON body when given.
    pub fn api(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let mut req = Req::new(method, &format!("/api/v1{path}")).bearer(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req)
    }

    /// The fingerprints of `user`'s keys, as the API lists them.
    pub fn fingerprints(&self, token: &str, user: &str) -> Vec<String> {
        let r = self.api(token, "GET", &format!("/users/{user}/keys"), None);
        assert_eq!(r.status, 200, "{r:?}");
        r.json().as_array().unwrap().iter().map(|k| k["fingerprint"].as_str().unwrap().to_string()).collect()
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_cli(config: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = Command::new(cli_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = input {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// A fresh, well-formed ed25519 public key line and its SHA256 fingerprint. The 32 key
/// bytes are a hash of a counter; the store checks form, not that the point is usable.
pub fn fresh_key(comment: &str) -> (String, String) {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let seed = format!("{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let point = sha2::Sha256::digest(seed.as_bytes());
    let mut blob = Vec::new();
    for part in [&b"ssh-ed25519"[..], &point[..]] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    let line = format!("ssh-ed25519 {} {comment}", base64ct::Base64::encode_string(&blob));
    let fingerprint = format!("SHA256:{}", base64ct::Base64Unpadded::encode_string(&sha2::Sha256::digest(&blob)));
    (line.trim_end().to_string(), fingerprint)
}

/// The base64 part of a key line.
pub fn blob_of(line: &str) -> &str {
    line.split(' ').nth(1).unwrap()
}
