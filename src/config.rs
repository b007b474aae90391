//! gatehouse.toml: read into raw structs that reject unknown keys, then validated into a
//! typed [`Config`] with defaults. Every error names the file, the line and the key.

use crate::domain::Scope;
use crate::time;
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

pub const DEFAULT_PATH: &str = "/etc/gatehouse/gatehouse.toml";
pub const DEFAULT_STORE: &str = "/var/lib/gatehouse/store.db";
pub const DEFAULT_SHELL: &str = "/usr/bin/gatehouse-shell";
/// Whether `path` names gatehouse-shell (in any folder): as a login shell it must not be
/// started as the shell it starts.
pub fn is_gatehouse_shell(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "gatehouse-shell")
}

/// Whether an account with login shell `shell` reaches gatehouse-shell before any other
/// shell: it is gatehouse-shell (`shell.path`, or a program of that name).
pub fn login_shell_is_ours(config: &Config, shell: &Path) -> bool {
    shell == Path::new(&config.shell_path) || is_gatehouse_shell(shell)
}

/// What gatehouse-shell, as the login shell, starts for shell-policy sessions.
pub const DEFAULT_LOGIN_SHELL: &str = "/bin/bash";
pub const DEFAULT_NAME_PATTERN: &str = "^[a-z_][a-z0-9_-]{0,31}$";
pub const DEFAULT_LOG_SOCKET: &str = "/dev/log";
/// The highest uid `users.uid_max` may name (the largest uid every tool handles signed).
pub const MAX_UID: u32 = i32::MAX as u32;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<RawStore>,
    shell: Option<RawShell>,
    keys: Option<RawKeys>,
    users: Option<RawUsers>,
    forwarding: Option<RawForwarding>,
    log: Option<RawLog>,
    git: Option<RawGit>,
    sftp: Option<RawProgram>,
    rsync: Option<RawProgram>,
    web: Option<RawWeb>,
    state: Option<RawState>,
    lockout: Option<RawLockout>,
    jail: Option<RawJail>,
    ldap: Option<RawLdap>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: Spanned<String>,
    starttls: Option<bool>,
    insecure: Option<bool>,
    ca_file: Option<Spanned<String>>,
    bind_dn: Option<Spanned<String>>,
    bind_password_file: Option<Spanned<String>>,
    base_dn: Spanned<String>,
    user_filter: Option<Spanned<String>>,
    user_attribute: Option<Spanned<String>>,
    key_attribute: Option<Spanned<String>>,
    group_filter: Option<Spanned<String>>,
    group_member_attribute: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    staleness_max: Option<Spanned<String>>,
    allow_web_keys: Option<bool>,
    max_disable_percent: Option<Spanned<i64>>,
    program: Option<Spanned<String>>,
}

/// The `[ldap]` section: where users, keys and passwords come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapConfig {
    pub url: String,
    /// Upgrade `ldap://` with StartTLS (default), so nothing crosses the network in clear.
    pub starttls: bool,
    /// Allow plain `ldap://` to a host other than loopback, and skip certificate checks.
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: String,
    pub user_filter: String,
    pub user_attribute: String,
    pub key_attribute: String,
    pub group_filter: String,
    pub group_member_attribute: String,
    pub timeout_ms: u64,
    pub staleness_max: i64,
    pub allow_web_keys: bool,
    /// A full sync that would disable more than this share of the enabled directory users
    /// is refused: a directory that answers with part of itself must not lock out the rest.
    pub max_disable_percent: u32,
    /// `gatehouse-ldap`, which pam_gatehouse runs to check a directory password.
    pub program: PathBuf,
}

