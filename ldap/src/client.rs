//! A connection to the directory: TLS by default (ldaps:// or StartTLS, certificates and
//! host names checked), bounded in time, bound as the service account whose password
//! comes from a root-only file.

use gatehouse::config::LdapConfig;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub enum DirectoryError {
    /// The directory could not be reached or spoke badly (TLS, timeout, protocol).
    Unreachable(String),
    /// The service account's bind was refused, or its password file is unsafe.
    Credentials(String),
    /// A search failed.
    Search(String),
    /// The answer was read but not applied (see `sync::too_many_gone`).
    Refused(String),
}

impl fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectoryError::Unreachable(m) => write!(f, "directory unreachable: {m}"),
            DirectoryError::Credentials(m) => write!(f, "directory credentials: {m}"),
            DirectoryError::Search(m) => write!(f, "directory search: {m}"),
            DirectoryError::Refused(m) => write!(f, "not applied: {m}"),
        }
    }
}

impl std::error::Error for DirectoryError {}

/// Reads the service account's password from a file only root may read or write.
pub fn service_password(path: &std::path::Path) -> Result<String, DirectoryError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| DirectoryError::Credentials(format!("{}: {e}", path.display())))?;
    // Root's, or the service's own (gatehoused runs as its own user), readable by it alone.
    let euid = nix_euid();
    if (meta.uid() != 0 && meta.uid() != euid) || meta.mode() & 0o077 != 0 {
        return Err(DirectoryError::Credentials(format!(
            "{}: must be root's (or this service's) and readable by its owner alone (mode 0600 or 0400)",
            path.display()
        )));
    }
    gatehouse::trust::check_owned_path(path, &[euid])
        .map_err(|e| DirectoryError::Credentials(format!("{}: {e}", path.display())))?;
    let text =
        std::fs::read_to_string(path).map_err(|e| DirectoryError::Credentials(format!("{}: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn nix_euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn tls_config(cfg: &LdapConfig) -> Result<Option<Arc<rustls::ClientConfig>>, DirectoryError> {
    let Some(ca_file) = &cfg.ca_file else {
        return Ok(None);
    };
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| DirectoryError::Unreachable(format!("ldap.ca_file {}: {e}", ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| DirectoryError::Unreachable(format!("ldap.ca_file {}: {e}", ca_file.display())))?;
        roots.add(cert).map_err(|e| DirectoryError::Unreachable(format!("ldap.ca_file {}: {e}", ca_file.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Unreachable(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// Runs `f` and turns a panic inside the LDAP library (it panics on some malformed
/// answers) into an error: a hostile directory must not take us down.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, DirectoryError>) -> Result<T, DirectoryError> {
    caught(f)
        .unwrap_or_else(|| Err(DirectoryError::Unreachable(format!("{what}: malformed answer from the directory"))))
}

thread_local! {
    /// Whether this thread is inside [`caught`]: its panics are reported as errors, once.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`; `None` if it panicked. The panic message is not printed (see
/// [`quiet_caught_panics`]): the caller reports the failure itself, in one line.
pub(crate) fn caught<T>(f: impl FnOnce() -> T) -> Option<T> {
    let outer = CATCHING.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    CATCHING.with(|c| c.set(outer));
    result
}

/// Keeps the panic hook quiet for panics that [`caught`] turns into errors; any other
/// panic is printed as before.
pub fn quiet_caught_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !CATCHING.with(|c| c.get()) {
            default(info)
        }
    }));
}

/// An open, bound connection.
pub struct Directory {
    conn: LdapConn,
    timeout: Duration,
    pub config: LdapConfig,
}

impl Directory {
    /// Connects without binding (for password checks, which bind as the user).
    pub fn connect_anonymous(cfg: &LdapConfig) -> Result<Directory, DirectoryError> {
        let timeout = cfg.timeout;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_starttls(cfg.url.starts_with("ldap://") && cfg.starttls)
            .set_no_tls_verify(cfg.insecure);
        if let Some(config) = tls_config(cfg)? {
            settings = settings.set_config(config);
        }
        let conn = guarded("connect", || {
            LdapConn::with_settings(settings, &cfg.url)
                .map_err(|e| DirectoryError::Unreachable(format!("{}: {e}", cfg.url)))
        })?;
        Ok(Directory { conn, timeout, config: cfg.clone() })
    }

    /// Connects and binds as the service account (or anonymously without one).
    pub fn connect(cfg: &LdapConfig) -> Result<Directory, DirectoryError> {
        let mut dir = Directory::connect_anonymous(cfg)?;
        if let (Some(dn), Some(file)) = (&cfg.bind_dn, &cfg.bind_password_file) {
            let password = service_password(file)?;
            if password.is_empty() {
                return Err(DirectoryError::Credentials("the service password is empty".into()));
            }
            dir.bind(dn, &password).map_err(|e| match e {
                DirectoryError::Search(m) => DirectoryError::Credentials(format!("bind as {dn}: {m}")),
                other => other,
            })?;
        }
        Ok(dir)
    }

    /// A simple bind; `Search` error when the directory refuses it.
    pub fn bind(&mut self, dn: &str, password: &str) -> Result<(), DirectoryError> {
        let timeout = self.timeout;
        let conn = &mut self.conn;
        guarded("bind", || {
            let result = conn
                .with_timeout(timeout)
                .simple_bind(dn, password)
                .map_err(|e| DirectoryError::Unreachable(e.to_string()))?;
            result.success().map(|_| ()).map_err(|e| DirectoryError::Search(e.to_string()))
        })
    }

    /// All entries under `base_dn` matching `filter`, paged so server size limits do not
    /// cut the answer short.
    pub fn search(&mut self, filter: &str, attrs: &[&str]) -> Result<Vec<SearchEntry>, DirectoryError> {
        let base = self.config.base_dn.clone();
        let timeout = self.timeout;
        let conn = &mut self.conn;
        guarded("search", || {
            let adapters: Vec<Box<dyn Adapter<&str, Vec<&str>>>> =
                vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(500))];
            let mut stream = conn
                .with_timeout(timeout)
                .streaming_search_with(adapters, &base, Scope::Subtree, filter, attrs.to_vec())
                .map_err(|e| DirectoryError::Search(e.to_string()))?;
            let mut entries = Vec::new();
            while let Some(entry) = stream.next().map_err(|e| DirectoryError::Search(e.to_string()))? {
                entries.push(SearchEntry::construct(entry));
            }
            stream.result().success().map_err(|e| DirectoryError::Search(e.to_string()))?;
            Ok(entries)
        })
    }

    /// The connection itself, for a search the helpers above do not cover (content sync).
    pub(crate) fn conn(&mut self) -> &mut LdapConn {
        &mut self.conn
    }

    pub fn unbind(mut self) {
        let _ = self.conn.unbind();
    }
}
