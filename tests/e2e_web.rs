//! End-to-end through a real browser: headless Chromium, driven by chromedriver over the W3C
//! WebDriver protocol (plain JSON over HTTP), takes an invitation from the real gatehoused,
//! adds a key on the key page, logs in with it over the real test sshd, removes it again and
//! is refused. Needs root (creates users, starts sshd), Debian's chromium and chromium-driver,
//! and gatehoused built (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key under which WebDriver returns a reference to an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The longest any one wait (for the driver, an element, a text) may take.
const WAIT: Duration = Duration::from_secs(15);

/// Skips (outside CI) or fails (under CI) when the browser is not installed.
macro_rules! require_browser {
    () => {
        if !Path::new(CHROMIUM).is_file() || !Path::new(CHROMEDRIVER).is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{CHROMIUM} or {CHROMEDRIVER} is missing; CI installs chromium and chromium-driver (.ci/run)"
            );
            eprintln!("SKIPPED: needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)");
            return;
        }
    };
}

/// What WebDriver answered a failed command with.
#[derive(Debug)]
struct DriverError {
    status: u16,
    error: String,
    message: String,
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}: {}", self.status, self.error, self.message)
    }
}

/// The reference in a found element.
fn element_id(found: &Value) -> String {
    found[ELEMENT].as_str().unwrap_or_else(|| panic!("not an element: {found}")).to_string()
}