fn ldap_attribute_ok(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn parse_ldap(at: &Located<'_>, raw: RawLdap) -> Result<LdapConfig, ConfigError> {
    let url = raw.url.get_ref().clone();
    let scheme_ok = url.starts_with("ldaps://") || url.starts_with("ldap://");
    if !scheme_ok || url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return at.error(&raw.url.span(), "ldap.url", "must be an ldaps:// or ldap:// URL");
    }
    let insecure = raw.insecure.unwrap_or(false);
    let starttls = raw.starttls.unwrap_or(true);
    // host[:port] after the scheme; no user part is allowed (it would hide the real host).
    let authority = url.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("");
    if authority.contains('@') {
        return at.error(&raw.url.span(), "ldap.url", "must not hold a user name; use ldap.bind_dn");
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if url.starts_with("ldap://") && !starttls && !insecure && !loopback {
        return at.error(
            &raw.url.span(),
            "ldap.url",
            "plain ldap:// without StartTLS is allowed only on loopback or with ldap.insecure = true",
        );
    }
    let text =
        |v: Option<Spanned<String>>, default: &str| v.map(Spanned::into_inner).unwrap_or_else(|| default.to_string());
    let path = |v: Option<Spanned<String>>, key: &str| -> Result<Option<PathBuf>, ConfigError> {
        match v {
            Some(p) if p.get_ref().starts_with('/') => Ok(Some(PathBuf::from(p.into_inner()))),
            Some(p) => at.error(&p.span(), key, "must be an absolute path"),
            None => Ok(None),
        }
    };
    let filter_ok = |f: &Spanned<String>| f.get_ref().starts_with('(') && f.get_ref().ends_with(')');
    for (f, key) in [(&raw.user_filter, "ldap.user_filter"), (&raw.group_filter, "ldap.group_filter")] {
        if let Some(f) = f {
            if !filter_ok(f) {
                return at.error(&f.span(), key, "must be an LDAP filter in parentheses");
            }
        }
    }
    for (a, key) in [
        (&raw.user_attribute, "ldap.user_attribute"),
        (&raw.key_attribute, "ldap.key_attribute"),
        (&raw.group_member_attribute, "ldap.group_member_attribute"),
    ] {
        if let Some(a) = a {
            if !ldap_attribute_ok(a.get_ref()) {
                return at.error(&a.span(), key, "must be an attribute name");
            }
        }
    }
    let duration = |v: Option<Spanned<String>>, key: &str, default: i64| -> Result<i64, ConfigError> {
        match v {
            Some(d) => time::parse_duration(d.get_ref()).or_else(|e| at.error(&d.span(), key, e)),
            None => Ok(default),
        }
    };
    let timeout_ms = match raw.timeout {
        Some(t) => {
            let text = t.get_ref();
            let ms = if let Some(ms) = text.strip_suffix("ms") {
                ms.parse::<u64>().ok()
            } else {
                time::parse_duration(text).ok().map(|s| s as u64 * 1000)
            };
            match ms {
                Some(ms) if (100..=60_000).contains(&ms) => ms,
                _ => return at.error(&t.span(), "ldap.timeout", "must be between 100ms and 60s, e.g. 2s or 500ms"),
            }
        }
        None => 2000,
    };
    if raw.bind_dn.is_some() != raw.bind_password_file.is_some() {
        return Err(ConfigError(format!(
            "{}: ldap.bind_dn and ldap.bind_password_file go together (neither: anonymous searches)",
            at.file
        )));
    }
    Ok(LdapConfig {
        url,
        starttls,
        insecure,
        ca_file: path(raw.ca_file, "ldap.ca_file")?,
        bind_dn: raw.bind_dn.map(Spanned::into_inner),
        bind_password_file: path(raw.bind_password_file, "ldap.bind_password_file")?,
        base_dn: raw.base_dn.into_inner(),
        user_filter: text(raw.user_filter, "(objectClass=posixAccount)"),
        user_attribute: text(raw.user_attribute, "uid"),
        key_attribute: text(raw.key_attribute, "sshPublicKey"),
        group_filter: text(raw.group_filter, "(objectClass=posixGroup)"),
        group_member_attribute: text(raw.group_member_attribute, "memberUid"),
        timeout_ms,
        staleness_max: duration(raw.staleness_max, "ldap.staleness_max", 24 * 3600)?,
        allow_web_keys: raw.allow_web_keys.unwrap_or(false),
        program: match path(raw.program, "ldap.program")? {
            Some(p) => p,
            None => PathBuf::from("/usr/bin/gatehouse-ldap"),
        },
        max_disable_percent: match raw.max_disable_percent {
            None => 10,
            Some(p) => match u32::try_from(*p.get_ref()) {
                Ok(v) if v <= 100 => v,
                _ => return at.error(&p.span(), "ldap.max_disable_percent", "must be between 0 and 100"),
            },
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    listen: Option<Spanned<String>>,
    secrets: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    public_keys: Option<bool>,
    cookie_secure: Option<bool>,
    session_idle: Option<Spanned<String>>,
    session_max: Option<Spanned<String>>,
    invite_lifetime: Option<Spanned<String>>,
    max_body: Option<Spanned<i64>>,
    signin_per_minute: Option<Spanned<i64>>,
    changes_per_minute: Option<Spanned<i64>>,
    proxy_user_header: Option<Spanned<String>>,
    proxy_secret_file: Option<Spanned<String>>,
    trusted_proxies: Option<Spanned<Vec<String>>>,
    header_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_peer: Option<Spanned<i64>>,
}

/// Where the web service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// The `[web]` section: gatehoused.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: Listen,
    pub secrets: PathBuf,
    pub public_url: String,
    pub public_keys: bool,
    pub cookie_secure: bool,
    pub session_idle: i64,
    pub session_max: i64,
    pub invite_lifetime: i64,
    pub max_body: usize,
    pub signin_per_minute: u32,
    pub changes_per_minute: u32,
    /// Trusted reverse-proxy sign-in: the header naming the user, the file holding the
    /// shared secret the proxy sends in `X-Gatehouse-Proxy-Secret`, and the addresses it
    /// connects from.
    pub proxy_user_header: Option<String>,
    pub proxy_secret_file: Option<PathBuf>,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Connection limits, in seconds and connections: the time to send a request's head,
    /// to send the next one on a kept-alive connection, and to be answered in all; the
    /// connections open at once in all, and from one address (other than a trusted proxy).
    pub header_timeout: i64,
    pub idle_timeout: i64,
    pub request_timeout: i64,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig {
            listen: Listen::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 8022))),
            secrets: PathBuf::from("/var/lib/gatehouse/web.db"),
            public_url: "http://127.0.0.1:8022".to_string(),
            public_keys: true,
            cookie_secure: true,
            session_idle: 30 * 60,
            session_max: 12 * 3600,
            invite_lifetime: 48 * 3600,
            max_body: 64 * 1024,
            signin_per_minute: 10,
            changes_per_minute: 30,
            proxy_user_header: None,
            proxy_secret_file: None,
            trusted_proxies: Vec::new(),
            header_timeout: 10,
            idle_timeout: 60,
            request_timeout: 30,
            max_connections: 512,
            max_connections_per_peer: 32,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGit {
    root: Option<Spanned<String>>,
    program: Option<Spanned<String>>,
    create_on_push: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    program: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<Spanned<String>>,
    busy_timeout_ms: Option<Spanned<i64>>,
    login_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShell {
    path: Option<Spanned<String>>,
    login_shell: Option<Spanned<String>>,
    require_login_shell: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    min_rsa_bits: Option<Spanned<i64>>,
    allowed_types: Option<Spanned<Vec<String>>>,
    max_per_user: Option<Spanned<i64>>,
    max_lifetime: Option<Spanned<String>>,
    banned: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsers {
    name_pattern: Option<Spanned<String>>,
    default_policy: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    data_mode: Option<Spanned<String>>,
    skeleton: Option<Spanned<String>>,
    quota: Option<Spanned<String>>,
    uid_min: Option<Spanned<i64>>,
    uid_max: Option<Spanned<i64>>,
    shell: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLockout {
    threshold: Option<Spanned<i64>>,
    window: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    sessions_per_minute: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJail {
    group: Option<Spanned<String>>,
    root: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwarding {
    permit_open: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    socket: Option<Spanned<String>>,
    stderr: Option<bool>,
}

/// The user-name rule: the default one is checked without compiling a regex, since the
/// key command runs it on every login.
#[derive(Debug, Clone)]
pub enum NamePattern {
    /// [`DEFAULT_NAME_PATTERN`].
    Default,
    Custom(regex_lite::Regex),
}

/// `^[a-z_][a-z0-9_-]{0,31}$`, by hand.
fn is_default_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z' | b'_'))
        && bytes.len() <= 32
        && bytes[1..].iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// Key families an operator can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Ed25519,
    Ecdsa,
    Rsa,
    SkEd25519,
    SkEcdsa,
}

impl KeyFamily {
    pub const ALL: [KeyFamily; 5] =
        [KeyFamily::Ed25519, KeyFamily::Ecdsa, KeyFamily::Rsa, KeyFamily::SkEd25519, KeyFamily::SkEcdsa];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyFamily::Ed25519 => "ed25519",
            KeyFamily::Ecdsa => "ecdsa",
            KeyFamily::Rsa => "rsa",
            KeyFamily::SkEd25519 => "sk-ed25519",
            KeyFamily::SkEcdsa => "sk-ecdsa",
        }
    }
}

/// The validated configuration every program works from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any; passed on to the forced command.
    pub source: Option<PathBuf>,
    pub store_path: PathBuf,
    pub busy_timeout_ms: u32,
    /// How long the login path (key command, forced command, PAM) waits for the store.
    pub login_timeout_ms: u32,
    pub shell_path: String,
    /// The shell a shell-policy session gets when gatehouse-shell is the account's login
    /// shell; `None` (set to "") refuses such sessions.
    pub login_shell: Option<PathBuf>,
    /// Refuse sessions without shell scope on accounts whose login shell is not
    /// gatehouse-shell: another shell runs its startup files before the forced command.
    pub require_login_shell: bool,
    pub min_rsa_bits: u32,
    pub allowed_types: Vec<KeyFamily>,
    pub max_keys_per_user: u32,
    pub max_key_lifetime: Option<i64>,
    /// A file of banned keys (fingerprints or key lines), checked when a key is added.
    pub banned_keys: Option<PathBuf>,
    pub name_pattern: NamePattern,
    pub name_pattern_text: String,
    pub default_policy: Scope,
    pub permit_open: Vec<String>,
    pub log_socket: PathBuf,
    pub log_stderr: bool,
    /// `%u` stands for the user name.
    pub data_dir: String,
    pub git_root: PathBuf,
    pub git_program: PathBuf,
    pub git_create_on_push: bool,
    pub sftp_program: PathBuf,
    pub rsync_program: PathBuf,
    pub web: WebConfig,
    /// The root side's state file (logins, failures, lockouts, last use of keys).
    pub state_path: PathBuf,
    /// A group that may read the state file (0640); none: root alone (0600).
    pub state_group: Option<String>,
    /// Mode of a newly created data folder.
    pub data_mode: u32,
    /// Files copied into a newly created data folder.
    pub skeleton: Option<PathBuf>,
    /// Block quota for a new data folder, as `setquota` takes it (e.g. `50G`).
    pub quota: Option<String>,
    /// UIDs `gatehouse provision` may create and change.
    pub uid_range: (u32, u32),
    /// Login shell of provisioned accounts without shell policy.
    pub provision_shell: PathBuf,
    /// The group of managed users: sshd's drop-in matches it, and it may read the store.
    pub managed_group: String,
    pub lockout_threshold: u32,
    pub lockout_window: i64,
    pub lockout_duration: i64,
    pub sessions_per_minute: u32,
    /// Members of this system group are jailed: sftp and rsync in a chroot.
    pub jail_group: Option<String>,
    pub jail_root: PathBuf,
    pub ldap: Option<LdapConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            source: None,
            store_path: PathBuf::from(DEFAULT_STORE),
            busy_timeout_ms: 5000,
            login_timeout_ms: 1000,
            shell_path: DEFAULT_SHELL.to_string(),
            login_shell: Some(PathBuf::from(DEFAULT_LOGIN_SHELL)),
            require_login_shell: true,
            min_rsa_bits: 3072,
            allowed_types: KeyFamily::ALL.to_vec(),
            max_keys_per_user: 100,
            max_key_lifetime: None,
            banned_keys: None,
            name_pattern: NamePattern::Default,
            name_pattern_text: DEFAULT_NAME_PATTERN.to_string(),
            default_policy: Scope::Shell,
            permit_open: vec!["localhost:*".to_string(), "127.0.0.1:*".to_string()],
            log_socket: PathBuf::from(DEFAULT_LOG_SOCKET),
            log_stderr: false,
            data_dir: "/data/%u".to_string(),
            git_root: PathBuf::from("/data"),
            git_program: PathBuf::from("/usr/bin/git"),
            git_create_on_push: false,
            sftp_program: PathBuf::from("/usr/lib/openssh/sftp-server"),
            rsync_program: PathBuf::from("/usr/bin/rsync"),
            web: WebConfig::default(),
            state_path: PathBuf::from("/var/lib/gatehouse/state.db"),
            state_group: None,
            data_mode: 0o750,
            skeleton: None,
            quota: None,
            uid_range: (20_000, 29_999),
            provision_shell: PathBuf::from(DEFAULT_SHELL),
            managed_group: "gatehouse-users".to_string(),
            lockout_threshold: 10,
            lockout_window: 600,
            lockout_duration: 900,
            sessions_per_minute: 600,
            jail_group: None,
            jail_root: PathBuf::from("/jail"),
            ldap: None,
        }
    }
}

/// What tells one version of a file from another without reading it: device, inode, size,
/// modification and change times (a chmod or chown changes the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of `path` now; `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// A configuration error, already phrased for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Located<'a> {
    file: &'a str,
    text: &'a str,
}

