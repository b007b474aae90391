//! gatehouse.toml: read into raw structs that reject unknown keys, then validated into a
//! typed [`Config`] nested like the file (`config.git.root` is `[git] root`), with
//! defaults. Every error names the file, the line and the key. One file per section;
//! the checks they share (an integer in a range, a clean absolute path) are in
//! `located.rs`.

mod agent;
mod forwarding;
mod jail;
mod keys;
mod ldap;
mod located;
mod log;
mod programs;
mod shell;
mod source;
mod state;
mod store;
mod users;
mod web;

pub use agent::{AccountsMode, AgentConfig};
pub use forwarding::ForwardingConfig;
pub use jail::JailConfig;
pub use keys::{KeyFamily, KeysConfig};
pub use ldap::{FollowMode, LdapConfig};
pub use located::ConfigError;
pub use log::{LogConfig, LogTarget, DEFAULT_LOG_SOCKET};
pub use programs::{GitConfig, ProgramConfig};
pub use shell::{is_gatehouse_shell, is_plain_path, ShellConfig, DEFAULT_LOGIN_SHELL, DEFAULT_SHELL};
pub use source::{SourceConfig, SourceTls};
pub use state::{LockoutConfig, StateConfig};
pub use store::{StoreConfig, DEFAULT_STORE};
pub use users::{NamePattern, UsersConfig, DEFAULT_NAME_PATTERN, MAX_UID};
pub use web::{Listen, WebConfig};

use located::Located;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/gatehouse/gatehouse.toml";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<store::Raw>,
    shell: Option<shell::Raw>,
    keys: Option<keys::Raw>,
    users: Option<users::Raw>,
    forwarding: Option<forwarding::Raw>,
    log: Option<log::Raw>,
    git: Option<programs::RawGit>,
    sftp: Option<programs::RawProgram>,
    rsync: Option<programs::RawProgram>,
    web: Option<web::Raw>,
    state: Option<state::RawState>,
    lockout: Option<state::RawLockout>,
    jail: Option<jail::Raw>,
    ldap: Option<ldap::Raw>,
    agent: Option<agent::Raw>,
    source: Option<source::Raw>,
}