/// A headless Chromium session under a chromedriver of its own. chromedriver runs in a new
/// process group, which Chromium and its helpers join; drop ends the session, then kills
/// the group.
struct Browser {
    agent: ureq::Agent,
    driver: Child,
    /// `http://127.0.0.1:PORT` of chromedriver.
    base: String,
    session: String,
    log: PathBuf,
    /// A fresh `--user-data-dir`.
    profile: TestDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port (logging into `log_dir`) and opens a
    /// session with a fresh profile.
    fn start(log_dir: &Path) -> Browser {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .proxy(None)
            .build()
            .into();
        let log = log_dir.join("chromedriver.log");
        for _ in 0..5 {
            let port = free_port();
            let out = std::fs::File::create(&log).unwrap();
            let driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            let mut browser = Browser {
                agent: agent.clone(),
                driver,
                base: format!("http://127.0.0.1:{port}"),
                session: String::new(),
                log: log.clone(),
                profile: TestDir::new("chrome"),
            };
            if browser.wait_ready() {
                browser.open_session();
                return browser;
            }
            // Another process took the port first; chromedriver exited, try another.
        }
        panic!("chromedriver did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// Waits until chromedriver says it is ready; false if it exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.driver.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(mut response) = self.agent.get(format!("{}/status", self.base)).call() {
                let status: Value = response.body_mut().read_json().unwrap_or(Value::Null);
                if status["value"]["ready"] == json!(true) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chromedriver not ready within {WAIT:?}: {}", self.log_text());
    }

    fn open_session(&mut self) {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", self.profile.path.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"implicit": 0, "pageLoad": WAIT.as_millis() as u64, "script": WAIT.as_millis() as u64},
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = self
            .send("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| panic!("no browser session: {e}\n{}", self.log_text()));
        self.session = created["sessionId"].as_str().expect("sessionId").to_string();
        // Wide enough for the key table in the screenshot.
        self.post("/window/rect", json!({"width": 1280, "height": 900}));
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One WebDriver command; `path` is relative to chromedriver's root.
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, DriverError> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or_else(|| json!({}))),
        };
        let mut response = response.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}\n{}", self.log_text()));
        let status = response.status().as_u16();
        let answer: Value =
            response.body_mut().read_json().unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if status == 200 {
            return Ok(value);
        }
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
        Err(DriverError { status, error: text("error"), message: text("message") })
    }

    /// A command in this session that must succeed.
    fn session_command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        self.send(method, &full, body).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn get(&self, path: &str) -> Value {
        self.session_command("GET", path, None)
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.session_command("POST", path, Some(body))
    }

    fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    /// A string-valued command in this session, or the error as text (for diagnostics,
    /// and for polls that ask again).
    fn string(&self, path: &str) -> Result<String, String> {
        let full = format!("/session/{}{path}", self.session);
        match self.send("GET", &full, None) {
            Ok(v) => Ok(v.as_str().unwrap_or_default().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn url(&self) -> String {
        self.string("/url").unwrap_or_else(|e| e)
    }

    fn source(&self) -> String {
        self.string("/source").unwrap_or_else(|e| e)
    }

    /// The first element `using` (a W3C locator strategy) finds, waiting for it to appear.
    /// Every failure in a poll is asked again: while a page is replaced, chromedriver
    /// answers with several kinds of error.
    fn find(&self, using: &str, value: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let path = format!("/session/{}/element", self.session);
        loop {
            match self.send("POST", &path, Some(json!({"using": using, "value": value}))) {
                Ok(found) => return element_id(&found),
                Err(e) if Instant::now() > deadline => {
                    panic!("{using} {value:?} not found ({e}) on {}:\n{}", self.url(), self.source())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn css(&self, selector: &str) -> String {
        self.find("css selector", selector)
    }

    fn type_into(&self, element: &str, text: &str) {
        self.post(&format!("/element/{element}/value"), json!({ "text": text }));
    }

    fn click(&self, element: &str) {
        self.post(&format!("/element/{element}/click"), json!({}));
    }

    /// The page's visible text, through the `body` element.
    fn text(&self) -> Result<String, String> {
        let find = format!("/session/{}/element", self.session);
        let body = self
            .send("POST", &find, Some(json!({"using": "css selector", "value": "body"})))
            .map_err(|e| e.to_string())?;
        self.string(&format!("/element/{}/text", element_id(&body)))
    }

    /// The page's visible text once it contains `needle` (navigation may still be under
    /// way after a click).
    fn wait_for_text(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.text() {
                Ok(text) if text.contains(needle) => return text,
                Ok(text) => last = text,
                Err(e) => last = format!("(not read: {e})"),
            }
            // The service's error page will not turn into the awaited one: say so at once.
            if self.string("/title").is_ok_and(|t| t.starts_with("Error")) {
                panic!("waiting for {needle:?}, got an error page at {}:\n{}", self.url(), self.source());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{needle:?} did not appear within {WAIT:?} on {}; the page says:\n{last}\nits source:\n{}",
            self.url(),
            self.source()
        );
    }

    /// A PNG of the viewport.
    fn screenshot(&self) -> Vec<u8> {
        use base64ct::Encoding as _;
        let encoded = self.get("/screenshot");
        base64ct::Base64::decode_vec(encoded.as_str().expect("base64 screenshot")).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Closes Chromium; bounded by the agent's timeout.
            let _ = self.send("DELETE", &format!("/session/{}", self.session), None);
        }
        // Whatever is left of chromedriver's group, Chromium's helpers included.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn invitation_key_page_login_and_removal_in_a_browser() {
    require_root!();
    require_browser!();
    assert!(
        Gatehoused::binary().is_file(),
        "{} is missing: run cargo build --workspace --bins first (scripts/test does)",
        Gatehoused::binary().display()
    );
    let port = free_port();
    let gh = Gatehouse::new("web", &web_config(port));
    gh.init(None);
    let sshd = Sshd::start(&gh, "");
    let web = Gatehoused::start(&gh, port);
    let alice = sshd.user(&gh, &[]);
    let key = keygen(&gh.dir.path, "ed25519");
    let browser = Browser::start(&gh.dir.path);

    // The invitation link the CLI prints points at the web service.
    let link = gh.ok(&["user", "invite", &alice.name]).trim().to_string();
    assert!(link.starts_with(&format!("{}/invite/", web.url)), "invite link: {link}");
    browser.goto(&link);
    browser.wait_for_text(&format!("Welcome, {}", alice.name));
    let password = "correct horse battery staple";
    let field = browser.css("#password");
    browser.type_into(&field, password);
    let field = browser.css("#password2");
    browser.type_into(&field, password);
    // The optional key stays empty: it is added on the key page below.
    let save = browser.find("xpath", "//button[normalize-space()='Save']");
    browser.click(&save);
    let page = browser.wait_for_text("Password saved. Add your SSH public key below.");
    assert!(page.contains(&format!("Signed in as {}", alice.name)), "{page}");
    assert!(page.contains("No keys yet."), "{page}");
    assert!(browser.url().starts_with(&format!("{}/keys", web.url)), "{}", browser.url());

    // Add the key for shell use.
    let textarea = browser.css("textarea#key");
    browser.type_into(&textarea, &key.public);
    let shell = browser.css("#scope option[value='shell']");
    browser.click(&shell);
    let add = browser.find("xpath", "//button[normalize-space()='Add key']");
    browser.click(&add);
    let page = browser.wait_for_text("Key added. It works on the next SSH login.");
    assert!(page.contains(&key.fingerprint), "fingerprint {} not shown:\n{page}", key.fingerprint);
    let row = browser.find("xpath", &format!("//tr[.//code[normalize-space()='{}']]", key.fingerprint));
    let row_text = browser.get(&format!("/element/{row}/text"));
    assert!(row_text.as_str().unwrap_or_default().contains("shell"), "{row_text}");

    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
    let shot = gh.dir.join("keys-page.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(std::fs::metadata(&shot).unwrap().len() > 8, "empty screenshot");

    // The key logs in over ssh at once.
    let out = sshd.ssh(&alice.name, &key.private, &["echo", "web:$((6*7))"]);
    assert!(out.status.success(), "login failed: {}\nsshd: {}", stderr(&out), sshd.log_text());
    assert_eq!(stdout(&out).trim(), "web:42");

    // Remove it: the link goes to a confirmation page, its button removes.
    let remove = browser.find(
        "xpath",
        &format!("//tr[.//code[normalize-space()='{}']]//a[normalize-space()='Remove']", key.fingerprint),
    );
    browser.click(&remove);
    let page = browser.wait_for_text("Remove this key?");
    assert!(page.contains(&key.fingerprint), "{page}");
    let confirm = browser.css("#confirm-remove");
    browser.click(&confirm);
    let page = browser.wait_for_text("Key removed. It no longer logs in.");
    assert!(!page.contains(&key.fingerprint), "the removed key is still listed:\n{page}");
    assert!(page.contains("No keys yet."), "{page}");

    let out = sshd.ssh(&alice.name, &key.private, &["true"]);
    assert_eq!(out.status.code(), Some(255), "removed key still logs in: {}", stdout(&out));
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));

    // Both changes were logged as made by alice through the web.
    let logged = gh.log.drain().join("\n");
    let actor = format!("actor=web:{}@127.0.0.1", alice.name);
    for action in ["key.add", "key.remove"] {
        let line = format!("{actor} action={action} user={} fingerprint={}", alice.name, key.fingerprint);
        assert!(logged.contains(&line), "no `{line}` in the log:\n{logged}");
    }
}