impl Located<'_> {
    fn line_of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn error<T>(&self, span: &Range<usize>, key: &str, message: impl std::fmt::Display) -> Result<T, ConfigError> {
        Err(ConfigError(format!("{}:{}: {key}: {message}", self.file, self.line_of(span))))
    }
}

/// Characters allowed in paths that end up inside an authorized_keys `command="…"`:
/// sshd hands that string to the user's shell, so nothing a shell would interpret.
pub fn is_plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 1024
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._+-".contains(&b))
        && !path.split('/').any(|c| c == "..")
}

/// `host:port` patterns for authorized_keys `permitopen="…"`.
fn is_permit_open(pattern: &str) -> bool {
    let Some((host, port)) = pattern.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-*[]:".contains(&b));
    let port_ok = port == "*" || port.parse::<u16>().is_ok_and(|p| p > 0);
    host_ok && port_ok
}

fn parse_web(at: &Located<'_>, raw: RawWeb, w: &mut WebConfig) -> Result<(), ConfigError> {
    if let Some(l) = raw.listen {
        let text = l.get_ref();
        w.listen = if text.starts_with('/') {
            Listen::Unix(PathBuf::from(text))
        } else {
            match text.parse() {
                Ok(addr) => Listen::Tcp(addr),
                Err(_) => return at.error(&l.span(), "web.listen", "expected ADDRESS:PORT or an absolute socket path"),
            }
        };
    }
    if let Some(p) = raw.secrets {
        if !p.get_ref().starts_with('/') {
            return at.error(&p.span(), "web.secrets", "must be an absolute path");
        }
        w.secrets = PathBuf::from(p.into_inner());
    }
    if let Some(u) = raw.public_url {
        let text = u.get_ref().trim_end_matches('/');
        let ok = (text.starts_with("https://") || text.starts_with("http://"))
            && !text.contains(|c: char| c.is_whitespace() || c.is_control() || "\"'<>".contains(c));
        if !ok {
            return at.error(&u.span(), "web.public_url", "must be an http:// or https:// URL");
        }
        w.public_url = text.to_string();
    }
    if let Some(b) = raw.public_keys {
        w.public_keys = b;
    }
    if let Some(b) = raw.cookie_secure {
        w.cookie_secure = b;
    }
    for (value, key, slot) in [
        (raw.session_idle, "web.session_idle", &mut w.session_idle),
        (raw.session_max, "web.session_max", &mut w.session_max),
        (raw.invite_lifetime, "web.invite_lifetime", &mut w.invite_lifetime),
    ] {
        if let Some(v) = value {
            *slot = time::parse_duration(v.get_ref()).or_else(|e| at.error(&v.span(), key, e))?;
        }
    }
    if let Some(b) = raw.max_body {
        match usize::try_from(*b.get_ref()) {
            Ok(n) if (1024..=1_048_576).contains(&n) => w.max_body = n,
            _ => return at.error(&b.span(), "web.max_body", "must be between 1024 and 1048576"),
        }
    }
    for (value, key, slot) in [
        (raw.signin_per_minute, "web.signin_per_minute", &mut w.signin_per_minute),
        (raw.changes_per_minute, "web.changes_per_minute", &mut w.changes_per_minute),
    ] {
        if let Some(v) = value {
            match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=100_000).contains(&n) => *slot = n,
                _ => return at.error(&v.span(), key, "must be between 1 and 100000"),
            }
        }
    }
    if let Some(h) = raw.proxy_user_header {
        let ok = !h.get_ref().is_empty() && h.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return at.error(&h.span(), "web.proxy_user_header", "must be an HTTP header name");
        }
        w.proxy_user_header = Some(h.into_inner());
    }
    if let Some(p) = raw.proxy_secret_file {
        if !p.get_ref().starts_with('/') {
            return at.error(&p.span(), "web.proxy_secret_file", "must be an absolute path");
        }
        w.proxy_secret_file = Some(PathBuf::from(p.into_inner()));
    }
    if let Some(list) = raw.trusted_proxies {
        let span = list.span();
        let mut addrs = Vec::new();
        for a in list.into_inner() {
            match a.parse() {
                Ok(ip) => addrs.push(ip),
                Err(_) => {
                    return at.error(
                        &span,
                        "web.trusted_proxies",
                        format!("`{}` is not an IP address", a.escape_debug()),
                    )
                }
            }
        }
        w.trusted_proxies = addrs;
    }
    for (value, key, slot) in [
        (raw.header_timeout, "web.header_timeout", &mut w.header_timeout),
        (raw.idle_timeout, "web.idle_timeout", &mut w.idle_timeout),
        (raw.request_timeout, "web.request_timeout", &mut w.request_timeout),
    ] {
        if let Some(v) = value {
            match time::parse_duration(v.get_ref()) {
                Ok(n) if n <= 3600 => *slot = n,
                Ok(_) => return at.error(&v.span(), key, "must be at most 1h"),
                Err(e) => return at.error(&v.span(), key, e),
            }
        }
    }
    for (value, key, slot) in [
        (raw.max_connections, "web.max_connections", &mut w.max_connections),
        (raw.max_connections_per_peer, "web.max_connections_per_peer", &mut w.max_connections_per_peer),
    ] {
        if let Some(v) = value {
            match usize::try_from(*v.get_ref()) {
                Ok(n) if (1..=65_536).contains(&n) => *slot = n,
                _ => return at.error(&v.span(), key, "must be between 1 and 65536"),
            }
        }
    }
    if w.proxy_user_header.is_some() && (w.proxy_secret_file.is_none() || w.trusted_proxies.is_empty()) {
        return Err(ConfigError(format!(
            "{}: web.proxy_user_header needs web.proxy_secret_file and web.trusted_proxies",
            at.file
        )));
    }
    Ok(())
}