/// The validated configuration every program works from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any; passed on to the forced command.
    pub source: Option<PathBuf>,
    pub store: StoreConfig,
    pub shell: ShellConfig,
    pub keys: KeysConfig,
    pub users: UsersConfig,
    pub forwarding: ForwardingConfig,
    pub log: LogConfig,
    pub git: GitConfig,
    pub sftp: ProgramConfig,
    pub rsync: ProgramConfig,
    pub web: WebConfig,
    pub state: StateConfig,
    pub lockout: LockoutConfig,
    pub jail: JailConfig,
    pub ldap: Option<LdapConfig>,
    pub agent: AgentConfig,
    /// The shared PostgreSQL database of several login nodes; `None`: this host's store is
    /// the source.
    pub shared: Option<SourceConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            source: None,
            store: StoreConfig::default(),
            shell: ShellConfig::default(),
            keys: KeysConfig::default(),
            users: UsersConfig::default(),
            forwarding: ForwardingConfig::default(),
            log: LogConfig::default(),
            git: GitConfig::default(),
            sftp: ProgramConfig { program: PathBuf::from("/usr/lib/openssh/sftp-server") },
            rsync: ProgramConfig { program: PathBuf::from("/usr/bin/rsync") },
            web: WebConfig::default(),
            state: StateConfig::default(),
            lockout: LockoutConfig::default(),
            jail: JailConfig::default(),
            ldap: None,
            agent: AgentConfig::default(),
            shared: None,
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
        if let Some(r) = raw.store {
            store::parse(&at, r, &mut c.store)?;
        }
        if let Some(r) = raw.shell {
            shell::parse(&at, r, &mut c.shell)?;
        }
        if let Some(r) = raw.keys {
            keys::parse(&at, r, &mut c.keys)?;
        }
        if let Some(r) = raw.users {
            users::parse(&at, r, &mut c.users)?;
        }
        if let Some(r) = raw.forwarding {
            forwarding::parse(&at, r, &mut c.forwarding)?;
        }
        if let Some(r) = raw.git {
            programs::parse_git(&at, r, &mut c.git)?;
        }
        if let Some(r) = raw.sftp {
            programs::parse_program(&at, r, "sftp.program", &mut c.sftp)?;
        }
        if let Some(r) = raw.rsync {
            programs::parse_program(&at, r, "rsync.program", &mut c.rsync)?;
        }
        let state_given = raw.state.as_ref().is_some_and(|s| s.path.is_some());
        if let Some(r) = raw.state {
            state::parse_state(&at, r, &mut c.state)?;
        }
        if let Some(r) = raw.lockout {
            state::parse_lockout(&at, r, &mut c.lockout)?;
        }
        if let Some(r) = raw.jail {
            jail::parse(&at, r, &mut c.jail)?;
        }
        if let Some(r) = raw.ldap {
            c.ldap = Some(ldap::parse(&at, r)?);
        }
        let secrets_given = raw.web.as_ref().is_some_and(|w| w.secrets.is_some());
        if let Some(r) = raw.web {
            web::parse(&at, r, &mut c.web)?;
        }
        if !secrets_given {
            // Beside the store unless placed elsewhere.
            c.web.secrets = c.store.path.with_file_name("web.db");
        }
        if !state_given && c.store.path != Path::new(DEFAULT_STORE) {
            // A store placed elsewhere takes its state file along.
            c.state.path = c.store.path.with_file_name("state.db");
        }
        if let Some(r) = raw.log {
            log::parse(&at, r, &mut c.log)?;
        }
        if let Some(r) = raw.agent {
            agent::parse(&at, r, &mut c.agent)?;
        }
        if let Some(r) = raw.source {
            c.shared = Some(source::parse(&at, r)?);
        }
        Ok(c)
    }

    /// How long after its last successful sync a user of `source` (a user's source column)
    /// is still served; `None`: always (users written on this host), or never, when the
    /// section of a synced source is gone (see [`crate::domain::LoginView::fresh`]).
    pub fn staleness_max(&self, source: &str) -> Option<std::time::Duration> {
        match source {
            crate::domain::SOURCE_LDAP => self.ldap.as_ref().map(|l| l.staleness_max),
            crate::domain::SOURCE_SHARED => self.shared.as_ref().map(|s| s.staleness_max),
            _ => None,
        }
    }

    /// Whether `name` is acceptable as a user name (`users.name_pattern`).
    pub fn valid_user_name(&self, name: &str) -> bool {
        self.users.valid_name(name)
    }

    /// The data folder of `user` (a name already checked by [`Config::valid_user_name`]).
    pub fn data_dir_of(&self, user: &str) -> PathBuf {
        self.users.data_dir_of(user)
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
        assert_eq!(c.store.path, PathBuf::from("/srv/s.db"));
        assert_eq!(c.shell.path, "/usr/libexec/gatehouse/gatehouse-shell");
        assert_eq!(c.keys.min_rsa_bits, 3072);
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
            assert_eq!(users::is_default_name(&s), re.is_match(&s), "{s:?}");
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
        assert_eq!(c.shell.login_shell.as_deref(), Some(Path::new("/bin/zsh")));
        let c = Config::parse("g.toml", "[shell]\nlogin_shell = \"\"\n").unwrap();
        assert_eq!(c.shell.login_shell, None);
        assert_eq!(Config::parse("g.toml", "").unwrap().shell.login_shell.as_deref(), Some(Path::new("/bin/bash")));
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
        let secs = |n| std::time::Duration::from_secs(n);
        assert_eq!((w.header_timeout, w.idle_timeout, w.request_timeout), (secs(10), secs(60), secs(30)));
        assert_eq!((w.max_connections, w.max_connections_per_peer), (512, 32));
        let text = "[web]\nheader_timeout = \"1s\"\nidle_timeout = \"2m\"\nrequest_timeout = \"1h\"\n\
                    max_connections = 65536\nmax_connections_per_peer = 1\n";
        let w = Config::parse("g.toml", text).unwrap().web;
        assert_eq!((w.header_timeout, w.idle_timeout, w.request_timeout), (secs(1), secs(120), secs(3600)));
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

    #[test]
    fn every_path_follows_one_rule() {
        // store.path, keys.banned and log.socket used to skip the `..` rule.
        for (section, key) in [
            ("store", "path"),
            ("keys", "banned"),
            ("log", "socket"),
            ("users", "skeleton"),
            ("git", "root"),
            ("state", "path"),
            ("jail", "root"),
            ("web", "secrets"),
        ] {
            for bad in ["relative/x", "/a/../b", "/a/\\u0000b"] {
                let e = err(&format!("[{section}]\n{key} = \"{bad}\"\n"));
                assert_eq!(e, format!("g.toml:2: {section}.{key}: must be an absolute path without .."), "{bad}");
            }
        }
    }

    #[test]
    fn sections_read_as_the_file_does() {
        let c = Config::parse(
            "g.toml",
            "[git]\nroot = \"/srv/git\"\n[lockout]\nthreshold = 3\n[users]\nuid_min = 1000\nuid_max = 5000\n",
        )
        .unwrap();
        assert_eq!(c.git.root, PathBuf::from("/srv/git"));
        assert_eq!(c.lockout.threshold, 3);
        assert_eq!((c.users.uid_min, c.users.uid_max), (1000, 5000));
        assert_eq!(c.store.login_timeout_ms, 1000, "defaults fill what the file leaves out");
        assert_eq!(
            err("[users]\nuid_min = 6000\nuid_max = 5000\n"),
            "g.toml:3: users.uid_max: must be above users.uid_min and at most 2147483647"
        );
    }
}