impl Config {
    /// Loads the configuration for a program. An explicit path must exist; the default path
    /// may be missing, in which case the defaults apply. The file must pass the ownership
    /// rules of [`crate::trust`].
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = explicit.unwrap_or(Path::new(DEFAULT_PATH));
        match crate::trust::check_owned_path(path, &[nix::unistd::geteuid().as_raw()]) {
            Ok(()) => {}
            Err(_) if explicit.is_none() && !path.exists() => return Ok(Config::default()),
            Err(e) => return Err(ConfigError(format!("{}: not trusted: {e}", path.display()))),
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        let mut config = Config::parse(&path.display().to_string(), &text)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let at = Located { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| at.line_of(&s)).unwrap_or(1);
            let message = e.message().lines().next().unwrap_or("invalid TOML").trim_end_matches('.');
            ConfigError(format!("{file}:{line}: {message}"))
        })?;
        let mut c = Config::default();
        let absolute = |p: Spanned<String>, key: &str| -> Result<PathBuf, ConfigError> {
            if !p.get_ref().starts_with('/') || p.get_ref().contains('\0') || p.get_ref().split('/').any(|c| c == "..")
            {
                return at.error(&p.span(), key, "must be an absolute path without ..");
            }
            Ok(PathBuf::from(p.into_inner()))
        };

        if let Some(store) = raw.store {
            if let Some(p) = store.path {
                if !p.get_ref().starts_with('/') || p.get_ref().contains('\0') {
                    return at.error(&p.span(), "store.path", "must be an absolute path");
                }
                c.store_path = PathBuf::from(p.into_inner());
            }
            if let Some(t) = store.busy_timeout_ms {
                match u32::try_from(*t.get_ref()) {
                    Ok(ms) if (1..=60_000).contains(&ms) => c.busy_timeout_ms = ms,
                    _ => return at.error(&t.span(), "store.busy_timeout_ms", "must be between 1 and 60000"),
                }
            }
            if let Some(t) = store.login_timeout_ms {
                match u32::try_from(*t.get_ref()) {
                    Ok(ms) if (100..=60_000).contains(&ms) => c.login_timeout_ms = ms,
                    _ => return at.error(&t.span(), "store.login_timeout_ms", "must be between 100 and 60000"),
                }
            }
        }
        if let Some(shell) = raw.shell {
            if let Some(p) = shell.path {
                if !is_plain_path(p.get_ref()) {
                    return at.error(
                        &p.span(),
                        "shell.path",
                        "must be an absolute path of letters, digits and / . _ + - only",
                    );
                }
                c.shell_path = p.into_inner();
            }
            if let Some(b) = shell.require_login_shell {
                c.require_login_shell = b;
            }
            match shell.login_shell {
                // "": no shell for sessions that reach gatehouse-shell as the login shell.
                Some(p) if p.get_ref().is_empty() => c.login_shell = None,
                Some(p) if is_gatehouse_shell(Path::new(p.get_ref())) => {
                    return at.error(&p.span(), "shell.login_shell", "must be a real shell, not gatehouse-shell");
                }
                Some(p) => c.login_shell = Some(absolute(p, "shell.login_shell")?),
                None => {}
            }
        }
        if let Some(keys) = raw.keys {
            if let Some(bits) = keys.min_rsa_bits {
                match u32::try_from(*bits.get_ref()) {
                    Ok(b) if (2048..=16384).contains(&b) => c.min_rsa_bits = b,
                    _ => return at.error(&bits.span(), "keys.min_rsa_bits", "must be between 2048 and 16384"),
                }
            }
            if let Some(types) = keys.allowed_types {
                let span = types.span();
                let mut families = Vec::new();
                for name in types.into_inner() {
                    match KeyFamily::ALL.into_iter().find(|f| f.as_str() == name) {
                        Some(f) if !families.contains(&f) => families.push(f),
                        Some(_) => {}
                        None => {
                            return at.error(
                                &span,
                                "keys.allowed_types",
                                format!(
                                    "`{}` is not a key type (ed25519, ecdsa, rsa, sk-ed25519, sk-ecdsa)",
                                    name.escape_debug()
                                ),
                            )
                        }
                    }
                }
                if families.is_empty() {
                    return at.error(&span, "keys.allowed_types", "must allow at least one key type");
                }
                c.allowed_types = families;
            }
            if let Some(max) = keys.max_per_user {
                match u32::try_from(*max.get_ref()) {
                    Ok(m) if (1..=10_000).contains(&m) => c.max_keys_per_user = m,
                    _ => return at.error(&max.span(), "keys.max_per_user", "must be between 1 and 10000"),
                }
            }
            if let Some(p) = keys.banned {
                if !p.get_ref().starts_with('/') {
                    return at.error(&p.span(), "keys.banned", "must be an absolute path");
                }
                c.banned_keys = Some(PathBuf::from(p.into_inner()));
            }
            if let Some(life) = keys.max_lifetime {
                match time::parse_duration(life.get_ref()) {
                    Ok(secs) => c.max_key_lifetime = Some(secs),
                    Err(e) => return at.error(&life.span(), "keys.max_lifetime", e),
                }
            }
        }
        if let Some(users) = raw.users {
            if let Some(p) = users.name_pattern {
                let text = p.get_ref();
                if !text.starts_with('^') || !text.ends_with('$') {
                    return at.error(&p.span(), "users.name_pattern", "must be anchored with ^ and $");
                }
                match regex_lite::Regex::new(text) {
                    Ok(re) => {
                        c.name_pattern =
                            if text == DEFAULT_NAME_PATTERN { NamePattern::Default } else { NamePattern::Custom(re) };
                        c.name_pattern_text = p.into_inner();
                    }
                    Err(e) => {
                        let first = e.to_string();
                        let first = first.lines().last().unwrap_or("invalid regular expression");
                        return at.error(&p.span(), "users.name_pattern", first.trim());
                    }
                }
            }
            if let Some(p) = users.data_dir {
                let text = p.get_ref();
                if !text.starts_with('/') || !text.contains("%u") || text.split('/').any(|c| c == "..") {
                    return at.error(&p.span(), "users.data_dir", "must be an absolute path containing %u");
                }
                c.data_dir = p.into_inner();
            }
            if let Some(m) = users.data_mode {
                match u32::from_str_radix(m.get_ref(), 8) {
                    Ok(mode) if mode <= 0o777 && mode & 0o700 == 0o700 && mode & 0o002 == 0 => c.data_mode = mode,
                    _ => {
                        return at.error(
                            &m.span(),
                            "users.data_mode",
                            "must be octal like \"0750\", owner rwx, not world-writable",
                        )
                    }
                }
            }
            if let Some(p) = users.skeleton {
                c.skeleton = Some(absolute(p, "users.skeleton")?);
            }
            if let Some(q) = users.quota {
                // Digits, then at most one unit letter: 500000, 50G, 2T.
                let text = q.get_ref();
                let digits = text.trim_end_matches(['K', 'M', 'G', 'T']);
                let ok = !digits.is_empty()
                    && text.len() <= 16
                    && text.len() - digits.len() <= 1
                    && digits.bytes().all(|b| b.is_ascii_digit());
                if !ok {
                    return at.error(&q.span(), "users.quota", "expected a size like 50G");
                }
                c.quota = Some(q.into_inner());
            }
            let min = users.uid_min.map(|v| (u32::try_from(*v.get_ref()), v.span()));
            let max = users.uid_max.map(|v| (u32::try_from(*v.get_ref()), v.span()));
            if let Some((v, span)) = min {
                match v {
                    Ok(n) if n >= 1000 => c.uid_range.0 = n,
                    _ => return at.error(&span, "users.uid_min", "must be at least 1000"),
                }
            }
            if let Some((v, span)) = max {
                match v {
                    // Directory accounts (Active Directory's idmap) often live far above 65535.
                    Ok(n) if n > c.uid_range.0 && n <= MAX_UID => c.uid_range.1 = n,
                    _ => return at.error(&span, "users.uid_max", "must be above users.uid_min and at most 2147483647"),
                }
            }
            if c.uid_range.1 <= c.uid_range.0 {
                return Err(ConfigError(format!(
                    "{}: users.uid_min {} is not below users.uid_max {}",
                    at.file, c.uid_range.0, c.uid_range.1
                )));
            }
            if let Some(p) = users.shell {
                c.provision_shell = absolute(p, "users.shell")?;
            }
            if let Some(g) = users.group {
                if !is_default_name(g.get_ref()) {
                    return at.error(&g.span(), "users.group", "must be a group name");
                }
                c.managed_group = g.into_inner();
            }
            if let Some(p) = users.default_policy {
                match p.get_ref().parse::<Scope>() {
                    Ok(scope) => c.default_policy = scope,
                    Err(e) => return at.error(&p.span(), "users.default_policy", e),
                }
            }
        }
        if let Some(fwd) = raw.forwarding {
            if let Some(list) = fwd.permit_open {
                let span = list.span();
                let list = list.into_inner();
                if let Some(bad) = list.iter().find(|p| !is_permit_open(p)) {
                    return at.error(
                        &span,
                        "forwarding.permit_open",
                        format!("`{}` is not a host:port pattern", bad.escape_debug()),
                    );
                }
                c.permit_open = list;
            }
        }
        if let Some(git) = raw.git {
            if let Some(p) = git.root {
                c.git_root = absolute(p, "git.root")?;
            }
            if let Some(p) = git.program {
                c.git_program = absolute(p, "git.program")?;
            }
            if let Some(b) = git.create_on_push {
                c.git_create_on_push = b;
            }
        }
        if let Some(p) = raw.sftp.and_then(|s| s.program) {
            c.sftp_program = absolute(p, "sftp.program")?;
        }
        if let Some(p) = raw.rsync.and_then(|s| s.program) {
            c.rsync_program = absolute(p, "rsync.program")?;
        }
        let state_given = raw.state.as_ref().is_some_and(|s| s.path.is_some());
        if let Some(state) = raw.state {
            if let Some(p) = state.path {
                c.state_path = absolute(p, "state.path")?;
            }
            if let Some(g) = state.group {
                if !is_default_name(g.get_ref()) {
                    return at.error(&g.span(), "state.group", "must be a group name");
                }
                c.state_group = Some(g.into_inner());
            }
        }
        if let Some(l) = raw.lockout {
            if let Some(t) = l.threshold {
                match u32::try_from(*t.get_ref()) {
                    Ok(n) if (1..=10_000).contains(&n) => c.lockout_threshold = n,
                    _ => return at.error(&t.span(), "lockout.threshold", "must be between 1 and 10000"),
                }
            }
            for (value, key, slot) in [
                (l.window, "lockout.window", &mut c.lockout_window),
                (l.duration, "lockout.duration", &mut c.lockout_duration),
            ] {
                if let Some(v) = value {
                    *slot = time::parse_duration(v.get_ref()).or_else(|e| at.error(&v.span(), key, e))?;
                }
            }
            if let Some(t) = l.sessions_per_minute {
                match u32::try_from(*t.get_ref()) {
                    Ok(n) if (1..=1_000_000).contains(&n) => c.sessions_per_minute = n,
                    _ => return at.error(&t.span(), "lockout.sessions_per_minute", "must be between 1 and 1000000"),
                }
            }
        }
        if let Some(j) = raw.jail {
            if let Some(g) = j.group {
                if !is_default_name(g.get_ref()) {
                    return at.error(&g.span(), "jail.group", "must be a group name");
                }
                c.jail_group = Some(g.into_inner());
            }
            if let Some(p) = j.root {
                c.jail_root = absolute(p, "jail.root")?;
            }
        }
        if let Some(l) = raw.ldap {
            c.ldap = Some(parse_ldap(&at, l)?);
        }
        let mut secrets_given = false;
        if let Some(web) = raw.web {
            secrets_given = web.secrets.is_some();
            parse_web(&at, web, &mut c.web)?;
        }
        if !secrets_given {
            // Beside the store unless placed elsewhere.
            c.web.secrets = c.store_path.with_file_name("web.db");
        }
        if !state_given && c.store_path != Path::new(DEFAULT_STORE) {
            // A store placed elsewhere takes its state file along.
            c.state_path = c.store_path.with_file_name("state.db");
        }
        if let Some(log) = raw.log {
            if let Some(s) = log.socket {
                if !s.get_ref().starts_with('/') {
                    return at.error(&s.span(), "log.socket", "must be an absolute path");
                }
                c.log_socket = PathBuf::from(s.into_inner());
            }
            if let Some(e) = log.stderr {
                c.log_stderr = e;
            }
        }
        Ok(c)
    }

    /// The data folder of `user` (a name already checked by [`Config::valid_user_name`]).
    pub fn data_dir_of(&self, user: &str) -> PathBuf {
        PathBuf::from(self.data_dir.replace("%u", user))
    }

    /// The gid of `state.group`, if set and known.
    pub fn state_gid(&self) -> Option<u32> {
        let name = self.state_group.as_deref()?;
        nix::unistd::Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw())
    }

    /// Whether `name` is acceptable as a user name.
    pub fn valid_user_name(&self, name: &str) -> bool {
        name.len() <= 256
            && match &self.name_pattern {
                NamePattern::Default => is_default_name(name),
                NamePattern::Custom(re) => re.is_match(name),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse("g.toml", text).unwrap_err().0
    }

    #[test]
    fn defaults_and_fixed_keys() {
        let c = Config::parse(
            "g.toml",
            "[store]\npath = \"/srv/s.db\"\n[shell]\npath = \"/usr/libexec/gatehouse/gatehouse-shell\"\n",
        )
        .unwrap();
        assert_eq!(c.store_path, PathBuf::from("/srv/s.db"));
        assert_eq!(c.shell_path, "/usr/libexec/gatehouse/gatehouse-shell");
        assert_eq!(c.min_rsa_bits, 3072);
        assert!(c.valid_user_name("alice"));
        assert!(!c.valid_user_name("Alice"));
        assert!(!c.valid_user_name("-alice"));
        assert!(!c.valid_user_name("alice\n"));
        assert!(!c.valid_user_name(""));
    }

    #[test]
    fn default_name_rule_matches_its_regex() {
        let re = regex_lite::Regex::new(DEFAULT_NAME_PATTERN).unwrap();
        let mut samples: Vec<String> = ["", "a", "_", "-", "0a", "a-b_c9", "A", "a.b", "a b", "é", "a\n", "-a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        samples.push("a".repeat(32));
        samples.push("a".repeat(33));
        let alphabet = ['a', 'z', '_', '-', '0', '9', 'A', '.', '/', ' '];
        for i in 0..2000usize {
            let len = i % 5;
            samples.push((0..len).map(|j| alphabet[(i / (j + 1) + j * 7) % alphabet.len()]).collect());
        }
        for s in samples {
            assert_eq!(is_default_name(&s), re.is_match(&s), "{s:?}");
        }
    }

    #[test]
    fn unknown_key_names_line() {
        assert_eq!(
            err("[store]\npath = \"/a\"\ncolour = 1\n"),
            "g.toml:3: unknown field `colour`, expected one of `path`, `busy_timeout_ms`, `login_timeout_ms`"
        );
        assert!(err("\n\n[nosuch]\n").starts_with("g.toml:3: unknown field `nosuch`"), "{}", err("\n\n[nosuch]\n"));
    }

    #[test]
    fn bad_values_name_line_and_key() {
        assert_eq!(
            err("[keys]\n\nmin_rsa_bits = 1024\n"),
            "g.toml:3: keys.min_rsa_bits: must be between 2048 and 16384"
        );
        assert!(err("[shell]\npath = \"gatehouse-shell\"\n").starts_with("g.toml:2: shell.path:"));
        assert!(err("[shell]\npath = \"/usr/bin/x; rm -rf /\"\n").starts_with("g.toml:2: shell.path:"));
        assert!(err("[shell]\npath = \"/usr/bin/a\\\"b\"\n").starts_with("g.toml:2: shell.path:"));
        assert!(err("[shell]\nlogin_shell = \"bash\"\n").starts_with("g.toml:2: shell.login_shell:"));
        assert!(err("[shell]\nlogin_shell = \"/usr/bin/gatehouse-shell\"\n").contains("not gatehouse-shell"));
        let c = Config::parse("g.toml", "[shell]\nlogin_shell = \"/bin/zsh\"\n").unwrap();
        assert_eq!(c.login_shell.as_deref(), Some(Path::new("/bin/zsh")));
        let c = Config::parse("g.toml", "[shell]\nlogin_shell = \"\"\n").unwrap();
        assert_eq!(c.login_shell, None);
        assert_eq!(Config::parse("g.toml", "").unwrap().login_shell.as_deref(), Some(Path::new("/bin/bash")));
        assert!(err("[keys]\nallowed_types = [\"dsa\"]\n").starts_with("g.toml:2: keys.allowed_types: `dsa`"));
        assert!(err("[keys]\nallowed_types = []\n").contains("at least one"));
        assert!(err("[keys]\nmax_lifetime = \"1y\"\n").starts_with("g.toml:2: keys.max_lifetime"));
        assert!(err("[users]\nname_pattern = \"[a-z]+\"\n").contains("anchored"));
        assert!(err("[users]\nname_pattern = \"^([a-z]$\"\n").starts_with("g.toml:2: users.name_pattern"));
        assert!(err("[users]\ndefault_policy = \"root\"\n").starts_with("g.toml:2: users.default_policy"));
        assert!(err("[forwarding]\npermit_open = [\"localhost:*\", \"evil\\\" x:1\"]\n")
            .starts_with("g.toml:2: forwarding.permit_open"));
        assert!(err("[store]\nbusy_timeout_ms = -1\n").starts_with("g.toml:2: store.busy_timeout_ms"));
        assert!(err("[store]\npath = 5\n").starts_with("g.toml:2: invalid type"), "{}", err("[store]\npath = 5\n"));
        assert!(err("[store\n").starts_with("g.toml:1:"));
        assert!(!err("[store]\npath = \"/a\"\ncolour = 1\n").contains('\n'));
    }

    #[test]
    fn web_connection_limits() {
        let w = Config::parse("g.toml", "").unwrap().web;
        assert_eq!((w.header_timeout, w.idle_timeout, w.request_timeout), (10, 60, 30));
        assert_eq!((w.max_connections, w.max_connections_per_peer), (512, 32));
        let text = "[web]\nheader_timeout = \"1s\"\nidle_timeout = \"2m\"\nrequest_timeout = \"1h\"\n\
                    max_connections = 65536\nmax_connections_per_peer = 1\n";
        let w = Config::parse("g.toml", text).unwrap().web;
        assert_eq!((w.header_timeout, w.idle_timeout, w.request_timeout), (1, 120, 3600));
        assert_eq!((w.max_connections, w.max_connections_per_peer), (65_536, 1));
        assert_eq!(err("[web]\n\nheader_timeout = \"61m\"\n"), "g.toml:3: web.header_timeout: must be at most 1h");
        assert!(err("[web]\nidle_timeout = \"0s\"\n").starts_with("g.toml:2: web.idle_timeout: `0s`"));
        assert!(err("[web]\nrequest_timeout = \"30\"\n").starts_with("g.toml:2: web.request_timeout: `30`"));
        assert!(err("[web]\nrequest_timeout = 30\n").starts_with("g.toml:2: invalid type"));
        for (key, value) in [("max_connections", "0"), ("max_connections_per_peer", "-1"), ("max_connections", "65537")]
        {
            assert_eq!(
                err(&format!("[web]\n{key} = {value}\n")),
                format!("g.toml:2: web.{key}: must be between 1 and 65536")
            );
        }
    }
}
